//! The story suite: every capability driven through the real HTTP server on a random port, with
//! a real database file. One test binary, so the build links once.
//!
//! Each test spawns its own app on a fresh database (see [`helpers::TestApp`]). Set `TEST_LOG=1`
//! to see the server's logs.

mod helpers;

mod actions;
mod audit;
mod auth;
mod authz;
mod bad_input;
mod batches;
mod cli;
mod conversations;
mod durability;
mod events;
mod exports;
mod knowledge;
mod learning;
mod limits;
mod openapi;
mod pauses;
mod policy;
mod races;
mod retention;
mod reviews;
mod secrets;
mod webhooks;
