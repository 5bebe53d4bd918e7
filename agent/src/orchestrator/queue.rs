//! Job semantics on top of the store: enqueue (idempotent per requester and key, with quotas),
//! list/show with per-bot visibility, cancel, and the worker side — claim with a lease and a
//! fencing token, heartbeat, complete, fail with exponential backoff, dead after maxAttempts, and
//! re-queueing of expired leases. Every function runs inside one store transaction and writes its
//! audit row there. No HTTP here; callers pass an already-authenticated `Actor`.
//!
//! Job writes say `OR FAIL`: with SQLite's default (ABORT) every UPDATE … RETURNING opened a
//! statement journal and copied each page it touched (4 % of the writer's time), to be able to
//! undo a statement that fails halfway. These statements change one row, whose constraints are
//! checked before it is written, so there is nothing to undo; and an operation that fails after
//! writing rolls back its whole batch anyway (see `store`).

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::audit::{self, Who};
use super::clock::iso;
use super::peer::Actor;
use super::store::StoreError;

/// Kinds whose jobs only the daemon's own handlers may claim.
pub const INTERNAL_PREFIX: &str = "cattle.";

/// Job statuses on the wire.
pub const STATUSES: [&str; 5] = ["queued", "running", "done", "failed", "canceled"];

/// A job as stored.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub job_id: String,
    pub kind: String,
    pub payload_json: String,
    pub requester: String,
    pub requester_uid: Option<i64>,
    pub idempotency_key: String,
    pub status: String,
    pub priority: i64,
    pub run_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub attempt: i64,
    pub max_attempts: i64,
    pub locked_by: Option<String>,
    pub lease_until: Option<i64>,
    pub lease_token: i64,
    pub last_error: Option<String>,
    pub result_json: Option<String>,
}

/// The job columns `row_to_job` reads, as a literal so hot-path SQL is built with `concat!` at
/// compile time instead of `format!` on every request.
macro_rules! columns {
    () => {
        "job_id, kind, payload_json, requester, requester_uid, idempotency_key, status, \
         priority, run_at, created_at, updated_at, attempt, max_attempts, locked_by, lease_until, \
         lease_token, last_error, result_json"
    };
}
const COLUMNS: &str = columns!();

fn row_to_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        job_id: r.get(0)?,
        kind: r.get(1)?,
        payload_json: r.get(2)?,
        requester: r.get(3)?,
        requester_uid: r.get(4)?,
        idempotency_key: r.get(5)?,
        status: r.get(6)?,
        priority: r.get(7)?,
        run_at: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
        attempt: r.get(11)?,
        max_attempts: r.get(12)?,
        locked_by: r.get(13)?,
        lease_until: r.get(14)?,
        lease_token: r.get(15)?,
        last_error: r.get(16)?,
        result_json: r.get(17)?,
    })
}

/// Stored JSON (payload, result) as it goes on the wire: as stored, or `null` if it does not
/// parse (the daemon stores only JSON it serialized itself, so that is not expected).
fn raw_json(json: &str) -> Option<&RawValue> {
    serde_json::from_str(json).ok()
}

/// The clf v1 job summary (plus `priority`, `leaseUntil`), serialized straight from the row:
/// the hot answers (complete, fail, cancel) skip building a `Value` tree.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary<'a> {
    job_id: &'a str,
    kind: &'a str,
    status: &'a str,
    requester: &'a str,
    idempotency_key: &'a str,
    created_at: String,
    updated_at: String,
    run_at: String,
    attempt: i64,
    max_attempts: i64,
    last_error: &'a str,
    priority: i64,
    /// Only on finished jobs; `Some(None)` is a stored result that does not parse.
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<Option<&'a RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_until: Option<String>,
}

impl JobRow {
    pub fn summary_view(&self) -> Summary<'_> {
        Summary {
            job_id: &self.job_id,
            kind: &self.kind,
            status: &self.status,
            requester: &self.requester,
            idempotency_key: &self.idempotency_key,
            created_at: iso(self.created_at),
            updated_at: iso(self.updated_at),
            run_at: iso(self.run_at),
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            last_error: self.last_error.as_deref().unwrap_or_default(),
            priority: self.priority,
            result: self.result_json.as_deref().map(raw_json),
            lease_until: match (self.lease_until, self.status.as_str()) {
                (Some(l), "running") => Some(iso(l)),
                _ => None,
            },
        }
    }

    /// `summary_view` as a `Value`, for answers that add fields to it.
    pub fn summary(&self) -> Value {
        serde_json::to_value(self.summary_view()).unwrap_or(Value::Null)
    }

    /// The summary plus the payload (`GET /v1/jobs/{id}`).
    pub fn detail(&self) -> Value {
        let mut v = self.summary();
        v["payload"] = serde_json::from_str(&self.payload_json).unwrap_or(Value::Null);
        v
    }

    pub fn visible_to(&self, actor: &Actor) -> bool {
        actor.admin || self.requester == actor.name
    }
}

/// A validated enqueue request.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub payload_json: String,
    pub idempotency_key: String,
    pub run_at: i64,
    pub priority: i64,
    pub max_attempts: i64,
}

/// Result of an enqueue.
#[derive(Debug, Clone)]
pub struct Enqueued {
    pub job_id: String,
    /// True when the idempotency key matched an existing job and nothing new was stored.
    pub existing: bool,
}

/// A claimed job handed to a worker.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub job: JobRow,
}

/// A claimed job on the wire.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimedView<'a> {
    job_id: &'a str,
    kind: &'a str,
    requester: &'a str,
    payload: Option<&'a RawValue>,
    attempt: i64,
    max_attempts: i64,
    lease_token: i64,
    lease_until: String,
}

impl Claimed {
    pub fn view(&self) -> ClaimedView<'_> {
        ClaimedView {
            job_id: &self.job.job_id,
            kind: &self.job.kind,
            requester: &self.job.requester,
            payload: raw_json(&self.job.payload_json),
            attempt: self.job.attempt,
            max_attempts: self.job.max_attempts,
            lease_token: self.job.lease_token,
            lease_until: iso(self.job.lease_until.unwrap_or(0)),
        }
    }
}

fn who(actor: &Actor) -> Who<'_> {
    Who {
        uid: Some(actor.uid),
        name: &actor.name,
    }
}

/// New job ids sort by creation time: 12 hex digits of milliseconds, 16 of randomness.
pub fn new_job_id(now: i64) -> String {
    format!(
        "{:012x}{:016x}",
        now as u64 & 0xffff_ffff_ffff,
        rand::random::<u64>()
    )
}

/// Loads one job regardless of visibility.
pub fn load(conn: &Connection, job_id: &str) -> Result<Option<JobRow>, StoreError> {
    let mut st = conn.prepare_cached(concat!(
        "SELECT ",
        columns!(),
        " FROM jobs WHERE job_id = ?1"
    ))?;
    Ok(st.query_row([job_id], row_to_job).optional()?)
}

/// Loads one job the actor may see; others' jobs are reported as not found (no enumeration).
pub fn get_visible(conn: &Connection, actor: &Actor, job_id: &str) -> Result<JobRow, StoreError> {
    match load(conn, job_id)? {
        Some(j) if j.visible_to(actor) => Ok(j),
        _ => Err(StoreError::NotFound(format!("job '{}'", short(job_id)))),
    }
}

fn short(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Enqueues a job for `actor`; `max_queued` is the requester's quota of queued+running jobs
/// (`None` for root and admins).
pub fn enqueue(
    conn: &Connection,
    actor: &Actor,
    job: &NewJob,
    now: i64,
    max_queued: Option<u32>,
) -> Result<Enqueued, StoreError> {
    if !job.idempotency_key.is_empty() {
        let mut st = conn.prepare_cached(
            "SELECT job_id, kind, payload_json FROM jobs WHERE requester = ?1 AND idempotency_key = ?2",
        )?;
        let found: Option<(String, String, String)> = st
            .query_row(params![actor.name, job.idempotency_key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        if let Some((job_id, kind, payload)) = found {
            if kind != job.kind || payload != job.payload_json {
                return Err(StoreError::Conflict(
                    "idempotencyKey was already used for a different request".into(),
                ));
            }
            return Ok(Enqueued {
                job_id,
                existing: true,
            });
        }
    }
    if let Some(max) = max_queued {
        let mut st = conn.prepare_cached(
            "SELECT count(*) FROM jobs WHERE requester = ?1 AND status IN ('queued', 'running')",
        )?;
        let n: i64 = st.query_row([&actor.name], |r| r.get(0))?;
        if n >= max as i64 {
            audit::denied(
                now,
                None,
                who(actor),
                "enqueue",
                "quota",
                "queued-jobs quota reached",
            );
            return Err(StoreError::Quota(format!(
                "quota of {max} queued or running jobs reached for '{}'",
                actor.name
            )));
        }
    }
    let job_id = new_job_id(now);
    let mut st = conn.prepare_cached(
        "INSERT OR FAIL INTO jobs (job_id, kind, payload_json, requester, requester_uid, idempotency_key, \
         status, priority, run_at, created_at, updated_at, attempt, max_attempts, lease_token) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8, ?9, ?9, 0, ?10, 0)",
    )?;
    st.execute(params![
        job_id,
        job.kind,
        job.payload_json,
        actor.name,
        actor.uid,
        job.idempotency_key,
        job.priority,
        job.run_at,
        now,
        job.max_attempts
    ])?;
    audit::record(
        conn,
        now,
        Some(&job_id),
        who(actor),
        "enqueue",
        "ok",
        &job.kind,
        Some(0),
    )?;
    Ok(Enqueued {
        job_id,
        existing: false,
    })
}

/// List filter (already validated).
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub statuses: Vec<String>,
    pub kind: Option<String>,
    pub requester: Option<String>,
    pub limit: u32,
}

/// Lists jobs the actor may see, newest first.
pub fn list(conn: &Connection, actor: &Actor, f: &ListFilter) -> Result<Vec<JobRow>, StoreError> {
    let requester = match (&f.requester, actor.admin) {
        (Some(r), false) if r != &actor.name => {
            return Err(StoreError::Forbidden(format!(
                "'{}' may list only its own jobs",
                actor.name
            )));
        }
        (Some(r), _) => Some(r.clone()),
        (None, true) => None,
        (None, false) => Some(actor.name.clone()),
    };
    let mut q = Filter::new(format!("SELECT {COLUMNS} FROM jobs WHERE 1=1"), Vec::new());
    if let Some(r) = requester {
        q.eq("requester", &r);
    }
    if let Some(k) = &f.kind {
        q.eq("kind", k.as_str());
    }
    q.one_of("status", &f.statuses);
    let (sql, args) = q.finish("created_at DESC, job_id DESC", f.limit);
    let mut st = conn.prepare_cached(&sql)?;
    let rows = st.query_map(rusqlite::params_from_iter(args), row_to_job)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Cancels a queued or running job. A running job's lease is fenced off, so its worker can
/// neither heartbeat nor complete it afterwards.
pub fn cancel(
    conn: &Connection,
    actor: &Actor,
    job_id: &str,
    now: i64,
) -> Result<JobRow, StoreError> {
    let job = match get_visible(conn, actor, job_id) {
        Ok(j) => j,
        Err(e) => {
            audit::denied(
                now,
                None,
                who(actor),
                "cancel",
                "denied",
                "job not found or not visible",
            );
            return Err(e);
        }
    };
    if job.status != "queued" && job.status != "running" {
        return Err(StoreError::Conflict(format!(
            "job '{}' is {}; only queued or running jobs can be canceled",
            job.job_id, job.status
        )));
    }
    conn.prepare_cached(
        "UPDATE OR FAIL jobs SET status = 'canceled', updated_at = ?2, lease_until = NULL, \
         lease_token = lease_token + 1 WHERE job_id = ?1",
    )?
    .execute(params![job_id, now])?;
    audit::record(
        conn,
        now,
        Some(job_id),
        who(actor),
        "cancel",
        "ok",
        &format!("was {}", job.status),
        Some(job.attempt),
    )?;
    load(conn, job_id)?.ok_or_else(|| StoreError::NotFound(format!("job '{job_id}'")))
}

/// Re-queues (or fails, when attempts are used up) running jobs whose lease has expired.
/// Returns how many were touched.
pub fn expire_leases(conn: &Connection, now: i64) -> Result<usize, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT job_id, attempt, max_attempts FROM jobs \
         WHERE status = 'running' AND lease_until <= ?1 LIMIT 256",
    )?;
    let rows: Vec<(String, i64, i64)> = st
        .query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    for (job_id, attempt, max) in &rows {
        let (sql, outcome, message) = if attempt >= max {
            (
                "UPDATE OR FAIL jobs SET status = 'failed', updated_at = ?2, lease_until = NULL, \
                 lease_token = lease_token + 1, last_error = 'lease expired; no attempts left' \
                 WHERE job_id = ?1",
                "failed",
                "no attempts left",
            )
        } else {
            (
                "UPDATE OR FAIL jobs SET status = 'queued', updated_at = ?2, run_at = ?2, lease_until = NULL, \
                 lease_token = lease_token + 1, locked_by = NULL, locked_by_uid = NULL, \
                 last_error = 'lease expired' WHERE job_id = ?1",
                "requeued",
                "lease expired",
            )
        };
        conn.prepare_cached(sql)?.execute(params![job_id, now])?;
        audit::record(
            conn,
            now,
            Some(job_id),
            Who::DAEMON,
            "lease_expired",
            outcome,
            message,
            Some(*attempt),
        )?;
    }
    Ok(rows.len())
}

/// Least time between two lease-expiry sweeps made by claims. Leases last at least a second,
/// so an expired one becomes claimable at most this much later, and a busy queue does not pay
/// for a sweep on every claim.
const SWEEP_EVERY_MS: i64 = 250;

thread_local! {
    /// When the writer last swept, in the callers' clock (claims run on the writer's thread only).
    static LAST_SWEEP: std::cell::Cell<Option<i64>> = const { std::cell::Cell::new(None) };
}

/// `expire_leases`, at most every `SWEEP_EVERY_MS` (and always when the clock went back).
fn sweep_expired_leases(conn: &Connection, now: i64) -> Result<(), StoreError> {
    let due = LAST_SWEEP
        .get()
        .is_none_or(|last| now < last || now - last >= SWEEP_EVERY_MS);
    if due {
        expire_leases(conn, now)?;
        LAST_SWEEP.set(Some(now));
    }
    Ok(())
}

/// What a claim asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    pub worker_id: String,
    pub kinds: Vec<String>,
    pub limit: u32,
    pub lease_ms: i64,
    /// The daemon's own handlers: may claim internal kinds, of any requester.
    pub internal: bool,
}

/// Claims up to `limit` ready jobs. Bots claim only their own jobs; root and admins any
/// requester's; internal kinds (`cattle.*`) only the daemon.
pub fn claim(
    conn: &Connection,
    actor: &Actor,
    req: &ClaimRequest,
    now: i64,
) -> Result<Vec<Claimed>, StoreError> {
    sweep_expired_leases(conn, now)?;
    let mut q = Filter::new(
        "SELECT job_id FROM jobs WHERE status = 'queued' AND run_at <= ?1".into(),
        vec![now.into()],
    );
    if !req.internal {
        q.sql.push_str(" AND kind NOT LIKE 'cattle.%'");
        if !actor.admin {
            q.eq("requester", actor.name.as_str());
        }
    }
    q.one_of("kind", &req.kinds);
    let (sql, args) = q.finish("priority DESC, run_at, created_at", req.limit);
    let ids: Vec<String> = {
        let mut st = conn.prepare_cached(&sql)?;
        st.query_map(rusqlite::params_from_iter(args), |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    let mut out = Vec::with_capacity(ids.len());
    let lease_until = now + req.lease_ms;
    for id in ids {
        let mut st = conn.prepare_cached(concat!(
            "UPDATE OR FAIL jobs SET status = 'running', attempt = attempt + 1, locked_by = ?2, \
             locked_by_uid = ?3, lease_until = ?4, lease_token = lease_token + 1, updated_at = ?5 \
             WHERE job_id = ?1 AND status = 'queued' RETURNING ",
            columns!()
        ))?;
        let job = st
            .query_row(
                params![id, req.worker_id, actor.uid, lease_until, now],
                row_to_job,
            )
            .optional()?;
        if let Some(job) = job {
            audit::record(
                conn,
                now,
                Some(&job.job_id),
                who(actor),
                "claim",
                "ok",
                &req.worker_id,
                Some(job.attempt),
            )?;
            out.push(Claimed { job });
        }
    }
    Ok(out)
}

/// Loads a running job and checks that `actor` holds its current lease.
fn leased(
    conn: &Connection,
    actor: &Actor,
    job_id: &str,
    lease_token: i64,
    now: i64,
    action: &str,
) -> Result<JobRow, StoreError> {
    let mut st = conn.prepare_cached(concat!(
        "SELECT ",
        columns!(),
        ", locked_by_uid FROM jobs WHERE job_id = ?1"
    ))?;
    let found = st
        .query_row([job_id], |r| {
            Ok((row_to_job(r)?, r.get::<_, Option<i64>>(18)?))
        })
        .optional()?;
    let Some((job, holder)) = found else {
        audit::denied(now, None, who(actor), action, "denied", "job not found");
        return Err(StoreError::NotFound(format!("job '{}'", short(job_id))));
    };
    let holder_ok = actor.admin || holder == Some(actor.uid as i64);
    if !job.visible_to(actor) && !holder_ok {
        audit::denied(now, None, who(actor), action, "denied", "job not visible");
        return Err(StoreError::NotFound(format!("job '{}'", short(job_id))));
    }
    let live = job.status == "running"
        && job.lease_token == lease_token
        && job.lease_until.is_some_and(|l| l > now)
        && holder_ok;
    if !live {
        audit::denied(
            now,
            Some(job_id),
            who(actor),
            action,
            "stale_lease",
            &format!("status {}", job.status),
        );
        return Err(StoreError::Conflict(format!(
            "job '{job_id}' is not leased to this worker (status {}); the lease expired or was taken over",
            job.status
        )));
    }
    Ok(job)
}

/// Extends a lease; returns the new expiry.
pub fn heartbeat(
    conn: &Connection,
    actor: &Actor,
    job_id: &str,
    lease_token: i64,
    lease_ms: i64,
    now: i64,
) -> Result<i64, StoreError> {
    leased(conn, actor, job_id, lease_token, now, "heartbeat")?;
    let until = now + lease_ms;
    conn.prepare_cached(
        "UPDATE OR FAIL jobs SET lease_until = ?2, updated_at = ?3 WHERE job_id = ?1",
    )?
    .execute(params![job_id, until, now])?;
    Ok(until)
}

/// Marks a leased job done with its result.
pub fn complete(
    conn: &Connection,
    actor: &Actor,
    job_id: &str,
    lease_token: i64,
    result_json: &str,
    now: i64,
) -> Result<JobRow, StoreError> {
    // The lease check is part of the update (one statement on the hot path); only when it
    // matches nothing does `leased` look at the row to say why.
    let done = conn
        .prepare_cached(concat!(
            "UPDATE OR FAIL jobs SET status = 'done', result_json = ?2, updated_at = ?3, lease_until = NULL, \
             lease_token = lease_token + 1, last_error = NULL \
             WHERE job_id = ?1 AND status = 'running' AND lease_token = ?4 AND lease_until > ?3 \
             AND (?5 OR locked_by_uid = ?6) RETURNING ",
            columns!()
        ))?
        .query_row(
            params![job_id, result_json, now, lease_token, actor.admin, actor.uid],
            row_to_job,
        )
        .optional()?;
    let Some(done) = done else {
        leased(conn, actor, job_id, lease_token, now, "complete")?;
        return Err(StoreError::Conflict(format!(
            "job '{}' is not leased to this worker",
            short(job_id)
        )));
    };
    audit::record(
        conn,
        now,
        Some(job_id),
        who(actor),
        "complete",
        "ok",
        "",
        Some(done.attempt),
    )?;
    Ok(done)
}

/// A `SELECT` whose filters are appended as numbered parameters (`?N`), so values never reach
/// the SQL text. Columns are compile-time names from this module, never caller input.
struct Filter {
    sql: String,
    args: Vec<rusqlite::types::Value>,
}

impl Filter {
    fn new(sql: String, args: Vec<rusqlite::types::Value>) -> Filter {
        Filter { sql, args }
    }

    fn mark(&mut self, v: rusqlite::types::Value) -> String {
        self.args.push(v);
        format!("?{}", self.args.len())
    }

    fn eq(&mut self, column: &str, v: &str) {
        let m = self.mark(v.to_string().into());
        self.sql.push_str(&format!(" AND {column} = {m}"));
    }

    /// `column IN (...)`; no condition when `values` is empty.
    fn one_of(&mut self, column: &str, values: &[String]) {
        if values.is_empty() {
            return;
        }
        let marks: Vec<String> = values.iter().map(|v| self.mark(v.clone().into())).collect();
        self.sql
            .push_str(&format!(" AND {column} IN ({})", marks.join(",")));
    }

    /// The limit is written into the SQL, not bound: SQLite plans with a LIMIT's value, so a
    /// bound one made it re-prepare the statement on every run (16 % of the writer's time).
    fn finish(mut self, order_by: &str, limit: u32) -> (String, Vec<rusqlite::types::Value>) {
        self.sql
            .push_str(&format!(" ORDER BY {order_by} LIMIT {limit}"));
        (self.sql, self.args)
    }
}

/// Backoff before retry `attempt` (1-based): base·2^(attempt-1), capped.
pub fn backoff_ms(attempt: i64, base: i64, max: i64) -> i64 {
    let shift = (attempt - 1).clamp(0, 30) as u32;
    base.saturating_mul(1i64 << shift).min(max)
}

/// Fails a leased job: re-queued after a backoff while attempts remain and `retry`, else failed
/// for good ("dead").
#[allow(clippy::too_many_arguments)]
pub fn fail(
    conn: &Connection,
    actor: &Actor,
    job_id: &str,
    lease_token: i64,
    error: &str,
    retry: bool,
    backoff: (i64, i64),
    now: i64,
) -> Result<JobRow, StoreError> {
    let job = leased(conn, actor, job_id, lease_token, now, "fail")?;
    retry_or_dead(conn, &job, error, retry, backoff, who(actor), now)?;
    load(conn, job_id)?.ok_or_else(|| StoreError::NotFound(format!("job '{job_id}'")))
}

/// The end of a failed attempt: back to `queued` after a backoff while attempts remain and
/// `retry`, else `failed` for good ("dead"). Either way the lease token moves on, so the worker
/// that held the lease can no longer act on the job, and the outcome is audited.
fn retry_or_dead(
    conn: &Connection,
    job: &JobRow,
    error: &str,
    retry: bool,
    backoff: (i64, i64),
    who: Who<'_>,
    now: i64,
) -> Result<(), StoreError> {
    let job_id = job.job_id.as_str();
    let outcome = if retry && job.attempt < job.max_attempts {
        let run_at = now + backoff_ms(job.attempt, backoff.0, backoff.1);
        conn.prepare_cached(
            "UPDATE OR FAIL jobs SET status = 'queued', run_at = ?2, updated_at = ?3, lease_until = NULL, \
             lease_token = lease_token + 1, locked_by = NULL, locked_by_uid = NULL, last_error = ?4 \
             WHERE job_id = ?1",
        )?
        .execute(params![job_id, run_at, now, error])?;
        "retry"
    } else {
        conn.prepare_cached(
            "UPDATE OR FAIL jobs SET status = 'failed', updated_at = ?2, lease_until = NULL, \
             lease_token = lease_token + 1, last_error = ?3 WHERE job_id = ?1",
        )?
        .execute(params![job_id, now, error])?;
        "dead"
    };
    audit::record(
        conn,
        now,
        Some(job_id),
        who,
        "fail",
        outcome,
        error,
        Some(job.attempt),
    )?;
    Ok(())
}

/// Jobs one prune step removes at most (and three times as many audit rows), so a backlog
/// goes in short transactions between other requests, not in one that holds the store.
pub const PRUNE_CHUNK: usize = 1000;

/// What one prune step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub rows: usize,
    /// A chunk was full: call again.
    pub more: bool,
}

/// One prune step: deletes up to `chunk` finished jobs and `3 * chunk` audit rows older than
/// the retention; the step that finishes them (`more` false) also deletes used/expired tokens,
/// old nonces, expired VM keys and reaped cattle, small tables that need one look per pass.
pub fn prune(
    conn: &Connection,
    now: i64,
    retention_ms: i64,
    nonce_ttl_ms: i64,
    chunk: usize,
) -> Result<Pruned, StoreError> {
    let cutoff = now - retention_ms;
    let jobs = conn.execute(
        &format!(
            "DELETE FROM jobs WHERE job_id IN (SELECT job_id FROM jobs \
             WHERE status IN ('done','failed','canceled') AND updated_at < ?1 LIMIT {chunk})"
        ),
        [cutoff],
    )?;
    // Event ids grow with time: delete the prefix older than the cutoff without a time index,
    // looking at no more than the chunk's first rows. A pruned job's events are all older than
    // its last update, so they go with that prefix.
    let events_chunk = 3 * chunk;
    let events = conn.execute(
        &format!(
            "WITH head AS (SELECT id, at FROM events ORDER BY id LIMIT {events_chunk}) \
             DELETE FROM events WHERE id < coalesce((SELECT min(id) FROM head WHERE at >= ?1), \
             (SELECT max(id) + 1 FROM head), 0)"
        ),
        [cutoff],
    )?;
    let more = jobs == chunk || events == events_chunk;
    let mut rows = jobs + events;
    if more {
        return Ok(Pruned { rows, more });
    }
    rows += conn.execute("DELETE FROM bootstrap_tokens WHERE expires_at < ?1 OR (used_at IS NOT NULL AND used_at < ?1)", [now - 3_600_000])?;
    rows += conn.execute(
        "DELETE FROM nonces WHERE seen_at < ?1",
        [now - nonce_ttl_ms],
    )?;
    rows += conn.execute("DELETE FROM vm_keys WHERE expires_at < ?1", [cutoff])?;
    rows += conn.execute(
        "DELETE FROM cattle WHERE status = 'reaped' AND reaped_at < ?1",
        [cutoff],
    )?;
    Ok(Pruned { rows, more })
}

/// Daemon-side completion of a running job (cattle results arrive through the signed VM API,
/// not through a worker lease). Returns false when the job is no longer running.
pub fn complete_internal(
    conn: &Connection,
    job_id: &str,
    result_json: &str,
    who: Who<'_>,
    now: i64,
) -> Result<bool, StoreError> {
    let n = conn
        .prepare_cached(
            "UPDATE OR FAIL jobs SET status = 'done', result_json = ?2, updated_at = ?3, lease_until = NULL, \
             lease_token = lease_token + 1, last_error = NULL WHERE job_id = ?1 AND status = 'running'",
        )?
        .execute(params![job_id, result_json, now])?;
    if n == 1 {
        audit::record(conn, now, Some(job_id), who, "complete", "ok", "", None)?;
    }
    Ok(n == 1)
}

/// Daemon-side failure of a running job; `retry` re-queues it after a backoff while attempts remain.
pub fn fail_internal(
    conn: &Connection,
    job_id: &str,
    error: &str,
    retry: bool,
    backoff: (i64, i64),
    who: Who<'_>,
    now: i64,
) -> Result<bool, StoreError> {
    let Some(job) = load(conn, job_id)? else {
        return Ok(false);
    };
    if job.status != "running" {
        return Ok(false);
    }
    retry_or_dead(conn, &job, error, retry, backoff, who, now)?;
    Ok(true)
}

/// Extends the lease of a running job the daemon holds (cattle jobs live as long as their VM).
pub fn extend_internal(
    conn: &Connection,
    job_id: &str,
    lease_until: i64,
    now: i64,
) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE OR FAIL jobs SET lease_until = ?2, updated_at = ?3 WHERE job_id = ?1 AND status = 'running'")?
        .execute(params![job_id, lease_until, now])?;
    Ok(())
}

/// Queued and running jobs (metrics), counted over their partial indexes: no table scan.
/// Finished jobs are counted by the daemon's `clf_jobs_*_total` counters instead.
pub fn counts(conn: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut st = conn.prepare_cached(
        "SELECT (SELECT count(*) FROM jobs WHERE status = 'queued'), \
                (SELECT count(*) FROM jobs WHERE status = 'running')",
    )?;
    let (queued, running) = st.query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(vec![("queued".into(), queued), ("running".into(), running)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::store::Store;

    fn bot(name: &str, uid: u32) -> Actor {
        Actor {
            uid,
            name: name.into(),
            admin: false,
        }
    }

    fn new_job(key: &str) -> NewJob {
        NewJob {
            kind: "test.echo".into(),
            payload_json: "{\"n\":1}".into(),
            idempotency_key: key.into(),
            run_at: 0,
            priority: 0,
            max_attempts: 2,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let (s, _h) = Store::open_threaded(&dir.path().join("db.sqlite")).unwrap();
        (dir, s)
    }

    fn req(lease_ms: i64) -> ClaimRequest {
        ClaimRequest {
            worker_id: "w".into(),
            kinds: vec![],
            limit: 1,
            lease_ms,
            internal: false,
        }
    }

    #[test]
    fn enqueue_is_idempotent_per_requester_and_key() {
        let (_d, s) = store();
        let a = bot("a", 1001);
        let b = bot("b", 1002);
        let r = s
            .call_blocking(move |c| {
                let x = enqueue(c, &a, &new_job("k"), 1, None)?;
                let y = enqueue(c, &a, &new_job("k"), 2, None)?;
                let z = enqueue(c, &b, &new_job("k"), 3, None)?;
                let mut other = new_job("k");
                other.payload_json = "{}".into();
                let w = enqueue(c, &a, &other, 4, None);
                Ok((x, y, z, w.is_err()))
            })
            .unwrap();
        assert_eq!(r.0.job_id, r.1.job_id);
        assert!(r.1.existing);
        assert_ne!(r.0.job_id, r.2.job_id);
        assert!(r.3, "same key with a different payload is a conflict");
    }

    #[test]
    fn quota_limits_queued_jobs() {
        let (_d, s) = store();
        let a = bot("a", 1001);
        let r = s
            .call_blocking(move |c| {
                enqueue(c, &a, &new_job(""), 1, Some(2))?;
                enqueue(c, &a, &new_job(""), 1, Some(2))?;
                Ok(enqueue(c, &a, &new_job(""), 1, Some(2)).map(|_| ()))
            })
            .unwrap();
        assert!(matches!(r, Err(StoreError::Quota(_))));
    }

    #[test]
    fn stale_worker_cannot_complete_after_lease_expiry_and_reclaim() {
        let (_d, s) = store();
        let a = bot("a", 1001);
        let out = s
            .call_blocking(move |c| {
                let id = enqueue(c, &a, &new_job(""), 0, None)?.job_id;
                let first = claim(c, &a, &req(1000), 10)?.remove(0);
                // Lease ran out at 1010; a second worker claims at 2000.
                let second = claim(c, &a, &req(1000), 2000)?.remove(0);
                assert_eq!(second.job.attempt, 2);
                let stale = complete(c, &a, &id, first.job.lease_token, "1", 2001);
                let fresh = complete(c, &a, &id, second.job.lease_token, "2", 2001)?;
                let again = complete(c, &a, &id, second.job.lease_token, "3", 2002);
                Ok((
                    stale.is_err(),
                    fresh.status,
                    again.is_err(),
                    fresh.result_json,
                ))
            })
            .unwrap();
        assert_eq!(out, (true, "done".to_string(), true, Some("2".to_string())));
    }

    #[test]
    fn fail_retries_with_backoff_then_dies() {
        let (_d, s) = store();
        let a = bot("a", 1001);
        let out = s
            .call_blocking(move |c| {
                let id = enqueue(c, &a, &new_job(""), 0, None)?.job_id;
                let l = claim(c, &a, &req(1000), 10)?.remove(0);
                let j = fail(c, &a, &id, l.job.lease_token, "boom", true, (100, 1000), 20)?;
                assert_eq!((j.status.as_str(), j.run_at), ("queued", 120));
                assert!(
                    claim(c, &a, &req(1000), 119)?.is_empty(),
                    "not before the backoff"
                );
                let l = claim(c, &a, &req(1000), 120)?.remove(0);
                let j = fail(
                    c,
                    &a,
                    &id,
                    l.job.lease_token,
                    "boom",
                    true,
                    (100, 1000),
                    130,
                )?;
                Ok(j.status)
            })
            .unwrap();
        assert_eq!(out, "failed");
        assert_eq!(backoff_ms(1, 5000, 300_000), 5000);
        assert_eq!(backoff_ms(4, 5000, 300_000), 40_000);
        assert_eq!(backoff_ms(20, 5000, 300_000), 300_000);
    }

    #[test]
    fn bots_see_claim_and_cancel_only_their_own_jobs() {
        let (_d, s) = store();
        let a = bot("a", 1001);
        let b = bot("b", 1002);
        let out = s
            .call_blocking(move |c| {
                let id = enqueue(c, &a, &new_job(""), 0, None)?.job_id;
                let seen = get_visible(c, &b, &id).is_err();
                let claimed = claim(c, &b, &req(1000), 1)?.is_empty();
                let canceled = cancel(c, &b, &id, 2).is_err();
                let listed = list(
                    c,
                    &b,
                    &ListFilter {
                        limit: 10,
                        ..Default::default()
                    },
                )?
                .is_empty();
                let forbidden = list(
                    c,
                    &b,
                    &ListFilter {
                        limit: 10,
                        requester: Some("a".into()),
                        ..Default::default()
                    },
                )
                .is_err();
                let mine = cancel(c, &a, &id, 3)?.status;
                let twice = matches!(cancel(c, &a, &id, 4), Err(StoreError::Conflict(_)));
                Ok((seen, claimed, canceled, listed, forbidden, mine, twice))
            })
            .unwrap();
        assert_eq!(
            out,
            (true, true, true, true, true, "canceled".to_string(), true)
        );
    }

    #[test]
    fn expired_lease_without_attempts_left_fails_the_job() {
        let (_d, s) = store();
        let a = bot("a", 1001);
        let st = s
            .call_blocking(move |c| {
                let mut j = new_job("");
                j.max_attempts = 1;
                let id = enqueue(c, &a, &j, 0, None)?.job_id;
                claim(c, &a, &req(100), 0)?;
                expire_leases(c, 1000)?;
                Ok(load(c, &id)?.unwrap().status)
            })
            .unwrap();
        assert_eq!(st, "failed");
    }

    #[test]
    fn prune_removes_old_finished_jobs_and_events_only() {
        let (_d, s) = store();
        let a = bot("a", 1001);
        let out = s
            .call_blocking(move |c| {
                // Start from an empty trail (the migration row carries the real time).
                c.execute("DELETE FROM events", [])?;
                let old = enqueue(c, &a, &new_job(""), 1_000, None)?.job_id;
                cancel(c, &a, &old, 1_000)?;
                let live = enqueue(c, &a, &new_job(""), 1_000, None)?.job_id;
                let recent = enqueue(c, &a, &new_job(""), 90_000, None)?.job_id;
                let step = prune(c, 100_000, 50_000, 60_000, PRUNE_CHUNK)?;
                let events: i64 = c.query_row(
                    "SELECT count(*) FROM events WHERE job_id IS NOT NULL",
                    [],
                    |r| r.get(0),
                )?;
                Ok((
                    step.more,
                    load(c, &old)?.is_none(),
                    load(c, &live)?.is_some(),
                    load(c, &recent)?.is_some(),
                    events,
                ))
            })
            .unwrap();
        // The old canceled job goes; the queued one stays (its old enqueue event is pruned).
        assert_eq!(out, (false, true, true, true, 1));
    }

    #[test]
    fn prune_goes_in_chunks_and_keeps_live_and_recent_rows() {
        let (_d, s) = store();
        let a = bot("a", 1001);
        let out = s
            .call_blocking(move |c| {
                c.execute("DELETE FROM events", [])?;
                for _ in 0..5 {
                    let id = enqueue(c, &a, &new_job(""), 1_000, None)?.job_id;
                    cancel(c, &a, &id, 1_000)?;
                }
                let live = enqueue(c, &a, &new_job(""), 1_000, None)?.job_id;
                let recent = enqueue(c, &a, &new_job(""), 90_000, None)?.job_id;
                cancel(c, &a, &recent, 90_000)?;
                c.execute(
                    "INSERT INTO nonces (key_id, nonce, seen_at) VALUES ('k', 'old', 0), ('k', 'new', 90000)",
                    [],
                )?;
                let count = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0));
                // Chunks of 2 jobs and 6 events: 5 old jobs and 11 old events take 3 steps; the
                // small tables (here the old nonce) go in the last one.
                let mut steps = Vec::new();
                let mut nonces = Vec::new();
                loop {
                    let step = prune(c, 100_000, 50_000, 60_000, 2)?;
                    steps.push(step);
                    nonces.push(count("SELECT count(*) FROM nonces")?);
                    if !step.more {
                        break;
                    }
                }
                Ok((
                    steps.iter().map(|p| p.rows).sum::<usize>(),
                    nonces,
                    load(c, &live)?.is_some(),
                    load(c, &recent)?.is_some(),
                    count("SELECT count(*) FROM jobs")?,
                    count("SELECT count(*) FROM events WHERE at < 50000")?,
                    count("SELECT count(*) FROM events")?,
                ))
            })
            .unwrap();
        // 5 jobs + 11 events (5 enqueue, 5 cancel, 1 live enqueue) + 1 nonce removed; the
        // recent job's two events and the recent nonce stay.
        assert_eq!(out, (17, vec![2, 2, 1], true, true, 2, 0, 2));
    }

    #[test]
    fn active_counts_follow_every_transition() {
        let (_d, s) = store();
        let a = bot("a", 1001);
        let counted = s
            .call_blocking(move |c| {
                let mut seen = vec![counts(c)?];
                let first = enqueue(c, &a, &new_job(""), 1_000, None)?.job_id;
                let other = enqueue(c, &a, &new_job(""), 1_000, None)?.job_id;
                seen.push(counts(c)?);
                let job = claim(c, &a, &req(60_000), 1_000)?.remove(0).job;
                seen.push(counts(c)?);
                complete(c, &a, &job.job_id, job.lease_token, "{}", 1_000)?;
                seen.push(counts(c)?);
                let left = if job.job_id == first { other } else { first };
                cancel(c, &a, &left, 1_000)?;
                seen.push(counts(c)?);
                Ok(seen)
            })
            .unwrap();
        let pairs: Vec<(i64, i64)> = counted
            .iter()
            .map(|v| {
                assert_eq!(v[0].0, "queued");
                assert_eq!(v[1].0, "running");
                (v[0].1, v[1].1)
            })
            .collect();
        assert_eq!(pairs, [(0, 0), (2, 0), (1, 1), (1, 0), (0, 0)]);
    }

    #[test]
    fn hot_queries_use_the_partial_indexes() {
        let (_d, s) = store();
        let plans = s
            .call_blocking(|c| {
                let plan = |sql: &str| -> Result<String, StoreError> {
                    let mut st = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
                    let rows: Vec<String> = st
                        .query_map([], |r| r.get::<_, String>(3))?
                        .collect::<Result<_, _>>()?;
                    Ok(rows.join("; "))
                };
                Ok([
                    plan("SELECT job_id FROM jobs WHERE status = 'queued' AND run_at <= 5 ORDER BY priority DESC, run_at, created_at LIMIT 1")?,
                    plan("SELECT job_id, attempt, max_attempts FROM jobs WHERE status = 'running' AND lease_until <= 5 LIMIT 256")?,
                    plan("SELECT count(*) FROM jobs WHERE requester = 'a' AND status IN ('queued', 'running')")?,
                    plan("SELECT (SELECT count(*) FROM jobs WHERE status = 'queued'), (SELECT count(*) FROM jobs WHERE status = 'running')")?,
                ])
            })
            .unwrap();
        assert!(plans[0].contains("jobs_queued"), "claim: {}", plans[0]);
        assert!(
            !plans[0].contains("TEMP B-TREE"),
            "claim sorts: {}",
            plans[0]
        );
        assert!(
            plans[1].contains("jobs_leased"),
            "lease expiry: {}",
            plans[1]
        );
        assert!(
            plans[2].contains("jobs_active_by_requester"),
            "quota: {}",
            plans[2]
        );
    }

    #[test]
    fn a_multi_claim_hands_jobs_out_by_priority_then_age() {
        let (_d, s) = store();
        let a = bot("a", 1001);
        let order = s
            .call_blocking(move |c| {
                for (prio, at) in [(0, 10), (5, 30), (1, 20), (5, 20)] {
                    let mut j = new_job("");
                    j.priority = prio;
                    j.run_at = at;
                    enqueue(c, &a, &j, 100, None)?;
                }
                let mut r = req(60_000);
                r.limit = 10;
                let got = claim(c, &a, &r, 100)?;
                let again = claim(c, &a, &r, 100)?;
                Ok((
                    got.iter()
                        .map(|j| (j.job.priority, j.job.run_at, j.job.status.clone()))
                        .collect::<Vec<_>>(),
                    again.len(),
                ))
            })
            .unwrap();
        let running = |p, t| (p, t, "running".to_string());
        assert_eq!(
            order,
            (
                vec![
                    running(5, 20),
                    running(5, 30),
                    running(1, 20),
                    running(0, 10)
                ],
                0
            )
        );
    }
}
