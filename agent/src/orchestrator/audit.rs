//! The audit trail: every state change and every refused request becomes a row in `events` (same
//! transaction as the change it describes) and a tracing event with a fixed `event` id, so
//! journald queries and alerts can match it. Messages never contain secret values or tokens.

use std::cell::RefCell;

use rusqlite::Connection;

use super::store::StoreError;

/// Who did it: a peer uid and its user name, a VM (by key id) or the daemon itself.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub uid: Option<u32>,
    pub name: &'a str,
}

impl Who<'static> {
    /// The daemon's own schedulers and handlers.
    pub const DAEMON: Who<'static> = Who {
        uid: None,
        name: "orchestrator",
    };
}

/// Writes one audit row. Call inside the transaction of the change it records.
#[allow(clippy::too_many_arguments)]
pub fn record(
    conn: &Connection,
    now: i64,
    job_id: Option<&str>,
    who: Who<'_>,
    action: &str,
    outcome: &str,
    message: &str,
    attempt: Option<i64>,
) -> Result<(), StoreError> {
    insert(
        conn,
        &Row {
            at: now,
            job_id,
            who,
            action,
            outcome,
            message,
            attempt,
        },
    )?;
    let refusal = matches!(
        outcome,
        "denied"
            | "quota"
            | "stale_lease"
            | "malformed"
            | "unknown"
            | "expired"
            | "reused"
            | "job_not_running"
            | "clock_skew"
            | "unknown_key"
            | "bad_signature"
            | "replay"
            | "error"
            | "missing"
    );
    if !refusal {
        tracing::debug!(event = "orchestrator.audit", action, outcome, actor = who.name, actor_uid = ?who.uid, job = ?job_id, "{message}");
    } else {
        tracing::warn!(event = "orchestrator.audit", action, outcome, actor = who.name, actor_uid = ?who.uid, job = ?job_id, "{message}");
    }
    Ok(())
}

/// A refusal recorded by an operation that is about to fail. A failing operation must not have
/// written (the store would roll its whole batch back), so the row is kept aside and written by
/// the store right after the operation returned.
#[derive(Debug)]
struct Pending {
    at: i64,
    job_id: Option<String>,
    uid: Option<u32>,
    name: String,
    action: String,
    outcome: String,
    message: String,
}

thread_local! {
    static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
}

/// Records a refusal by an operation that is about to fail. The store writes it after the
/// operation returned: written inside the operation it would count as a write before failing,
/// which rolls the whole batch back (see `store`).
pub fn denied(
    now: i64,
    job_id: Option<&str>,
    who: Who<'_>,
    action: &str,
    outcome: &str,
    message: &str,
) {
    tracing::warn!(event = "orchestrator.denied", action, outcome, actor = who.name, actor_uid = ?who.uid, job = ?job_id, "{message}");
    PENDING.with(|p| {
        p.borrow_mut().push(Pending {
            at: now,
            job_id: job_id.map(str::to_string),
            uid: who.uid,
            name: who.name.to_string(),
            action: action.to_string(),
            outcome: outcome.to_string(),
            message: message.to_string(),
        })
    });
}

/// Writes refusals kept aside by `denied` (called by the store after each operation).
pub fn flush(conn: &Connection) -> Result<(), StoreError> {
    let pending = PENDING.with(|p| std::mem::take(&mut *p.borrow_mut()));
    for p in &pending {
        insert(
            conn,
            &Row {
                at: p.at,
                job_id: p.job_id.as_deref(),
                who: Who {
                    uid: p.uid,
                    name: &p.name,
                },
                action: &p.action,
                outcome: &p.outcome,
                message: &p.message,
                attempt: None,
            },
        )?;
    }
    Ok(())
}

/// One row of `events`.
struct Row<'a> {
    at: i64,
    job_id: Option<&'a str>,
    who: Who<'a>,
    action: &'a str,
    outcome: &'a str,
    message: &'a str,
    attempt: Option<i64>,
}

fn insert(conn: &Connection, r: &Row<'_>) -> Result<(), StoreError> {
    // OR FAIL: no statement journal for a one-row insert (see `queue`).
    conn.prepare_cached(
        "INSERT OR FAIL INTO events (at, job_id, actor_uid, actor, action, outcome, message, attempt) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(rusqlite::params![
        r.at, r.job_id, r.who.uid, r.who.name, r.action, r.outcome, r.message, r.attempt
    ])?;
    Ok(())
}
