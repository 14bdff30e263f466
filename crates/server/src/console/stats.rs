//! `/stats`: how much the AI does alone, how often humans override it, how accurate its sampled
//! work is, how the queues keep up; with charts over time drawn on the server as inline SVG (no
//! charting library, nothing fetched: the page works offline and prints). The learning loop's
//! part: how well the AI's stated confidence matches its accuracy (calibration), the figures per
//! agent and per action, and a form that asks the tuner for a confidence threshold.

use super::page::{self, Nav, PageResult};
use super::session::ConsoleUser;
use crate::learning::Scope;
use crate::AppState;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use loopgate_domain::learning::{CalibrationBand, TuneResult};
use loopgate_domain::stats::Proportion;
use loopgate_store::{SliceStats, StatsBucket, StatsRecord};
use maud::{html, Markup};
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Default, Deserialize)]
pub struct StatsQuery {
    window: Option<String>,
    /// The tune form's fields: the tuner runs only when `target_accuracy` is present (it scans
    /// the evidence, so not on every page load).
    target_accuracy: Option<String>,
    agent: Option<String>,
    action: Option<String>,
    tune_since: Option<String>,
}

/// How far back the tuner may look, as the form offers it.
const TUNE_WINDOWS: [(&str, &str); 4] = [
    ("7d", "7 days"),
    ("30d", "30 days"),
    ("90d", "90 days"),
    ("400d", "400 days"),
];
const DEFAULT_TUNE_WINDOW: &str = "30d";
const DEFAULT_TARGET: &str = "0.95";

const WINDOWS: [(&str, &str, i64, i64); 4] = [
    ("1h", "Last hour", 3600, 12),
    ("24h", "Last 24 hours", 24 * 3600, 24),
    ("7d", "Last 7 days", 7 * 24 * 3600, 28),
    ("30d", "Last 30 days", 30 * 24 * 3600, 30),
];

fn interval(p: &Proportion) -> Markup {
    match (p.low, p.high) {
        (Some(lo), Some(hi)) => html! {
            span.interval title="95% Wilson score interval" {
                "95% CI " (page::percent(Some(lo))) "–" (page::percent(Some(hi)))
            }
        },
        _ => html! { span.interval.muted { "no data yet" } },
    }
}

fn metric(testid: &str, label: &str, p: &Proportion, what: &str) -> Markup {
    html! {
        div.card.metric data-testid=(testid) {
            h2.metric-label { (label) }
            p.metric-value { (page::percent(p.rate)) }
            p.metric-sub { (p.successes) " of " (p.trials) " " (what) }
            p.metric-sub { (interval(p)) }
        }
    }
}

fn seconds(s: Option<f64>) -> String {
    match s {
        Some(s) if s < 60.0 => format!("{s:.0}s"),
        Some(s) => page::compact_duration(s.round() as i64),
        None => "—".to_owned(),
    }
}

/// The tune form as submitted, checked as `GET /v1/tune` checks it.
struct TuneForm {
    target: String,
    agent: String,
    action: String,
    since: String,
}

impl TuneForm {
    fn from_query(q: &StatsQuery) -> TuneForm {
        TuneForm {
            target: q
                .target_accuracy
                .clone()
                .unwrap_or_else(|| DEFAULT_TARGET.to_owned()),
            agent: q.agent.clone().unwrap_or_default(),
            action: q.action.clone().unwrap_or_default(),
            since: q
                .tune_since
                .clone()
                .unwrap_or_else(|| DEFAULT_TUNE_WINDOW.to_owned()),
        }
    }

    /// The target and scope, or what is wrong with the form (in words for the page).
    fn parse(&self) -> Result<(f64, Scope), String> {
        let target = self
            .target
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|t| (0.5..1.0).contains(t))
            .ok_or("The target accuracy must be a number at least 0.5 and below 1, e.g. 0.98.")?;
        let name = |raw: &str, what: &str| -> Result<Option<String>, String> {
            match raw.trim() {
                "" => Ok(None),
                v if v.len() > 200 => {
                    Err(format!("The {what} name is longer than 200 characters."))
                }
                v => Ok(Some(v.to_owned())),
            }
        };
        let since_ms = crate::http::since_ms(
            Some(&self.since),
            "since",
            Duration::from_secs(30 * 24 * 3600),
        )
        .map_err(|e| format!("The window must be {}.", e.message))?;
        Ok((
            target,
            Scope {
                agent: name(&self.agent, "agent")?,
                action: name(&self.action, "action")?,
                since_ms,
            },
        ))
    }
}

/// What the tune form produced on this page load.
enum Tuned {
    NotAsked,
    Refused(String),
    Result(TuneResult),
}

/// `GET /stats`.
pub async fn page(
    State(state): State<AppState>,
    user: ConsoleUser,
    RawQuery(query): RawQuery,
) -> PageResult {
    let q: StatsQuery =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let (key, label, secs, buckets) = WINDOWS
        .iter()
        .copied()
        .find(|w| Some(w.0) == q.window.as_deref())
        .unwrap_or(WINDOWS[1]);
    let since = Utc::now().timestamp_millis() - secs * 1000;
    let s = state.store.stats(&user.workspace, since, buckets).await?;
    let form = TuneForm::from_query(&q);
    let tuned = if q.target_accuracy.is_none() {
        Tuned::NotAsked
    } else {
        match form.parse() {
            Err(m) => Tuned::Refused(m),
            Ok((target, scope)) => Tuned::Result(
                crate::learning::tune(state.store.as_ref(), &user.workspace, &scope, target)
                    .await?,
            ),
        }
    };
    let status = match tuned {
        Tuned::Refused(_) => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::OK,
    };
    let daily = secs > 2 * 24 * 3600;
    let body = html! {
        div.page-head {
            div {
                h1 { "Stats" }
                p.muted { (label) " · " (page::datetime(s.since)) " to " (page::datetime(s.until)) }
            }
            form.head-actions method="get" action="/stats" {
                label.visually-hidden for="window" { "Time window" }
                select #window name="window" data-autosubmit data-testid="stats-window" {
                    @for (k, l, _, _) in WINDOWS { option value=(k) selected[k == key] { (l) } }
                }
                button.btn.btn-quiet.js-hide type="submit" { "Show" }
            }
        }
        div.metrics {
            (metric("stat-automation", "Automation rate", &s.automation_rate, "reached the world with no human touch"))
            (metric("stat-escalation", "Escalation rate", &s.escalation_rate, "conversations escalated to a human"))
            (metric("stat-override", "Override rate", &s.override_rate, "human decisions rejected or edited the AI"))
            (metric("stat-qa", "QA accuracy", &s.qa_accuracy, "sampled items graded correct"))
            div.card.metric data-testid="stat-queue" {
                h2.metric-label { "Queue depth" }
                p.metric-value { (s.open_reviews) }
                p.metric-sub { "open reviews" }
                p.metric-sub.sla-breaches[s.sla_breaches > 0] { (s.sla_breaches) " past their SLA" }
            }
            div.card.metric data-testid="stat-latency" {
                h2.metric-label { "Time to decision" }
                p.metric-value { (seconds(s.time_to_decision_p50_s)) }
                p.metric-sub { "median (p50)" }
                p.metric-sub { "p95 " (seconds(s.time_to_decision_p95_s)) }
            }
        }
        div.charts {
            section.card aria-labelledby="chart-volume-title" data-testid="chart-volume" {
                h2 #chart-volume-title { "Work over time" }
                p.legend {
                    span.swatch.swatch-auto {} "Handled by the AI alone "
                    span.swatch.swatch-human {} "Needed a human"
                }
                (volume_chart(&s.series, daily))
            }
            section.card aria-labelledby="chart-rates-title" data-testid="chart-rates" {
                h2 #chart-rates-title { "Rates over time" }
                p.legend {
                    span.swatch.swatch-auto {} "Automation rate "
                    span.swatch.swatch-override {} "Override rate"
                }
                (rate_chart(&s.series, daily))
            }
        }
        (queues_table(&s))
        div.charts {
            (calibration_section(&s.calibration))
            (tune_section(&form, &tuned, key, &s))
        }
        (slice_table("agents", "By agent", "Agent", &s.by_agent, true))
        (slice_table("actions", "By action", "Action", &s.by_action, false))
        details.card.data-details {
            summary { "The numbers behind the charts" }
            table.data.compact {
                thead { tr {
                    th scope="col" { "From" } th scope="col" { "Submitted" } th scope="col" { "Automated" }
                    th scope="col" { "Decided" } th scope="col" { "Overridden" }
                } }
                tbody {
                    @for b in &s.series {
                        tr {
                            td { (tick(b.start, daily)) }
                            td.num { (b.submitted) } td.num { (b.automated) }
                            td.num { (b.decided) } td.num { (b.overridden) }
                        }
                    }
                }
            }
        }
    };
    Ok(page::render_status(
        status,
        page::shell("Stats", "stats", Some(&user), Nav::Stats, body),
    ))
}

/// A rate as a table cell: the percentage, the counts behind it, and (with `ci`) its 95%
/// Wilson interval; "—" with no data.
fn rate_cell(p: &Proportion, ci: bool) -> Markup {
    html! {
        td.num.rate-cell title=(format!("{} of {}", p.successes, p.trials)) {
            @match p.rate {
                None => span.muted { "—" },
                Some(_) => {
                    (page::percent(p.rate)) " " span.muted.counts { (p.successes) "/" (p.trials) }
                    @if ci {
                        @if let (Some(lo), Some(hi)) = (p.low, p.high) {
                            br; span.interval title="95% Wilson score interval" {
                                (page::percent(Some(lo))) "–" (page::percent(Some(hi)))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Every queue with open reviews or decisions in the window: depth, SLA breaches, how often
/// humans override the AI there, QA accuracy and how fast decisions come.
fn queues_table(s: &StatsRecord) -> Markup {
    html! {
        section.card aria-labelledby="queues-title" {
            h2 #queues-title { "Queues" }
            @if s.queues.is_empty() {
                p.muted { "No open reviews and no decisions in any queue." }
            } @else {
                div.table-scroll {
                    table.data.compact data-testid="stats-queues" {
                        thead { tr {
                            th scope="col" { "Queue" } th scope="col" { "Open" } th scope="col" { "Past SLA" }
                            th scope="col" { "Override rate" } th scope="col" { "QA accuracy (95% CI)" }
                            th scope="col" { "Decision p50" } th scope="col" { "Decision p95" }
                        } }
                        tbody {
                            @for qs in &s.queues {
                                tr data-testid="queue-row" data-queue=(qs.queue) {
                                    td { a href=(format!("/?queue={}", page::urlencode(&qs.queue))) { (qs.queue) } }
                                    td.num { (qs.open) }
                                    td.num.sla-over[qs.overdue > 0] { (qs.overdue) }
                                    (rate_cell(&qs.override_rate, false))
                                    (rate_cell(&qs.qa_accuracy, true))
                                    td.num { (seconds(qs.time_to_decision_p50_s)) }
                                    td.num { (seconds(qs.time_to_decision_p95_s)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The per-agent (with escalations) or per-action table.
fn slice_table(id: &str, title: &str, key: &str, rows: &[SliceStats], agents: bool) -> Markup {
    let title_id = format!("slice-{id}-title");
    html! {
        section.card aria-labelledby=(title_id) {
            h2 id=(title_id) { (title) }
            @if rows.is_empty() {
                p.muted { "Nothing submitted in this window." }
            } @else {
                div.table-scroll {
                    table.data.compact data-testid=(format!("stats-{id}")) {
                        thead { tr {
                            th scope="col" { (key) } th scope="col" { "Items" } th scope="col" { "Automation rate" }
                            @if agents { th scope="col" { "Escalation rate" } }
                            th scope="col" { "Override rate" } th scope="col" { "QA accuracy (95% CI)" }
                        } }
                        tbody {
                            @for r in rows {
                                tr data-testid="slice-row" data-key=(r.key) {
                                    th scope="row" { (r.key) }
                                    td.num { (r.items) }
                                    (rate_cell(&r.automation_rate, false))
                                    @if agents {
                                        @match &r.escalation_rate {
                                            Some(p) => (rate_cell(p, false)),
                                            None => td.num { span.muted { "—" } },
                                        }
                                    }
                                    (rate_cell(&r.override_rate, false))
                                    (rate_cell(&r.qa_accuracy, true))
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn calibration_section(bands: &[CalibrationBand]) -> Markup {
    let graded: u64 = bands.iter().map(|b| b.count).sum();
    html! {
        section.card aria-labelledby="chart-calibration-title" data-testid="chart-calibration" {
            h2 #chart-calibration-title { "Calibration" }
            p.legend {
                span.swatch.swatch-auto {} "Accuracy per confidence band "
                span.swatch.swatch-diagonal {} "Perfect calibration"
            }
            @if graded == 0 {
                p.muted data-testid="calibration-empty" { "No graded items with a confidence in this window yet: approvals, rejections, edits, QA grades and flags are the evidence." }
            } @else {
                p.muted { (graded) " graded items. Bars under the diagonal: the AI is more sure of itself than it is right." }
            }
            (calibration_chart(bands))
            details.data-details {
                summary { "The numbers behind the chart" }
                (calibration_table(bands))
            }
        }
    }
}

/// Room under the calibration chart's plot for the per-band counts and the confidence axis.
const CALIBRATION_BOTTOM: f64 = 44.0;

/// Accuracy per confidence band (bars, with their 95% interval as a whisker; the number of
/// graded items under each) against the diagonal a perfectly calibrated AI would follow.
fn calibration_chart(bands: &[CalibrationBand]) -> Markup {
    let plot_h = H - TOP - CALIBRATION_BOTTOM;
    let plot_w = W - LEFT - RIGHT;
    let x_of = |c: f64| LEFT + plot_w * c.clamp(0.0, 1.0);
    let y_of = |r: f64| TOP + plot_h - plot_h * r.clamp(0.0, 1.0);
    let grid: Vec<(f64, String)> = [0.0, 0.5, 1.0]
        .iter()
        .map(|r| (y_of(*r), format!("{:.0}%", r * 100.0)))
        .collect();
    let graded: u64 = bands.iter().map(|b| b.count).sum();
    html! {
        svg.chart.calibration viewBox=(format!("0 0 {W} {H}")) role="img" aria-labelledby="chart-calibration-desc" {
            title #chart-calibration-desc { (format!("Accuracy per stated-confidence band over {graded} graded items, against perfect calibration")) }
            (gridlines(&grid))
            @for b in bands {
                @let x = x_of(b.low) + 3.0;
                @let w = (x_of(b.high) - x_of(b.low) - 6.0).max(1.0);
                @let mid = x_of((b.low + b.high) / 2.0);
                g.band data-count=(b.count) {
                    title { (band_label(b)) ": " (b.count) " graded" @if let Some(r) = b.accuracy.rate { ", " (page::percent(Some(r))) " right" } }
                    @if let Some(r) = b.accuracy.rate {
                        rect.bar-calibration x=(fmt(x)) y=(fmt(y_of(r))) width=(fmt(w)) height=(fmt(y_of(0.0) - y_of(r))) rx="2" {}
                        @if let (Some(lo), Some(hi)) = (b.accuracy.low, b.accuracy.high) {
                            line.whisker x1=(fmt(mid)) x2=(fmt(mid)) y1=(fmt(y_of(lo))) y2=(fmt(y_of(hi))) {}
                        }
                    }
                    text.axis-label.band-count x=(fmt(mid)) y=(fmt(y_of(0.0) + 13.0)) text-anchor="middle" { "n=" (b.count) }
                }
            }
            line.diagonal x1=(fmt(x_of(0.0))) y1=(fmt(y_of(0.0))) x2=(fmt(x_of(1.0))) y2=(fmt(y_of(1.0))) {}
            line.axis x1=(fmt(LEFT)) x2=(fmt(W - RIGHT)) y1=(fmt(y_of(0.0))) y2=(fmt(y_of(0.0))) {}
            @for (c, anchor) in [(0.0, "start"), (0.5, "middle"), (1.0, "end")] {
                text.axis-label x=(fmt(x_of(c))) y=(fmt(H - 6.0)) text-anchor=(anchor) { "confidence " (format!("{:.0}%", c * 100.0)) }
            }
        }
    }
}

fn band_label(b: &CalibrationBand) -> String {
    format!("{:.0}–{:.0}%", b.low * 100.0, b.high * 100.0)
}

fn calibration_table(bands: &[CalibrationBand]) -> Markup {
    html! {
        table.data.compact data-testid="calibration-table" {
            thead { tr {
                th scope="col" { "Confidence" } th scope="col" { "Graded" } th scope="col" { "Mean confidence" }
                th scope="col" { "Accuracy (95% CI)" }
            } }
            tbody {
                @for b in bands {
                    tr data-testid="calibration-row" {
                        th scope="row" { (band_label(b)) }
                        td.num { (b.count) }
                        td.num { (page::percent(b.mean_confidence)) }
                        (rate_cell(&b.accuracy, true))
                    }
                }
            }
        }
    }
}

/// The tune form and, once submitted, the tuner's answer.
fn tune_section(form: &TuneForm, tuned: &Tuned, window: &str, s: &StatsRecord) -> Markup {
    html! {
        section.card #tune aria-labelledby="tune-title" data-testid="tune" {
            h2 #tune-title { "Tune a confidence threshold" }
            p.muted { "The lowest confidence at or above which the AI's graded work keeps the target accuracy (at the lower end of its 95% interval), and how much would run without a human." }
            form.stack method="get" action="/stats#tune" data-testid="tune-form" {
                input type="hidden" name="window" value=(window);
                div.field-row {
                    div.field {
                        label for="tune-target" { "Target accuracy" }
                        input #tune-target type="text" inputmode="decimal" name="target_accuracy" value=(form.target)
                            required maxlength="20" aria-describedby="tune-target-hint" data-testid="tune-target";
                        p.hint #tune-target-hint { "From 0.5 to below 1, e.g. 0.98" }
                    }
                    div.field {
                        label for="tune-since" { "Evidence from the last" }
                        select #tune-since name="tune_since" data-testid="tune-since" {
                            @for (k, l) in TUNE_WINDOWS { option value=(k) selected[k == form.since] { (l) } }
                        }
                    }
                }
                div.field-row {
                    div.field {
                        label for="tune-agent" { "Agent " span.muted { "(optional)" } }
                        input #tune-agent type="text" name="agent" value=(form.agent) maxlength="200" list="tune-agents" data-testid="tune-agent";
                        datalist #tune-agents { @for a in &s.by_agent { option value=(a.key) {} } }
                    }
                    div.field {
                        label for="tune-action" { "Action " span.muted { "(optional)" } }
                        input #tune-action type="text" name="action" value=(form.action) maxlength="200" list="tune-actions" data-testid="tune-action";
                        datalist #tune-actions { @for a in &s.by_action { option value=(a.key) {} } }
                    }
                }
                div.form-actions {
                    button.btn.btn-primary type="submit" data-testid="tune-submit" { "Recommend a threshold" }
                }
            }
            (tune_result(tuned))
        }
    }
}

fn tune_result(tuned: &Tuned) -> Markup {
    match tuned {
        Tuned::NotAsked => html! {},
        Tuned::Refused(m) => page::error_banner(Some(m)),
        Tuned::Result(TuneResult::Recommended(r)) => html! {
            div.tune-result data-testid="tune-result" data-status="recommended" {
                p.tune-headline {
                    "Recommended threshold: confidence ≥ "
                    strong data-testid="tune-threshold" { (r.threshold) }
                }
                dl.meta-list {
                    dt { "Automation at it" }
                    dd data-testid="tune-automation" { (page::percent(Some(r.automation_rate))) " of " (r.items) " items would run without a human" }
                    dt { "Accuracy above it" }
                    dd data-testid="tune-accuracy" {
                        (page::percent(r.accuracy.rate)) " (" (r.accuracy.successes) " of " (r.accuracy.trials) " graded right)"
                        @if let (Some(lo), Some(hi)) = (r.accuracy.low, r.accuracy.high) {
                            ", 95% CI " (page::percent(Some(lo))) "–" (page::percent(Some(hi)))
                        }
                    }
                    dt { "Evidence" }
                    dd data-testid="tune-evidence" { (r.items) " items, " (r.graded) " graded with a confidence" }
                }
                p.muted { "Use it in a rule as " code { "threshold = " (r.threshold) } ", or let the server keep it tuned with " code { "threshold = \"auto\"" } "." }
            }
        },
        Tuned::Result(TuneResult::InsufficientEvidence {
            items,
            graded,
            needed,
            reason,
            ..
        }) => html! {
            div.tune-result.flash.flash-warn role="status" data-testid="tune-result" data-status="insufficient_evidence" {
                p { strong { "No threshold recommended. " } span data-testid="tune-reason" { (reason) } }
                p.muted { (items) " items in scope, " (graded) " graded with a confidence; " (needed) " graded items needed above a threshold." }
            }
        },
    }
}

// The charts' geometry, in SVG user units (the SVG scales to its container).
const W: f64 = 720.0;
const H: f64 = 220.0;
const LEFT: f64 = 44.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

fn tick(at: DateTime<Utc>, daily: bool) -> String {
    if daily {
        at.format("%b %d").to_string()
    } else {
        at.format("%H:%M").to_string()
    }
}

/// A round upper bound for an axis: 1, 2, 5, 10, 20, 50...
fn nice_max(v: i64) -> i64 {
    let v = v.max(1);
    let mut step = 1;
    loop {
        for m in [1, 2, 5] {
            if step * m >= v {
                return step * m;
            }
        }
        step *= 10;
    }
}

fn x_labels(series: &[StatsBucket], daily: bool, band: f64) -> Markup {
    let n = series.len();
    let picks: Vec<usize> = match n {
        0 => vec![],
        1 => vec![0],
        2 => vec![0, 1],
        _ => vec![0, n / 2, n - 1],
    };
    html! {
        @for i in picks {
            text.axis-label x=(fmt(LEFT + band * (i as f64 + 0.5))) y=(fmt(H - 8.0)) text-anchor="middle" {
                (tick(series[i].start, daily))
            }
        }
    }
}

fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

fn gridlines(labels: &[(f64, String)]) -> Markup {
    html! {
        @for (y, label) in labels {
            line.grid x1=(fmt(LEFT)) x2=(fmt(W - RIGHT)) y1=(fmt(*y)) y2=(fmt(*y)) {}
            text.axis-label x=(fmt(LEFT - 6.0)) y=(fmt(y + 4.0)) text-anchor="end" { (label) }
        }
    }
}

/// Stacked bars per bucket: automated (accent) under human-touched (muted).
fn volume_chart(series: &[StatsBucket], daily: bool) -> Markup {
    let plot_h = H - TOP - BOTTOM;
    let max = nice_max(series.iter().map(|b| b.submitted).max().unwrap_or(0));
    let n = series.len().max(1) as f64;
    let band = (W - LEFT - RIGHT) / n;
    let bar = (band * 0.7).max(1.0);
    let y_of = |v: i64| TOP + plot_h - plot_h * (v as f64 / max as f64);
    let grid: Vec<(f64, String)> = [0, max / 2, max]
        .iter()
        .map(|v| (y_of(*v), v.to_string()))
        .collect();
    let total: i64 = series.iter().map(|b| b.submitted).sum();
    html! {
        svg.chart viewBox=(format!("0 0 {W} {H}")) role="img" aria-labelledby="chart-volume-desc" {
            title #chart-volume-desc { (format!("Submitted work per interval: {total} in all")) }
            (gridlines(&grid))
            @for (i, b) in series.iter().enumerate() {
                @let x = LEFT + band * i as f64 + (band - bar) / 2.0;
                @let auto = b.automated.min(b.submitted).max(0);
                @let human = (b.submitted - auto).max(0);
                g {
                    title { (tick(b.start, daily)) ": " (b.submitted) " submitted, " (auto) " by the AI alone" }
                    @if auto > 0 {
                        rect.bar-auto x=(fmt(x)) y=(fmt(y_of(auto))) width=(fmt(bar)) height=(fmt(y_of(0) - y_of(auto))) rx="2" {}
                    }
                    @if human > 0 {
                        rect.bar-human x=(fmt(x)) y=(fmt(y_of(auto + human))) width=(fmt(bar)) height=(fmt(y_of(auto) - y_of(auto + human))) rx="2" {}
                    }
                }
            }
            line.axis x1=(fmt(LEFT)) x2=(fmt(W - RIGHT)) y1=(fmt(y_of(0))) y2=(fmt(y_of(0))) {}
            (x_labels(series, daily, band))
        }
    }
}

/// Lines of the automation and override rates per bucket (gaps where a bucket had no data).
fn rate_chart(series: &[StatsBucket], daily: bool) -> Markup {
    let plot_h = H - TOP - BOTTOM;
    let n = series.len().max(1) as f64;
    let band = (W - LEFT - RIGHT) / n;
    let y_of = |r: f64| TOP + plot_h - plot_h * r.clamp(0.0, 1.0);
    let grid: Vec<(f64, String)> = [0.0, 0.5, 1.0]
        .iter()
        .map(|r| (y_of(*r), format!("{:.0}%", r * 100.0)))
        .collect();
    let points = |f: &dyn Fn(&StatsBucket) -> Option<f64>| -> Vec<(f64, f64)> {
        series
            .iter()
            .enumerate()
            .filter_map(|(i, b)| f(b).map(|r| (LEFT + band * (i as f64 + 0.5), y_of(r))))
            .collect()
    };
    let automation = points(&|b| {
        (b.submitted > 0).then(|| b.automated.min(b.submitted) as f64 / b.submitted as f64)
    });
    let overrides =
        points(&|b| (b.decided > 0).then(|| b.overridden.min(b.decided) as f64 / b.decided as f64));
    let path = |pts: &[(f64, f64)]| -> String {
        pts.iter()
            .map(|(x, y)| format!("{},{}", fmt(*x), fmt(*y)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        svg.chart viewBox=(format!("0 0 {W} {H}")) role="img" aria-labelledby="chart-rates-desc" {
            title #chart-rates-desc { "Automation and override rates per interval" }
            (gridlines(&grid))
            @if automation.len() > 1 { polyline.line-auto points=(path(&automation)) {} }
            @for (x, y) in &automation { circle.dot-auto cx=(fmt(*x)) cy=(fmt(*y)) r="3" {} }
            @if overrides.len() > 1 { polyline.line-override points=(path(&overrides)) {} }
            @for (x, y) in &overrides { circle.dot-override cx=(fmt(*x)) cy=(fmt(*y)) r="3" {} }
            line.axis x1=(fmt(LEFT)) x2=(fmt(W - RIGHT)) y1=(fmt(y_of(0.0))) y2=(fmt(y_of(0.0))) {}
            (x_labels(series, daily, band))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_max(0), 1);
        assert_eq!(nice_max(3), 5);
        assert_eq!(nice_max(7), 10);
        assert_eq!(nice_max(11), 20);
        assert_eq!(nice_max(480), 500);
    }

    #[test]
    fn charts_render_empty_and_full_series() {
        let empty = volume_chart(&[], false).into_string();
        assert!(empty.contains("<svg"));
        let b = StatsBucket {
            start: Utc::now(),
            submitted: 10,
            automated: 7,
            decided: 3,
            overridden: 1,
        };
        let full = rate_chart(&[b.clone(), b], false).into_string();
        assert!(full.contains("polyline"));
    }

    fn points(spec: &[(f64, bool)]) -> Vec<loopgate_domain::learning::Point> {
        spec.iter()
            .map(|&(c, good)| loopgate_domain::learning::Point {
                confidence: Some(c),
                label: Some(good),
            })
            .collect()
    }

    #[test]
    fn the_calibration_chart_draws_the_diagonal_even_with_no_data() {
        let bands = loopgate_domain::learning::calibration(&[]);
        let svg = calibration_chart(&bands).into_string();
        assert!(svg.contains("<svg") && svg.contains("class=\"diagonal\""));
        assert!(!svg.contains("bar-calibration"), "no bars without data");
        assert_eq!(svg.matches("n=0").count(), 10);
        let section = calibration_section(&bands).into_string();
        assert!(section.contains("calibration-empty"));
        let table = calibration_table(&bands).into_string();
        assert_eq!(table.matches("data-testid=\"calibration-row\"").count(), 10);
    }

    #[test]
    fn the_calibration_chart_has_a_bar_per_band_with_data() {
        let bands = loopgate_domain::learning::calibration(&points(&[
            (0.95, true),
            (0.91, false),
            (0.97, true),
            (0.15, false),
            (0.55, true),
        ]));
        let svg = calibration_chart(&bands).into_string();
        assert_eq!(svg.matches("class=\"bar-calibration\"").count(), 3);
        assert_eq!(svg.matches("class=\"whisker\"").count(), 3);
        assert!(svg.contains("n=3") && svg.contains("n=1"));
        // 2 of 3 right in the top band: the bar reaches two thirds of the plot's height.
        let plot_h = H - TOP - CALIBRATION_BOTTOM;
        let y = fmt(TOP + plot_h - plot_h * (2.0 / 3.0));
        assert!(svg.contains(&format!("y=\"{y}\"")), "{svg}");
        // A band with no right answers draws a zero-height bar, not a missing one.
        let table = calibration_table(&bands).into_string();
        assert!(table.contains("66.7%"), "{table}");
        assert!(!calibration_section(&bands)
            .into_string()
            .contains("calibration-empty"));
    }

    #[test]
    fn the_tune_form_is_checked_like_the_api() {
        let form = |target: &str, agent: &str, since: &str| TuneForm {
            target: target.into(),
            agent: agent.into(),
            action: String::new(),
            since: since.into(),
        };
        let (t, scope) = form("0.98", " bot ", "7d").parse().expect("valid");
        assert_eq!(t, 0.98);
        assert_eq!(scope.agent.as_deref(), Some("bot"));
        assert_eq!(scope.action, None);
        for bad in [
            form("1.5", "", "7d"),
            form("lots", "", "7d"),
            form("0.9", "", "forever"),
        ] {
            assert!(bad.parse().is_err());
        }
        assert!(form("0.9", &"x".repeat(201), "7d").parse().is_err());
    }

    #[test]
    fn tune_results_render_both_ways() {
        let recommended = loopgate_domain::learning::tune(&points(&vec![(0.99, true); 300]), 0.95);
        let html = tune_result(&Tuned::Result(recommended)).into_string();
        assert!(
            html.contains("tune-threshold") && html.contains("0.99"),
            "{html}"
        );
        let thin = loopgate_domain::learning::tune(&points(&[(0.9, true)]), 0.95);
        let html = tune_result(&Tuned::Result(thin)).into_string();
        assert!(html.contains("too little evidence"), "{html}");
        assert!(tune_result(&Tuned::NotAsked).into_string().is_empty());
    }
}
