//! How long a workspace keeps its records, and where a prune may cut: pure arithmetic on a
//! retention period the caller parsed at the edge and a `now` the caller passes in.

use crate::types::Invalid;
use serde::{Deserialize, Serialize};

/// Kept when nobody set a period: a little over a year, comfortably above the legal minimum.
pub const DEFAULT_DAYS: i64 = 400;

/// EU AI Act art. 26(6): deployers keep the logs of a high-risk system for at least six months.
/// Six months are at most 31 + 31 + 30 + 31 + 30 + 30 = 183 days, so no shorter period is allowed.
pub const MIN_DAYS: i64 = 183;

/// A century: beyond it a period is a typo, and the cut-off time would leave the calendar.
pub const MAX_DAYS: i64 = 36_500;

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// A workspace's retention period, in whole days, within [`MIN_DAYS`]..=[`MAX_DAYS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct RetentionDays(i64);

impl RetentionDays {
    pub fn parse(days: i64) -> Result<RetentionDays, Invalid> {
        if days < MIN_DAYS {
            return Err(Invalid(format!(
                "must be at least {MIN_DAYS} days: the EU AI Act (art. 26(6)) asks that logs be kept \
                 at least six months; got {days}"
            )));
        }
        if days > MAX_DAYS {
            return Err(Invalid(format!(
                "must be at most {MAX_DAYS} days (100 years); got {days}"
            )));
        }
        Ok(RetentionDays(days))
    }

    pub fn days(self) -> i64 {
        self.0
    }

    /// Records whose final time is before this instant (ms since the epoch) are past retention.
    pub fn cutoff_ms(self, now_ms: i64) -> i64 {
        now_ms.saturating_sub(self.0 * DAY_MS)
    }
}

impl Default for RetentionDays {
    fn default() -> Self {
        RetentionDays(DEFAULT_DAYS)
    }
}

impl TryFrom<i64> for RetentionDays {
    type Error = Invalid;
    fn try_from(days: i64) -> Result<Self, Invalid> {
        RetentionDays::parse(days)
    }
}

impl From<RetentionDays> for i64 {
    fn from(d: RetentionDays) -> i64 {
        d.0
    }
}

/// Of the oldest events of a chain, `seqs_and_times` in seq order (`(seq, at_ms)`), how many
/// leading ones are past `cutoff_ms`. Only a prefix may go: an event stays, and so does every
/// event after it, as soon as one is within retention (a clock step back cannot punch a hole).
pub fn prunable_prefix(seqs_and_times: &[(i64, i64)], cutoff_ms: i64) -> usize {
    seqs_and_times
        .iter()
        .take_while(|(_, at_ms)| *at_ms < cutoff_ms)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_period_is_at_least_six_months() {
        assert_eq!(RetentionDays::default().days(), 400);
        assert!(RetentionDays::parse(183).is_ok());
        let e = RetentionDays::parse(182).unwrap_err();
        assert!(e.0.contains("at least 183"), "{e}");
        assert!(e.0.contains("26(6)"), "{e}");
        assert!(RetentionDays::parse(0).is_err());
        assert!(RetentionDays::parse(-5).is_err());
        assert!(RetentionDays::parse(MAX_DAYS).is_ok());
        assert!(RetentionDays::parse(MAX_DAYS + 1).is_err());
        assert!(serde_json::from_str::<RetentionDays>("90").is_err());
        assert_eq!(
            serde_json::from_str::<RetentionDays>("365").ok(),
            Some(RetentionDays(365))
        );
    }

    #[test]
    fn the_cutoff_is_the_period_before_now() {
        let d = RetentionDays::parse(200).unwrap();
        assert_eq!(d.cutoff_ms(1_000 * DAY_MS), 800 * DAY_MS);
        // Never overflows, whatever the clock says.
        assert!(d.cutoff_ms(i64::MIN) <= 0);
    }

    #[test]
    fn only_a_prefix_of_old_events_is_prunable() {
        let events = [(1, 10), (2, 20), (3, 90), (4, 30), (5, 95)];
        assert_eq!(prunable_prefix(&events, 50), 2);
        assert_eq!(prunable_prefix(&events, 5), 0);
        assert_eq!(prunable_prefix(&events, 100), 5);
        assert_eq!(prunable_prefix(&[], 100), 0);
    }
}
