//! Small newtypes parsed at the edge, so the rest of the code can trust them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a value was refused: the message names the problem; the caller names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// The AI's own confidence in an output, a probability in `0..=1`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Serialize, Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Confidence(f64);

impl Confidence {
    pub fn value(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Confidence {
    type Error = Invalid;
    fn try_from(v: f64) -> Result<Self, Invalid> {
        if v.is_finite() && (0.0..=1.0).contains(&v) {
            Ok(Confidence(v))
        } else {
            Err(Invalid(format!("must be a number from 0 to 1, got {v}")))
        }
    }
}

impl From<Confidence> for f64 {
    fn from(c: Confidence) -> f64 {
        c.0
    }
}

/// A name used as an identifier: workspaces, agents, queues, key names, usernames.
/// 1 to 64 characters of `A-Z a-z 0-9 _ . - @`, so it is safe in URLs, logs and metric labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

impl Name {
    pub fn parse(s: &str) -> Result<Name, Invalid> {
        if s.is_empty() || s.len() > 64 {
            return Err(Invalid("must be 1 to 64 characters".into()));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@'))
        {
            return Err(Invalid(format!(
                "{s:?} may contain only letters, digits and _ . - @"
            )));
        }
        Ok(Name(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Name::parse(&s)
    }
}
impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}
impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The name of an action an agent proposes (a tool name): 1 to 128 characters of
/// `A-Z a-z 0-9 _ . : / -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ActionName(String);

impl ActionName {
    pub fn parse(s: &str) -> Result<ActionName, Invalid> {
        if s.is_empty() || s.len() > 128 {
            return Err(Invalid("must be 1 to 128 characters".into()));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '/' | '-'))
        {
            return Err(Invalid(format!(
                "{s:?} may contain only letters, digits and _ . : / -"
            )));
        }
        Ok(ActionName(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for ActionName {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        ActionName::parse(&s)
    }
}
impl From<ActionName> for String {
    fn from(n: ActionName) -> String {
        n.0
    }
}

/// A JSON object (`{...}`), the shape of action arguments and contexts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(try_from = "serde_json::Value", into = "serde_json::Value")]
pub struct JsonObject(serde_json::Map<String, serde_json::Value>);

impl JsonObject {
    pub fn into_value(self) -> serde_json::Value {
        serde_json::Value::Object(self.0)
    }
}
impl TryFrom<serde_json::Value> for JsonObject {
    type Error = Invalid;
    fn try_from(v: serde_json::Value) -> Result<Self, Invalid> {
        match v {
            serde_json::Value::Object(m) => Ok(JsonObject(m)),
            other => Err(Invalid(format!(
                "must be a JSON object, got {}",
                json_kind(&other)
            ))),
        }
    }
}
impl From<JsonObject> for serde_json::Value {
    fn from(o: JsonObject) -> serde_json::Value {
        serde_json::Value::Object(o.0)
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_range() {
        assert!(Confidence::try_from(0.0).is_ok());
        assert!(Confidence::try_from(1.0).is_ok());
        assert!(Confidence::try_from(1.01).is_err());
        assert!(Confidence::try_from(-0.1).is_err());
        assert!(Confidence::try_from(f64::NAN).is_err());
        assert!(serde_json::from_str::<Confidence>("1.5").is_err());
    }

    #[test]
    fn names() {
        assert!(Name::parse("support-bot").is_ok());
        assert!(Name::parse("").is_err());
        assert!(Name::parse("a b").is_err());
        assert!(Name::parse(&"x".repeat(65)).is_err());
        assert!(ActionName::parse("stripe/issue_refund").is_ok());
        assert!(ActionName::parse("drop table;").is_err());
    }

    #[test]
    fn json_object() {
        assert!(serde_json::from_str::<JsonObject>("{\"a\":1}").is_ok());
        let err = serde_json::from_str::<JsonObject>("[1]").unwrap_err();
        assert!(err.to_string().contains("must be a JSON object"));
    }
}
