//! `loopgate serve`'s abuse-limit flags (see `loopgate_server::limits`), kept apart from the
//! other commands' flags.

use loopgate_server::limits::RateLimit;
use loopgate_server::Config;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct LimitFlags {
    /// Requests per API key or console session: N/s, N/m or N/h, optionally ,burst=M (default
    /// burst 2N); `off` for no limit. Over it: 429 with Retry-After.
    #[arg(long, env = "LOOPGATE_RATE_LIMIT", default_value = "500/s,burst=1000", value_parser = parse_rate)]
    rate_limit: RateSetting,
    /// Long-polls (GET /v1/actions/{id}?wait=) one key may have open at once.
    #[arg(long, env = "LOOPGATE_MAX_LONG_POLLS", default_value_t = 64)]
    max_long_polls: usize,
    /// Event streams (SSE) one key or console session may have open at once.
    #[arg(long, env = "LOOPGATE_MAX_STREAMS", default_value_t = 16)]
    max_streams: usize,
    /// A client must send a request's headers within this, or is disconnected (0: no limit).
    #[arg(long, env = "LOOPGATE_HEADER_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    header_timeout: Duration,
    /// The longest a request may take (long-polls get their wait on top; 0: no limit).
    #[arg(long, env = "LOOPGATE_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    request_timeout: Duration,
}

/// A rate or `off`: clap would take a bare `Option` field to mean "the flag may be absent".
#[derive(Debug, Clone, Copy)]
struct RateSetting(Option<RateLimit>);

fn parse_rate(text: &str) -> Result<RateSetting, String> {
    RateLimit::parse(text).map(RateSetting)
}

impl LimitFlags {
    pub fn apply(&self, config: Config) -> Config {
        Config {
            rate_limit: self.rate_limit.0,
            max_long_polls: self.max_long_polls,
            max_streams: self.max_streams,
            header_read_timeout: self.header_timeout,
            request_timeout: self.request_timeout,
            ..config
        }
    }
}
