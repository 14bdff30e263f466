//! `loopgate mcp`: a Model Context Protocol server over stdio, so an MCP client (Claude Desktop,
//! an IDE agent) can put a human in its loop with no code. It acts as the agent whose key is in
//! `LOOPGATE_TOKEN`, against the Loopgate server at `--url`. The tools are [`loopgate_mcp::Gate`]'s
//! (the server offers the same ones over streamable HTTP at `/mcp`).
//!
//! Standard output carries the protocol, so logs go to standard error (`RUST_LOG`, default `warn`).

use anyhow::Context as _;
use loopgate_client::Client;
use loopgate_mcp::Gate;
use rmcp::ServiceExt;
use std::time::Duration;

/// Run the MCP server on stdin/stdout until the client disconnects.
pub async fn run(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let token = std::env::var("LOOPGATE_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .context(
            "set LOOPGATE_TOKEN to an agent key's token (loopgate keys create --name NAME --role agent)",
        )?;
    let client = Client::new(url, &token)?;
    init_logging();
    tracing::info!(url, "loopgate mcp serving on stdio");
    let service = Gate::new(client, timeout)
        .serve(rmcp::transport::stdio())
        .await
        .context("the MCP handshake failed")?;
    service.waiting().await.context("the MCP session failed")?;
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}
