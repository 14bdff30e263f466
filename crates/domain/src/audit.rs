//! The audit log as a hash chain: each event commits to its predecessor, so an edited, deleted
//! or reordered event breaks the chain at a seq that [`ChainVerifier`] names.
//!
//! Retention removes the oldest events; the chain then starts after seq 1. A prune appends a
//! checkpoint event ([`PRUNED_EVENT`]) that names the last seq it removed and that event's hash,
//! so the verifier accepts a chain starting at seq F > 1 only when a checkpoint in the chain
//! names seq F − 1 and the hash F links to: deleting old events is a recorded act, not a hole.

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

/// The type of the checkpoint event a prune appends.
pub const PRUNED_EVENT: &str = "audit.pruned";

/// What an [`PRUNED_EVENT`] records about the events it removed (its data may carry more, such as
/// the counts of other records removed; those fields are ignored here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The newest seq removed: every event up to it may be gone.
    pub last_pruned_seq: i64,
    /// That event's hash: the `prev_hash` of the first event that remains.
    pub last_pruned_hash: String,
    /// How many events this prune removed.
    pub pruned: u64,
}

impl Checkpoint {
    /// The checkpoint an event carries, if it is one.
    pub fn of(e: &Event) -> Option<Checkpoint> {
        if e.event_type != PRUNED_EVENT {
            return None;
        }
        serde_json::from_value(e.data.clone()).ok()
    }

    /// The checkpoint as event data, with `extra` fields (an object) merged in.
    pub fn to_data(&self, extra: Value) -> Value {
        let mut data =
            serde_json::to_value(self).unwrap_or_else(|_| Value::Object(Default::default()));
        if let (Value::Object(map), Value::Object(more)) = (&mut data, extra) {
            for (k, v) in more {
                map.entry(k).or_insert(v);
            }
        }
        data
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
    /// A chain that starts after seq 1: its first seq and that event's `prev_hash`, until a
    /// checkpoint names the seq before it with that hash.
    unanchored_start: Option<(i64, String)>,
    /// Of the checkpoints that name a seq before the start, the newest such seq: the events after
    /// it up to the start are the ones missing.
    latest_earlier_checkpoint: Option<i64>,
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
            unanchored_start: None,
            latest_earlier_checkpoint: None,
        }
    }

    pub fn push(&mut self, e: &Event) -> Result<(), ChainBreak> {
        if self.count == 0 && self.expected_seq == 1 && e.seq > 1 {
            // The chain starts after a prune, or after events were deleted: which of the two is
            // known only once a checkpoint naming this start turns up (checkpoints come later in
            // the chain than the events they name), or at `finish` when none did.
            self.expected_seq = e.seq;
            self.prev_hash.clone_from(&e.prev_hash);
            self.unanchored_start = Some((e.seq, e.prev_hash.clone()));
        }
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
        if let Some(cp) = Checkpoint::of(e) {
            self.anchor(&cp, e.seq)?;
        }
        self.prev_hash.clone_from(&e.hash);
        self.expected_seq += 1;
        self.count += 1;
        Ok(())
    }

    /// A verified checkpoint (at seq `at`): does it explain where the chain starts?
    fn anchor(&mut self, cp: &Checkpoint, at: i64) -> Result<(), ChainBreak> {
        let Some((start, start_prev)) = &self.unanchored_start else {
            return Ok(());
        };
        let before = start - 1;
        if cp.last_pruned_seq == before {
            if cp.last_pruned_hash != *start_prev {
                return Err(ChainBreak {
                    seq: *start,
                    problem: format!(
                        "prev_hash does not match the hash the checkpoint at seq {at} recorded for seq {before}"
                    ),
                });
            }
            self.unanchored_start = None;
        } else if cp.last_pruned_seq < before {
            self.latest_earlier_checkpoint = Some(
                self.latest_earlier_checkpoint
                    .map_or(cp.last_pruned_seq, |p| p.max(cp.last_pruned_seq)),
            );
        }
        Ok(())
    }

    /// After the last event: does the chain end where the recorded head says it does?
    /// This catches events deleted from the end, which the links alone cannot show.
    /// A chain that starts after seq 1 needs a checkpoint naming its start; without one, the
    /// first missing seq is the bad one.
    pub fn finish(&self, head_seq: i64, head_hash: &str) -> Result<u64, ChainBreak> {
        if let Some((start, _)) = &self.unanchored_start {
            return Err(ChainBreak {
                seq: self.latest_earlier_checkpoint.map_or(1, |p| p + 1),
                problem: format!(
                    "the log starts at seq {start}, but no {PRUNED_EVENT} checkpoint names seq {}: events were deleted",
                    start - 1
                ),
            });
        }
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

    /// Append to `events` a checkpoint for pruning every event up to `through`, then prune them.
    fn prune(events: &mut Vec<Event>, through: i64) {
        let last = events.last().expect("a chain");
        let named = events
            .iter()
            .find(|e| e.seq == through)
            .expect("the named event");
        let cp = Checkpoint {
            last_pruned_seq: through,
            last_pruned_hash: named.hash.clone(),
            pruned: events.iter().filter(|e| e.seq <= through).count() as u64,
        };
        let e = next_event(
            Some((last.seq, &last.hash)),
            "default",
            "2026-11-22T00:00:00.000Z",
            "system:prune",
            PRUNED_EVENT,
            "workspace:default",
            cp.to_data(json!({"older_than": "2025-10-18T00:00:00.000Z"})),
        );
        events.push(e);
        events.retain(|e| e.seq > through);
    }

    fn head(events: &[Event]) -> (i64, String) {
        let last = events.last().expect("a chain");
        (last.seq, last.hash.clone())
    }

    #[test]
    fn a_pruned_start_needs_a_checkpoint_that_names_it() {
        // Pruned with a checkpoint: accepted, counting what remains.
        let mut c = chain(10);
        prune(&mut c, 4);
        let (s, h) = head(&c);
        assert_eq!(c[0].seq, 5);
        assert_eq!(verify_all(&c, (s, &h)), Ok(7));

        // The same start without a checkpoint: events were deleted, from seq 1 on.
        let c = chain(10);
        let (s, h) = head(&c);
        let cut: Vec<Event> = c.iter().filter(|e| e.seq > 4).cloned().collect();
        let err = verify_all(&cut, (s, &h)).unwrap_err();
        assert_eq!(err.seq, 1, "{err}");

        // One more event deleted after the prune: the first missing one is named.
        let mut c = chain(10);
        prune(&mut c, 4);
        let (s, h) = head(&c);
        c.remove(0);
        let err = verify_all(&c, (s, &h)).unwrap_err();
        assert_eq!(err.seq, 5, "{err}");
    }

    #[test]
    fn a_checkpoint_may_be_the_first_remaining_record_and_prunes_repeat() {
        let mut c = chain(5);
        prune(&mut c, 5);
        assert_eq!(c.len(), 1);
        let (s, h) = head(&c);
        assert_eq!(verify_all(&c, (s, &h)), Ok(1));

        // A second prune removes the first checkpoint too; the newest one anchors the start.
        let mut c = chain(10);
        prune(&mut c, 3);
        prune(&mut c, 8);
        let (s, h) = head(&c);
        assert_eq!(c[0].seq, 9);
        assert_eq!(verify_all(&c, (s, &h)), Ok(c.len() as u64));
        // Deleting the first survivor is still caught, at its seq.
        let mut tampered = c.clone();
        tampered.remove(0);
        assert_eq!(verify_all(&tampered, (s, &h)).unwrap_err().seq, 9);
    }

    #[test]
    fn tampering_after_a_prune_is_still_named() {
        let mut c = chain(10);
        prune(&mut c, 4);
        let (s, h) = head(&c);
        let mut edited = c.clone();
        edited[2].data = json!({"n": 99});
        assert_eq!(verify_all(&edited, (s, &h)).unwrap_err().seq, 7);

        // The survivors relinked to another start and rehashed, head and all: the first one's
        // prev_hash no longer matches the hash the checkpoint recorded.
        let mut relinked = c.clone();
        let mut prev = GENESIS_HASH.to_owned();
        for e in relinked.iter_mut() {
            e.prev_hash = prev;
            e.hash = e.expected_hash();
            prev = e.hash.clone();
        }
        let (rs, rh) = head(&relinked);
        let err = verify_all(&relinked, (rs, &rh)).unwrap_err();
        assert_eq!(err.seq, 5, "{err}");

        // A checkpoint's own data edited: caught by its hash.
        let mut forged = c.clone();
        let last = forged.len() - 1;
        forged[last].data["last_pruned_seq"] = json!(2);
        assert_eq!(verify_all(&forged, (s, &h)).unwrap_err().seq, 11);
    }

    #[test]
    fn a_checkpoint_with_the_wrong_hash_anchors_nothing() {
        let mut c = chain(10);
        prune(&mut c, 4);
        // Rebuild the checkpoint (and the head) with another hash, as a forger without the
        // pruned events would have to.
        let last = c.pop().expect("the checkpoint");
        let mut data = last.data.clone();
        data["last_pruned_hash"] = json!(GENESIS_HASH);
        let prev = c.last().expect("an event");
        let forged = next_event(
            Some((prev.seq, &prev.hash)),
            "default",
            &last.at,
            &last.actor,
            PRUNED_EVENT,
            &last.subject,
            data,
        );
        c.push(forged);
        let (s, h) = head(&c);
        let err = verify_all(&c, (s, &h)).unwrap_err();
        assert_eq!(err.seq, 5, "{err}");
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let mut s = String::new();
        write_canonical(&json!({"b": 1, "a": {"d": [true, null], "c": "x"}}), &mut s);
        assert_eq!(s, r#"{"a":{"c":"x","d":[true,null]},"b":1}"#);
    }
}
