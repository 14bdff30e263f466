//! The console's CSS and JavaScript, compiled into the binary and served from `/static/`.
//!
//! Pages link each file with a hash of its content (`/static/console.js?v=...`), so browsers
//! may cache it for a year: a new build changes the URL.

use axum::extract::{Path, RawQuery};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::hash::{Hash, Hasher};
use std::sync::OnceLock;

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "console.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("static/console.css"),
    },
    Asset {
        name: "console.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("static/console.js"),
    },
];

/// A short content hash per asset, computed once.
fn versions() -> &'static Vec<(&'static str, String)> {
    static V: OnceLock<Vec<(&'static str, String)>> = OnceLock::new();
    V.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                a.body.hash(&mut h);
                (a.name, format!("{:012x}", h.finish() & 0xffff_ffff_ffff))
            })
            .collect()
    })
}

fn version(name: &str) -> &'static str {
    versions()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or("0")
}

/// The URL a page links an asset by.
pub fn url(name: &str) -> String {
    format!("/static/{name}?v={}", version(name))
}

/// `GET /static/{file}`.
pub async fn serve(Path(file): Path<String>, RawQuery(query): RawQuery) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == file) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let current = query.as_deref() == Some(&format!("v={}", version(asset.name)));
    let cache = if current {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut resp = asset.body.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", version(asset.name))) {
        h.insert(header::ETAG, etag);
    }
    resp
}
