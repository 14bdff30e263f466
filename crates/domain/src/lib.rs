//! Loopgate's domain: what an action, a review, a conversation and a policy are, and the rules by
//! which they change state. Pure code: no I/O, no async, no clock (callers pass `now`).
//!
//! Layout:
//! - [`policy`]: TOML rules with CEL conditions, compiled once per version; routing of actions and messages.
//! - [`review`]: review kinds and statuses, decisions, four-eyes approval.
//! - [`stats`]: proportions with Wilson intervals, percentiles.
//! - [`action`]: action statuses and what a routing or a decision does to them.
//! - [`audit`]: the hash chain of events and its verification.
//! - [`conversation`]: conversation states, transitions, who may post when.
//! - [`auth`]: roles and what each may do.
//! - [`types`]: small newtypes parsed at the edge (confidence, names).
//! - [`webhook`]: which endpoints get an event, retry schedule, Slack rendering.

pub mod action;
pub mod audit;
pub mod auth;
pub mod conversation;
pub mod policy;
pub mod review;
pub mod stats;
pub mod types;
pub mod webhook;
