//! `/stats`: how much the AI does alone, how often humans override it, how accurate its sampled
//! work is, how the queues keep up; with charts over time drawn on the server as inline SVG (no
//! charting library, nothing fetched: the page works offline and prints).

use super::page::{self, Nav, PageResult};
use super::session::ConsoleUser;
use crate::AppState;
use axum::extract::{RawQuery, State};
use chrono::{DateTime, Utc};
use loopgate_domain::stats::Proportion;
use loopgate_store::StatsBucket;
use maud::{html, Markup};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct StatsQuery {
    window: Option<String>,
}

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
        section.card aria-labelledby="queues-title" {
            h2 #queues-title { "Queues" }
            @if s.queues.is_empty() {
                p.muted { "No open reviews in any queue." }
            } @else {
                table.data.compact data-testid="stats-queues" {
                    thead { tr { th scope="col" { "Queue" } th scope="col" { "Open" } th scope="col" { "Past SLA" } } }
                    tbody {
                        @for qs in &s.queues {
                            tr {
                                td { a href=(format!("/?queue={}", page::urlencode(&qs.queue))) { (qs.queue) } }
                                td.num { (qs.open) }
                                td.num.sla-over[qs.overdue > 0] { (qs.overdue) }
                            }
                        }
                    }
                }
            }
        }
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
    Ok(page::render(page::shell(
        "Stats",
        "stats",
        Some(&user),
        Nav::Stats,
        body,
    )))
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
}
