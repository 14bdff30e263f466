//! `loopgate demo`: the server over a `demo` workspace with a realistic policy, fresh tokens and
//! two simulated agents producing steady, varied traffic, so the queues fill like real life.
//!
//! The agents are ordinary API clients: they talk to the server over HTTP with their own agent
//! tokens, exactly as a customer's code would, so the demo exercises the real path (auth,
//! policy, store, long-polls) and nothing in it is special-cased. Their customers' words are real
//! support messages from BANKING77 (see `demo/README.md` for the credit).

use anyhow::{anyhow, Context};
use loopgate_domain::auth::Role;
use loopgate_domain::policy::Policy;
use loopgate_store::{Store, StoreError};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// The workspace the demo fills.
pub const WORKSPACE: &str = "demo";

/// The demo policy, compiled into the binary so the demo runs from a bare executable.
pub const POLICY: &str = include_str!("../demo/policy.toml");

/// A sample of BANKING77 (`text,category`): the simulated customers' messages.
pub const MESSAGES_CSV: &str = include_str!("../demo/banking77-sample.csv");

/// Console users: fixed passwords, since a demo's logins should be guessable from its banner.
const USERS: [(&str, Role, &str); 2] = [
    ("alice", Role::Reviewer, "alice-demo-pw"),
    ("admin", Role::Admin, "admin-demo-pw"),
];

/// API keys created on every run (a token is only visible when created).
const KEYS: [(&str, Role); 4] = [
    ("support-bot", Role::Agent),
    ("ops-bot", Role::Agent),
    ("alice", Role::Reviewer),
    ("admin", Role::Admin),
];

/// Mail to this domain stays inside the bank; the policy treats anything else as external.
const INTERNAL_DOMAIN: &str = "northwind-bank.example";

/// Long-polls open at once per agent: enough to show decisions arriving, few enough that an
/// unattended demo does not pile up connections.
const WATCHERS_PER_AGENT: usize = 6;

/// Rounds of `?wait=30` a watcher spends on one action before it stops caring.
const WATCH_ROUNDS: u32 = 6;

/// Run the demo until Ctrl-C or SIGTERM.
pub async fn run(url: &str, listen: SocketAddr) -> anyhow::Result<()> {
    // Both embedded files are checked before anything is written, so a broken build fails fast.
    Policy::parse(POLICY).map_err(|errors| {
        let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
        anyhow!("the built-in demo policy is invalid: demo/policy.toml:{first}")
    })?;
    let messages = Arc::new(Messages::parse(MESSAGES_CSV)?);

    // Bind before touching the database, so a busy port does not mint keys nobody will use.
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AddrInUse => anyhow!(
                "cannot listen on {listen}: the address is already in use (is another loopgate running? try --listen 127.0.0.1:0)"
            ),
            _ => anyhow!("cannot listen on {listen}: {e}"),
        })?;
    let addr = listener.local_addr()?;

    let store = loopgate_store::open(url)
        .await
        .with_context(|| format!("cannot open the database {url}"))?;
    let setup = prepare(store.as_ref()).await?;
    let base = format!("http://{}", reachable(addr));
    println!("{}", banner(&base, url, &setup));

    // Agents stop first, then the server, so no agent request is cut off by the server going away.
    let (stop_agents, agents_stopping) = watch::channel(false);
    let (stop_server, server_stopping) = watch::channel(false);
    let mut server = tokio::spawn(loopgate_server::run(
        listener,
        store,
        loopgate_server::Config::default(),
        stopped(server_stopping),
    ));

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .user_agent(concat!("loopgate-demo/", env!("CARGO_PKG_VERSION")))
        .build()
        .context("cannot build the HTTP client")?;
    let mut agents = JoinSet::new();
    for profile in [Profile::Support, Profile::Ops] {
        let token = setup
            .tokens
            .iter()
            .find(|t| t.name == profile.name())
            .map(|t| t.token.clone())
            .ok_or_else(|| anyhow!("no token for {}", profile.name()))?;
        let agent = Agent {
            profile,
            token,
            base: base.clone(),
            http: http.clone(),
            messages: messages.clone(),
            watchers: Arc::new(Semaphore::new(WATCHERS_PER_AGENT)),
            stop: agents_stopping.clone(),
        };
        agents.spawn(agent.run());
    }

    let server_ended_early = tokio::select! {
        _ = crate::cli::shutdown_signal() => None,
        result = &mut server => Some(result),
    };
    let _ = stop_agents.send(true);
    // Agents answer the stop at their next await; the bound only matters if one is wedged.
    if tokio::time::timeout(Duration::from_secs(5), async {
        while agents.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        agents.abort_all();
    }
    let _ = stop_server.send(true);
    let result = match server_ended_early {
        Some(result) => result,
        None => server.await,
    };
    result
        .context("the server task failed")?
        .context("the server failed")
}

/// Resolves once `rx` turns true, or its sender is gone (nobody left to say otherwise).
async fn stopped(mut rx: watch::Receiver<bool>) {
    until_stopped(&mut rx).await;
}

/// As [`stopped`], borrowing. The `Ref` that `wait_for` returns is dropped here because it is not
/// `Send`: holding it in a spawned task's `select!` would make the task unspawnable.
async fn until_stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Where clients on this machine reach a listener: an unspecified address (`0.0.0.0`, `::`)
/// accepts everywhere but cannot be connected to, so use loopback instead.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// One freshly created API token.
struct Token {
    name: &'static str,
    role: Role,
    token: String,
}

/// What the banner reports about the set-up.
struct Setup {
    policy_version: i64,
    rules: usize,
    tokens: Vec<Token>,
    /// Per user: whether this run created it (false: it existed, its password is unchanged).
    users: Vec<(&'static str, Role, &'static str, bool)>,
}

/// The workspace, its policy, keys and users.
async fn prepare(store: &dyn Store) -> anyhow::Result<Setup> {
    store
        .ensure_workspace(WORKSPACE)
        .await
        .context("cannot create the demo workspace")?;
    let saved = store
        .put_policy(WORKSPACE, POLICY, "system:demo")
        .await
        .context("cannot put the demo policy in force")?;
    let rules = Policy::parse(POLICY).map(|p| p.rules().len()).unwrap_or(0);
    tracing::info!(
        workspace = WORKSPACE,
        version = saved.version,
        "demo policy in force"
    );

    let mut tokens = Vec::new();
    for (name, role) in KEYS {
        let created = store
            .create_key(WORKSPACE, name, role)
            .await
            .with_context(|| format!("cannot create the {name} key"))?;
        tokens.push(Token {
            name,
            role,
            token: created.token,
        });
    }

    // argon2 is deliberately slow: hash both passwords at once, off the async executor.
    let hashing: Vec<_> = USERS
        .iter()
        .map(|&(_, _, password)| {
            tokio::task::spawn_blocking(move || loopgate_store::secrets::hash_password(password))
        })
        .collect();
    let mut users = Vec::new();
    for (&(username, role, password), hash) in USERS.iter().zip(hashing) {
        let hash = hash
            .await
            .context("the password hashing task failed")?
            .map_err(|e| anyhow!("cannot hash the password of {username}: {e}"))?;
        let created = match store.create_user(WORKSPACE, username, role, &hash).await {
            Ok(_) => true,
            // Created by an earlier run: keep it (and whatever password it has now).
            Err(StoreError::Conflict(_)) => false,
            Err(e) => return Err(anyhow!(e).context(format!("cannot create the user {username}"))),
        };
        users.push((username, role, password, created));
    }
    Ok(Setup {
        policy_version: saved.version,
        rules,
        tokens,
        users,
    })
}

/// The text printed once the demo is ready: where it is, who can log in, the tokens, and
/// commands to paste.
fn banner(base: &str, database: &str, setup: &Setup) -> String {
    let token_of = |name: &str| {
        setup
            .tokens
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.token.as_str())
            .unwrap_or("TOKEN")
    };
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(String::new());
    line(format!(
        "Loopgate demo: workspace \"{WORKSPACE}\" (Northwind Bank), database {database}"
    ));
    line(String::new());
    line(format!(
        "  API       {base}/v1   (OpenAPI at {base}/openapi.json, health at {base}/healthz)"
    ));
    line(format!(
        "  Console   {base}/   (the web console arrives in a later release; use the API for now)"
    ));
    line(String::new());
    line(format!("Console users (workspace {WORKSPACE}):"));
    for (username, role, password, created) in &setup.users {
        let note = if *created {
            ""
        } else {
            "   (existed already; password as set then)"
        };
        line(format!(
            "  {username:<12} {:<9} password {password}{note}",
            role.as_str()
        ));
    }
    line(String::new());
    line("API tokens (new on every run and shown only now):".to_owned());
    for t in &setup.tokens {
        line(format!(
            "  {:<12} {:<9} {}",
            t.name,
            t.role.as_str(),
            t.token
        ));
    }
    line(String::new());
    line(format!(
        "Policy: demo/policy.toml, version {}, {} rules (GET /v1/policy with the admin token).",
        setup.policy_version, setup.rules
    ));
    line("Simulated agents support-bot and ops-bot are submitting actions now; Ctrl-C stops the demo.".to_owned());
    line(String::new());
    line("Try it:".to_owned());
    let alice = token_of("alice");
    line("  # 1. as alice, claim the most urgent pending review in the finance queue".to_owned());
    line(format!(
        "  REVIEW_ID=$(curl -s -X POST '{base}/v1/reviews/next?queue=finance' -H 'Authorization: Bearer {alice}' | grep -o '\"id\":\"[^\"]*\"' | head -n1 | cut -d'\"' -f4); echo \"$REVIEW_ID\""
    ));
    line("  # 2. approve it (refunds over 500 wait for a second approver: try again with the admin token)".to_owned());
    line(format!(
        "  curl -s -X POST \"{base}/v1/reviews/$REVIEW_ID/decision\" -H 'Authorization: Bearer {alice}' -H 'Content-Type: application/json' -d '{{\"verdict\":\"approve\",\"comment\":\"order checked\"}}'"
    ));
    line("  # 3. as support-bot, submit an action (620 GBP: two approvers in finance)".to_owned());
    line(format!(
        "  curl -s -X POST '{base}/v1/actions' -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' -d '{{\"name\":\"issue_refund\",\"arguments\":{{\"amount\":620,\"currency\":\"GBP\",\"order_id\":\"ord_10001\",\"customer_id\":\"cus_10001\"}},\"confidence\":0.93,\"context\":{{\"customer\":{{\"id\":\"cus_10001\",\"tier\":\"standard\"}},\"channel\":\"chat\"}}}}'",
        token_of("support-bot")
    ));
    out
}

/// One customer message of the sample, with its intent label.
#[derive(Debug, Clone)]
pub struct Message {
    pub text: String,
    pub intent: String,
}

/// The sample's messages, also indexed by intent so an agent can favour the intents it handles.
#[derive(Debug)]
pub struct Messages {
    all: Vec<Message>,
    by_intent: BTreeMap<String, Vec<usize>>,
}

impl Messages {
    /// Parse `text,category` CSV (header first).
    pub fn parse(csv: &str) -> anyhow::Result<Messages> {
        let rows = parse_csv(csv).map_err(|e| anyhow!("demo/banking77-sample.csv: {e}"))?;
        let mut rows = rows.into_iter();
        match rows.next() {
            Some(header) if header == ["text", "category"] => {}
            _ => {
                return Err(anyhow!(
                    "demo/banking77-sample.csv: the header must be text,category"
                ))
            }
        }
        let mut all = Vec::new();
        let mut by_intent: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, row) in rows.enumerate() {
            let [text, intent] = <[String; 2]>::try_from(row).map_err(|r| {
                anyhow!(
                    "demo/banking77-sample.csv: row {} has {} fields, not 2",
                    i + 2,
                    r.len()
                )
            })?;
            if text.trim().is_empty() || intent.is_empty() {
                continue;
            }
            by_intent.entry(intent.clone()).or_default().push(all.len());
            all.push(Message { text, intent });
        }
        if all.is_empty() {
            return Err(anyhow!("demo/banking77-sample.csv has no messages"));
        }
        Ok(Messages { all, by_intent })
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    pub fn intents(&self) -> usize {
        self.by_intent.len()
    }

    fn any(&self, rng: &mut impl Rng) -> &Message {
        // `parse` refuses an empty sample, so the index is always in range.
        &self.all[rng.gen_range(0..self.all.len())]
    }

    /// A message with this intent, or any message when the sample has none.
    fn with_intent(&self, intent: &str, rng: &mut impl Rng) -> &Message {
        match self.by_intent.get(intent).and_then(|ids| ids.choose(rng)) {
            Some(&i) => &self.all[i],
            None => self.any(rng),
        }
    }
}

/// RFC 4180 CSV: fields separated by commas, rows by LF or CRLF, fields optionally in double
/// quotes (which may then hold commas, line breaks and `""` for a quote). Blank lines are skipped.
pub fn parse_csv(input: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut row: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false; // this field was opened with a quote
    let mut in_quotes = false; // inside the quotes right now
    let mut line = 1;
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        if in_quotes {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => in_quotes = false,
                _ => {
                    if c == '\n' {
                        line += 1;
                    }
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !quoted => {
                quoted = true;
                in_quotes = true;
            }
            '"' => return Err(format!("line {line}: a quote inside an unquoted field")),
            ',' => {
                row.push(std::mem::take(&mut field));
                quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                let blank = row.is_empty() && field.is_empty() && !quoted;
                if !blank {
                    row.push(std::mem::take(&mut field));
                    rows.push(std::mem::take(&mut row));
                }
                quoted = false;
                line += 1;
            }
            _ if quoted => return Err(format!("line {line}: text after a closing quote")),
            _ => field.push(c),
        }
    }
    if in_quotes {
        return Err(format!("line {line}: a quoted field is never closed"));
    }
    if quoted || !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    Ok(rows)
}

/// Which simulated agent: each has its own mix of work and pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    /// Answers customers: refunds, look-ups, emails; fast-paced.
    Support,
    /// Carries out account operations: address changes and closures; slower.
    Ops,
}

impl Profile {
    fn name(self) -> &'static str {
        match self {
            Profile::Support => "support-bot",
            Profile::Ops => "ops-bot",
        }
    }

    /// The pause before the next action: randomised, so traffic looks organic rather than metronomic.
    fn pause(self, rng: &mut impl Rng) -> Duration {
        let secs = match self {
            Profile::Support => rng.gen_range(0.5..2.0),
            Profile::Ops => rng.gen_range(1.0..3.5),
        };
        Duration::from_secs_f64(secs)
    }

    /// The customer message this agent works on next.
    fn pick<'m>(self, messages: &'m Messages, rng: &mut impl Rng) -> &'m Message {
        match self {
            // Account operations are ops-bot's job; support-bot leaves those customers to it.
            Profile::Support => {
                // Bounded, though the sample is mostly other intents and the first draw usually fits.
                for _ in 0..20 {
                    let m = messages.any(rng);
                    if !OPS_INTENTS.contains(&m.intent.as_str()) {
                        return m;
                    }
                }
                messages.any(rng)
            }
            Profile::Ops => {
                let r: f64 = rng.gen();
                if r < 0.45 {
                    messages.with_intent("edit_personal_details", rng)
                } else if r < 0.8 {
                    messages.with_intent("terminate_account", rng)
                } else {
                    messages.any(rng)
                }
            }
        }
    }
}

/// BANKING77 intents that ops-bot acts on (address changes, closures).
const OPS_INTENTS: [&str; 2] = ["edit_personal_details", "terminate_account"];

/// BANKING77 intents where the customer is owed money back.
const REFUND_INTENTS: [&str; 8] = [
    "request_refund",
    "Refund_not_showing_up",
    "transaction_charged_twice",
    "extra_charge_on_statement",
    "card_payment_not_recognised",
    "direct_debit_payment_not_recognised",
    "card_payment_fee_charged",
    "wrong_amount_of_cash_received",
];

const FIRST_NAMES: [&str; 16] = [
    "Amira", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hiro", "Isla", "Jonas", "Kemi",
    "Liam", "Maya", "Noah", "Priya", "Sam",
];
const LAST_NAMES: [&str; 14] = [
    "Okafor", "Smith", "Novak", "Patel", "Garcia", "Chen", "Murphy", "Kowalski", "Haddad", "Jones",
    "Silva", "Tanaka", "Brown", "Ward",
];
const STREETS: [&str; 10] = [
    "Elm Row",
    "Station Road",
    "Mill Lane",
    "Victoria Street",
    "Church Walk",
    "Harbour View",
    "Kings Parade",
    "Orchard Close",
    "Canal Street",
    "Meadow Way",
];
/// Towns with the letters their postcodes start with.
const TOWNS: [(&str, &str); 8] = [
    ("Edinburgh", "EH"),
    ("Leeds", "LS"),
    ("Bristol", "BS"),
    ("Manchester", "M"),
    ("Cardiff", "CF"),
    ("Norwich", "NR"),
    ("Belfast", "BT"),
    ("London", "N"),
];

/// A simulated customer.
struct Customer {
    id: String,
    tier: &'static str,
    first: &'static str,
    last: &'static str,
}

impl Customer {
    fn random(rng: &mut impl Rng) -> Customer {
        let r: f64 = rng.gen();
        let tier = if r < 0.7 {
            "standard"
        } else if r < 0.92 {
            "plus"
        } else {
            "vip"
        };
        Customer {
            id: format!("cus_{}", rng.gen_range(10_000..100_000)),
            tier,
            first: FIRST_NAMES.choose(rng).copied().unwrap_or("Alex"),
            last: LAST_NAMES.choose(rng).copied().unwrap_or("Doe"),
        }
    }

    fn email(&self, rng: &mut impl Rng) -> String {
        let domain = ["example.com", "example.org", "example.net"]
            .choose(rng)
            .copied()
            .unwrap_or("example.com");
        format!(
            "{}.{}@{domain}",
            self.first.to_lowercase(),
            self.last.to_lowercase()
        )
    }
}

/// An action an agent is about to propose, with a one-line summary for the log.
#[derive(Debug, Clone)]
struct Proposal {
    name: &'static str,
    arguments: Value,
    confidence: Option<f64>,
    context: Value,
    summary: String,
}

/// Mostly confident, with a tail of unsure calls and the odd agent that reports no confidence at all.
fn confidence(rng: &mut impl Rng) -> Option<f64> {
    let r: f64 = rng.gen();
    let c = if r < 0.02 {
        return None;
    } else if r < 0.72 {
        rng.gen_range(0.88..0.995)
    } else if r < 0.92 {
        rng.gen_range(0.6..0.88)
    } else {
        rng.gen_range(0.15..0.6)
    };
    Some((c * 100.0_f64).round() / 100.0)
}

fn money(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// A refund amount: mostly small, some mid-sized, a tail of large ones.
fn refund_amount(rng: &mut impl Rng) -> f64 {
    let r: f64 = rng.gen();
    money(if r < 0.55 {
        rng.gen_range(4.99..50.0)
    } else if r < 0.83 {
        rng.gen_range(50.0..500.0)
    } else {
        rng.gen_range(500.0..2400.0)
    })
}

/// The intent as words: `card_payment_not_recognised` → `card payment not recognised`.
fn topic(intent: &str) -> String {
    intent
        .replace('_', " ")
        .trim_end_matches('?')
        .to_lowercase()
}

/// Topic tags a support desk would put on the ticket.
fn tags(intent: &str, text: &str, rng: &mut impl Rng) -> Vec<&'static str> {
    let i = intent.to_lowercase();
    let mut tags = Vec::new();
    for (needle, tag) in [
        ("refund", "refunds"),
        ("card", "cards"),
        ("transfer", "transfers"),
        ("top_up", "top-ups"),
        ("topping", "top-ups"),
        ("exchange", "fx"),
        ("currency", "fx"),
        ("identity", "kyc"),
        ("verify", "kyc"),
        ("cash", "cash"),
        ("atm", "cash"),
        ("pin", "security"),
        ("compromised", "security"),
        ("stolen", "security"),
        ("personal_details", "account"),
        ("terminate", "account"),
    ] {
        if i.contains(needle) && !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    if tags.is_empty() {
        tags.push("general");
    }
    let t = text.to_lowercase();
    if ["urgent", "immediately", "asap", "now!"]
        .iter()
        .any(|w| t.contains(w))
    {
        tags.push("urgent");
    }
    if rng.gen_bool(0.1) {
        tags.push("repeat-contact");
    }
    tags
}

/// Turn a customer message into the action an agent would propose for it.
fn propose(message: &Message, rng: &mut impl Rng) -> Proposal {
    let customer = Customer::random(rng);
    let channel = *[("chat", 5), ("email", 3), ("app", 3), ("phone", 1)]
        .choose_weighted(rng, |c| c.1)
        .map(|c| &c.0)
        .unwrap_or(&"chat");
    let context = json!({
        "customer": {"id": customer.id, "tier": customer.tier},
        "channel": channel,
        "intent": message.intent,
        "customer_message": message.text,
        "tags": tags(&message.intent, &message.text, rng),
        "language": "en",
    });
    let confidence = confidence(rng);
    let who = format!("{} ({})", customer.id, customer.tier);
    let intent = message.intent.as_str();
    let order_id = format!("ord_{}", rng.gen_range(100_000..1_000_000));

    let (name, arguments, summary) = if REFUND_INTENTS.contains(&intent) && rng.gen_bool(0.85) {
        let amount = refund_amount(rng);
        let currency = *[("GBP", 6), ("EUR", 3), ("USD", 1)]
            .choose_weighted(rng, |c| c.1)
            .map(|c| &c.0)
            .unwrap_or(&"GBP");
        (
            "issue_refund",
            json!({"amount": amount, "currency": currency, "order_id": order_id,
                   "customer_id": customer.id, "reason": topic(intent)}),
            format!("issue_refund {amount:.2} {currency} to {who}"),
        )
    } else if intent == "edit_personal_details" {
        let (town, area) = *TOWNS.choose(rng).unwrap_or(&("London", "N"));
        let street = STREETS.choose(rng).copied().unwrap_or("High Street");
        let postcode = format!(
            "{area}{} {}{}{}",
            rng.gen_range(1..20),
            rng.gen_range(1..10),
            char::from(rng.gen_range(b'A'..=b'Z')),
            char::from(rng.gen_range(b'A'..=b'Z'))
        );
        let line1 = format!("{} {street}", rng.gen_range(1..200));
        (
            "change_address",
            json!({"customer_id": customer.id,
                   "new_address": {"line1": line1, "city": town, "postcode": postcode, "country": "GB"}}),
            format!("change_address of {who} to {line1}, {town}"),
        )
    } else if intent == "terminate_account" && rng.gen_bool(0.12) {
        // The customer asked to leave "and delete everything": an over-eager agent tries the
        // erasure itself, which the policy blocks.
        (
            "delete_customer_data",
            json!({"customer_id": customer.id, "scope": "all", "requested_via": channel}),
            format!("delete_customer_data of {who}"),
        )
    } else if intent == "terminate_account" {
        let balance = money(rng.gen_range(0.0..3000.0));
        (
            "close_account",
            json!({"customer_id": customer.id, "account_id": format!("acc_{}", rng.gen_range(10_000_000..100_000_000)),
                   "reason": "customer request", "final_balance": balance,
                   "pay_balance_to": "nominated external account"}),
            format!("close_account of {who}, balance {balance:.2}"),
        )
    } else if rng.gen_bool(0.6) {
        (
            "lookup_order",
            json!({"order_id": order_id, "customer_id": customer.id}),
            format!("lookup_order {order_id} for {who}"),
        )
    } else if rng.gen_bool(0.2) {
        // Handing the case to a team inside the bank.
        let team = ["disputes", "cards-team", "payments-ops", "complaints"]
            .choose(rng)
            .copied()
            .unwrap_or("disputes");
        let to = format!("{team}@{INTERNAL_DOMAIN}");
        (
            "send_email",
            json!({"to": to, "subject": format!("Customer {} needs help: {}", customer.id, topic(intent)),
                   "body": format!("Customer {} ({}) wrote via {channel}:\n\n\"{}\"\n\nPlease pick this up; I could not resolve it.",
                                   customer.id, customer.tier, message.text)}),
            format!("send_email to {to} about {}", topic(intent)),
        )
    } else {
        let to = customer.email(rng);
        (
            "send_email",
            json!({"to": to, "subject": format!("Re: your question about {}", topic(intent)),
                   "body": format!("Hi {},\n\nThanks for getting in touch with Northwind Bank about {}. We have looked into it and \
                                   the details are now in your app under Help > Messages. Reply to this email if anything is unclear.\n\n\
                                   Kind regards,\nNorthwind Bank Support", customer.first, topic(intent))}),
            format!("send_email to {to} about {}", topic(intent)),
        )
    };
    Proposal {
        name,
        arguments,
        confidence,
        context,
        summary,
    }
}

/// `201`/`200` of `POST /v1/actions`: the fields the agent acts on.
#[derive(Debug, Deserialize)]
struct Submitted {
    id: String,
    status: String,
    rule: Option<String>,
    reason: Option<String>,
}

/// `GET /v1/actions/{id}`: the fields the agent acts on.
#[derive(Debug, Deserialize)]
struct ActionState {
    status: String,
    decision: Option<Decision>,
}

#[derive(Debug, Deserialize)]
struct Decision {
    verdict: String,
    #[serde(default)]
    by: Vec<String>,
    comment: Option<String>,
}

/// A simulated agent: an ordinary API client with its own token.
struct Agent {
    profile: Profile,
    token: String,
    base: String,
    http: reqwest::Client,
    messages: Arc<Messages>,
    watchers: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

/// What went wrong with one request; logged, never fatal.
#[derive(Debug)]
struct RequestFailed(String);

impl std::fmt::Display for RequestFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Agent {
    fn name(&self) -> &'static str {
        self.profile.name()
    }

    /// Propose actions until told to stop. Failures are logged and waited out: the demo keeps going
    /// while the server is busy or briefly unreachable.
    async fn run(self) {
        let agent = Arc::new(self);
        let mut rng = StdRng::from_entropy();
        let mut stop = agent.stop.clone();
        let mut tasks = JoinSet::new();
        let mut failures: u32 = 0;
        // The first action comes quickly, so a fresh demo shows traffic at once.
        let mut pause = Duration::from_millis(rng.gen_range(200..800));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = until_stopped(&mut stop) => break,
            }
            while tasks.try_join_next().is_some() {}
            let proposal = propose(agent.profile.pick(&agent.messages, &mut rng), &mut rng);
            let outcome = tokio::select! {
                r = agent.submit_and_follow_up(proposal, &mut rng, &mut tasks) => r,
                _ = until_stopped(&mut stop) => break,
            };
            match outcome {
                Ok(()) => failures = 0,
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!("{}: {e}", agent.name());
                }
            }
            // Back off while requests fail, up to 30 s, so a stopped server is not hammered.
            let backoff = Duration::from_secs(u64::from(failures.min(5)) * 6);
            pause = agent.profile.pause(&mut rng) + backoff;
        }
        // Watchers and cancellers see the same stop; give them a moment to finish cleanly.
        if tokio::time::timeout(Duration::from_secs(2), async {
            while tasks.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tasks.abort_all();
        }
    }

    /// Submit one proposal; for some pending ones, watch for the decision or cancel later.
    async fn submit_and_follow_up(
        self: &Arc<Self>,
        proposal: Proposal,
        rng: &mut StdRng,
        tasks: &mut JoinSet<()>,
    ) -> Result<(), RequestFailed> {
        let mut body = json!({
            "name": proposal.name,
            "arguments": proposal.arguments,
            "context": proposal.context,
        });
        if let Some(c) = proposal.confidence {
            body["confidence"] = json!(c);
        }
        // A third of submissions are idempotent, as a careful agent framework's would be.
        let key = rng
            .gen_bool(0.35)
            .then(|| format!("{}-{}", self.name(), uuid::Uuid::new_v4()));
        let submitted = self.submit(&body, key.as_deref()).await?;
        let confidence = proposal
            .confidence
            .map_or_else(|| "none".to_owned(), |c| format!("{c:.2}"));
        tracing::info!(
            id = %submitted.id,
            "{} proposed {} (confidence {confidence}) -> {}: {}",
            self.name(),
            proposal.summary,
            submitted.status,
            submitted
                .rule
                .as_deref()
                .or(submitted.reason.as_deref())
                .unwrap_or("no rule matched")
        );

        if let Some(key) = key.as_deref().filter(|_| rng.gen_bool(0.1)) {
            // A retry after a lost response: the server must hand back the same action.
            let replay = self.submit(&body, Some(key)).await?;
            if replay.id == submitted.id {
                tracing::info!(id = %replay.id, "{} retried with the same Idempotency-Key: the same action came back", self.name());
            } else {
                tracing::warn!(first = %submitted.id, replay = %replay.id, "{}: a retry with the same Idempotency-Key created a second action", self.name());
            }
        }

        if submitted.status != "pending" {
            return Ok(());
        }
        if rng.gen_bool(0.05) {
            // The customer withdraws before anyone decides.
            let delay = Duration::from_secs_f64(rng.gen_range(3.0..15.0));
            let agent = self.clone();
            let (id, summary) = (submitted.id, proposal.summary);
            tasks.spawn(async move {
                let mut stop = agent.stop.clone();
                tokio::select! {
                    _ = tokio::time::sleep(delay) => agent.cancel(&id, &summary).await,
                    _ = until_stopped(&mut stop) => {}
                }
            });
        } else if rng.gen_bool(0.3) {
            // Only as many waits as the budget allows; the rest are fire-and-forget.
            if let Ok(permit) = self.watchers.clone().try_acquire_owned() {
                let agent = self.clone();
                let (id, summary) = (submitted.id, proposal.summary);
                tasks.spawn(async move {
                    let mut stop = agent.stop.clone();
                    tokio::select! {
                        _ = agent.watch(&id, &summary) => {}
                        _ = until_stopped(&mut stop) => {}
                    }
                    drop(permit);
                });
            }
        }
        Ok(())
    }

    async fn submit(&self, body: &Value, key: Option<&str>) -> Result<Submitted, RequestFailed> {
        let mut req = self
            .http
            .post(format!("{}/v1/actions", self.base))
            .bearer_auth(&self.token)
            .json(body);
        if let Some(key) = key {
            req = req.header("Idempotency-Key", key);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| RequestFailed(format!("POST /v1/actions: {e}")))?;
        read_json(resp, "POST /v1/actions").await
    }

    /// Long-poll until the action is final, then log how it ended.
    async fn watch(&self, id: &str, summary: &str) {
        for _ in 0..WATCH_ROUNDS {
            let resp = self
                .http
                .get(format!("{}/v1/actions/{id}?wait=30", self.base))
                .bearer_auth(&self.token)
                .timeout(Duration::from_secs(45))
                .send()
                .await;
            let path = format!("GET /v1/actions/{id}");
            let state: ActionState = match resp {
                Ok(resp) => match read_json(resp, &path).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!("{}: {e}", self.name());
                        return;
                    }
                },
                Err(e) => {
                    tracing::warn!("{}: {path}: {e}", self.name());
                    return;
                }
            };
            if state.status == "pending" {
                continue;
            }
            // "approved by alice and admin", "rejected (timeout)", "approved with edits by alice".
            let outcome = match &state.decision {
                Some(d) if d.by.is_empty() || d.verdict == "timeout" || d.verdict == "cancel" => {
                    format!("{} ({})", state.status, d.verdict)
                }
                Some(d) => format!(
                    "{}{} by {}{}",
                    state.status,
                    if d.verdict == "edit" {
                        " with edits"
                    } else {
                        ""
                    },
                    d.by.join(" and "),
                    d.comment
                        .as_deref()
                        .map(|c| format!(": {c:?}"))
                        .unwrap_or_default()
                ),
                None => state.status.clone(),
            };
            tracing::info!(
                id = %id,
                "{} heard back: {summary} -> {outcome}",
                self.name()
            );
            return;
        }
        tracing::info!(
            id = %id,
            "still pending after {} s; no longer waiting: {summary}",
            WATCH_ROUNDS * 30
        );
    }

    async fn cancel(&self, id: &str, summary: &str) {
        let path = format!("POST /v1/actions/{id}/cancel");
        let resp = self
            .http
            .post(format!("{}/v1/actions/{id}/cancel", self.base))
            .bearer_auth(&self.token)
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                tracing::info!(
                    id = %id,
                    "{} cancelled (the customer withdrew): {summary}",
                    self.name()
                );
            }
            Ok(r) if r.status() == reqwest::StatusCode::CONFLICT => {
                tracing::info!(
                    id = %id,
                    "{} was too late to cancel, already decided: {summary}",
                    self.name()
                );
            }
            Ok(r) => match read_json::<Value>(r, &path).await {
                Ok(_) => {}
                Err(e) => tracing::warn!("{}: {e}", self.name()),
            },
            Err(e) => tracing::warn!("{}: {path}: {e}", self.name()),
        }
    }
}

/// The body of a successful response as `T`, or the API's error message.
async fn read_json<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    what: &str,
) -> Result<T, RequestFailed> {
    let status = resp.status();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| RequestFailed(format!("{what}: reading the response: {e}")))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<Value>(&bytes)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        return Err(RequestFailed(format!("{what}: {status}: {message}")));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| RequestFailed(format!("{what}: unexpected response: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopgate_domain::policy::{Outcome, PolicyInput, Routing, SubjectKind};

    fn route(
        policy: &Policy,
        name: &str,
        arguments: Value,
        confidence: Option<f64>,
        tier: &str,
    ) -> Routing {
        let context = json!({"customer": {"id": "cus_1", "tier": tier}, "channel": "chat"});
        policy.evaluate(&PolicyInput {
            kind: SubjectKind::Action,
            action_name: name,
            arguments: &arguments,
            message_text: "",
            confidence,
            context: &context,
            agent: "support-bot",
            conversation_state: "",
            conversation_turns: 0,
        })
    }

    #[test]
    fn the_demo_policy_parses_and_routes_as_its_comments_say() {
        let policy = match Policy::parse(POLICY) {
            Ok(p) => p,
            Err(errors) => panic!("demo/policy.toml: {errors:?}"),
        };
        assert_eq!(policy.rules().len(), 9);

        let r = route(
            &policy,
            "delete_customer_data",
            json!({"customer_id": "cus_1"}),
            Some(0.99),
            "vip",
        );
        assert_eq!(r.outcome, Outcome::Block);

        let r = route(&policy, "close_account", json!({}), Some(0.99), "standard");
        assert_eq!(
            (r.outcome, r.queue.as_str(), r.approvals),
            (Outcome::Review, "accounts", 2)
        );
        assert_eq!(r.on_timeout.as_str(), "escalate");
        assert!(r.timeout.is_some());

        let r = route(
            &policy,
            "issue_refund",
            json!({"amount": 612.4}),
            Some(0.95),
            "vip",
        );
        assert_eq!(
            (r.outcome, r.queue.as_str(), r.approvals),
            (Outcome::Review, "finance", 2)
        );
        assert_eq!(r.on_timeout.as_str(), "reject");

        let r = route(
            &policy,
            "issue_refund",
            json!({"amount": 150}),
            Some(0.95),
            "vip",
        );
        assert_eq!(r.outcome, Outcome::Approve);
        let r = route(
            &policy,
            "issue_refund",
            json!({"amount": 150}),
            Some(0.95),
            "standard",
        );
        assert_eq!(
            (r.outcome, r.queue.as_str(), r.approvals),
            (Outcome::Review, "finance", 1)
        );
        let r = route(
            &policy,
            "issue_refund",
            json!({"amount": 20}),
            Some(0.95),
            "standard",
        );
        assert_eq!((r.outcome, r.sample), (Outcome::Approve, 0.05));

        let r = route(&policy, "lookup_order", json!({}), Some(0.3), "standard");
        assert_eq!(
            (r.outcome, r.queue.as_str(), r.priority),
            (Outcome::Review, "triage", 10)
        );
        let r = route(&policy, "lookup_order", json!({}), None, "standard");
        assert_eq!(r.queue, "triage", "no confidence counts as unsure");

        let r = route(&policy, "change_address", json!({}), Some(0.85), "standard");
        assert_eq!((r.outcome, r.queue.as_str()), (Outcome::Review, "accounts"));
        let r = route(&policy, "change_address", json!({}), Some(0.95), "standard");
        assert_eq!(r.outcome, Outcome::Approve);

        let external = json!({"to": "sam.ward@example.com", "subject": "s", "body": "b"});
        let r = route(
            &policy,
            "send_email",
            external.clone(),
            Some(0.7),
            "standard",
        );
        assert_eq!((r.outcome, r.queue.as_str()), (Outcome::Review, "comms"));
        let r = route(&policy, "send_email", external, Some(0.9), "standard");
        assert_eq!(r.outcome, Outcome::Approve);
        let internal =
            json!({"to": "disputes@northwind-bank.example", "subject": "s", "body": "b"});
        let r = route(&policy, "send_email", internal, Some(0.7), "standard");
        assert_eq!(r.outcome, Outcome::Approve);
    }

    #[test]
    fn the_sample_loads_with_every_intent_the_agents_map() {
        let messages = match Messages::parse(MESSAGES_CSV) {
            Ok(m) => m,
            Err(e) => panic!("{e:#}"),
        };
        assert!(
            (1000..=1500).contains(&messages.len()),
            "{} rows",
            messages.len()
        );
        assert_eq!(messages.intents(), 77);
        for intent in REFUND_INTENTS
            .iter()
            .chain(&["edit_personal_details", "terminate_account"])
        {
            assert!(messages.by_intent.contains_key(*intent), "{intent} missing");
        }
        assert!(
            messages.all.iter().any(|m| m.text.contains(',')),
            "quoted fields with commas"
        );
    }

    #[test]
    fn csv_handles_quotes_commas_line_breaks_and_crlf() {
        let rows = parse_csv("a,b\r\n\"x, \"\"y\"\"\nz\",2\n\n,\n\"\",last").unwrap_or_default();
        assert_eq!(
            rows,
            vec![
                vec!["a".to_owned(), "b".to_owned()],
                vec!["x, \"y\"\nz".to_owned(), "2".to_owned()],
                vec![String::new(), String::new()],
                vec![String::new(), "last".to_owned()],
            ]
        );
        assert!(parse_csv("\"open").is_err());
        assert!(parse_csv("a\"b").is_err());
        assert!(parse_csv("\"a\"b").is_err());
    }

    #[test]
    fn proposals_are_well_formed() {
        let messages = match Messages::parse(MESSAGES_CSV) {
            Ok(m) => m,
            Err(e) => panic!("{e:#}"),
        };
        let policy = match Policy::parse(POLICY) {
            Ok(p) => p,
            Err(errors) => panic!("{errors:?}"),
        };
        let mut rng = StdRng::seed_from_u64(7);
        let mut names = std::collections::BTreeSet::new();
        let mut outcomes = std::collections::BTreeSet::new();
        for i in 0..2000 {
            let profile = if i % 2 == 0 {
                Profile::Support
            } else {
                Profile::Ops
            };
            let p = propose(profile.pick(&messages, &mut rng), &mut rng);
            assert!(p.arguments.is_object() && p.context.is_object());
            assert!(p.context["customer_message"]
                .as_str()
                .is_some_and(|s| !s.is_empty()));
            assert!(p.confidence.is_none_or(|c| (0.0..=1.0).contains(&c)));
            names.insert(p.name);
            let routing = policy.evaluate(&PolicyInput {
                kind: SubjectKind::Action,
                action_name: p.name,
                arguments: &p.arguments,
                message_text: "",
                confidence: p.confidence,
                context: &p.context,
                agent: profile.name(),
                conversation_state: "",
                conversation_turns: 0,
            });
            // Every proposal is decided by a named rule, never by an evaluation error.
            assert!(routing.rule.is_some(), "{p:?}: {}", routing.reason);
            outcomes.insert(routing.outcome.as_str());
        }
        let expected = [
            "change_address",
            "close_account",
            "delete_customer_data",
            "issue_refund",
            "lookup_order",
            "send_email",
        ];
        assert_eq!(names.into_iter().collect::<Vec<_>>(), expected);
        assert_eq!(
            outcomes.into_iter().collect::<Vec<_>>(),
            ["approve", "block", "review"]
        );
    }

    #[test]
    fn unspecified_listen_addresses_are_reached_over_loopback() {
        let any: SocketAddr = "0.0.0.0:7800".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(reachable(any).to_string(), "127.0.0.1:7800");
        let v6: SocketAddr = "[::]:7800".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(reachable(v6).to_string(), "[::1]:7800");
    }
}
