//! Versioned schema migrations (`PRAGMA user_version`). Versions 1..=3 are the layout of the
//! public clf orchestrator, so a database it left behind opens here and is upgraded in place;
//! version 4 adds peer identities, lease fencing, the audit table and the bootstrap/VM-auth
//! tables; version 5 trims the job indexes to what the hot path needs. Each step runs in its own
//! transaction. Nothing here reads or writes job data beyond
//! the one-time copy of legacy events.

use rusqlite::Connection;

use super::StoreError;

/// The version this build writes.
pub const CURRENT: i64 = 5;

const V1: &str = "
CREATE TABLE jobs (
  job_id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,
  payload_json TEXT NOT NULL,
  requester TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  status TEXT NOT NULL,
  priority INTEGER NOT NULL,
  run_at INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  locked_by TEXT,
  lease_until INTEGER,
  last_error TEXT,
  result_json TEXT
);
CREATE UNIQUE INDEX jobs_by_idempotency ON jobs(requester, idempotency_key) WHERE idempotency_key != '';
CREATE INDEX jobs_by_status_run_at ON jobs(status, run_at);
CREATE INDEX jobs_by_requester ON jobs(requester, created_at DESC);
CREATE INDEX jobs_by_kind ON jobs(kind, created_at DESC);
CREATE TABLE job_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT NOT NULL,
  at INTEGER NOT NULL,
  type TEXT NOT NULL,
  message TEXT NOT NULL,
  attempt INTEGER NOT NULL,
  FOREIGN KEY(job_id) REFERENCES jobs(job_id) ON DELETE CASCADE
);
CREATE INDEX job_events_by_job_id ON job_events(job_id, at);
";

const V2: &str = "
CREATE TABLE cattle_bootstrap_tokens (
  token_hash TEXT PRIMARY KEY,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  used_at INTEGER,
  job_id TEXT NOT NULL,
  requester TEXT NOT NULL,
  cattle_name TEXT NOT NULL,
  env_keys_json TEXT NOT NULL,
  public_env_json TEXT NOT NULL
);
CREATE INDEX cattle_bootstrap_tokens_by_expires_at ON cattle_bootstrap_tokens(expires_at);
CREATE INDEX cattle_bootstrap_tokens_by_job_id ON cattle_bootstrap_tokens(job_id);
";

const V3: &str = "CREATE INDEX jobs_by_status_lease_until ON jobs(status, lease_until);";

/// Version 4. `jobs_claim` replaces the legacy status/run_at index, and `events` has no time
/// index (ids grow with time; pruning walks them in order), so each write maintains fewer
/// indexes. Legacy bootstrap tokens were stored as an unsalted hash without purpose binding
/// and may have been issued to anyone; they are revoked (dropped) rather than carried over.
const V4: &str = "
ALTER TABLE jobs ADD COLUMN requester_uid INTEGER;
ALTER TABLE jobs ADD COLUMN locked_by_uid INTEGER;
ALTER TABLE jobs ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
DROP INDEX jobs_by_status_run_at;
CREATE INDEX jobs_claim ON jobs(status, priority DESC, run_at);
CREATE INDEX jobs_by_requester_status ON jobs(requester, status);
CREATE TABLE events (
  id INTEGER PRIMARY KEY,
  at INTEGER NOT NULL,
  job_id TEXT,
  actor_uid INTEGER,
  actor TEXT,
  action TEXT NOT NULL,
  outcome TEXT NOT NULL,
  message TEXT NOT NULL DEFAULT '',
  attempt INTEGER
);
INSERT INTO events (at, job_id, actor_uid, actor, action, outcome, message, attempt)
  SELECT at, job_id, NULL, NULL, type, 'ok', message, attempt FROM job_events ORDER BY id;
INSERT INTO events (at, job_id, actor_uid, actor, action, outcome, message, attempt)
  SELECT CAST(strftime('%s','now') AS INTEGER) * 1000, NULL, NULL, 'migration', 'migrate.v4', 'ok',
         'revoked ' || count(*) || ' legacy bootstrap tokens', NULL FROM cattle_bootstrap_tokens;
DROP TABLE job_events;
DROP TABLE cattle_bootstrap_tokens;
CREATE INDEX events_by_job ON events(job_id, at);
CREATE TABLE bootstrap_tokens (
  token_hash TEXT PRIMARY KEY,
  token_id TEXT NOT NULL UNIQUE,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  used_at INTEGER,
  used_from TEXT,
  job_id TEXT NOT NULL,
  requester TEXT NOT NULL,
  cattle_name TEXT NOT NULL,
  env_keys_json TEXT NOT NULL,
  public_env_json TEXT NOT NULL
);
CREATE INDEX bootstrap_tokens_by_expires_at ON bootstrap_tokens(expires_at);
CREATE TABLE vm_keys (
  key_id TEXT PRIMARY KEY,
  cattle_name TEXT NOT NULL,
  job_id TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  revoked_at INTEGER
);
CREATE TABLE nonces (
  key_id TEXT NOT NULL,
  nonce TEXT NOT NULL,
  seen_at INTEGER NOT NULL,
  PRIMARY KEY (key_id, nonce)
) WITHOUT ROWID;
CREATE INDEX nonces_by_seen_at ON nonces(seen_at);
CREATE TABLE cattle (
  name TEXT PRIMARY KEY,
  job_id TEXT NOT NULL,
  requester TEXT NOT NULL,
  backend TEXT NOT NULL,
  server_id TEXT,
  status TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  reaped_at INTEGER
);
CREATE INDEX cattle_by_status ON cattle(status, expires_at);
";

/// Version 5: every job write maintained eight B-trees, most of them indexing finished jobs
/// that only listings and metrics read. The job table becomes `WITHOUT ROWID`, clustered on its
/// time-ordered id (the table and its primary-key index were two B-trees); the claim and
/// lease-expiry scans and the per-bot quota use partial indexes over the jobs that are still
/// queued or running, so a finished job leaves them; listing by kind (admins only) scans
/// instead of keeping `jobs_by_kind`. The audit table loses its per-job index: pruning cuts it
/// by time, and a person reading one job's trail can afford a scan of the retained rows.
const V5: &str = "
CREATE TABLE jobs_v5 (
  job_id TEXT NOT NULL PRIMARY KEY,
  kind TEXT NOT NULL,
  payload_json TEXT NOT NULL,
  requester TEXT NOT NULL,
  idempotency_key TEXT NOT NULL,
  status TEXT NOT NULL,
  priority INTEGER NOT NULL,
  run_at INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  attempt INTEGER NOT NULL,
  max_attempts INTEGER NOT NULL,
  locked_by TEXT,
  lease_until INTEGER,
  last_error TEXT,
  result_json TEXT,
  requester_uid INTEGER,
  locked_by_uid INTEGER,
  lease_token INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
INSERT INTO jobs_v5 SELECT job_id, kind, payload_json, requester, idempotency_key, status,
  priority, run_at, created_at, updated_at, attempt, max_attempts, locked_by, lease_until,
  last_error, result_json, requester_uid, locked_by_uid, lease_token FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v5 RENAME TO jobs;
CREATE UNIQUE INDEX jobs_by_idempotency ON jobs(requester, idempotency_key) WHERE idempotency_key != '';
CREATE INDEX jobs_by_requester ON jobs(requester, created_at DESC);
CREATE INDEX jobs_queued ON jobs(priority DESC, run_at, created_at) WHERE status = 'queued';
CREATE INDEX jobs_leased ON jobs(lease_until) WHERE status = 'running';
CREATE INDEX jobs_active_by_requester ON jobs(requester) WHERE status IN ('queued', 'running');
DROP INDEX events_by_job;
";

const STEPS: [&str; 5] = [V1, V2, V3, V4, V5];

/// Brings the database to `CURRENT`. Refuses a database newer than this build.
pub fn migrate(conn: &mut Connection) -> Result<i64, StoreError> {
    let mut version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > CURRENT {
        return Err(StoreError::Unavailable(format!(
            "database schema version {version} is newer than this build ({CURRENT}); \
             hint: upgrade clawdlets or restore a backup"
        )));
    }
    while version < CURRENT {
        let step = STEPS[version as usize];
        let tx = conn.transaction()?;
        tx.execute_batch(step)?;
        version += 1;
        tx.execute_batch(&format!("PRAGMA user_version = {version}"))?;
        tx.commit()?;
        tracing::info!(event = "orchestrator.migrated", version, "schema migrated");
    }
    Ok(version)
}

/// The legacy schema exactly as version 3 (used by tests to build a pre-upgrade database).
pub fn legacy_v3_ddl() -> String {
    format!("{V1}{V2}{V3}PRAGMA user_version = 3;")
}
