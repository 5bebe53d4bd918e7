//! One-time bootstrap tokens for cattle VMs: 256 random bits with the recognizable prefix
//! `clf_boot_` and a short checksum (so scanners and the server reject garbage without a lookup).
//! Only the SHA-256 of the token is stored. Each token is bound to one job, one cattle name and
//! the env keys it may fetch; consuming it is a single atomic UPDATE (unused and unexpired), so
//! two concurrent uses cannot both succeed. A second use is audited as a compromise signal.
//! This module never sees secret values (see `api::cattle_env` for reading them).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use super::audit::{self, Who};
use super::store::StoreError;
use crate::secret::SecretString;

pub const PREFIX: &str = "clf_boot_";

/// What a consumed token grants.
#[derive(Debug, Clone)]
pub struct Grant {
    pub token_id: String,
    pub job_id: String,
    pub requester: String,
    pub cattle_name: String,
    pub env_keys: Vec<String>,
    pub public_env: serde_json::Map<String, serde_json::Value>,
    pub expires_at: i64,
}

/// Why a token was refused (the client only ever hears "invalid token").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    Unknown,
    Expired,
    Reused,
    JobGone,
}

impl Refusal {
    pub fn kind(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Unknown => "unknown",
            Refusal::Expired => "expired",
            Refusal::Reused => "reused",
            Refusal::JobGone => "job_not_running",
        }
    }
}

fn checksum(body: &str) -> String {
    hex::encode(&Sha256::digest(body.as_bytes())[..3])
}

/// A fresh token string.
pub fn generate() -> SecretString {
    let mut raw = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut raw);
    let body = URL_SAFE_NO_PAD.encode(raw);
    let sum = checksum(&body);
    zeroize::Zeroize::zeroize(&mut raw);
    SecretString::new(format!("{PREFIX}{body}_{sum}"))
}

/// Checks shape and checksum without touching the database.
pub fn well_formed(token: &str) -> bool {
    let Some(rest) = token.strip_prefix(PREFIX) else {
        return false;
    };
    let Some((body, sum)) = rest.rsplit_once('_') else {
        return false;
    };
    body.len() == 43
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && crate::secret::ct_eq(sum.as_bytes(), checksum(body).as_bytes())
}

/// The stored form: hex SHA-256 of the whole token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Public id used in logs and audit rows (never enough to use the token).
pub fn public_id(hash_hex: &str) -> String {
    format!("tok_{}", &hash_hex[..12])
}

/// Stores a new token for a job and returns it (the only time the plaintext exists server-side).
#[allow(clippy::too_many_arguments)]
pub fn issue(
    conn: &Connection,
    now: i64,
    ttl_s: u64,
    job_id: &str,
    requester: &str,
    cattle_name: &str,
    env_keys: &[String],
    public_env: &serde_json::Map<String, serde_json::Value>,
) -> Result<(SecretString, i64), StoreError> {
    let ttl_s = ttl_s.clamp(super::config::TOKEN_TTL_MIN, super::config::TOKEN_TTL_MAX);
    let token = generate();
    let h = hash(token.expose());
    let expires_at = now + ttl_s as i64 * 1000;
    conn.prepare_cached(
        "INSERT INTO bootstrap_tokens (token_hash, token_id, created_at, expires_at, job_id, \
         requester, cattle_name, env_keys_json, public_env_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        h,
        public_id(&h),
        now,
        expires_at,
        job_id,
        requester,
        cattle_name,
        serde_json::to_string(env_keys).unwrap_or_else(|_| "[]".into()),
        serde_json::Value::Object(public_env.clone()).to_string()
    ])?;
    audit::record(
        conn,
        now,
        Some(job_id),
        Who::DAEMON,
        "token.issue",
        "ok",
        &format!("{} for {cattle_name}", public_id(&h)),
        None,
    )?;
    Ok((token, expires_at))
}

/// Consumes a token: exactly one caller ever gets `Ok`. `source` (the peer address) is audited.
pub fn consume(
    conn: &Connection,
    token: &str,
    now: i64,
    source: &str,
) -> Result<Result<Grant, Refusal>, StoreError> {
    let who = Who {
        uid: None,
        name: source,
    };
    if !well_formed(token) {
        audit::record(
            conn,
            now,
            None,
            who,
            "token.consume",
            "malformed",
            "malformed bearer token",
            None,
        )?;
        return Ok(Err(Refusal::Malformed));
    }
    let h = hash(token);
    let id = public_id(&h);
    let row = conn
        .prepare_cached(
            "UPDATE bootstrap_tokens SET used_at = ?2, used_from = ?3 \
             WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2 \
             RETURNING job_id, requester, cattle_name, env_keys_json, public_env_json, expires_at",
        )?
        .query_row(params![h, now, source], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        })
        .optional()?;
    let Some((job_id, requester, cattle_name, keys, public_env, expires_at)) = row else {
        let state: Option<(Option<i64>, i64, String)> = conn
            .prepare_cached(
                "SELECT used_at, expires_at, job_id FROM bootstrap_tokens WHERE token_hash = ?1",
            )?
            .query_row([&h], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let (refusal, job) = match state {
            None => (Refusal::Unknown, None),
            Some((Some(_), _, job)) => (Refusal::Reused, Some(job)),
            Some((None, _, job)) => (Refusal::Expired, Some(job)),
        };
        if refusal == Refusal::Reused {
            tracing::error!(event = "orchestrator.token_reuse", token = %id, source, "bootstrap token presented again: possible compromise");
        }
        audit::record(
            conn,
            now,
            job.as_deref(),
            who,
            "token.consume",
            refusal.kind(),
            &id,
            None,
        )?;
        return Ok(Err(refusal));
    };
    let status: Option<String> = conn
        .prepare_cached("SELECT status FROM jobs WHERE job_id = ?1")?
        .query_row([&job_id], |r| r.get(0))
        .optional()?;
    if status.as_deref() != Some("running") {
        audit::record(
            conn,
            now,
            Some(&job_id),
            who,
            "token.consume",
            Refusal::JobGone.kind(),
            &id,
            None,
        )?;
        return Ok(Err(Refusal::JobGone));
    }
    audit::record(
        conn,
        now,
        Some(&job_id),
        who,
        "token.consume",
        "ok",
        &format!("{id} by {cattle_name}"),
        None,
    )?;
    Ok(Ok(Grant {
        token_id: id,
        job_id,
        requester,
        cattle_name,
        env_keys: serde_json::from_str(&keys).unwrap_or_default(),
        public_env: serde_json::from_str(&public_env).unwrap_or_default(),
        expires_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::clock::{Clock, ManualClock};
    use crate::orchestrator::peer::Actor;
    use crate::orchestrator::queue;
    use crate::orchestrator::store::Store;

    #[test]
    fn format_and_checksum() {
        let t = generate();
        assert!(t.expose().starts_with(PREFIX));
        assert!(well_formed(t.expose()));
        let mut bad = t.expose().to_string();
        bad.replace_range(12..13, if &bad[12..13] == "A" { "B" } else { "A" });
        assert!(!well_formed(&bad));
        assert!(!well_formed("clf_boot_short_abcdef"));
        assert_ne!(generate().expose(), t.expose());
    }

    /// A token with a job in `running`, at clock time `clock.now_ms()`.
    fn setup(clock: &ManualClock) -> (tempfile::TempDir, Store, String) {
        let dir = tempfile::tempdir().unwrap();
        let (s, _h) = Store::open_threaded(&dir.path().join("db.sqlite")).unwrap();
        let now = clock.now_ms();
        let token = s
            .call_blocking(move |c| {
                let a = Actor {
                    uid: 1,
                    name: "bot".into(),
                    admin: false,
                };
                let job = queue::NewJob {
                    kind: "cattle.spawn".into(),
                    payload_json: "{}".into(),
                    idempotency_key: String::new(),
                    run_at: 0,
                    priority: 0,
                    max_attempts: 1,
                };
                let id = queue::enqueue(c, &a, &job, now, None)?.job_id;
                let req = queue::ClaimRequest {
                    worker_id: "d".into(),
                    kinds: vec![],
                    limit: 1,
                    lease_ms: 3_600_000,
                    internal: true,
                };
                queue::claim(c, &a, &req, now)?;
                let (t, _) = issue(
                    c,
                    now,
                    30,
                    &id,
                    "bot",
                    "cattle-1",
                    &["K".into()],
                    &Default::default(),
                )?;
                Ok(t.expose().to_string())
            })
            .unwrap();
        (dir, s, token)
    }

    #[test]
    fn token_is_single_use() {
        let clock = ManualClock::new(1_000_000);
        let (_d, s, token) = setup(&clock);
        let now = clock.now_ms();
        let t2 = token.clone();
        let first = s
            .call_blocking(move |c| consume(c, &token, now + 1, "127.0.0.1"))
            .unwrap();
        assert_eq!(first.unwrap().cattle_name, "cattle-1");
        let second = s
            .call_blocking(move |c| consume(c, &t2, now + 2, "127.0.0.1"))
            .unwrap();
        assert_eq!(second.unwrap_err(), Refusal::Reused);
    }

    #[test]
    fn token_expires_after_its_ttl() {
        let clock = ManualClock::new(1_000_000);
        let (_d, s, token) = setup(&clock);
        clock.advance_ms(30_000);
        let now = clock.now_ms();
        let r = s
            .call_blocking(move |c| consume(c, &token, now, "x"))
            .unwrap();
        assert_eq!(r.unwrap_err(), Refusal::Expired);
    }

    #[test]
    fn token_just_before_expiry_works_and_unknown_is_refused() {
        let clock = ManualClock::new(1_000_000);
        let (_d, s, token) = setup(&clock);
        clock.advance_ms(29_999);
        let now = clock.now_ms();
        let r = s
            .call_blocking(move |c| consume(c, &token, now, "x"))
            .unwrap();
        assert!(r.is_ok());
        let other = generate().expose().to_string();
        let r = s
            .call_blocking(move |c| consume(c, &other, now, "x"))
            .unwrap();
        assert_eq!(r.unwrap_err(), Refusal::Unknown);
    }

    #[test]
    fn audit_rows_never_contain_the_token() {
        let clock = ManualClock::new(1_000_000);
        let (_d, s, token) = setup(&clock);
        let t = token.clone();
        let now = clock.now_ms();
        s.call_blocking(move |c| consume(c, &t, now, "x"))
            .unwrap()
            .unwrap();
        let body = token[PREFIX.len()..PREFIX.len() + 43].to_string();
        let hits: i64 = s
            .call_blocking(move |c| {
                Ok(c.query_row(
                    "SELECT count(*) FROM events WHERE instr(message, ?1) > 0",
                    [body],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        assert_eq!(hits, 0);
    }
}
