//! Bulk seeding: N pending actions, each with its pending review, written straight into the schema
//! the binary created, before the server starts. Through the API, 1M items would take minutes;
//! one SQL statement per table takes seconds. The seeded rows have no audit events (the audit
//! chain of a seeded database does not verify; no scenario reads it).

use std::path::Path;

use anyhow::Result;

/// Seeds `n` pending `wire_transfer` actions with pending `approval` reviews in queue `finance`,
/// created over the last 29 days (so `window=30d` and `since=30d` cover all of them).
pub fn pending_reviews(db: &Path, n: u64) -> Result<()> {
    let conn = rusqlite::Connection::open(db)?;
    // A throwaway bulk load: no fsync until the end, a big cache for the index builds. The server
    // sets WAL again when it opens the file.
    conn.pragma_update(None, "journal_mode", "DELETE")?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    conn.pragma_update(None, "cache_size", -262_144)?;
    let now = chrono::Utc::now().timestamp_millis();
    let span: i64 = 29 * 24 * 3600 * 1000;
    conn.execute_batch("BEGIN")?;
    // Ids are valid UUIDv7-shaped text, distinct per row and per table.
    conn.execute(
        "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?1)
         INSERT INTO actions (id, workspace, agent, name, arguments, proposed_arguments, confidence,
             context, status, rule, reason, policy_version, review_id, created_at)
         SELECT printf('00000000-0000-7000-8000-%012x', n), 'default', 'bench-agent', 'wire_transfer',
             '{\"amount\":120.5,\"to\":\"DE89370400440532013000\"}',
             '{\"amount\":120.5,\"to\":\"DE89370400440532013000\"}',
             0.5 + (n % 50) / 100.0, '{\"tier\":\"gold\",\"channel\":\"chat\"}', 'pending',
             'wires need a human', 'matched rule wires need a human', 1,
             printf('00000000-0000-7000-9000-%012x', n), ?2 + n * ?3 / ?1
         FROM seq",
        rusqlite::params![n as i64, now - span, span],
    )?;
    conn.execute(
        "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < ?1)
         INSERT INTO reviews (id, workspace, kind, status, queue, priority, due_key,
             approvals_required, rule, reason, policy_version, action_id, created_at)
         SELECT printf('00000000-0000-7000-9000-%012x', n), 'default', 'approval', 'pending',
             'finance', n % 3, 9223372036854775807, 1, 'wires need a human',
             'matched rule wires need a human', 1, printf('00000000-0000-7000-8000-%012x', n),
             ?2 + n * ?3 / ?1
         FROM seq",
        rusqlite::params![n as i64, now - span, span],
    )?;
    conn.execute_batch("COMMIT")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    Ok(())
}
