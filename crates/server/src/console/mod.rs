//! The reviewer web console: server-rendered pages over the same store as the API.

use crate::AppState;
use axum::Router;

/// The console's routes, mounted at `/` beside the API.
pub fn router() -> Router<AppState> {
    Router::new()
}
