//! Roles and what each may do; API tokens and how they are recognised.

use serde::{Deserialize, Serialize};

/// Who a credential speaks for. Agents act through the agent API; reviewers decide reviews;
/// admins may do everything a reviewer may, plus policy, keys, users, webhooks and audit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Agent,
    Reviewer,
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "agent" => Some(Role::Agent),
            "reviewer" => Some(Role::Reviewer),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Reviewer => "reviewer",
            Role::Admin => "admin",
        }
    }
    /// Reviewers and admins review; agents never review their own work.
    pub fn can_review(self) -> bool {
        matches!(self, Role::Reviewer | Role::Admin)
    }
    pub fn is_admin(self) -> bool {
        self == Role::Admin
    }
}

/// Console passwords, in characters: long enough to resist guessing, short enough that argon2
/// hashing stays cheap. One rule for the CLI, the API and the console.
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=1024;

pub fn password_acceptable(password: &str) -> bool {
    PASSWORD_CHARS.contains(&password.chars().count())
}

/// Every API token starts with this, so a leaked one is easy to recognise by secret scanners.
pub const TOKEN_PREFIX: &str = "lg_";

/// API tokens are 256-bit random secrets, so a fast hash is the right tool to store them
/// (argon2 is for low-entropy passwords); a lookup by hash costs one index probe.
pub fn token_hash(token: &str) -> String {
    crate::audit::sha256_hex(token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles() {
        assert_eq!(Role::parse("admin"), Some(Role::Admin));
        assert_eq!(Role::parse("root"), None);
        assert!(Role::Admin.can_review() && Role::Reviewer.can_review());
        assert!(!Role::Agent.can_review());
        assert_eq!(token_hash("lg_x").len(), 64);
        assert!(!password_acceptable("short"));
        assert!(password_acceptable("eight ch"));
        assert!(password_acceptable(&"é".repeat(1024)));
        assert!(!password_acceptable(&"x".repeat(1025)));
    }
}
