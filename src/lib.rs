//! The `loopgate` command: its CLI ([`cli`]) and the demo ([`demo`]), over the workspace crates
//! `loopgate-domain` (pure rules), `loopgate-store` (persistence) and `loopgate-server` (HTTP).

pub mod cli;
pub mod demo;
pub mod export;
pub mod learning_cli;
pub mod limit_flags;
pub mod mcp;
pub mod retention;
