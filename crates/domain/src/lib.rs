//! Loopgate's domain: what an action, a review, a conversation and a policy are, and the rules by
//! which they change state. Pure code: no I/O, no async, no clock (callers pass `now`).
//!
//! Layout:
//! - [`policy`]: TOML rules with CEL conditions, compiled once per version; routing of actions and messages.
//!   `policy_work` bounds each rule's work by the item's size (hostile rules go to review).
//! - [`review`]: review kinds and statuses, decisions, four-eyes approval.
//! - [`stats`]: proportions with Wilson intervals, percentiles.
//! - [`learning`]: evidence labels, calibration, threshold tuning, policy backtests.
//! - [`action`]: action statuses and what a routing or a decision does to them.
//! - [`audit`]: the hash chain of events and its verification.
//! - [`conversation`]: conversation states, transitions, who may post when.
//! - [`auth`]: roles and what each may do.
//! - [`types`]: small newtypes parsed at the edge (confidence, names).
//! - [`retention`]: how long a workspace keeps its records, and where a prune may cut.
//! - [`webhook`]: which endpoints get an event, retry schedule, Slack rendering.
//! - [`training`]: which turns humans vouched for, and the training-export formats.
//! - [`knowledge`]: what a proposed knowledge change must look like.

pub mod action;
pub mod audit;
pub mod auth;
pub mod conversation;
pub mod knowledge;
pub mod learning;
pub mod policy;
mod policy_guard;
mod policy_work;
pub mod retention;
pub mod review;
pub mod stats;
pub mod training;
pub mod types;
pub mod webhook;
