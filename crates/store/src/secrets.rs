//! Secrets: API tokens (random, shown once, stored as SHA-256) and console passwords (argon2id).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::RngCore;

/// A fresh API token: the `lg_` prefix and 32 random bytes in hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{}{}",
        loopgate_domain::auth::TOKEN_PREFIX,
        hex::encode(bytes)
    )
}

/// argon2id with the crate's default (OWASP-recommended) parameters. CPU-heavy by design:
/// call it off the async executor.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_prefixed() {
        let a = new_token();
        assert!(a.starts_with("lg_") && a.len() == 67);
        assert_ne!(a, new_token());
    }

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(
            crate::redact_url("postgres://app:s3cret@db:5432/lg"),
            "postgres://***@db:5432/lg"
        );
        assert_eq!(
            crate::redact_url("sqlite://loopgate.db"),
            "sqlite://loopgate.db"
        );
    }

    #[test]
    fn passwords_verify() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong", &h));
        assert!(!verify_password("x", "not a hash"));
    }
}
