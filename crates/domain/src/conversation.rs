//! Conversations between an end user and the AI, and who may speak or act in each state.
//!
//! ```text
//! ai ──escalate (policy or agent)──> waiting ──takeover──> human ──handback──> ai
//! ai ─────────────takeover (override at any time)───────> human
//! any ──close──> closed
//! ```
//! While `waiting` or `human` the AI may not post to the end user; its replies are refused (409).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConversationState {
    Ai,
    Waiting,
    Human,
    Closed,
}

impl ConversationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationState::Ai => "ai",
            ConversationState::Waiting => "waiting",
            ConversationState::Human => "human",
            ConversationState::Closed => "closed",
        }
    }
    pub fn parse(s: &str) -> Option<ConversationState> {
        Some(match s {
            "ai" => ConversationState::Ai,
            "waiting" => ConversationState::Waiting,
            "human" => ConversationState::Human,
            "closed" => ConversationState::Closed,
            _ => return None,
        })
    }
}

/// A change of state someone asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Escalate,
    Takeover,
    Handback,
    Close,
}

impl Transition {
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Escalate => "escalate",
            Transition::Takeover => "takeover",
            Transition::Handback => "handback",
            Transition::Close => "close",
        }
    }
    /// The event type the transition appends.
    pub fn event_type(self) -> &'static str {
        match self {
            Transition::Escalate => "conversation.escalated",
            Transition::Takeover => "conversation.taken_over",
            Transition::Handback => "conversation.handed_back",
            Transition::Close => "conversation.closed",
        }
    }
}

/// A refused transition or message, naming the state that refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a conversation that is {}", state.as_str())]
pub struct Refused {
    pub action: &'static str,
    pub state: ConversationState,
}

/// Where `t` leads from `from`, or why it may not.
pub fn transition(from: ConversationState, t: Transition) -> Result<ConversationState, Refused> {
    use ConversationState::*;
    let to = match (from, t) {
        (Ai, Transition::Escalate) => Waiting,
        (Ai | Waiting, Transition::Takeover) => Human,
        (Human, Transition::Handback) => Ai,
        (Ai | Waiting | Human, Transition::Close) => Closed,
        _ => {
            return Err(Refused {
                action: t.as_str(),
                state: from,
            })
        }
    };
    Ok(to)
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Ai,
    Human,
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Ai => "ai",
            Role::Human => "human",
            Role::System => "system",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "user" => Role::User,
            "ai" => Role::Ai,
            "human" => Role::Human,
            "system" => Role::System,
            _ => return None,
        })
    }
}

/// May a message of `role` be posted in `state`? The end user may always write (until closed);
/// the AI only while it holds the conversation; a human only after taking it over.
pub fn may_post(state: ConversationState, role: Role) -> Result<(), Refused> {
    use ConversationState::*;
    let ok = match role {
        Role::User | Role::System => state != Closed,
        Role::Ai => state == Ai,
        Role::Human => state == Human,
    };
    if ok {
        Ok(())
    } else {
        Err(Refused {
            action: match role {
                Role::User => "post a user message to",
                Role::Ai => "post an AI message to",
                Role::Human => "post a human message to",
                Role::System => "post a system message to",
            },
            state,
        })
    }
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Shown to the end user.
    Delivered,
    /// An AI draft held for a human's review before the end user may see it.
    Held,
    /// An AI draft held because the conversation was escalated to a human.
    Escalated,
    /// A held draft a human rejected, or whose conversation moved on: never shown.
    Discarded,
}

impl MessageStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageStatus::Delivered => "delivered",
            MessageStatus::Held => "held",
            MessageStatus::Escalated => "escalated",
            MessageStatus::Discarded => "discarded",
        }
    }
    pub fn parse(s: &str) -> Option<MessageStatus> {
        Some(match s {
            "delivered" => MessageStatus::Delivered,
            "held" => MessageStatus::Held,
            "escalated" => MessageStatus::Escalated,
            "discarded" => MessageStatus::Discarded,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConversationState::*;

    #[test]
    fn the_state_machine_of_the_design() {
        assert_eq!(transition(Ai, Transition::Escalate), Ok(Waiting));
        assert_eq!(transition(Waiting, Transition::Takeover), Ok(Human));
        assert_eq!(transition(Ai, Transition::Takeover), Ok(Human));
        assert_eq!(transition(Human, Transition::Handback), Ok(Ai));
        for s in [Ai, Waiting, Human] {
            assert_eq!(transition(s, Transition::Close), Ok(Closed));
        }
    }

    #[test]
    fn illegal_transitions_name_the_state() {
        let refused = [
            (Waiting, Transition::Escalate),
            (Human, Transition::Escalate),
            (Human, Transition::Takeover),
            (Ai, Transition::Handback),
            (Waiting, Transition::Handback),
            (Closed, Transition::Close),
            (Closed, Transition::Takeover),
            (Closed, Transition::Escalate),
            (Closed, Transition::Handback),
        ];
        for (s, t) in refused {
            let e = transition(s, t).unwrap_err();
            assert_eq!(e.state, s);
            assert!(e.to_string().contains(s.as_str()), "{e}");
        }
    }

    #[test]
    fn who_may_post() {
        assert!(may_post(Ai, Role::Ai).is_ok());
        assert!(may_post(Waiting, Role::Ai).is_err());
        assert!(may_post(Human, Role::Ai).is_err());
        assert!(may_post(Human, Role::Human).is_ok());
        assert!(may_post(Ai, Role::Human).is_err());
        assert!(may_post(Waiting, Role::User).is_ok());
        assert!(may_post(Closed, Role::User).is_err());
        assert_eq!(
            may_post(Human, Role::Ai).unwrap_err().to_string(),
            "cannot post an AI message to a conversation that is human"
        );
    }
}
