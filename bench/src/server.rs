//! Runs the real `loopgate` binary as a child process on a temporary SQLite database and port, so
//! its memory can be read from /proc and its CPU is its own, apart from the load generator's.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::process::{Child, Command};

/// The policy every scenario runs under: wires need a human, everything else runs.
pub const POLICY: &str = r#"
[[rule]]
name = "wires need a human"
applies_to = "action"
when = 'action.name == "wire_transfer"'
then = "review"
queue = "finance"

[[rule]]
name = "everything else runs"
when = "true"
then = "approve"
"#;

/// A database prepared for the server: the schema (made by the binary itself) and three keys.
pub struct Database {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub agent: String,
    pub reviewer: String,
    pub admin: String,
}

impl Database {
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}

/// The `loopgate` binary beside this one (target/release/bench → target/release/loopgate).
pub fn default_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("loopgate")))
        .unwrap_or_else(|| PathBuf::from("loopgate"))
}

/// Creates a fresh database with `loopgate keys create` (which migrates it).
pub async fn create_database(bin: &Path) -> Result<Database> {
    let dir = tempfile::Builder::new()
        .prefix("loopgate-bench")
        .tempdir()?;
    let path = dir.path().join("loopgate.db");
    let url = format!("sqlite://{}", path.display());
    let mut keys = Vec::new();
    for (name, role) in [
        ("bench-agent", "agent"),
        ("bench-reviewer", "reviewer"),
        ("bench-admin", "admin"),
    ] {
        let out = Command::new(bin)
            .args([
                "--database",
                &url,
                "keys",
                "create",
                "--name",
                name,
                "--role",
                role,
            ])
            .env_remove("RUST_LOG")
            .output()
            .await
            .with_context(|| format!("cannot run {}", bin.display()))?;
        if !out.status.success() {
            bail!(
                "loopgate keys create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let token = stdout
            .lines()
            .last()
            .ok_or_else(|| anyhow!("no token printed"))?;
        keys.push(token.trim().to_string());
    }
    let [agent, reviewer, admin]: [String; 3] = keys
        .try_into()
        .map_err(|_| anyhow!("expected three tokens"))?;
    Ok(Database {
        dir,
        path,
        agent,
        reviewer,
        admin,
    })
}

/// A running `loopgate serve`.
pub struct Server {
    pub addr: SocketAddr,
    child: Child,
}

impl Server {
    pub async fn start(bin: &Path, db: &Database) -> Result<Server> {
        let policy = db.dir.path().join("policy.toml");
        std::fs::write(&policy, POLICY)?;
        // A free port: bind port 0, read it, let go. (The server must bind it itself.)
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let log = std::fs::File::create(db.dir.path().join("server.log"))?;
        let child = Command::new(bin)
            .args([
                "--database",
                &db.url(),
                "serve",
                "--listen",
                &addr.to_string(),
            ])
            .arg("--policy")
            .arg(&policy)
            .args(["--autonomy-interval", "off"])
            // Abuse limits are per key, and a benchmark drives thousands of requests and streams
            // through a handful of keys: they would measure the limiter, not the server.
            .args(["--rate-limit", "off", "--max-streams", "100000"])
            .args(["--max-long-polls", "100000"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut server = Server { addr, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait()? {
                let log = std::fs::read_to_string(db.dir.path().join("server.log"))?;
                bail!("loopgate serve exited with {status}: {log}");
            }
            if let Ok(mut conn) = crate::http::Conn::connect(addr).await {
                if let Ok((s, _)) = conn.call(hyper::Method::GET, "/healthz", "", None).await {
                    if s.is_success() {
                        println!(
                            "  loopgate serve: pid {}, http://{addr}, {}",
                            server.pid().unwrap_or(0),
                            db.url()
                        );
                        return Ok(server);
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("loopgate serve did not answer /healthz within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Resident memory now and at its peak (VmRSS, VmHWM), in MB.
    pub fn memory_mb(&self) -> Result<(f64, f64)> {
        let pid = self.pid().ok_or_else(|| anyhow!("server exited"))?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> Result<f64> {
            let line = status
                .lines()
                .find(|l| l.starts_with(name))
                .ok_or_else(|| anyhow!("no {name} in /proc/{pid}/status"))?;
            let kb: f64 = line
                .split_whitespace()
                .nth(1)
                .ok_or_else(|| anyhow!("bad {name} line"))?
                .parse()?;
            Ok(kb / 1024.0)
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// The server's CPU time so far (user + system), in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let pid = self.pid().ok_or_else(|| anyhow!("server exited"))?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
        // Fields after the ")" closing the command name; utime and stime are the 12th and 13th.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| anyhow!("bad /proc stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
        Ok(ticks / 100.0)
    }

    pub async fn stop(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}
