//! The command line: `serve`, `demo`, `keys create`, `users create`, `policy check`,
//! `policy backtest`, `tune` (in `crate::learning_cli`), `audit verify`, `prune`, `backup`,
//! `retention` (in `crate::retention`), `export training` (in `crate::export`). Errors print one
//! line and exit non-zero.

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use loopgate_domain::auth::Role;
use loopgate_domain::policy::Policy;
use loopgate_domain::types::Name;
use loopgate_store::{Store, StoreOptions};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "loopgate",
    version,
    about = "Human-in-the-loop server for AI agents"
)]
struct Cli {
    /// Database URL: sqlite://PATH (embedded, the default) or postgres://...
    #[arg(long, global = true, env = "LOOPGATE_DATABASE_URL")]
    database: Option<String>,
    /// Connections in the read pool (the writer has one more of its own).
    #[arg(
        long,
        global = true,
        env = "LOOPGATE_DB_POOL_SIZE",
        default_value_t = 8
    )]
    db_pool_size: u32,
    /// PostgreSQL: abort any statement running longer than this (e.g. 30s; 0 for no limit).
    #[arg(long, global = true, env = "LOOPGATE_DB_STATEMENT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    db_statement_timeout: std::time::Duration,
    #[command(subcommand)]
    command: Command,
}

pub const DEFAULT_DATABASE: &str = "sqlite://loopgate.db";
pub const DEMO_DATABASE: &str = "sqlite://loopgate-demo.db";

#[derive(Subcommand)]
enum Command {
    /// Run the server (migrates the database first).
    Serve {
        #[arg(long, env = "LOOPGATE_LISTEN", default_value = "127.0.0.1:7800")]
        listen: SocketAddr,
        /// Policy file to put in force for the `default` workspace.
        #[arg(long, env = "LOOPGATE_POLICY")]
        policy: Option<PathBuf>,
        /// The URL people reach this server at, for links in webhooks (default: http://LISTEN).
        #[arg(long, env = "LOOPGATE_PUBLIC_URL")]
        public_url: Option<String>,
        /// How often `threshold = "auto"` rules are recomputed from evidence (e.g. 10m), or
        /// `off`.
        #[arg(long, env = "LOOPGATE_AUTONOMY_INTERVAL", default_value = "10m", value_parser = parse_interval)]
        autonomy_interval: Interval,
        #[command(flatten)]
        limits: crate::limit_flags::LimitFlags,
    },
    /// Run the server with a demo workspace, users and a simulated agent producing traffic.
    Demo {
        #[arg(long, env = "LOOPGATE_LISTEN", default_value = "127.0.0.1:7800")]
        listen: SocketAddr,
        /// Past items (actions and chats, reviews decided) to record at start, so the learning
        /// loop has evidence at once; skipped when the database already holds as many.
        #[arg(long, default_value_t = crate::demo::history::DEFAULT_SIZE)]
        history: usize,
    },
    /// API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Console users.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
    /// Policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Recommend the lowest confidence threshold that keeps accuracy at a target, from graded
    /// evidence (QA grades, approvals, edits, rejections, flags).
    Tune {
        /// The accuracy the auto-handled share must keep at the lower end of its 95% interval.
        #[arg(long)]
        target_accuracy: f64,
        /// Only this agent's items.
        #[arg(long)]
        agent: Option<String>,
        /// Only actions of this name (AI messages are left out).
        #[arg(long)]
        action: Option<String>,
        /// How far back, e.g. 7d or 30d.
        #[arg(long, default_value = "30d")]
        since: String,
        #[arg(long, default_value = "default")]
        workspace: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove decided and closed records older than each workspace's retention period.
    Prune(crate::retention::PruneArgs),
    /// Copy the (running) SQLite database to a new file; for PostgreSQL use pg_dump.
    Backup(crate::retention::BackupArgs),
    /// How long each workspace keeps its records.
    Retention(crate::retention::RetentionArgs),
    /// Exports of what humans taught the AI.
    Export {
        #[command(subcommand)]
        command: ExportCommand,
    },
    /// An MCP server over stdio, acting as the agent whose token is in env LOOPGATE_TOKEN.
    Mcp {
        /// The Loopgate server to talk to.
        #[arg(long, env = "LOOPGATE_URL", default_value = loopgate_client::DEFAULT_URL)]
        url: String,
        /// How long request_approval and ask_human wait for a human before answering `pending`.
        #[arg(long, env = "LOOPGATE_MCP_TIMEOUT", default_value = "1h", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyRole {
    Agent,
    Reviewer,
    Admin,
}

#[derive(Clone, Copy, ValueEnum)]
enum UserRole {
    Reviewer,
    Admin,
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key; prints its token, alone, on the last line (it is not shown again).
    Create {
        /// For agent keys, the agent's name as policies and reviewers see it.
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: KeyRole,
        #[arg(long, default_value = "default")]
        workspace: String,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a console user.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long, value_enum)]
        role: UserRole,
        #[arg(long, default_value = "default")]
        workspace: String,
        /// Read the password from standard input (it never goes on the command line).
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Validate a policy file: a summary and exit 0, or FILE:LINE:COL: message lines and exit 1.
    Check { file: PathBuf },
    /// Replay recorded actions and messages through a candidate policy, side by side with the
    /// one in force: outcomes per rule, automation rate, review load per queue, and the
    /// known-bad items it would let through unreviewed.
    Backtest {
        file: PathBuf,
        /// How far back, e.g. 7d or 30d.
        #[arg(long, default_value = "30d")]
        since: String,
        /// Only this agent's items.
        #[arg(long)]
        agent: Option<String>,
        /// Only actions of this name.
        #[arg(long)]
        action: Option<String>,
        #[arg(long, default_value = "default")]
        workspace: String,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TrainingFormat {
    /// OpenAI chat fine-tuning: conversations with human-approved or human-written answers.
    Openai,
    /// OpenAI DPO preference pairs: the human's correction preferred over the AI's output.
    Dpo,
    /// Every human override (edit, rejection, bad grade) with its context.
    Corrections,
}

#[derive(Subcommand)]
enum ExportCommand {
    /// Training data as JSONL, streamed to standard output (or --output FILE).
    Training {
        #[arg(long, value_enum)]
        format: TrainingFormat,
        /// Only what was decided since then: a duration back from now (30d) or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value = "default")]
        workspace: String,
        /// Write here instead of standard output (complete, or not at all).
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain: `ok N events`, or exit 1 naming the first bad seq.
    Verify {
        #[arg(long)]
        workspace: Option<String>,
    },
}

/// Parse the command line, run it, and turn any error into one line on stderr.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loopgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loopgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

async fn open(url: &str, options: &StoreOptions) -> anyhow::Result<Arc<dyn Store>> {
    loopgate_store::open_with(url, true, options)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                loopgate_store::redact_url(url)
            )
        })
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let database = cli.database.clone();
    let options = StoreOptions {
        pool_size: cli.db_pool_size,
        statement_timeout: (!cli.db_statement_timeout.is_zero())
            .then_some(cli.db_statement_timeout),
    };
    let db = || {
        database
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE.to_owned())
    };
    match cli.command {
        Command::Serve {
            listen,
            policy,
            public_url,
            autonomy_interval,
            limits,
        } => {
            init_logging();
            let store = open(&db(), &options).await?;
            if let Some(file) = policy {
                let text = read_policy(&file)?;
                if let Err(errors) = Policy::parse(&text) {
                    for e in errors {
                        eprintln!("{}:{e}", file.display());
                    }
                    return Ok(ExitCode::FAILURE);
                }
                let saved = store.put_policy("default", &text, "system:serve").await?;
                tracing::info!(file = %file.display(), version = saved.version, "policy in force");
            }
            let config = limits.apply(loopgate_server::Config {
                autonomy_interval: autonomy_interval.0,
                ..loopgate_server::Config::default()
            });
            serve(store, listen, public_url, config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo { listen, history } => {
            init_logging();
            let url = database.unwrap_or_else(|| DEMO_DATABASE.to_owned());
            crate::demo::run(&url, listen, history).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Keys {
            command:
                KeysCommand::Create {
                    name,
                    role,
                    workspace,
                },
        } => {
            let name = Name::parse(&name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            let workspace =
                Name::parse(&workspace).map_err(|e| anyhow::anyhow!("--workspace: {e}"))?;
            let role = match role {
                KeyRole::Agent => Role::Agent,
                KeyRole::Reviewer => Role::Reviewer,
                KeyRole::Admin => Role::Admin,
            };
            let store = open(&db(), &options).await?;
            let created = store
                .create_key(workspace.as_str(), name.as_str(), role)
                .await?;
            println!(
                "created {} key {:?} in workspace {:?}; the token is shown once:",
                role.as_str(),
                created.key.name,
                created.key.workspace
            );
            println!("{}", created.token);
            Ok(ExitCode::SUCCESS)
        }
        Command::Users {
            command:
                UsersCommand::Create {
                    username,
                    role,
                    workspace,
                    password_stdin,
                },
        } => {
            let username =
                Name::parse(&username).map_err(|e| anyhow::anyhow!("--username: {e}"))?;
            let workspace =
                Name::parse(&workspace).map_err(|e| anyhow::anyhow!("--workspace: {e}"))?;
            if !password_stdin {
                bail!("give the password on standard input with --password-stdin");
            }
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("cannot read the password from standard input")?;
            let password = input.lines().next().unwrap_or("").to_owned();
            if !loopgate_domain::auth::password_acceptable(&password) {
                bail!("the password must be 8 to 1024 characters");
            }
            let role = match role {
                UserRole::Reviewer => Role::Reviewer,
                UserRole::Admin => Role::Admin,
            };
            let hash = tokio::task::spawn_blocking(move || {
                loopgate_store::secrets::hash_password(&password)
            })
            .await?
            .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))?;
            let store = open(&db(), &options).await?;
            let user = store
                .create_user(workspace.as_str(), username.as_str(), role, &hash)
                .await?;
            println!(
                "created {} user {:?} in workspace {:?}",
                role.as_str(),
                user.username,
                user.workspace
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy {
            command: PolicyCommand::Check { file },
        } => policy_check(&file),
        Command::Policy {
            command:
                PolicyCommand::Backtest {
                    file,
                    since,
                    agent,
                    action,
                    workspace,
                    json,
                },
        } => {
            let store = open_existing(&db(), &options).await?;
            let args = crate::learning_cli::BacktestArgs {
                file: &file,
                workspace: &workspace,
                since: &since,
                agent,
                action,
                json,
            };
            crate::learning_cli::backtest(store.as_ref(), args).await
        }
        Command::Tune {
            target_accuracy,
            agent,
            action,
            since,
            workspace,
            json,
        } => {
            let store = open_existing(&db(), &options).await?;
            let scope = loopgate_server::learning::Scope {
                agent,
                action,
                since_ms: crate::learning_cli::since_ms(&since)?,
            };
            crate::learning_cli::tune(store.as_ref(), &workspace, scope, target_accuracy, json)
                .await
        }
        Command::Audit {
            command: AuditCommand::Verify { workspace },
        } => {
            let store = open_existing(&db(), &options).await?;
            let known = store.workspaces().await?;
            let workspaces = match workspace {
                Some(w) if !known.contains(&w) => bail!("there is no workspace {w:?}"),
                Some(w) => vec![w],
                None => known,
            };
            let mut total = 0;
            for ws in workspaces {
                match store.verify_audit(&ws).await? {
                    Ok(n) => total += n,
                    Err(b) => {
                        println!("bad seq {} in workspace {ws}: {}", b.seq, b.problem);
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
            println!("ok {total} events");
            Ok(ExitCode::SUCCESS)
        }
        Command::Prune(args) => crate::retention::prune(&db(), &options, args).await,
        Command::Backup(args) => crate::retention::backup(&db(), args).await,
        Command::Retention(args) => crate::retention::retention(&db(), &options, args).await,
        Command::Export {
            command:
                ExportCommand::Training {
                    format,
                    since,
                    workspace,
                    output,
                },
        } => {
            let format = match format {
                TrainingFormat::Openai => loopgate_domain::training::Format::OpenAi,
                TrainingFormat::Dpo => loopgate_domain::training::Format::Dpo,
                TrainingFormat::Corrections => loopgate_domain::training::Format::Corrections,
            };
            let store = open_existing(&db(), &options).await?;
            let n = crate::export::training(
                store,
                &workspace,
                format,
                since.as_deref(),
                output.as_deref(),
            )
            .await?;
            if let Some(path) = output {
                eprintln!("exported {n} records to {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Mcp { url, timeout } => {
            crate::mcp::run(&url, timeout).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Opens a database that must exist already (commands that only read it never create one).
pub(crate) async fn open_existing(
    url: &str,
    options: &StoreOptions,
) -> anyhow::Result<Arc<dyn Store>> {
    loopgate_store::open_with(url, false, options)
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                loopgate_store::redact_url(url)
            )
        })
}

/// A period, or none (`off`).
#[derive(Clone, Copy, Debug)]
struct Interval(Option<std::time::Duration>);

fn parse_interval(raw: &str) -> Result<Interval, String> {
    if raw.trim().eq_ignore_ascii_case("off") {
        return Ok(Interval(None));
    }
    match humantime::parse_duration(raw.trim()) {
        Ok(d) if d >= std::time::Duration::from_secs(1) => Ok(Interval(Some(d))),
        _ => Err(format!(
            "{raw:?}: write a duration of at least 1s, such as 10m, or off"
        )),
    }
}

fn read_policy(file: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(file).with_context(|| format!("{}: cannot read", file.display()))
}

fn policy_check(file: &Path) -> anyhow::Result<ExitCode> {
    let text = read_policy(file)?;
    match Policy::parse(&text) {
        Err(errors) => {
            for e in errors {
                println!("{}:{e}", file.display());
            }
            Ok(ExitCode::FAILURE)
        }
        Ok(policy) => {
            println!("{}: ok, {} rules", file.display(), policy.rules().len());
            for (i, r) in policy.rules().iter().enumerate() {
                let mut line = format!("  {}. {:?} -> {}", i + 1, r.name, r.then.as_str());
                if r.queue != "default" {
                    line.push_str(&format!(", queue {}", r.queue));
                }
                if r.approvals > 1 {
                    line.push_str(&format!(", {} approvals", r.approvals));
                }
                if let Some(t) = r.timeout {
                    line.push_str(&format!(
                        ", timeout {} then {}",
                        humantime::format_duration(t),
                        r.on_timeout.as_str()
                    ));
                }
                if r.sample > 0.0 {
                    line.push_str(&format!(", {}% sampled", r.sample * 100.0));
                }
                match r.threshold {
                    Some(loopgate_domain::policy::Threshold::Fixed(t)) => {
                        line.push_str(&format!(", at confidence >= {t}"));
                    }
                    Some(loopgate_domain::policy::Threshold::Auto {
                        target_accuracy,
                        min,
                        max,
                        ..
                    }) => line.push_str(&format!(
                        ", at a tuned confidence floor ({min} to {max}, for {target_accuracy} accuracy)"
                    )),
                    None => {}
                }
                println!("{line}");
            }
            println!("  anything else -> review (no rule matched)");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Serve on `listen` until Ctrl-C or SIGTERM. `public_url` is where people reach it (for links in
/// webhooks); by default the listen address.
pub async fn serve(
    store: Arc<dyn Store>,
    listen: SocketAddr,
    public_url: Option<String>,
    config: loopgate_server::Config,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!("loopgate listening on http://{addr}");
    let config = loopgate_server::Config {
        public_url: public_url.unwrap_or_else(|| format!("http://{addr}")),
        ..config
    };
    loopgate_server::run(listener, store, config, shutdown_signal())
        .await
        .context("the server failed")
}

pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
