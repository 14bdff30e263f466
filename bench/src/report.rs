//! The results table: one row per figure, with its baseline ratio, target and pass/miss, and the
//! machine it ran on.

/// One measured figure.
pub struct Row {
    pub scenario: String,
    pub figure: String,
    /// The figure against a baseline measured in the same run, e.g. "31% of no-op".
    pub baseline: String,
    pub target: String,
    /// `None` when not judged (the smoke run).
    pub pass: Option<bool>,
}

/// Cores, CPU model, RAM and load, from /proc.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let ram_gb = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cores} cores, {model}, {ram_gb:.1} GB RAM, Linux {}, load average {load}",
        kernel.trim()
    )
}

/// A Markdown table (readable in a terminal, pasteable into docs/performance.md).
pub fn render(rows: &[Row], smoke: bool) -> String {
    let mut out = String::from(
        "| scenario | measured | vs baseline | target | result |\n|---|---|---|---|---|\n",
    );
    for r in rows {
        let result = match r.pass {
            Some(true) => "pass",
            Some(false) => "**miss**",
            None if smoke => "ran (smoke: not judged)",
            None => "-",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.scenario, r.figure, r.baseline, r.target, result
        ));
    }
    out
}
