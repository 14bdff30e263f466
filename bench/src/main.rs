//! `bench`: runs the benchmark scenarios against the real `loopgate` binary and prints the table.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use bench::report;
use bench::scenarios::{check_binary, Sizes, Suite};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "bench",
    about = "Loopgate's benchmark suite (see docs/performance.md)"
)]
struct Cli {
    /// Tiny sizes: checks every scenario works end to end, prints the table, judges nothing.
    #[arg(long, global = true)]
    smoke: bool,
    /// The loopgate binary to run (default: the one beside this binary, same profile).
    #[arg(long, global = true)]
    loopgate: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every scenario, then the table.
    All,
    /// The no-op HTTP handler and raw SQLite inserts.
    Baselines,
    /// Submit auto-approved actions, 16 keep-alive clients (with idle and peak memory).
    Submit,
    /// Submit actions that need review.
    Review,
    /// AI messages in conversations, delivered.
    Message,
    /// Decision → the agent's waiting long-poll returns.
    Longpoll,
    /// `POST /v1/reviews/next` at three queue depths.
    Next,
    /// A reviewer's loop, `next` then `decision`.
    Reviewer,
    /// One event fanned out to many SSE subscribers.
    Fanout,
    /// Policy evaluation, 20 rules.
    Policy,
    /// Stats and backtest over the largest seeded database (and its memory).
    Stats,
    /// The no-op baseline server (started by the suite itself as a child process).
    #[command(hide = true)]
    NoopServer {
        #[arg(long)]
        listen: SocketAddr,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    if let Command::NoopServer { listen } = cli.command {
        return runtime.block_on(bench::baselines::run_noop_server(listen));
    }
    let bin = cli.loopgate.unwrap_or_else(bench::server::default_binary);
    check_binary(&bin)?;
    let sizes = if cli.smoke {
        Sizes::smoke()
    } else {
        Sizes::full()
    };
    let mut suite = Suite::new(bin.clone(), sizes);
    let machine = report::machine();
    println!("machine: {machine}");
    println!(
        "loopgate: {}{}",
        bin.display(),
        if cli.smoke {
            " (smoke run: tiny sizes, nothing judged)"
        } else {
            ""
        }
    );
    let started = std::time::Instant::now();
    runtime.block_on(async {
        match cli.command {
            Command::All => {
                suite.baselines().await?;
                suite
                    .submit(&["submit", "review", "message", "longpoll"])
                    .await?;
                suite.queue_depths(&["next", "reviewer", "stats"]).await?;
                suite.fanout().await?;
                suite.policy()
            }
            Command::Baselines => suite.baselines().await,
            Command::Submit => suite.submit(&["submit"]).await,
            Command::Review => suite.submit(&["review"]).await,
            Command::Message => suite.submit(&["message"]).await,
            Command::Longpoll => suite.submit(&["longpoll"]).await,
            Command::Next => suite.queue_depths(&["next"]).await,
            Command::Reviewer => suite.queue_depths(&["reviewer"]).await,
            Command::Stats => suite.queue_depths(&["stats"]).await,
            Command::Fanout => suite.fanout().await,
            Command::Policy => suite.policy(),
            Command::NoopServer { .. } => Ok(()),
        }
    })?;
    println!();
    println!("machine: {machine}");
    println!("took {:.0} s", started.elapsed().as_secs_f64());
    println!();
    print!("{}", report::render(&suite.rows, cli.smoke));
    let misses = suite.rows.iter().filter(|r| r.pass == Some(false)).count();
    if misses > 0 {
        println!("\n{misses} target(s) missed");
    }
    Ok(())
}
