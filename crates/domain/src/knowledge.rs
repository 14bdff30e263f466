//! Knowledge changes: an agent proposes an addition to its knowledge base, a human approves,
//! edits or rejects it (a `kb_change` review), and only approved changes reach the agents.
//! Here: what a proposal (or a reviewer's rewrite) must look like.

/// Longest title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Largest text, in bytes (100 KiB).
pub const MAX_TEXT_BYTES: usize = 100 * 1024;

/// Why a title or text is refused, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Refused {
    pub field: &'static str,
    pub message: String,
}

/// A title: not blank, at most [`MAX_TITLE_CHARS`] characters. Returned trimmed.
pub fn title(raw: &str) -> Result<String, Refused> {
    let t = raw.trim();
    if t.is_empty() {
        return Err(Refused {
            field: "title",
            message: "must not be empty".into(),
        });
    }
    if t.chars().count() > MAX_TITLE_CHARS {
        return Err(Refused {
            field: "title",
            message: format!("at most {MAX_TITLE_CHARS} characters"),
        });
    }
    Ok(t.to_owned())
}

/// A text: not blank, at most [`MAX_TEXT_BYTES`] bytes. Kept as written.
pub fn text(raw: &str) -> Result<String, Refused> {
    if raw.trim().is_empty() {
        return Err(Refused {
            field: "text",
            message: "must not be empty".into(),
        });
    }
    if raw.len() > MAX_TEXT_BYTES {
        return Err(Refused {
            field: "text",
            message: format!("at most {MAX_TEXT_BYTES} bytes (100 KB)"),
        });
    }
    Ok(raw.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(title("  Returns  ").unwrap(), "Returns");
        assert_eq!(title(" ").unwrap_err().field, "title");
        assert!(title(&"é".repeat(200)).is_ok());
        assert!(title(&"é".repeat(201)).is_err());
        assert!(text(&"a".repeat(MAX_TEXT_BYTES)).is_ok());
        assert_eq!(
            text(&"a".repeat(MAX_TEXT_BYTES + 1)).unwrap_err().field,
            "text"
        );
        assert!(text("\n").is_err());
    }
}
