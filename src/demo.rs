//! `loopgate demo`: the server over a `demo` workspace with a realistic policy, fresh tokens and
//! three simulated agents producing steady, varied traffic, so the queues fill like real life:
//! two propose actions, the third (`chat-bot`) holds live conversations with customers.
//!
//! The agents are ordinary API clients: they talk to the server over HTTP through
//! `loopgate-client` with their own agent tokens, exactly as a customer's code would, so the demo
//! exercises the real path (auth, policy, store, long-polls) and nothing in it is special-cased.
//! Their customers' words are real support messages from BANKING77 (see `demo/README.md` for the
//! credit).
//!
//! Two simulated reviewers ([`reviewers`]) decide a share of the queues over the same API, and a
//! backlog of past work ([`history`]) is recorded at start, so the learning loop (`tune`,
//! `policy backtest`, the `threshold = "auto"` rule, the stats page's calibration) has evidence
//! within a minute.

use anyhow::{anyhow, Context};
use loopgate_client::{
    Action, Client, Conversation, Escalation, JsonObject, Message as ChatMessage, NewAction,
    Role as ChatRole,
};
use loopgate_domain::auth::Role;
use loopgate_domain::policy::Policy;
use loopgate_store::{Store, StoreError};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

pub mod history;
mod reviewers;

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
const KEYS: [(&str, Role); 7] = [
    ("support-bot", Role::Agent),
    ("ops-bot", Role::Agent),
    (CHAT_BOT, Role::Agent),
    ("alice", Role::Reviewer),
    ("admin", Role::Admin),
    (reviewers::NAMES[0], Role::Reviewer),
    (reviewers::NAMES[1], Role::Reviewer),
];

/// How often the server recomputes `threshold = "auto"` rules in the demo: often, so progressive
/// autonomy shows within minutes (a real deployment's default is 10 minutes).
const AUTONOMY_INTERVAL: Duration = Duration::from_secs(60);

/// The demo policy's `threshold = "auto"` rule: order look-ups run unreviewed above a confidence
/// the server tunes from evidence.
const AUTO_RULE: &str = "confident order look-ups run";

/// Mail to this domain stays inside the bank; the policy treats anything else as external.
const INTERNAL_DOMAIN: &str = "northwind-bank.example";

/// Long-polls open at once per agent: enough to show decisions arriving, few enough that an
/// unattended demo does not pile up connections.
const WATCHERS_PER_AGENT: usize = 6;

/// Rounds of `?wait=30` a watcher spends on one action before it stops caring.
const WATCH_ROUNDS: u32 = 6;

/// The simulated agent that holds conversations.
const CHAT_BOT: &str = "chat-bot";

/// Conversations the chat bot is actively holding at once: enough for a lively live view.
const CHATS_AT_ONCE: usize = 10;

/// Conversations handed to a human that the chat bot still looks in on now and then, to close them
/// once the human is done. Beyond this it leaves them to the humans.
const CHATS_FOLLOWED_UP: usize = 30;

/// Looks, about half a minute apart, at a conversation waiting for a human before leaving it be.
const FOLLOW_UP_ROUNDS: u32 = 10;

/// How long an agent's request may take before it gives up and tries again later. Long-polls get
/// their wait on top.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Run the demo until Ctrl-C or SIGTERM, first recording `history` past items (unless the
/// database already holds that much evidence).
pub async fn run(url: &str, listen: SocketAddr, history: usize) -> anyhow::Result<()> {
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
    let mut setup = prepare(store.as_ref()).await?;
    // A database from an earlier run has its history already: do not pile on another.
    let recorded = store
        .count_evidence(WORKSPACE, &loopgate_store::EvidenceFilter::default(), 0)
        .await
        .context("cannot count the recorded items")?;
    setup.history = if recorded >= history as u64 {
        History::Present(recorded)
    } else {
        History::Recording(history)
    };
    let base = format!("http://{}", reachable(addr));
    println!("{}", banner(&base, url, &setup));

    // Agents stop first, then the server, so no agent request is cut off by the server going away.
    let (stop_agents, agents_stopping) = watch::channel(false);
    let (stop_server, server_stopping) = watch::channel(false);
    let config = loopgate_server::Config {
        autonomy_interval: Some(AUTONOMY_INTERVAL),
        ..loopgate_server::Config::default()
    };
    let mut server = tokio::spawn(loopgate_server::run(
        listener,
        store,
        config,
        stopped(server_stopping),
    ));

    // Each agent has its own client, with its own key's token.
    let client_for = |name: &str| -> anyhow::Result<Client> {
        Ok(Client::new(&base, &setup.token(name)?)
            .with_context(|| format!("cannot make {name}'s API client"))?
            .with_timeout(REQUEST_TIMEOUT))
    };
    let mut agents = JoinSet::new();
    for profile in [Profile::Support, Profile::Ops] {
        let agent = Agent {
            profile,
            client: client_for(profile.name())?,
            messages: messages.clone(),
            watchers: Arc::new(Semaphore::new(WATCHERS_PER_AGENT)),
            stop: agents_stopping.clone(),
        };
        agents.spawn(agent.run());
    }
    let chat_bot = ChatBot {
        client: client_for(CHAT_BOT)?,
        messages: messages.clone(),
        active: Arc::new(Semaphore::new(CHATS_AT_ONCE)),
        followed: Arc::new(Semaphore::new(CHATS_FOLLOWED_UP)),
        stop: agents_stopping.clone(),
    };
    agents.spawn(chat_bot.run());

    let reviewer_for = |name: &'static str| -> anyhow::Result<reviewers::ReviewerApi> {
        reviewers::ReviewerApi::new(name, &base, setup.token(name)?)
            .with_context(|| format!("cannot make {name}'s HTTP client"))
    };
    for name in reviewers::NAMES {
        agents.spawn(reviewers::run(reviewer_for(name)?, agents_stopping.clone()));
    }
    if let History::Recording(size) = setup.history {
        let recorders = history::Recorders {
            support: client_for(Profile::Support.name())?,
            ops: client_for(Profile::Ops.name())?,
            chat: client_for(CHAT_BOT)?,
            reviewers: [
                reviewer_for(reviewers::NAMES[0])?,
                reviewer_for(reviewers::NAMES[1])?,
            ],
        };
        agents.spawn(history::record(
            recorders,
            messages.clone(),
            size,
            agents_stopping.clone(),
        ));
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

/// The backlog of past work at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum History {
    /// This many past items are being recorded now.
    Recording(usize),
    /// The database already holds this many recorded items (an earlier run's).
    Present(u64),
}

/// What the banner reports about the set-up.
struct Setup {
    history: History,
    policy_version: i64,
    rules: usize,
    tokens: Vec<Token>,
    /// Per user: whether this run created it (false: it existed, its password is unchanged).
    users: Vec<(&'static str, Role, &'static str, bool)>,
}

impl Setup {
    /// The token created for the key `name`.
    fn token(&self, name: &str) -> anyhow::Result<String> {
        self.tokens
            .iter()
            .find(|t| t.name == name)
            .map(|t| t.token.clone())
            .ok_or_else(|| anyhow!("no token for {name}"))
    }
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
        history: History::Recording(0),
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
        "  Console   {base}/   (sign in as a console user below, workspace demo)"
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
            "  {:<14} {:<9} {}",
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
    line(
        "Simulated agents support-bot and ops-bot are submitting actions now, and chat-bot is"
            .to_owned(),
    );
    line("chatting with customers (its answers go through the message rules); Ctrl-C stops the demo.".to_owned());
    line(String::new());
    let [first, second] = reviewers::NAMES;
    let queues: Vec<String> = reviewers::QUEUES
        .iter()
        .map(|(queue, _, kind)| match kind {
            Some(kind) => format!("{queue} ({kind}s only)"),
            None => (*queue).to_owned(),
        })
        .collect();
    let (last, rest) = queues
        .split_last()
        .map_or((String::new(), &[][..]), |(l, r)| (l.clone(), r));
    let history = match setup.history {
        History::Recording(n) => format!(
            "History: {n} past items (actions and chats, their reviews decided) are being recorded now,"
        ),
        History::Present(n) => format!(
            "History: the database holds {n} recorded items from earlier runs (none added),"
        ),
    };
    for paragraph in [
        format!(
            "Simulated reviewers {first} and {second} decide a share of the work at a human pace in the {} and \
             {last} queues, always leaving the newest {} of each for you; escalated chats (specialists, \
             compliance) are all yours. Like careful people, they find what the AI was sure about mostly \
             right and what it was unsure about often wrong (rejected, edited, graded incorrect): the \
             evidence the learning loop learns from.",
            rest.join(", "),
            reviewers::LEFT_FOR_HUMANS
        ),
        format!("{history} so the learning loop has evidence within a minute."),
        format!(
            "Progressive autonomy: the rule \"{AUTO_RULE}\" has threshold = \"auto\": every {} s the \
             server re-tunes it from the evidence (target accuracy 0.95), and look-ups above it run \
             unreviewed.",
            AUTONOMY_INTERVAL.as_secs()
        ),
    ] {
        for l in wrap(&paragraph, 100) {
            line(l);
        }
    }
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
    line("  # 4. as alice, list the live conversations (most recently active first)".to_owned());
    line(format!(
        "  curl -s '{base}/v1/conversations?state=open' -H 'Authorization: Bearer {alice}'"
    ));
    line("  # 5. take over the chat chat-bot touched last: its next answer there is refused with 409".to_owned());
    line(format!(
        "  CONVERSATION_ID=$(curl -s '{base}/v1/conversations?state=ai&limit=1' -H 'Authorization: Bearer {alice}' | grep -o '\"id\":\"[^\"]*\"' | head -n1 | cut -d'\"' -f4); echo \"$CONVERSATION_ID\""
    ));
    line(format!(
        "  curl -s -X POST \"{base}/v1/conversations/$CONVERSATION_ID/takeover\" -H 'Authorization: Bearer {alice}' -H 'Content-Type: application/json' -d '{{\"reason\":\"spot check\"}}'"
    ));
    line("  # 6. answer the customer as a human, then hand the chat back to the bot".to_owned());
    line(format!(
        "  curl -s -X POST \"{base}/v1/conversations/$CONVERSATION_ID/messages\" -H 'Authorization: Bearer {alice}' -H 'Content-Type: application/json' -d '{{\"role\":\"human\",\"text\":\"Hello, this is Alice from Northwind Bank. I will take it from here.\"}}'"
    ));
    line(format!(
        "  curl -s -X POST \"{base}/v1/conversations/$CONVERSATION_ID/handback\" -H 'Authorization: Bearer {alice}'"
    ));
    line(String::new());
    let admin = token_of("admin");
    line("The learning loop (give the history a minute):".to_owned());
    line("  # 7. the lowest confidence threshold that keeps accuracy at 95%, and how much would then run alone".to_owned());
    line(format!(
        "  loopgate tune --target-accuracy 0.95 --database {database} --workspace {WORKSPACE}"
    ));
    line(format!(
        "  curl -s '{base}/v1/tune?target_accuracy=0.95' -H 'Authorization: Bearer {alice}'"
    ));
    line("  # 8. replay the recorded work through a candidate policy with lower thresholds: what it would".to_owned());
    line("  #    automate, and the known-bad items it would let through (demo/candidate.toml in the source tree)".to_owned());
    line(format!(
        "  loopgate policy backtest demo/candidate.toml --database {database} --workspace {WORKSPACE}"
    ));
    line(format!(
        "  curl -s -X POST '{base}/v1/policy/backtest' -H 'Authorization: Bearer {admin}' -H 'Content-Type: application/toml' --data-binary @demo/candidate.toml"
    ));
    line(format!(
        "  # 9. the auto threshold of \"{AUTO_RULE}\" as the server has tuned it so far"
    ));
    line(format!(
        "  curl -s '{base}/v1/policy/thresholds' -H 'Authorization: Bearer {admin}'"
    ));
    line("  # 10. the stats page: automation, overrides, accuracy per confidence band (calibration), per agent and action".to_owned());
    line(format!("  {base}/stats   (sign in as admin)"));
    out
}

/// `text` as lines of at most `width` characters, broken at spaces (a longer word stands alone).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut current = String::new();
    for word in text.split_whitespace() {
        if !current.is_empty() && current.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut current));
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(word);
    }
    if !current.is_empty() {
        lines.push(current);
    }
    lines
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

    /// "Maya Chen (cus_12345, plus)", for the log.
    fn describe(&self) -> String {
        format!("{} {} ({}, {})", self.first, self.last, self.id, self.tier)
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
    let mut tags = topic_tags(intent);
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

/// The topics of an intent, most specific first; `general` when none fits. Never empty.
fn topic_tags(intent: &str) -> Vec<&'static str> {
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

/// A `json!({...})` literal as the JSON object it is (anything else, which no caller passes, as an
/// empty object).
fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

/// A simulated agent: an ordinary API client with its own token.
struct Agent {
    profile: Profile,
    client: Client,
    messages: Arc<Messages>,
    watchers: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

/// What went wrong with one request; logged, never fatal.
#[derive(Debug)]
struct RequestFailed(String);

impl RequestFailed {
    /// `what` (`POST /v1/actions`) failed with the client's `error`.
    fn new(what: &str, error: &loopgate_client::Error) -> RequestFailed {
        RequestFailed(format!("{what}: {error}"))
    }
}

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
        let mut action = NewAction::new(proposal.name, object(proposal.arguments))
            .context(object(proposal.context));
        action.confidence = proposal.confidence;
        // A third of submissions are idempotent, as a careful agent framework's would be.
        let key = rng
            .gen_bool(0.35)
            .then(|| format!("{}-{}", self.name(), uuid::Uuid::new_v4()));
        let submitted = self.submit(&action, key.as_deref()).await?;
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
                .or(Some(submitted.reason.as_str()).filter(|r| !r.is_empty()))
                .unwrap_or("no rule matched")
        );

        if let Some(key) = key.as_deref().filter(|_| rng.gen_bool(0.1)) {
            // A retry after a lost response: the server must hand back the same action.
            let replay = self.submit(&action, Some(key)).await?;
            if replay.id == submitted.id {
                tracing::info!(id = %replay.id, "{} retried with the same Idempotency-Key: the same action came back", self.name());
            } else {
                tracing::warn!(first = %submitted.id, replay = %replay.id, "{}: a retry with the same Idempotency-Key created a second action", self.name());
            }
        }

        if submitted.status.is_final() {
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

    async fn submit(&self, action: &NewAction, key: Option<&str>) -> Result<Action, RequestFailed> {
        self.client
            .submit(action, key)
            .await
            .map_err(|e| RequestFailed::new("POST /v1/actions", &e))
    }

    /// Long-poll until the action is final, then log how it ended.
    async fn watch(&self, id: &str, summary: &str) {
        for _ in 0..WATCH_ROUNDS {
            let state = match self.client.poll(id, Duration::from_secs(30)).await {
                Ok(state) => state,
                Err(e) => {
                    let failed = RequestFailed::new(&format!("GET /v1/actions/{id}"), &e);
                    tracing::warn!("{}: {failed}", self.name());
                    return;
                }
            };
            if !state.status.is_final() {
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
                None => state.status.to_string(),
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
        match self.client.cancel(id).await {
            Ok(_) => {
                tracing::info!(
                    id = %id,
                    "{} cancelled (the customer withdrew): {summary}",
                    self.name()
                );
            }
            Err(e) if e.status() == Some(409) => {
                tracing::info!(
                    id = %id,
                    "{} was too late to cancel, already decided: {summary}",
                    self.name()
                );
            }
            Err(e) => {
                let failed = RequestFailed::new(&format!("POST /v1/actions/{id}/cancel"), &e);
                tracing::warn!("{}: {failed}", self.name());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The chat bot: live conversations

/// Canned answers per topic (the first of [`topic_tags`]), as a retrieval-backed support bot would
/// give them. None touches a sensitive topic: only the scripted turns of [`SENSITIVE_TURNS`] and
/// the front end's tags send a conversation to the specialists or compliance.
const ANSWERS: &[(&str, &[&str])] = &[
    ("refunds", &[
        "I can see why that's frustrating. Refunds from merchants usually reach your account within 5 working days; if it still isn't there after that, reply here and I'll raise it with our payments team.",
        "Thanks for flagging this. I've opened a dispute with the merchant for you, and you'll get an update in the app within 2 working days.",
        "If you were charged twice, the second payment is usually a pending authorisation that drops off by itself within 3 to 5 days. If it has already settled, I can start a chargeback for you.",
    ]),
    ("cards", &[
        "New cards normally arrive within 3 to 5 working days of being ordered. You can follow the delivery under Card > Track delivery in the app.",
        "Sorry your card isn't working. Please check it isn't frozen under Card > Settings; if it isn't, I can send you a free replacement today.",
        "Card payments can be declined when online payments are switched off or the merchant is in a blocked category. You can change both under Card > Security.",
    ]),
    ("transfers", &[
        "Transfers between UK accounts usually arrive within 2 hours; international transfers can take 1 to 3 working days depending on the country.",
        "Your transfer is still pending while the receiving bank checks it. It will either complete or come back to you within 1 working day.",
        "A transfer to the wrong account can be recalled if the money hasn't been collected yet. Open the payment in the app and choose 'Report a problem', and we'll contact the receiving bank.",
    ]),
    ("top-ups", &[
        "Top-ups by debit card are instant; bank transfers can take up to 1 working day. A card top-up that shows as pending usually clears within an hour.",
        "Top-ups can fail when the card's bank blocks the payment. Please try again, or top up by bank transfer with the details under Account > Top up.",
    ]),
    ("fx", &[
        "We use the interbank exchange rate, with a small markup at weekends. You can see the exact rate in the app before you confirm any exchange.",
        "Card payments in another currency are converted at the rate on the day the payment settles, which is why the final amount can differ slightly from what you saw at the till.",
    ]),
    ("kyc", &[
        "To verify your identity we need a photo of your passport or driving licence and a quick selfie. Checks usually take a few minutes, occasionally up to 24 hours.",
        "Your verification is still in progress. If we need anything else we will message you in the app; there's nothing you need to do right now.",
    ]),
    ("cash", &[
        "Cash withdrawals are free up to 200 GBP a month; after that a 2% fee applies. You can see what you have left under Account > Allowances.",
        "If the cash machine gave you the wrong amount, send me the date, time and place of the withdrawal and I'll open a claim with its operator.",
    ]),
    ("security", &[
        "I've frozen your card as a precaution so nobody can use it. You can order a replacement in the app and dispute any payment you don't recognise from there.",
        "For your security we never ask for your PIN or full card number. You can see your PIN in the app under Card > Show PIN once you've confirmed it's you.",
    ]),
    ("account", &[
        "You can update your personal details under Profile > Personal details. Some changes, like your name, need a photo of an ID document.",
        "I'm sorry to hear you'd like to leave. Please move any remaining balance out first; you can then close the account under Profile > Close account.",
    ]),
    ("general", &[
        "Thanks for getting in touch. You'll find this under Help in the app, and I'm happy to walk you through it step by step.",
        "Good question. Our help centre covers this under Account > Help > Payments; would you like me to send you the link?",
        "I've had a look and everything on your account appears to be in order. Is there anything specific you'd like me to check?",
    ]),
];

/// A customer's turn on a sensitive topic and the bot's answer to it: `(topic, customer, answer)`.
/// The answers' wording is what the policy's sensitive-topic rules recognise in `message.text`.
const SENSITIVE_TURNS: [(&str, &str, &str); 8] = [
    (
        "medical",
        "I've just come out of hospital and missed some payments. I'm really worried about it.",
        "I'm sorry you've been in hospital. We can pause some payments while you recover; let me check what's possible on your account.",
    ),
    (
        "medical",
        "I'm on strong medication at the moment and I don't remember making these payments.",
        "Thank you for telling me. If your medication may have affected these payments, we can go through them together and pause your card meanwhile.",
    ),
    (
        "legal",
        "My solicitor says you are liable for this and I want your answer in writing.",
        "Understood. I've noted that your solicitor is involved, and you will get a written answer on liability from the right team.",
    ),
    (
        "legal",
        "If this isn't fixed today I'm taking you to court.",
        "I'm sorry it has come to this. I'd like a colleague to look at your case before any legal steps, so that nothing is missed.",
    ),
    (
        "legal",
        "My mother can't manage her money any more and I have power of attorney. How do I run her account?",
        "Thank you for letting us know. With a registered power of attorney you can manage the account for her; I'll explain how we add you.",
    ),
    (
        "financial advice",
        "Should I move my savings into crypto or keep them here?",
        "I can't recommend one over the other, but many customers keep an emergency fund in savings and only put money they can spare into crypto or other investments.",
    ),
    (
        "financial advice",
        "Is it better to pay off my credit card or put the money into my pension?",
        "Paying off expensive debt first is often sensible, but whether a pension payment makes more sense depends on your situation.",
    ),
    (
        "financial advice",
        "Once the refund arrives, would stocks be a good idea for it?",
        "Whether stocks suit you depends on your goals and how long you can leave the money alone. Here are some things to weigh up.",
    ),
];

/// A customer's everyday follow-up and the bot's answer to it.
const FOLLOW_UPS: [(&str, &str); 4] = [
    (
        "Thanks. How long will that take?",
        "Usually 1 to 3 working days. I'll keep this chat open in case you have more questions.",
    ),
    (
        "I already tried that and it still doesn't work.",
        "Sorry about that. I've added a note to your account so the team can see what you've already tried, and they'll be in touch.",
    ),
    (
        "OK, and is there a fee for that?",
        "There's no fee for that on your current plan.",
    ),
    (
        "Can I do that in the app?",
        "Yes: everything I described is in the app, and the Help tab walks you through it.",
    ),
];

const THUMBS_DOWN: [&str; 5] = [
    "That didn't answer my question.",
    "I already tried that, it doesn't help.",
    "Too generic. I need a real answer.",
    "There is no such menu in my app.",
    "Wrong: this is not what I asked about.",
];

const THUMBS_UP: [&str; 3] = ["Quick and clear, thanks!", "That solved it.", "Helpful."];

const GOODBYES: [&str; 4] = [
    "Thanks, that's all!",
    "Great, thank you.",
    "OK, bye.",
    "Perfect, cheers.",
];

/// One conversation the chat bot will hold, decided up front (so it can be checked without a
/// server); what the server answers decides how much of it happens.
#[derive(Debug, Clone)]
struct ChatPlan {
    external_id: String,
    context: Value,
    /// Who, about what: for the log.
    summary: String,
    first_name: &'static str,
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
enum Step {
    /// Someone is typing.
    Pause(Duration),
    /// The customer writes.
    User(String),
    /// The bot answers; if the answer reaches the customer, they may rate it.
    Ai {
        text: String,
        confidence: f64,
        rating: Option<Rating>,
    },
    /// The bot hands the conversation to a human by itself.
    Escalate {
        reason: &'static str,
        queue: &'static str,
        priority: i64,
    },
    /// The customer is done.
    Close { reason: &'static str },
}

/// An end user's thumbs-up or thumbs-down on an answer they saw.
#[derive(Debug, Clone)]
struct Rating {
    up: bool,
    comment: &'static str,
    /// How long the customer takes to click.
    after: Duration,
}

fn secs(rng: &mut impl Rng, from: f64, to: f64) -> Duration {
    Duration::from_secs_f64(rng.gen_range(from..to))
}

/// The customer typing a message.
fn typing(rng: &mut impl Rng) -> Step {
    Step::Pause(secs(rng, 3.0, 8.0))
}

/// The bot working out an answer.
fn thinking(rng: &mut impl Rng) -> Step {
    Step::Pause(secs(rng, 1.0, 3.0))
}

/// The bot's confidence in an everyday answer: mostly sure, some middling, a tail of unsure ones.
fn answer_confidence(rng: &mut impl Rng) -> f64 {
    let r: f64 = rng.gen();
    let c = if r < 0.55 {
        rng.gen_range(0.85..0.99)
    } else if r < 0.85 {
        rng.gen_range(0.6..0.85)
    } else {
        rng.gen_range(0.2..0.6)
    };
    (c * 100.0_f64).round() / 100.0
}

/// The canned answers on `topic`.
fn answers_on(topic: &str) -> &'static [&'static str] {
    ANSWERS
        .iter()
        .find(|(t, _)| *t == topic)
        .or_else(|| ANSWERS.last())
        .map_or(&[], |(_, answers)| *answers)
}

/// The customer's rating, if any: middling answers disappoint more often.
fn rating(confidence: f64, rng: &mut impl Rng) -> Option<Rating> {
    let down = if confidence < 0.8 { 0.25 } else { 0.08 };
    let r: f64 = rng.gen();
    let (up, comments): (bool, &[&'static str]) = if r < down {
        (false, &THUMBS_DOWN)
    } else if r < down + 0.1 {
        (true, &THUMBS_UP)
    } else {
        return None;
    };
    Some(Rating {
        up,
        comment: comments.choose(rng).copied().unwrap_or("-"),
        after: secs(rng, 2.0, 6.0),
    })
}

/// An everyday answer on `topic`.
fn answer(topic: &str, rng: &mut impl Rng) -> Step {
    let confidence = answer_confidence(rng);
    // An unsure bot has often misread the question: half its unsure answers are on another topic,
    // which is what the reviewer of the held draft is there to catch.
    let topic = if confidence < 0.6 && rng.gen_bool(0.5) {
        ANSWERS.choose(rng).map_or(topic, |(t, _)| *t)
    } else {
        topic
    };
    let text = answers_on(topic)
        .choose(rng)
        .copied()
        .unwrap_or("Thanks for getting in touch; let me look into this for you.");
    Step::Ai {
        text: text.to_owned(),
        confidence,
        rating: rating(confidence, rng),
    }
}

fn ai(text: &str, confidence: f64) -> Step {
    Step::Ai {
        text: text.to_owned(),
        confidence,
        rating: None,
    }
}

/// A conversation for the chat bot: a customer opens with a BANKING77 message, the bot answers,
/// and then, at random: the customer asks for a human, brings up a sensitive topic, asks a
/// follow-up, or is done; a possible fraud is handed to a human straight away.
fn plan_chat(messages: &Messages, rng: &mut impl Rng) -> ChatPlan {
    let opening = messages.any(rng);
    let customer = Customer::random(rng);
    let subject = topic_tags(&opening.intent)
        .first()
        .copied()
        .unwrap_or("general");
    let mut tags = tags(&opening.intent, &opening.text, rng);
    // The chat front end flags some customers: known to be vulnerable, or in a legal dispute.
    let flag: f64 = rng.gen();
    if flag < 0.05 {
        tags.push("medical");
    } else if flag < 0.08 {
        tags.push("legal");
    }
    let context = json!({
        "customer": {"id": customer.id, "tier": customer.tier,
                     "name": format!("{} {}", customer.first, customer.last)},
        "channel": "chat",
        "intent": opening.intent,
        "tags": tags,
        "language": "en",
    });
    let mut plan = ChatPlan {
        external_id: format!("webchat-{}", uuid::Uuid::new_v4().simple()),
        context,
        summary: format!("{} about {}", customer.describe(), topic(&opening.intent)),
        first_name: customer.first,
        steps: vec![Step::User(opening.text.clone()), thinking(rng)],
    };
    let steps = &mut plan.steps;

    if subject == "security" && rng.gen_bool(0.3) {
        steps.push(ai(
            "I'm sorry to hear that. I'm passing this to our fraud team straight away; meanwhile, please don't share any codes with anyone.",
            0.93,
        ));
        steps.push(Step::Pause(secs(rng, 0.5, 1.5)));
        steps.push(Step::Escalate {
            reason: "possible fraud on the account: outside my competence",
            queue: "specialists",
            priority: 7,
        });
        return plan;
    }

    steps.push(answer(subject, rng));
    let path: f64 = rng.gen();
    if path < 0.06 {
        steps.push(typing(rng));
        steps.push(Step::User(
            "Can I talk to a real person, please?".to_owned(),
        ));
        steps.push(thinking(rng));
        steps.push(ai(
            "Of course. I'm passing you to a colleague, who will be with you shortly.",
            0.97,
        ));
        steps.push(Step::Pause(secs(rng, 0.5, 1.5)));
        steps.push(Step::Escalate {
            reason: "customer asks for a human",
            queue: "support",
            priority: 4,
        });
        return plan;
    } else if path < 0.18 {
        let (_, words, reply) = SENSITIVE_TURNS.choose(rng).copied().unwrap_or((
            "financial advice",
            "Should I move my savings into crypto or keep them here?",
            "Some customers put money they can spare into crypto or other investments.",
        ));
        steps.push(typing(rng));
        steps.push(Step::User(words.to_owned()));
        steps.push(thinking(rng));
        steps.push(ai(
            reply,
            (rng.gen_range(0.7..0.95_f64) * 100.0).round() / 100.0,
        ));
    } else if path < 0.5 {
        steps.push(typing(rng));
        if rng.gen_bool(0.5) {
            // Asking again, in other words.
            let again = messages.with_intent(&opening.intent, rng);
            steps.push(Step::User(again.text.clone()));
            steps.push(thinking(rng));
            steps.push(answer(subject, rng));
        } else {
            let (words, reply) = FOLLOW_UPS.choose(rng).copied().unwrap_or(FOLLOW_UPS[0]);
            steps.push(Step::User(words.to_owned()));
            steps.push(thinking(rng));
            let confidence = (rng.gen_range(0.75..0.98_f64) * 100.0).round() / 100.0;
            steps.push(Step::Ai {
                text: reply.to_owned(),
                confidence,
                rating: rating(confidence, rng),
            });
        }
    }

    // The customer reads, perhaps says goodbye, and leaves; now and then much later.
    let linger = if rng.gen_bool(0.15) {
        secs(rng, 40.0, 90.0)
    } else {
        secs(rng, 5.0, 25.0)
    };
    steps.push(Step::Pause(linger));
    if rng.gen_bool(0.4) {
        let bye = GOODBYES.choose(rng).copied().unwrap_or("Thanks.");
        steps.push(Step::User(bye.to_owned()));
        steps.push(Step::Pause(secs(rng, 1.0, 2.0)));
        steps.push(Step::Close { reason: "resolved" });
    } else {
        steps.push(Step::Close {
            reason: "the customer left the chat",
        });
    }
    plan
}

/// Why a chat request did not go through.
#[derive(Debug)]
enum ChatFailure {
    /// 409: the conversation's state forbids it (a human has it, or it is closed).
    Refused(String),
    Failed(RequestFailed),
}

/// How a conversation's scripted part ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChatEnd {
    /// Closed, or given up after an error.
    Done,
    /// A human has it, or must act first: a held draft, an escalation, a takeover.
    WithHuman,
}

/// The simulated chat bot: mirrors customer conversations into Loopgate, as a chatbot developer
/// would, with its own agent token.
struct ChatBot {
    client: Client,
    messages: Arc<Messages>,
    /// Conversations being held right now.
    active: Arc<Semaphore>,
    /// Conversations with a human that the bot looks in on.
    followed: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
}

/// `text` in quotes, cut to a log line's worth.
fn quote(text: &str) -> String {
    let mut short: String = text.chars().take(100).collect();
    if text.chars().count() > 100 {
        short.push('…');
    }
    format!("{short:?}")
}

impl ChatBot {
    /// Open a conversation every few seconds while fewer than [`CHATS_AT_ONCE`] are going on, until
    /// told to stop. Failures are logged and waited out, as the other agents do.
    async fn run(self) {
        let bot = Arc::new(self);
        let mut rng = StdRng::from_entropy();
        let mut stop = bot.stop.clone();
        let mut chats = JoinSet::new();
        let mut failures: u32 = 0;
        // The first conversation starts quickly, so a fresh demo's live view fills at once.
        let mut pause = Duration::from_millis(rng.gen_range(200..800));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = until_stopped(&mut stop) => break,
            }
            while chats.try_join_next().is_some() {}
            pause = secs(&mut rng, 2.0, 5.0);
            let Ok(slot) = bot.active.clone().try_acquire_owned() else {
                // As many conversations as the bot holds at once: wait for one to end.
                continue;
            };
            let plan = plan_chat(&bot.messages, &mut rng);
            let opened = tokio::select! {
                r = bot.open(&plan) => r,
                _ = until_stopped(&mut stop) => break,
            };
            match opened {
                Ok(opened) => {
                    failures = 0;
                    tracing::info!(
                        conversation = %opened.id,
                        "{CHAT_BOT} opened a chat with {}",
                        plan.summary
                    );
                    let bot = bot.clone();
                    chats.spawn(async move {
                        let mut stop = bot.stop.clone();
                        tokio::select! {
                            _ = bot.clone().converse(opened.id, plan, slot) => {}
                            _ = until_stopped(&mut stop) => {}
                        }
                    });
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    tracing::warn!("{CHAT_BOT}: {}", e.describe());
                }
            }
            // Back off while requests fail, up to 30 s, so a stopped server is not hammered.
            pause += Duration::from_secs(u64::from(failures.min(5)) * 6);
        }
        if tokio::time::timeout(Duration::from_secs(2), async {
            while chats.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            chats.abort_all();
        }
    }

    /// Hold one conversation; one that ends up with a human is looked in on later, and closed
    /// once the human is done.
    async fn converse(self: Arc<Self>, id: String, plan: ChatPlan, slot: OwnedSemaphorePermit) {
        let end = self.play(&id, &plan).await;
        drop(slot);
        if end == ChatEnd::WithHuman {
            if let Ok(_following) = self.followed.clone().try_acquire_owned() {
                self.follow_up(&id, &plan).await;
            }
        }
    }

    /// The plan's steps, for as long as the server lets the bot carry on.
    async fn play(&self, id: &str, plan: &ChatPlan) -> ChatEnd {
        let who = plan.first_name;
        for step in &plan.steps {
            match step {
                Step::Pause(d) => tokio::time::sleep(*d).await,
                Step::User(text) => match self.post(id, ChatRole::User, text, None).await {
                    Ok(_) => tracing::info!(conversation = %id, "{who} wrote: {}", quote(text)),
                    Err(e) => return self.stopped_by(id, e),
                },
                Step::Ai {
                    text,
                    confidence,
                    rating,
                } => {
                    let posted = match self.post(id, ChatRole::Ai, text, Some(*confidence)).await {
                        Ok(p) => p,
                        Err(e) => return self.stopped_by(id, e),
                    };
                    let rule = posted.rule.as_deref().unwrap_or("no rule matched");
                    let answered =
                        format!("{CHAT_BOT} answered {who} (confidence {confidence:.2})");
                    match posted.status.as_str() {
                        "delivered" => {
                            tracing::info!(conversation = %id, "{answered} -> delivered: {rule}");
                        }
                        "held" => {
                            tracing::info!(conversation = %id, "{answered} -> held as a draft for review: {rule}");
                            return ChatEnd::WithHuman;
                        }
                        "escalated" => {
                            tracing::info!(conversation = %id, "{answered} -> escalated, {who} waits for a human: {rule}");
                            return ChatEnd::WithHuman;
                        }
                        other => {
                            tracing::warn!(conversation = %id, "{answered} -> unexpected status {other:?}");
                            return ChatEnd::WithHuman;
                        }
                    }
                    if let Some(rating) = rating {
                        tokio::time::sleep(rating.after).await;
                        self.rate(id, &posted.id, who, rating).await;
                    }
                }
                Step::Escalate {
                    reason,
                    queue,
                    priority,
                } => {
                    let escalation = Escalation {
                        reason: Some((*reason).to_owned()),
                        queue: Some((*queue).to_owned()),
                        priority: Some(*priority),
                        timeout: Some("15m".to_owned()),
                    };
                    return match self.client.escalate(id, &escalation).await.map_err(|e| {
                        ChatFailure::new(&format!("POST /v1/conversations/{id}/escalate"), e)
                    }) {
                        Ok(_) => {
                            tracing::info!(conversation = %id, "{CHAT_BOT} handed {who}'s chat to a human ({queue} queue): {reason}");
                            ChatEnd::WithHuman
                        }
                        Err(e) => self.stopped_by(id, e),
                    };
                }
                Step::Close { reason } => return self.close(id, who, reason).await,
            }
        }
        ChatEnd::Done
    }

    /// Log why the bot stops posting to this conversation.
    fn stopped_by(&self, id: &str, failure: ChatFailure) -> ChatEnd {
        match failure {
            ChatFailure::Refused(message) => {
                tracing::info!(conversation = %id, "{CHAT_BOT} stops posting to this chat, refused with 409: {message}");
                ChatEnd::WithHuman
            }
            ChatFailure::Failed(e) => {
                tracing::warn!(conversation = %id, "{CHAT_BOT}: {e}");
                ChatEnd::Done
            }
        }
    }

    async fn close(&self, id: &str, who: &str, reason: &str) -> ChatEnd {
        match self
            .client
            .close_conversation(id, Some(reason))
            .await
            .map_err(|e| ChatFailure::new(&format!("POST /v1/conversations/{id}/close"), e))
        {
            Ok(_) => {
                tracing::info!(conversation = %id, "{CHAT_BOT} closed the chat with {who}: {reason}");
                ChatEnd::Done
            }
            Err(e) => self.stopped_by(id, e),
        }
    }

    /// The customer's thumbs-up or thumbs-down on a delivered answer.
    async fn rate(&self, id: &str, message_id: &str, who: &str, rating: &Rating) {
        let verdict = if rating.up {
            loopgate_client::Rating::Up
        } else {
            loopgate_client::Rating::Down
        };
        match self
            .client
            .feedback(message_id, verdict, Some(rating.comment))
            .await
            .map_err(|e| ChatFailure::new(&format!("POST /v1/messages/{message_id}/feedback"), e))
        {
            Ok(_) if rating.up => {
                tracing::info!(conversation = %id, "{who} gave the answer a thumbs-up: {}", quote(rating.comment));
            }
            Ok(given) => tracing::info!(
                conversation = %id,
                review = given.review_id.as_deref().unwrap_or("-"),
                "{who} gave the answer a thumbs-down: {} -> flag review",
                quote(rating.comment)
            ),
            Err(e) => {
                tracing::warn!(conversation = %id, "{CHAT_BOT}: {who}'s rating was not recorded: {}", e.describe())
            }
        }
    }

    /// Look in on a conversation a human has (or must act on) every half minute or so; once it is
    /// back with the bot and nothing is held, the customer thanks and leaves. Left to the humans
    /// after [`FOLLOW_UP_ROUNDS`] looks.
    async fn follow_up(&self, id: &str, plan: &ChatPlan) {
        let who = plan.first_name;
        let mut rng = StdRng::from_entropy();
        for _ in 0..FOLLOW_UP_ROUNDS {
            tokio::time::sleep(secs(&mut rng, 20.0, 40.0)).await;
            let view = match self
                .client
                .conversation(id)
                .await
                .map_err(|e| ChatFailure::new(&format!("GET /v1/conversations/{id}"), e))
            {
                Ok(v) => v,
                Err(e) => {
                    self.stopped_by(id, e);
                    return;
                }
            };
            let held = view.messages.iter().any(|m| m.status == "held");
            match view.conversation.state.as_str() {
                "closed" => return,
                "ai" if !held => {
                    let thanks = "Thanks for your help!";
                    if let Err(e) = self.post(id, ChatRole::User, thanks, None).await {
                        self.stopped_by(id, e);
                        return;
                    }
                    self.close(id, who, "resolved after a human stepped in")
                        .await;
                    return;
                }
                _ => {}
            }
        }
        tracing::info!(
            conversation = %id,
            "{CHAT_BOT} leaves the chat with {who} to the humans: nobody finished it within {} minutes",
            FOLLOW_UP_ROUNDS / 2
        );
    }

    /// Open the plan's conversation, under its `external_id`.
    async fn open(&self, plan: &ChatPlan) -> Result<Conversation, ChatFailure> {
        self.client
            .open_conversation(Some(&plan.external_id), Some(object(plan.context.clone())))
            .await
            .map_err(|e| ChatFailure::new("POST /v1/conversations", e))
    }

    async fn post(
        &self,
        id: &str,
        role: ChatRole,
        text: &str,
        confidence: Option<f64>,
    ) -> Result<ChatMessage, ChatFailure> {
        self.client
            .post_message(id, role, text, confidence)
            .await
            .map_err(|e| ChatFailure::new(&format!("POST /v1/conversations/{id}/messages"), e))
    }
}

impl ChatFailure {
    /// What a failed request `what` means to the bot: a 409 is told apart, as it means "not
    /// yours to post to now".
    fn new(what: &str, error: loopgate_client::Error) -> ChatFailure {
        match error {
            loopgate_client::Error::Api {
                status: 409,
                message,
                ..
            } => ChatFailure::Refused(message),
            error => ChatFailure::Failed(RequestFailed::new(what, &error)),
        }
    }

    fn describe(&self) -> String {
        match self {
            ChatFailure::Refused(m) => format!("refused with 409: {m}"),
            ChatFailure::Failed(e) => e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loopgate_domain::policy::{Outcome, PolicyInput, Routing, SubjectKind, Threshold};
    use std::collections::HashMap;

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
        assert_eq!(policy.rules().len(), 16);

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

        // Look-ups run only above the tuned threshold: 0.99 (the cautious end) until the server
        // has evidence, then wherever it puts it, within 0.6..=0.99.
        let auto = policy
            .rules()
            .iter()
            .find(|r| r.name == AUTO_RULE)
            .and_then(|r| r.threshold);
        assert!(
            matches!(auto, Some(Threshold::Auto { target_accuracy, min, max, current })
                if target_accuracy == 0.95 && min == 0.6 && max == 0.99 && current == 0.99),
            "{auto:?}"
        );
        let r = route(&policy, "lookup_order", json!({}), Some(0.95), "standard");
        assert_eq!(
            (r.outcome, r.queue.as_str(), r.rule.as_deref()),
            (
                Outcome::Review,
                "triage",
                Some("other order look-ups checked by triage")
            )
        );
        let r = route(&policy, "lookup_order", json!({}), Some(0.99), "standard");
        assert_eq!((r.outcome, r.sample), (Outcome::Approve, 0.1));
        let tuned = policy.with_auto_thresholds(&HashMap::from([(AUTO_RULE.to_owned(), 0.9)]));
        let r = route(&tuned, "lookup_order", json!({}), Some(0.95), "standard");
        assert_eq!(
            (r.outcome, r.rule.as_deref()),
            (Outcome::Approve, Some(AUTO_RULE))
        );
        let r = route(&tuned, "lookup_order", json!({}), Some(0.7), "standard");
        assert_eq!(r.outcome, Outcome::Review);
        // Never below its floor, whatever the server says.
        let floor = policy.with_auto_thresholds(&HashMap::from([(AUTO_RULE.to_owned(), 0.1)]));
        let r = route(&floor, "lookup_order", json!({}), Some(0.55), "standard");
        assert_eq!(r.outcome, Outcome::Review);

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

        // Message rules never decide an action, however the action's context is tagged.
        let context =
            json!({"customer": {"id": "cus_1", "tier": "standard"}, "tags": ["medical", "legal"]});
        let r = policy.evaluate(&PolicyInput {
            kind: SubjectKind::Action,
            action_name: "change_address",
            arguments: &json!({}),
            message_text: "",
            confidence: Some(0.95),
            context: &context,
            agent: "ops-bot",
            conversation_state: "",
            conversation_turns: 0,
        });
        assert_eq!(r.outcome, Outcome::Approve, "{}", r.reason);
    }

    /// Route an AI answer the way `POST /v1/conversations/{id}/messages` does.
    fn answer_route(
        policy: &Policy,
        text: &str,
        confidence: Option<f64>,
        context: &Value,
    ) -> Routing {
        policy.evaluate(&PolicyInput {
            kind: SubjectKind::Message,
            action_name: "",
            arguments: &json!({}),
            message_text: text,
            confidence,
            context,
            agent: CHAT_BOT,
            conversation_state: "ai",
            conversation_turns: 1,
        })
    }

    #[test]
    fn the_demo_policy_routes_answers_as_its_comments_say() {
        let policy = match Policy::parse(POLICY) {
            Ok(p) => p,
            Err(errors) => panic!("demo/policy.toml: {errors:?}"),
        };
        let plain = json!({"customer": {"id": "cus_1", "tier": "standard"}, "channel": "chat", "tags": ["cards"]});
        let tagged = |tag: &str| json!({"customer": {"id": "cus_1"}, "channel": "chat", "tags": ["cards", tag]});
        let everyday = "New cards normally arrive within 3 to 5 working days.";

        // Sensitive topics escalate whatever the confidence, by the front end's tags...
        let r = answer_route(&policy, everyday, Some(0.99), &tagged("medical"));
        assert_eq!(
            (r.outcome, r.queue.as_str(), r.rule.as_deref()),
            (
                Outcome::Escalate,
                "specialists",
                Some("medical topics go to specialists")
            )
        );
        assert_eq!((r.priority, r.timeout), (9, Some(Duration::from_secs(600))));
        let r = answer_route(&policy, everyday, Some(0.99), &tagged("legal"));
        assert_eq!(
            (r.outcome, r.queue.as_str()),
            (Outcome::Escalate, "compliance")
        );
        assert_eq!(r.rule.as_deref(), Some("legal matters go to compliance"));
        let r = answer_route(&policy, everyday, Some(0.3), &tagged("advice"));
        assert_eq!(
            r.rule.as_deref(),
            Some("financial advice goes to compliance")
        );

        // ... or by the answer's own words, in any case.
        for (text, rule, queue) in [
            (
                "Sorry you were in Hospital; we can pause payments.",
                "medical topics go to specialists",
                "specialists",
            ),
            (
                "If your medication played a part, tell us.",
                "medical topics go to specialists",
                "specialists",
            ),
            (
                "I've noted that your SOLICITOR is involved.",
                "legal matters go to compliance",
                "compliance",
            ),
            (
                "With a power of attorney you can manage it.",
                "legal matters go to compliance",
                "compliance",
            ),
            (
                "Many customers put spare money into Crypto.",
                "financial advice goes to compliance",
                "compliance",
            ),
            (
                "That depends on your pension plans.",
                "financial advice goes to compliance",
                "compliance",
            ),
        ] {
            let r = answer_route(&policy, text, Some(0.95), &plain);
            assert_eq!(
                (r.outcome, r.rule.as_deref(), r.queue.as_str()),
                (Outcome::Escalate, Some(rule), queue),
                "{text}"
            );
            assert!(r.timeout.is_some(), "{text}: an escalation has an SLA");
            assert_eq!(r.on_timeout.as_str(), "escalate", "{text}: never dropped");
        }

        // Unsure answers (or none given) are held for support; a forgotten draft jumps the queue.
        for confidence in [Some(0.59), Some(0.0), None] {
            let r = answer_route(&policy, everyday, confidence, &plain);
            assert_eq!(
                (r.outcome, r.queue.as_str(), r.priority),
                (Outcome::Review, "support", 5),
                "{confidence:?}"
            );
            assert_eq!(r.on_timeout.as_str(), "escalate");
        }

        // Confident answers go out, 10% sampled for QA; a context without tags is no error.
        for context in [plain.clone(), json!({}), json!({"tags": []})] {
            let r = answer_route(&policy, everyday, Some(0.6), &context);
            assert_eq!(
                (r.outcome, r.queue.as_str(), r.sample),
                (Outcome::Approve, "qa", 0.1),
                "{context}: {}",
                r.reason
            );
            assert_eq!(
                r.rule.as_deref(),
                Some("confident answers delivered, 10% sampled")
            );
        }
        // Everyday words that merely contain a sensitive one do not count.
        let r = answer_route(&policy, "We will investigate the issue.", Some(0.9), &plain);
        assert_eq!(r.outcome, Outcome::Approve, "{}", r.reason);
    }

    #[test]
    fn canned_answers_go_out_and_sensitive_turns_reach_humans() {
        let policy = match Policy::parse(POLICY) {
            Ok(p) => p,
            Err(errors) => panic!("demo/policy.toml: {errors:?}"),
        };
        let context = json!({"channel": "chat", "tags": ["general"]});
        let mut topics: Vec<&str> = ANSWERS.iter().map(|(t, _)| *t).collect();
        for (t, answers) in ANSWERS {
            assert!(!answers.is_empty(), "{t}");
            for text in answers.iter().copied() {
                let r = answer_route(&policy, text, Some(0.9), &context);
                assert_eq!(r.outcome, Outcome::Approve, "{text}: {}", r.reason);
            }
        }
        for (_, text) in FOLLOW_UPS {
            let r = answer_route(&policy, text, Some(0.9), &context);
            assert_eq!(r.outcome, Outcome::Approve, "{text}: {}", r.reason);
        }
        for (t, _, text) in SENSITIVE_TURNS {
            let r = answer_route(&policy, text, Some(0.9), &context);
            assert_eq!(r.outcome, Outcome::Escalate, "{t}: {text}: {}", r.reason);
        }
        // Every topic an intent maps to has its own answers.
        topics.sort_unstable();
        let messages = match Messages::parse(MESSAGES_CSV) {
            Ok(m) => m,
            Err(e) => panic!("{e:#}"),
        };
        for m in &messages.all {
            for t in topic_tags(&m.intent) {
                assert!(topics.binary_search(&t).is_ok(), "no answers on {t}");
            }
        }
    }

    #[test]
    fn chats_are_well_formed_and_reach_every_outcome() {
        let messages = match Messages::parse(MESSAGES_CSV) {
            Ok(m) => m,
            Err(e) => panic!("{e:#}"),
        };
        let policy = match Policy::parse(POLICY) {
            Ok(p) => p,
            Err(errors) => panic!("{errors:?}"),
        };
        let mut rng = StdRng::seed_from_u64(11);
        let mut outcomes = std::collections::BTreeSet::new();
        let (mut escalations, mut ratings, mut closes) = (0, [0, 0], 0);
        for _ in 0..2000 {
            let plan = plan_chat(&messages, &mut rng);
            assert!(plan.external_id.starts_with("webchat-"));
            assert_eq!(plan.context["channel"], "chat");
            assert!(plan.context["tags"]
                .as_array()
                .is_some_and(|t| !t.is_empty()));
            assert!(matches!(plan.steps.first(), Some(Step::User(t)) if !t.is_empty()));
            // It ends with the bot or the customer handing over, and nothing after.
            assert!(
                matches!(
                    plan.steps.last(),
                    Some(Step::Escalate { .. } | Step::Close { .. })
                ),
                "{plan:?}"
            );
            for step in &plan.steps {
                match step {
                    Step::Pause(d) => assert!(*d < Duration::from_secs(120)),
                    Step::User(text) => assert!(!text.trim().is_empty()),
                    Step::Ai {
                        text,
                        confidence,
                        rating,
                    } => {
                        assert!((0.0..=1.0).contains(confidence) && !text.is_empty());
                        let r = answer_route(&policy, text, Some(*confidence), &plan.context);
                        // Every answer is decided by a named rule, never by an evaluation error.
                        assert!(
                            r.rule.is_some() && !r.reason.contains("could not be evaluated"),
                            "{text}: {}",
                            r.reason
                        );
                        outcomes.insert(r.outcome.as_str());
                        if let Some(rating) = rating {
                            ratings[usize::from(rating.up)] += 1;
                        }
                    }
                    Step::Escalate { queue, .. } => {
                        assert!(["support", "specialists"].contains(queue));
                        escalations += 1;
                    }
                    Step::Close { .. } => closes += 1,
                }
            }
        }
        assert_eq!(
            outcomes.into_iter().collect::<Vec<_>>(),
            ["approve", "escalate", "review"]
        );
        assert!(escalations > 50 && closes > 1000, "{escalations} {closes}");
        assert!(ratings[0] > 50 && ratings[1] > 50, "{ratings:?}");
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
            let profile = [Profile::Support, Profile::Ops][i % 2];
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
    fn a_409_stops_the_chat_bot_and_other_failures_say_what_failed() {
        let api = |status: u16, code: &str, message: &str| loopgate_client::Error::Api {
            status,
            code: code.to_owned(),
            message: message.to_owned(),
            field: None,
        };
        let what = "POST /v1/conversations/c1/messages";
        let refused = ChatFailure::new(what, api(409, "conflict", "a human has the conversation"));
        assert!(
            matches!(&refused, ChatFailure::Refused(m) if m == "a human has the conversation"),
            "{refused:?}"
        );
        assert_eq!(
            refused.describe(),
            "refused with 409: a human has the conversation"
        );

        let failed = ChatFailure::new(what, api(503, "unavailable", "the database is down"));
        assert_eq!(
            failed.describe(),
            "POST /v1/conversations/c1/messages: the database is down (503 unavailable)"
        );
        let unreachable = loopgate_client::Error::Transport {
            url: "http://127.0.0.1:1/v1/conversations".to_owned(),
            cause: "connection refused".to_owned(),
        };
        assert!(matches!(
            ChatFailure::new("POST /v1/conversations", unreachable),
            ChatFailure::Failed(e) if e.0.starts_with("POST /v1/conversations: cannot reach Loopgate")
        ));
        assert_eq!(object(json!({"a": 1}))["a"], 1);
    }

    #[test]
    fn the_banner_says_what_the_reviewers_do_and_how_to_see_the_learning_loop() {
        let setup = Setup {
            history: History::Recording(1000),
            policy_version: 1,
            rules: 16,
            tokens: KEYS
                .iter()
                .map(|&(name, role)| Token {
                    name,
                    role,
                    token: format!("lg_{name}"),
                })
                .collect(),
            users: Vec::new(),
        };
        let text = banner("http://127.0.0.1:7800", "sqlite://x.db", &setup);
        for needle in [
            "  sim-reviewer-2 reviewer  lg_sim-reviewer-2",
            "Simulated reviewers sim-reviewer and sim-reviewer-2",
            "triage, finance, accounts, comms, support (drafts only), qa, default and feedback queues",
            "newest 3 of each",
            "History: 1000 past items",
            "loopgate tune --target-accuracy 0.95 --database sqlite://x.db --workspace demo",
            "loopgate policy backtest demo/candidate.toml --database sqlite://x.db --workspace demo",
            "/v1/policy/backtest' -H 'Authorization: Bearer lg_admin'",
            "http://127.0.0.1:7800/stats",
            AUTO_RULE,
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
        assert!(
            text.lines().all(|l| l.len() <= 100 || l.starts_with("  ")),
            "{text}"
        );
        // tests/demo.rs waits for this last line before reading the banner.
        assert_eq!(
            text.lines().last(),
            Some("  http://127.0.0.1:7800/stats   (sign in as admin)")
        );
        let again = Setup {
            history: History::Present(5000),
            ..setup
        };
        assert!(banner("http://h", "sqlite://x.db", &again).contains("holds 5000 recorded items"));
    }

    #[test]
    fn wrap_breaks_at_spaces() {
        assert_eq!(wrap("aa bb cc", 5), ["aa bb", "cc"]);
        assert_eq!(wrap("a verylongword b", 4), ["a", "verylongword", "b"]);
        assert!(wrap("  ", 10).is_empty());
    }

    #[test]
    fn the_candidate_policy_parses_and_lowers_the_bars() {
        let candidate = match Policy::parse(include_str!("../demo/candidate.toml")) {
            Ok(p) => p,
            Err(errors) => panic!("demo/candidate.toml: {errors:?}"),
        };
        let current = match Policy::parse(POLICY) {
            Ok(p) => p,
            Err(errors) => panic!("{errors:?}"),
        };
        let names = |p: &Policy| p.rules().iter().map(|r| r.name.clone()).collect::<Vec<_>>();
        assert_eq!(
            names(&candidate),
            names(&current),
            "the same rules, in the same order"
        );
        let r = route(
            &candidate,
            "lookup_order",
            json!({}),
            Some(0.65),
            "standard",
        );
        assert_eq!(r.outcome, Outcome::Approve);
        let r = route(
            &candidate,
            "issue_refund",
            json!({"amount": 80}),
            Some(0.95),
            "standard",
        );
        assert_eq!(r.outcome, Outcome::Approve);
        let r = route(
            &current,
            "issue_refund",
            json!({"amount": 80}),
            Some(0.95),
            "standard",
        );
        assert_eq!(r.outcome, Outcome::Review);
    }

    #[test]
    fn unspecified_listen_addresses_are_reached_over_loopback() {
        let any: SocketAddr = "0.0.0.0:7800".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(reachable(any).to_string(), "127.0.0.1:7800");
        let v6: SocketAddr = "[::]:7800".parse().unwrap_or_else(|_| unreachable!());
        assert_eq!(reachable(v6).to_string(), "[::1]:7800");
    }
}
