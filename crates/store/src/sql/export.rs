//! The training export's queries: one keyset page at a time (`id > last ORDER BY id LIMIT n`,
//! see `crate::export` for the streaming invariant). Each page costs a fixed number of queries:
//! the page's rows, then the transcripts (and, for `openai`, the reviews) of all the
//! conversations it touches, in one `IN (...)` query each. What each row becomes is decided by
//! `loopgate_domain::training`.

use super::db::{Conn, Db, DbRow};
use super::store::{corrupt, ms_to_time, parse_json};
use crate::records::ExportPage;
use crate::Result;
use loopgate_domain::conversation::Role;
use loopgate_domain::review::ReviewKind;
use loopgate_domain::training::{
    action_input, chat_messages, dpo_pair, openai_example, vetting, Correction, Format,
    MessageReview, ShownMessage, Vetting,
};
use serde_json::{json, Value};
use sqlx::Row;
use std::collections::HashMap;

pub(crate) async fn page(
    c: &mut Conn,
    ws: &str,
    format: Format,
    since_ms: i64,
    after: Option<String>,
    limit: i64,
) -> Result<ExportPage> {
    let after = after.unwrap_or_default();
    match format {
        Format::OpenAi => openai_page(c, ws, since_ms, &after, limit).await,
        Format::Dpo | Format::Corrections => {
            decisions_page(c, ws, format, since_ms, &after, limit).await
        }
    }
}

/// A delivered message, with what places it in its conversation.
struct Shown {
    id: String,
    created_at: i64,
    message: ShownMessage,
}

/// The delivered messages of `conversations`, each in conversation order.
async fn transcripts(
    c: &mut Conn,
    ws: &str,
    conversations: &[String],
) -> Result<HashMap<String, Vec<Shown>>> {
    let mut out: HashMap<String, Vec<Shown>> = HashMap::new();
    if conversations.is_empty() {
        return Ok(out);
    }
    let mut q = sqlx::QueryBuilder::<Db>::new(
        "SELECT conversation_id, id, role, text, created_at FROM messages WHERE workspace = ",
    );
    q.push_bind(ws.to_owned())
        .push(" AND status = 'delivered' AND conversation_id IN (");
    let mut ids = q.separated(", ");
    for id in conversations {
        ids.push_bind(id.clone());
    }
    q.push(") ORDER BY conversation_id, created_at, id");
    for row in q.build().fetch_all(&mut *c).await? {
        let role: String = row.try_get("role")?;
        out.entry(row.try_get("conversation_id")?)
            .or_default()
            .push(Shown {
                id: row.try_get("id")?,
                created_at: row.try_get("created_at")?,
                message: ShownMessage {
                    role: Role::parse(&role).ok_or_else(|| corrupt("message role", &role))?,
                    text: row.try_get("text")?,
                    vetting: Vetting::Unvetted,
                },
            });
    }
    Ok(out)
}

/// The messages shown before `(at, id)`: the context of something produced then.
fn before(transcript: Option<&Vec<Shown>>, at: i64, id: &str) -> Vec<ShownMessage> {
    transcript
        .map(|t| {
            t.iter()
                .filter(|m| m.created_at < at || (m.created_at == at && m.id.as_str() < id))
                .map(|m| m.message.clone())
                .collect()
        })
        .unwrap_or_default()
}

async fn openai_page(
    c: &mut Conn,
    ws: &str,
    since_ms: i64,
    after: &str,
    limit: i64,
) -> Result<ExportPage> {
    let ids: Vec<(String,)> = sqlx::query_as(
        "SELECT id FROM conversations WHERE workspace = $1 AND id > $2 AND updated_at >= $3
         ORDER BY id LIMIT $4",
    )
    .bind(ws)
    .bind(after)
    .bind(since_ms)
    .bind(limit)
    .fetch_all(&mut *c)
    .await?;
    let ids: Vec<String> = ids.into_iter().map(|(id,)| id).collect();
    let next = (ids.len() as i64 == limit)
        .then(|| ids.last().cloned())
        .flatten();
    let mut transcripts = transcripts(c, ws, &ids).await?;
    let mut reviews: HashMap<String, Vec<MessageReview>> = HashMap::new();
    if !ids.is_empty() {
        // A grading decision's text is the reviewer's corrected answer.
        let mut q = sqlx::QueryBuilder::<Db>::new(
            "SELECT r.message_id, r.kind, r.outcome,
               (SELECT d.text FROM decisions d WHERE d.review_id = r.id AND d.text IS NOT NULL
                ORDER BY d.created_at DESC, d.id DESC LIMIT 1) AS correction
             FROM reviews r WHERE r.workspace = ",
        );
        q.push_bind(ws.to_owned())
            .push(" AND r.message_id IS NOT NULL AND r.conversation_id IN (");
        let mut sep = q.separated(", ");
        for id in &ids {
            sep.push_bind(id.clone());
        }
        q.push(")");
        for row in q.build().fetch_all(&mut *c).await? {
            let kind: String = row.try_get("kind")?;
            reviews
                .entry(row.try_get("message_id")?)
                .or_default()
                .push(MessageReview {
                    kind: ReviewKind::parse(&kind).ok_or_else(|| corrupt("review kind", &kind))?,
                    outcome: row.try_get("outcome")?,
                    correction: row.try_get("correction")?,
                });
        }
    }
    let mut records = Vec::new();
    for id in &ids {
        let Some(shown) = transcripts.remove(id) else {
            continue;
        };
        let messages: Vec<ShownMessage> = shown
            .into_iter()
            .map(|s| {
                let mut m = s.message;
                if m.role == Role::Ai {
                    m.vetting = vetting(reviews.get(&s.id).map_or(&[][..], Vec::as_slice));
                }
                m
            })
            .collect();
        if let Some(example) = openai_example(&messages) {
            records.push(example);
        }
    }
    Ok(ExportPage { records, next })
}

const DECISIONS_SELECT: &str = "SELECT d.id, d.review_id, d.reviewer, d.verdict, d.arguments, \
     d.text, d.grade, d.comment, d.created_at, r.kind, r.action_id, r.conversation_id, \
     a.agent AS a_agent, a.name AS a_name, a.proposed_arguments, a.context AS a_context, \
     a.conversation_id AS a_conversation, a.created_at AS a_created_at, \
     m.id AS m_id, m.text AS m_text, m.original_text AS m_original, m.created_at AS m_created_at, \
     c.agent AS c_agent, \
     k.agent AS k_agent, k.proposed_title, k.proposed_text, k.created_at AS k_created_at \
     FROM decisions d JOIN reviews r ON r.id = d.review_id \
     LEFT JOIN actions a ON a.id = r.action_id \
     LEFT JOIN messages m ON m.id = r.message_id \
     LEFT JOIN conversations c ON c.id = r.conversation_id \
     LEFT JOIN knowledge_changes k ON k.review_id = r.id \
     WHERE d.workspace = $1 AND d.id > $2 AND d.created_at >= $3";

/// Corrections: every decision that overrode AI output (an edit, a rejection, a bad grade).
const CORRECTIONS_FILTER: &str = "(d.verdict IN ('edit', 'reject') OR d.grade = 'incorrect')";

/// Preference pairs: the last edit of an approved draft, escalation reply or action (earlier
/// edits were superseded), and graded answers a reviewer rewrote.
const DPO_FILTER: &str = "r.kind <> 'kb_change' AND ((d.verdict = 'edit' AND r.outcome = 'approved' \
     AND NOT EXISTS (SELECT 1 FROM decisions e WHERE e.review_id = d.review_id AND e.verdict = 'edit' \
        AND e.id > d.id)) \
     OR (d.grade = 'incorrect' AND (d.text IS NOT NULL OR d.arguments IS NOT NULL)))";

async fn decisions_page(
    c: &mut Conn,
    ws: &str,
    format: Format,
    since_ms: i64,
    after: &str,
    limit: i64,
) -> Result<ExportPage> {
    let filter = if format == Format::Dpo {
        DPO_FILTER
    } else {
        CORRECTIONS_FILTER
    };
    let sql = format!("{DECISIONS_SELECT} AND {filter} ORDER BY d.id LIMIT $4");
    let rows = sqlx::query(&sql)
        .bind(ws)
        .bind(after)
        .bind(since_ms)
        .bind(limit)
        .fetch_all(&mut *c)
        .await?;
    let next = match rows.last() {
        Some(last) if rows.len() as i64 == limit => Some(last.try_get::<String, _>("id")?),
        _ => None,
    };
    let mut conversations: Vec<String> = Vec::new();
    for row in &rows {
        if let Some(cid) = context_conversation(row)? {
            if !conversations.contains(&cid) {
                conversations.push(cid);
            }
        }
    }
    let transcripts = transcripts(c, ws, &conversations).await?;
    let mut records = Vec::with_capacity(rows.len());
    for row in &rows {
        let record = if format == Format::Dpo {
            dpo_record(row, &transcripts)?
        } else {
            correction_record(row, &transcripts)?
        };
        records.extend(record);
    }
    Ok(ExportPage { records, next })
}

/// The conversation whose transcript is a decision's context.
fn context_conversation(row: &DbRow) -> Result<Option<String>> {
    let review: Option<String> = row.try_get("conversation_id")?;
    let action: Option<String> = row.try_get("a_conversation")?;
    Ok(review.or(action))
}

/// What the AI produced and what came before it.
struct Subject {
    kind: ReviewKind,
    /// An action (an approval gate, or a QA sample of one that ran) rather than words.
    is_action: bool,
    ai_output: Value,
    context: Vec<ShownMessage>,
}

fn subject(row: &DbRow, transcripts: &HashMap<String, Vec<Shown>>) -> Result<Option<Subject>> {
    let kind_s: String = row.try_get("kind")?;
    let kind = ReviewKind::parse(&kind_s).ok_or_else(|| corrupt("review kind", &kind_s))?;
    let transcript = context_conversation(row)?.and_then(|cid| transcripts.get(&cid));
    let is_action = row.try_get::<Option<String>, _>("a_name")?.is_some();
    let (ai_output, at, id): (Value, Option<i64>, String) = match kind {
        _ if is_action => {
            let Some(proposed) = row.try_get::<Option<String>, _>("proposed_arguments")? else {
                return Ok(None);
            };
            (
                parse_json(&proposed)?,
                row.try_get("a_created_at")?,
                String::new(),
            )
        }
        ReviewKind::KbChange => {
            let Some(text) = row.try_get::<Option<String>, _>("proposed_text")? else {
                return Ok(None);
            };
            (json!(text), row.try_get("k_created_at")?, String::new())
        }
        ReviewKind::Approval => return Ok(None),
        ReviewKind::Draft | ReviewKind::Escalation | ReviewKind::Qa | ReviewKind::Flag => {
            let Some(text) = row.try_get::<Option<String>, _>("m_text")? else {
                // An escalation the agent raised has no AI reply to correct.
                return Ok(None);
            };
            let original: Option<String> = row.try_get("m_original")?;
            // A held draft's AI text is its original when a reviewer rewrote it; an answer
            // already shown (QA, flag) is graded as the user saw it.
            let ai = match kind {
                ReviewKind::Draft | ReviewKind::Escalation => original.unwrap_or(text),
                _ => text,
            };
            (
                json!(ai),
                row.try_get("m_created_at")?,
                row.try_get::<Option<String>, _>("m_id")?
                    .unwrap_or_default(),
            )
        }
    };
    let context = match at {
        Some(at) => before(transcript, at, &id),
        None => Vec::new(),
    };
    Ok(Some(Subject {
        kind,
        is_action,
        ai_output,
        context,
    }))
}

/// The human's version: an edit's (or a bad grade's) arguments for an action, its text for a
/// message or knowledge; `null` for a plain rejection.
fn human_output(row: &DbRow, s: &Subject) -> Result<Value> {
    let verdict: String = row.try_get("verdict")?;
    let text: Option<String> = row.try_get("text")?;
    let arguments: Option<String> = row.try_get("arguments")?;
    let corrects = verdict == "edit" || s.kind.is_grading();
    Ok(match (corrects, s.is_action) {
        (false, _) => Value::Null,
        (true, true) => match arguments {
            Some(a) => parse_json(&a)?,
            None => Value::Null,
        },
        (true, false) => text.map(Value::String).unwrap_or(Value::Null),
    })
}

fn correction_record(
    row: &DbRow,
    transcripts: &HashMap<String, Vec<Shown>>,
) -> Result<Option<Value>> {
    let Some(s) = subject(row, transcripts)? else {
        return Ok(None);
    };
    let verdict: String = row.try_get("verdict")?;
    let grade: Option<String> = row.try_get("grade")?;
    let agent: Option<String> = [
        row.try_get::<Option<String>, _>("a_agent")?,
        row.try_get("c_agent")?,
        row.try_get("k_agent")?,
    ]
    .into_iter()
    .flatten()
    .next();
    let mut context = json!({ "messages": chat_messages(&s.context) });
    match s.kind {
        _ if s.is_action => {
            context["action"] = json!(row.try_get::<Option<String>, _>("a_name")?);
            let ctx: Option<String> = row.try_get("a_context")?;
            context["context"] = match ctx {
                Some(c) => parse_json(&c)?,
                None => Value::Null,
            };
        }
        ReviewKind::KbChange => {
            context["title"] = json!(row.try_get::<Option<String>, _>("proposed_title")?);
        }
        _ => {}
    }
    let is_action = s.is_action;
    let correction = Correction {
        kind: s.kind.as_str(),
        review_id: row.try_get("review_id")?,
        conversation_id: if is_action {
            None
        } else {
            row.try_get("conversation_id")?
        },
        action_id: if is_action {
            row.try_get("action_id")?
        } else {
            None
        },
        agent,
        human_output: human_output(row, &s)?,
        ai_output: s.ai_output,
        verdict: match verdict.as_str() {
            "approve" => "approve",
            "edit" => "edit",
            _ => "reject",
        },
        grade: grade.as_deref().map(|g| match g {
            "correct" => "correct",
            _ => "incorrect",
        }),
        comment: row.try_get("comment")?,
        reviewer: row.try_get("reviewer")?,
        decided_at: ms_to_time(row.try_get("created_at")?)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        context,
    };
    Ok(Some(serde_json::to_value(correction)?))
}

fn dpo_record(row: &DbRow, transcripts: &HashMap<String, Vec<Shown>>) -> Result<Option<Value>> {
    let Some(s) = subject(row, transcripts)? else {
        return Ok(None);
    };
    let human = human_output(row, &s)?;
    if human.is_null() {
        return Ok(None);
    }
    let as_text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let input = if s.is_action {
        let name: Option<String> = row.try_get("a_name")?;
        let ctx: Option<String> = row.try_get("a_context")?;
        let ctx = match ctx {
            Some(c) => parse_json(&c)?,
            None => Value::Null,
        };
        action_input(&s.context, name.as_deref().unwrap_or(""), &ctx)
    } else {
        chat_messages(&s.context)
    };
    Ok(dpo_pair(input, &as_text(&human), &as_text(&s.ai_output)))
}
