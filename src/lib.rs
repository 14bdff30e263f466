//! The `loopgate` command: its CLI ([`cli`]) and the demo ([`demo`]), over the workspace crates
//! `loopgate-domain` (pure rules), `loopgate-store` (persistence) and `loopgate-server` (HTTP).

pub mod cli;
pub mod demo;
pub mod mcp;
