//! Loopgate's benchmark suite: a load generator, the scenarios of issue #8 against the real
//! `loopgate serve` binary, the baselines they are measured against, and the results table.
//! `cargo run --release -p bench -- all` runs it; docs/performance.md has the results.

pub mod baselines;
pub mod http;
pub mod policy_eval;
pub mod report;
pub mod scenarios;
pub mod seed;
pub mod server;
