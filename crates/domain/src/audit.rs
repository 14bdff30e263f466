//! The audit log as a hash chain: each event commits to its predecessor, so an edited, deleted
//! or reordered event breaks the chain at a seq that [`verify`] names.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of a workspace's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit event, as stored and as served (SSE, webhooks, `GET /v1/audit`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: i64,
    pub workspace: String,
    /// RFC 3339 UTC with milliseconds, hashed exactly as stored.
    pub at: String,
    pub actor: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub subject: String,
    pub data: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// `SHA-256(prev_hash ‖ canonical JSON of the other fields)`, hex. Canonical JSON: object keys
/// sorted, no white space; done here rather than trusting serde_json's map order, which a
/// feature flag elsewhere in the build could change.
#[allow(clippy::too_many_arguments)]
pub fn event_hash(
    prev_hash: &str,
    seq: i64,
    workspace: &str,
    at: &str,
    actor: &str,
    event_type: &str,
    subject: &str,
    data: &Value,
) -> String {
    let body = serde_json::json!({
        "seq": seq,
        "workspace": workspace,
        "at": at,
        "actor": actor,
        "type": event_type,
        "subject": subject,
        "data": data,
    });
    let mut canonical = String::new();
    write_canonical(&body, &mut canonical);
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

impl Event {
    /// The hash this event should carry, recomputed from its fields.
    pub fn expected_hash(&self) -> String {
        event_hash(
            &self.prev_hash,
            self.seq,
            &self.workspace,
            &self.at,
            &self.actor,
            &self.event_type,
            &self.subject,
            &self.data,
        )
    }
}

/// JSON with object keys sorted and no white space: equal values give equal text.
pub fn canonical_json(v: &Value) -> String {
    let mut out = String::new();
    write_canonical(v, &mut out);
    out
}

/// SHA-256 of `bytes`, in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(child) = map.get(*k) {
                    write_canonical(child, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// Where and why a chain is broken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad seq {seq}: {problem}")]
pub struct ChainBreak {
    pub seq: i64,
    pub problem: String,
}

/// Incremental verifier over one workspace's events in `seq` order, so a caller can stream
/// millions of events through it without holding them.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: String,
    pub count: u64,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    pub fn new() -> Self {
        ChainVerifier {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_owned(),
            count: 0,
        }
    }

    pub fn push(&mut self, e: &Event) -> Result<(), ChainBreak> {
        if e.seq != self.expected_seq {
            // A gap means deleted events; a smaller seq means reordering.
            return Err(ChainBreak {
                seq: self.expected_seq.min(e.seq),
                problem: format!("expected seq {}, found {}", self.expected_seq, e.seq),
            });
        }
        if e.prev_hash != self.prev_hash {
            return Err(ChainBreak {
                seq: e.seq,
                problem: "prev_hash does not match the previous event's hash".into(),
            });
        }
        if e.expected_hash() != e.hash {
            return Err(ChainBreak {
                seq: e.seq,
                problem: "hash does not match the event's content".into(),
            });
        }
        self.prev_hash.clone_from(&e.hash);
        self.expected_seq += 1;
        self.count += 1;
        Ok(())
    }

    /// After the last event: does the chain end where the recorded head says it does?
    /// This catches events deleted from the end, which the links alone cannot show.
    pub fn finish(&self, head_seq: i64, head_hash: &str) -> Result<u64, ChainBreak> {
        let last_seq = self.expected_seq - 1;
        if head_seq != last_seq || (head_seq > 0 && head_hash != self.prev_hash) {
            return Err(ChainBreak {
                seq: last_seq.min(head_seq) + 1,
                problem: format!(
                    "the log ends at seq {last_seq} but its recorded head is seq {head_seq}"
                ),
            });
        }
        Ok(self.count)
    }
}

/// Build the next event of a chain (used by the store inside its transaction).
pub fn next_event(
    prev: Option<(i64, &str)>,
    workspace: &str,
    at: &str,
    actor: &str,
    event_type: &str,
    subject: &str,
    data: Value,
) -> Event {
    let (seq, prev_hash) = match prev {
        Some((s, h)) => (s + 1, h.to_owned()),
        None => (1, GENESIS_HASH.to_owned()),
    };
    let hash = event_hash(
        &prev_hash, seq, workspace, at, actor, event_type, subject, &data,
    );
    Event {
        seq,
        workspace: workspace.to_owned(),
        at: at.to_owned(),
        actor: actor.to_owned(),
        event_type: event_type.to_owned(),
        subject: subject.to_owned(),
        data,
        prev_hash,
        hash,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: i64) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|e| (e.seq, e.hash.as_str()));
            let e = next_event(
                prev,
                "default",
                "2026-11-21T00:00:00.000Z",
                "agent:bot",
                "action.created",
                &format!("action:{i}"),
                json!({"n": i, "b": {"z": 1, "a": [1, 2]}}),
            );
            out.push(e);
        }
        out
    }

    fn verify_all(events: &[Event], head: (i64, &str)) -> Result<u64, ChainBreak> {
        let mut v = ChainVerifier::new();
        for e in events {
            v.push(e)?;
        }
        v.finish(head.0, head.1)
    }

    #[test]
    fn intact_chain_verifies() {
        let c = chain(5);
        let head = (5, c[4].hash.clone());
        assert_eq!(verify_all(&c, (head.0, &head.1)), Ok(5));
        assert_eq!(verify_all(&[], (0, "")), Ok(0));
    }

    #[test]
    fn edit_is_detected_at_its_seq() {
        let mut c = chain(5);
        let head = c[4].hash.clone();
        c[2].data = json!({"n": 99});
        assert_eq!(verify_all(&c, (5, &head)).unwrap_err().seq, 3);
    }

    #[test]
    fn delete_and_reorder_are_detected() {
        let c = chain(5);
        let head = c[4].hash.clone();
        let mut deleted = c.clone();
        deleted.remove(1);
        assert_eq!(verify_all(&deleted, (5, &head)).unwrap_err().seq, 2);
        let mut reordered = c.clone();
        reordered.swap(1, 2);
        assert_eq!(verify_all(&reordered, (5, &head)).unwrap_err().seq, 2);
        let truncated = &c[..4];
        assert_eq!(verify_all(truncated, (5, &head)).unwrap_err().seq, 5);
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let mut s = String::new();
        write_canonical(&json!({"b": 1, "a": {"d": [true, null], "c": "x"}}), &mut s);
        assert_eq!(s, r#"{"a":{"c":"x","d":[true,null]},"b":1}"#);
    }
}
