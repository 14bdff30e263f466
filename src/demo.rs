//! The demo: placeholder until the demo module lands.

use std::net::SocketAddr;

pub async fn run(url: &str, listen: SocketAddr) -> anyhow::Result<()> {
    let store = loopgate_store::open(url).await?;
    crate::cli::serve(store, listen).await
}
