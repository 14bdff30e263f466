//! Actions: what an agent proposes to do in the world, and the statuses it passes through.

use serde::{Deserialize, Serialize};

/// `pending` is the only non-final status: an action waits there for a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionStatus {
    Approved,
    Pending,
    Rejected,
    Blocked,
    Expired,
    Cancelled,
}

impl ActionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionStatus::Approved => "approved",
            ActionStatus::Pending => "pending",
            ActionStatus::Rejected => "rejected",
            ActionStatus::Blocked => "blocked",
            ActionStatus::Expired => "expired",
            ActionStatus::Cancelled => "cancelled",
        }
    }
    pub fn parse(s: &str) -> Option<ActionStatus> {
        Some(match s {
            "approved" => ActionStatus::Approved,
            "pending" => ActionStatus::Pending,
            "rejected" => ActionStatus::Rejected,
            "blocked" => ActionStatus::Blocked,
            "expired" => ActionStatus::Expired,
            "cancelled" => ActionStatus::Cancelled,
            _ => return None,
        })
    }
    pub fn is_final(self) -> bool {
        self != ActionStatus::Pending
    }
}

/// The stop button (EU AI Act art. 14(4)(e)): while a pause holds, new actions of the paused agent
/// (or of the whole workspace) wait for a human, or are refused outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PauseMode {
    Review,
    Block,
}

impl PauseMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseMode::Review => "review",
            PauseMode::Block => "block",
        }
    }
    pub fn parse(s: &str) -> Option<PauseMode> {
        match s {
            "review" => Some(PauseMode::Review),
            "block" => Some(PauseMode::Block),
            _ => None,
        }
    }
}

/// A pause in force: on one agent, or on the whole workspace when `agent` is `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pause {
    pub agent: Option<String>,
    pub mode: PauseMode,
    pub reason: String,
    pub set_by: String,
}

/// Of the pauses in force for one agent, the one that governs: `block` beats `review`, and a
/// workspace pause applies to every agent.
pub fn governing_pause<'a>(pauses: &'a [Pause], agent: &str) -> Option<&'a Pause> {
    pauses
        .iter()
        .filter(|p| p.agent.as_deref().is_none_or(|a| a == agent))
        .max_by_key(|p| match p.mode {
            PauseMode::Block => 1,
            PauseMode::Review => 0,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pause(agent: Option<&str>, mode: PauseMode) -> Pause {
        Pause {
            agent: agent.map(str::to_owned),
            mode,
            reason: "test".into(),
            set_by: "ops".into(),
        }
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            ActionStatus::Approved,
            ActionStatus::Pending,
            ActionStatus::Rejected,
            ActionStatus::Blocked,
            ActionStatus::Expired,
            ActionStatus::Cancelled,
        ] {
            assert_eq!(ActionStatus::parse(s.as_str()), Some(s));
            assert_eq!(s.is_final(), s != ActionStatus::Pending);
        }
    }

    #[test]
    fn block_beats_review_and_workspace_covers_all() {
        let ps = vec![
            pause(None, PauseMode::Review),
            pause(Some("bot-a"), PauseMode::Block),
        ];
        assert_eq!(
            governing_pause(&ps, "bot-a").map(|p| p.mode),
            Some(PauseMode::Block)
        );
        assert_eq!(
            governing_pause(&ps, "bot-b").map(|p| p.mode),
            Some(PauseMode::Review)
        );
        let only_a = vec![pause(Some("bot-a"), PauseMode::Review)];
        assert!(governing_pause(&only_a, "bot-b").is_none());
    }
}
