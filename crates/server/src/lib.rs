//! Loopgate's server: the HTTP API over the store, live updates, and background timers.
//!
//! Layout:
//! - [`http`]: one module per resource, each exposing its routes with their OpenAPI docs.
//! - [`console`]: the reviewers' web console (server-rendered HTML, cookie sessions).
//! - [`error`]: the one error type and its HTTP mapping.
//! - [`extract`]: JSON and auth extractors (roles proven by types).
//! - [`live`]: long-poll waiters woken by committed events, and the timer sweep.
//! - [`delivery`]: the webhook worker that drains the transactional outbox.
//! - [`policies`]: the compiled policy of each workspace, cached per version.
//! - [`pruning`]: the scheduled prune of records past each workspace's retention period.
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`limits`]: per-key rate limits, caps on open long-polls and streams, request timeouts.
//! - [`serve`]: the accept loop, with a header-read timeout against slow clients.
//!
//! [`run`] takes its listener and a shutdown future, so tests bind port 0 and stop cleanly.

pub mod console;
pub mod delivery;
pub mod error;
pub mod extract;
pub mod http;
pub mod learning;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod policies;
pub mod pruning;
pub mod serve;

use loopgate_store::Store;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Settings a deployment may change.
#[derive(Debug, Clone)]
pub struct Config {
    /// Largest request body accepted (413 beyond).
    pub body_limit: usize,
    /// How long a claim holds before it lapses back to the queue.
    pub claim_lease: Duration,
    /// How often timeouts and lapsed claims are swept.
    pub sweep_interval: Duration,
    /// The address people reach this server at, for links in webhooks (e.g. Slack messages).
    pub public_url: String,
    /// How long a webhook receiver may take to answer one delivery.
    pub webhook_timeout: Duration,
    /// How often an idle SSE stream sends a keep-alive comment.
    pub sse_keepalive: Duration,
    /// Where this server reaches its own API (the `/mcp` tools call it as the calling agent).
    /// [`run`] sets it to the address it listens on; `None` falls back to `public_url`.
    pub self_url: Option<String>,
    /// How often `threshold = "auto"` rules are recomputed from evidence; `None`: never.
    pub autonomy_interval: Option<Duration>,
    /// How often records past retention are pruned (see [`pruning`]); `None` turns it off.
    pub prune_interval: Option<Duration>,
    /// Requests per API key or console session (`None`: unlimited); 429 beyond.
    pub rate_limit: Option<limits::RateLimit>,
    /// Long-polls (`GET /v1/actions/{id}?wait=`) one key may have open at once; 429 beyond.
    pub max_long_polls: usize,
    /// Event streams (SSE) one key or session may have open at once; 429 beyond.
    pub max_streams: usize,
    /// A client must send a request's whole head within this (zero: no limit).
    pub header_read_timeout: Duration,
    /// The longest a request may take up to its response head; long-polls get their wait on top.
    pub request_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            body_limit: 1024 * 1024,
            claim_lease: Duration::from_secs(300),
            sweep_interval: Duration::from_millis(500),
            public_url: "http://127.0.0.1:7800".to_owned(),
            webhook_timeout: Duration::from_secs(10),
            sse_keepalive: Duration::from_secs(15),
            self_url: None,
            autonomy_interval: Some(Duration::from_secs(600)),
            prune_interval: Some(Duration::from_secs(3600)),
            rate_limit: Some(limits::RateLimit::DEFAULT),
            max_long_polls: 64,
            max_streams: 16,
            header_read_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub policies: Arc<policies::PolicyCache>,
    pub waiters: Arc<live::Waiters>,
    /// Rung whenever events are committed, so the webhook worker looks at the outbox at once.
    pub outbox_bell: Arc<tokio::sync::Notify>,
    pub metrics: Arc<metrics::Metrics>,
    pub config: Arc<Config>,
    pub limits: Arc<limits::Limits>,
    /// Turns true when the server begins to shut down: long-polls answer at once, tasks stop.
    pub stopping: watch::Receiver<bool>,
    stop: Arc<watch::Sender<bool>>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: Config) -> AppState {
        let (stop, stopping) = watch::channel(false);
        AppState {
            stopping,
            stop: Arc::new(stop),
            policies: Arc::new(policies::PolicyCache::new(store.clone())),
            waiters: Arc::new(live::Waiters::default()),
            outbox_bell: Arc::new(tokio::sync::Notify::new()),
            metrics: Arc::new(metrics::Metrics::new()),
            limits: Arc::new(limits::Limits::new(&config)),
            config: Arc::new(config),
            store,
        }
    }
}

/// Serve until `shutdown` resolves. Fires overdue timeouts before accepting the first request,
/// so a server that was down when deadlines passed catches up at once.
pub async fn run(
    listener: TcpListener,
    store: Arc<dyn Store>,
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    config.self_url = Some(self_url(listener.local_addr()?));
    let state = AppState::new(store, config);
    if let Err(e) = state.store.sweep_timers().await {
        tracing::warn!(error = %e, "the start-up timer sweep failed; the background sweep will retry");
    }
    let mut background = live::spawn_background(state.clone(), state.stopping.clone());
    if let Some(interval) = state.config.autonomy_interval {
        background.push(learning::spawn_autonomy(state.clone(), interval));
    }
    background.extend(pruning::spawn(state.clone(), state.stopping.clone()));
    let stop = state.stop.clone();
    let stop_on_signal = stop.clone();
    let header_read_timeout = state.config.header_read_timeout;
    let app = http::router(state);
    let result = serve::serve(listener, app, header_read_timeout, async move {
        shutdown.await;
        let _ = stop_on_signal.send(true);
    })
    .await;
    let _ = stop.send(true);
    for task in background {
        let _ = task.await;
    }
    result
}

/// The URL of the server listening on `addr`, from this host: a wildcard address (`0.0.0.0`,
/// `::`) is reached through loopback.
fn self_url(addr: std::net::SocketAddr) -> String {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}
