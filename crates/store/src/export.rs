//! Training exports as a stream of JSONL chunks, for the HTTP response and the CLI alike.
//!
//! Invariant: constant memory whatever the export's size. Each chunk is one page read with a
//! keyset query ([`Store::export_training`]: `id > last id ORDER BY id LIMIT n`), serialized and
//! handed on before the next page is read; nothing holds the whole export, and no read
//! transaction stays open between pages (a long export does not pin SQLite's WAL or hold a
//! PostgreSQL snapshot). The price: an export running while reviewers work sees each page as of
//! when that page was read.

use crate::{Result, Store};
use futures::Stream;
use loopgate_domain::training::Format;
use std::sync::Arc;

/// Source rows per page: small enough to keep a page's transcripts in bounded memory, large
/// enough that the per-query overhead is noise.
pub const PAGE_ROWS: i64 = 500;

/// The export as JSONL, one chunk (one or more complete lines) per non-empty page. An error ends
/// the stream after the lines already sent; consumers must treat it as a failed export.
pub fn training_lines(
    store: Arc<dyn Store>,
    workspace: String,
    format: Format,
    since_ms: i64,
) -> impl Stream<Item = Result<Vec<u8>>> + Send + 'static {
    // State: the cursor, and whether the last page has been read.
    futures::stream::try_unfold((None::<String>, false), move |(after, done)| {
        let (store, workspace) = (store.clone(), workspace.clone());
        async move {
            let mut after = after;
            if done {
                return Ok(None);
            }
            // Pages whose rows all fell out (approvals in a corrections export) yield no bytes;
            // read on until a page has lines or the end is reached.
            loop {
                let page = store
                    .export_training(&workspace, format, since_ms, after.clone(), PAGE_ROWS)
                    .await?;
                let mut chunk = Vec::new();
                for record in &page.records {
                    serde_json::to_writer(&mut chunk, record)?;
                    chunk.push(b'\n');
                }
                match page.next {
                    None if chunk.is_empty() => return Ok(None),
                    None => return Ok(Some((chunk, (None, true)))),
                    Some(next) if chunk.is_empty() => after = Some(next),
                    Some(next) => return Ok(Some((chunk, (Some(next), false)))),
                }
            }
        }
    })
}
