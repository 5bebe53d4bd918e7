//! The daemon's own workers for `cattle.spawn` and `cattle.reap`. A spawn job is claimed by the
//! daemon, issues a one-time token, creates the server, and stays `running` (its lease = the VM's
//! TTL) until the VM reports its result through the signed API; then the job is done and the VM
//! deleted. Quotas (per requester and global) are checked in the same transaction that records
//! the new cattle. Reap deletes expired cattle and orphaned servers carrying our label.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use serde_json::{Value, json};

use super::{Bootstrap, ServerSpec};
use crate::orchestrator::App;
use crate::orchestrator::audit::{self, Who};
use crate::orchestrator::clock::iso;
use crate::orchestrator::queue::{self, ClaimRequest, Claimed};
use crate::orchestrator::store::StoreError;
use crate::orchestrator::tokens;

/// Grace after the TTL before an unreported spawn job's lease runs out.
const LEASE_GRACE_MS: i64 = 60_000;

/// Claims internal jobs and runs them until `stop` fires.
pub async fn worker_loop(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let permits = Arc::new(tokio::sync::Semaphore::new(
        app.settings.queue.worker_concurrency as usize,
    ));
    loop {
        let free = permits.available_permits() as u32;
        if free > 0 {
            let actor = app.daemon_actor.clone();
            let now = app.clock.now_ms();
            let req = ClaimRequest {
                worker_id: "orchestrator".into(),
                kinds: vec!["cattle.spawn".into(), "cattle.reap".into()],
                limit: free,
                lease_ms: 300_000,
                internal: true,
            };
            match app
                .store
                .call(move |c| queue::claim(c, &actor, &req, now))
                .await
            {
                Ok(jobs) => {
                    for job in jobs {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            break;
                        };
                        let app = app.clone();
                        tokio::spawn(async move {
                            run_job(&app, job).await;
                            drop(permit);
                        });
                    }
                }
                Err(e) => {
                    tracing::error!(event = "orchestrator.worker_error", error = %e, "cannot claim cattle jobs")
                }
            }
        }
        tokio::select! {
            _ = app.wake.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn run_job(app: &App, c: Claimed) {
    let job_id = c.job.job_id.clone();
    let outcome = match c.job.kind.as_str() {
        "cattle.spawn" => spawn(app, &c).await,
        "cattle.reap" => {
            let dry = serde_json::from_str::<Value>(&c.job.payload_json)
                .ok()
                .and_then(|v| v["dryRun"].as_bool())
                .unwrap_or(false);
            match reap(app, dry).await {
                Ok(result) => {
                    let now = app.clock.now_ms();
                    let r = result.to_string();
                    let id = job_id.clone();
                    app.store
                        .call(move |c| queue::complete_internal(c, &id, &r, Who::DAEMON, now))
                        .await
                        .map(|_| ())
                        .map_err(|e| (e.to_string(), false))
                }
                Err(e) => Err((e, true)),
            }
        }
        other => Err((format!("no handler for kind '{other}'"), false)),
    };
    if let Err((msg, retry)) = outcome {
        let now = app.clock.now_ms();
        let backoff = (
            app.settings.queue.backoff_base_ms,
            app.settings.queue.backoff_max_ms,
        );
        let id = job_id.clone();
        let m = msg.clone();
        let r = app
            .store
            .call(move |c| queue::fail_internal(c, &id, &m, retry, backoff, Who::DAEMON, now))
            .await;
        tracing::warn!(event = "orchestrator.cattle_failed", job = %job_id, error = %msg, stored = r.is_ok(), "cattle job failed");
    }
}

/// Returns Err((message, retry)).
async fn spawn(app: &App, c: &Claimed) -> Result<(), (String, bool)> {
    let s = &app.settings;
    let payload: Value = serde_json::from_str(&c.job.payload_json).unwrap_or(Value::Null);
    let spawn = super::validate_spawn(
        &payload,
        &s.env_keys,
        &s.privileged_env_keys,
        s.cattle.default_ttl_s,
        s.cattle.max_ttl_s,
    )
    .map_err(|e| (e.to_string(), false))?;
    let Some(base_url) = app.cattle_base_url.clone() else {
        return Err((
            "no cattle listener is configured (--cattle-listen or cattle.baseUrl)".into(),
            false,
        ));
    };
    let job_id = c.job.job_id.clone();
    let name = format!("clf-{}-{}", spawn.persona, &job_id[job_id.len() - 10..]);
    let now = app.clock.now_ms();
    let expires_at = now + spawn.ttl_s as i64 * 1000;
    let (requester, per_bot, global, ttl, backend) = (
        c.job.requester.clone(),
        s.limits.max_concurrent_cattle_per_requester as i64,
        s.cattle.max_instances as i64,
        s.bootstrap_ttl_s,
        app.backend.name(),
    );
    let (n2, j2, keys) = (name.clone(), job_id.clone(), spawn.env_keys.clone());
    let mut public_env = serde_json::Map::new();
    public_env.insert(
        "CLAWDLETS_CATTLE_AUTO_SHUTDOWN".into(),
        json!(if spawn.auto_shutdown { "1" } else { "0" }),
    );
    let issued = app
        .store
        .call(move |conn| {
            let mine: i64 = conn.query_row("SELECT count(*) FROM cattle WHERE requester = ?1 AND status IN ('starting','running')", [&requester], |r| r.get(0))?;
            if mine >= per_bot {
                return Err(StoreError::Quota(format!("'{requester}' already runs {mine} cattle (limit {per_bot})")));
            }
            let all: i64 = conn.query_row("SELECT count(*) FROM cattle WHERE status IN ('starting','running')", [], |r| r.get(0))?;
            if all >= global {
                return Err(StoreError::Quota(format!("{all} cattle running (maxInstances {global})")));
            }
            conn.execute(
                "INSERT INTO cattle (name, job_id, requester, backend, status, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, 'starting', ?5, ?6)",
                params![n2, j2, requester, backend, now, expires_at],
            )?;
            queue::extend_internal(conn, &j2, expires_at + LEASE_GRACE_MS, now)?;
            let out = tokens::issue(conn, now, ttl, &j2, &requester, &n2, &keys, &public_env)?;
            audit::record(conn, now, Some(&j2), Who::DAEMON, "cattle.spawn", "starting", &n2, None)?;
            Ok(out)
        })
        .await;
    let (token, token_expires) = match issued {
        Ok(t) => t,
        Err(e @ StoreError::Quota(_)) => return Err((e.to_string(), true)),
        Err(e) => return Err((e.to_string(), true)),
    };
    let boot = Bootstrap {
        base_url,
        token: token.expose().to_string(),
        expires_at: iso(token_expires),
        one_time: true,
        cattle_name: name.clone(),
        job_id: job_id.clone(),
    };
    let user_data = super::user_data(&spawn, &boot).map_err(|e| (e.to_string(), false));
    drop(boot);
    let task_id = spawn.task["taskId"].as_str().unwrap_or("").to_string();
    let created = match user_data {
        Ok(ud) => {
            let spec = ServerSpec {
                name: name.clone(),
                user_data: ud,
                labels: super::labels(
                    &s.cattle.labels,
                    &name,
                    &spawn.persona,
                    &task_id,
                    now / 1000,
                    expires_at / 1000,
                ),
                image: spawn.image.clone(),
                server_type: spawn.server_type.clone(),
                location: spawn.location.clone(),
            };
            app.backend.create(&spec).await.map_err(|e| {
                (
                    e.to_string(),
                    matches!(e, super::CattleError::Unavailable(_)),
                )
            })
        }
        Err(e) => Err(e),
    };
    let now = app.clock.now_ms();
    let n2 = name.clone();
    match created {
        Ok(server) => {
            let sid = server.id.clone();
            app.store
                .call(move |conn| {
                    conn.execute(
                        "UPDATE cattle SET server_id = ?2, status = 'running' WHERE name = ?1",
                        params![n2, sid],
                    )?;
                    audit::record(
                        conn,
                        now,
                        None,
                        Who::DAEMON,
                        "cattle.spawn",
                        "ok",
                        &format!("{n2} server {sid}"),
                        None,
                    )?;
                    Ok(())
                })
                .await
                .map_err(|e| (e.to_string(), false))?;
            tracing::info!(event = "orchestrator.cattle_spawned", cattle = %name, server = %server.id, job = %job_id, "cattle spawned");
            Ok(())
        }
        Err(e) => {
            let j2 = job_id.clone();
            let _ = app
                .store
                .call(move |conn| {
                    conn.execute(
                        "UPDATE cattle SET status = 'reaped', reaped_at = ?2 WHERE name = ?1",
                        params![n2, now],
                    )?;
                    conn.execute(
                        "DELETE FROM bootstrap_tokens WHERE job_id = ?1 AND used_at IS NULL",
                        [&j2],
                    )?;
                    Ok(())
                })
                .await;
            Err(e)
        }
    }
}

/// Records a VM's final report: completes (or fails) its job, revokes its key, deletes the VM.
pub async fn finish(
    app: &Arc<App>,
    job_id: &str,
    key_id: &str,
    cattle: &str,
    ok: bool,
    result: Value,
    error: Option<String>,
) -> Result<bool, StoreError> {
    let now = app.clock.now_ms();
    let (j, k, n) = (job_id.to_string(), key_id.to_string(), cattle.to_string());
    let who_name = format!("vm:{cattle}");
    let server: Option<String> = app
        .store
        .call(move |conn| {
            let who = Who {
                uid: None,
                name: &who_name,
            };
            let changed = if ok {
                let r = json!({"cattle": n, "ok": true, "result": result}).to_string();
                queue::complete_internal(conn, &j, &r, who, now)?
            } else {
                let msg = error.unwrap_or_else(|| "cattle reported failure".into());
                queue::fail_internal(
                    conn,
                    &j,
                    &msg.chars().take(500).collect::<String>(),
                    false,
                    (0, 0),
                    who,
                    now,
                )?
            };
            if !changed {
                return Err(StoreError::Conflict(format!("job '{j}' is not running")));
            }
            conn.execute(
                "UPDATE vm_keys SET revoked_at = ?2 WHERE key_id = ?1",
                params![k, now],
            )?;
            let sid: Option<String> = conn
                .query_row("SELECT server_id FROM cattle WHERE name = ?1", [&n], |r| {
                    r.get(0)
                })
                .optional()?
                .flatten();
            Ok(sid)
        })
        .await?;
    if let Some(sid) = server {
        // In its own task: the VM may close this very connection when it exits, which would
        // cancel a teardown running inside the request.
        let (app, cattle) = (app.clone(), cattle.to_string());
        tokio::spawn(async move { teardown(&app, &cattle, &sid).await });
    }
    Ok(true)
}

async fn teardown(app: &App, cattle: &str, server_id: &str) {
    let deleted = app.backend.delete(server_id).await;
    let now = app.clock.now_ms();
    let (n, ok) = (cattle.to_string(), deleted.is_ok());
    let msg = match &deleted {
        Ok(()) => format!("{cattle} server {server_id} deleted"),
        Err(e) => format!("{cattle} server {server_id}: {e}"),
    };
    let _ = app
        .store
        .call(move |conn| {
            if ok {
                conn.execute(
                    "UPDATE cattle SET status = 'reaped', reaped_at = ?2 WHERE name = ?1",
                    params![n, now],
                )?;
            }
            audit::record(
                conn,
                now,
                None,
                Who::DAEMON,
                "cattle.delete",
                if ok { "ok" } else { "error" },
                &msg,
                None,
            )?;
            Ok(())
        })
        .await;
}

/// Deletes expired cattle and orphaned servers; returns what was (or would be) reaped.
pub async fn reap(app: &App, dry_run: bool) -> Result<Value, String> {
    let now = app.clock.now_ms();
    let expired: Vec<(String, Option<String>, String)> = app
        .store
        .call(move |conn| {
            let mut st = conn.prepare("SELECT name, server_id, job_id FROM cattle WHERE status IN ('starting','running') AND expires_at <= ?1")?;
            let rows = st.query_map([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
        .map_err(|e| e.to_string())?;
    let active: Vec<String> = app
        .store
        .call(|conn| {
            let mut st = conn.prepare("SELECT server_id FROM cattle WHERE status IN ('starting','running') AND server_id IS NOT NULL")?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<Result<Vec<String>, _>>()?)
        })
        .await
        .map_err(|e| e.to_string())?;
    let servers = app.backend.list().await.map_err(|e| e.to_string())?;
    let now_s = now / 1000;
    let orphans: Vec<&super::Server> = servers
        .iter()
        .filter(|s| s.labels.get("managed-by").map(String::as_str) == Some(super::MANAGED_BY))
        .filter(|s| {
            let expired = s
                .labels
                .get("expires-at")
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|t| t <= now_s);
            // A server not (yet) known as active is an orphan only once it is old enough that a
            // spawn in flight cannot be racing with this reap.
            let old = s
                .labels
                .get("created-at")
                .and_then(|v| v.parse::<i64>().ok())
                .is_none_or(|t| t <= now_s - 600);
            expired || (!active.contains(&s.id) && old)
        })
        .filter(|s| {
            !expired
                .iter()
                .any(|(_, sid, _)| sid.as_deref() == Some(s.id.as_str()))
        })
        .collect();
    let mut reaped = Vec::new();
    let mut orphaned = Vec::new();
    if !dry_run {
        for (name, sid, job_id) in &expired {
            if let Some(sid) = sid {
                teardown(app, name, sid).await;
            }
            let (n, j) = (name.clone(), job_id.clone());
            let _ = app
                .store
                .call(move |conn| {
                    conn.execute("UPDATE cattle SET status = 'reaped', reaped_at = ?2 WHERE name = ?1", params![n, now])?;
                    conn.execute("UPDATE vm_keys SET revoked_at = ?2 WHERE cattle_name = ?1 AND revoked_at IS NULL", params![n, now])?;
                    queue::fail_internal(conn, &j, "cattle expired before reporting a result", false, (0, 0), Who::DAEMON, now)?;
                    Ok(())
                })
                .await;
            reaped.push(name.clone());
        }
        for s in &orphans {
            if app.backend.delete(&s.id).await.is_ok() {
                orphaned.push(s.name.clone());
            }
        }
        let msg = format!(
            "reaped {} expired, {} orphaned",
            reaped.len(),
            orphaned.len()
        );
        let _ = app
            .store
            .call(move |c| {
                audit::record(c, now, None, Who::DAEMON, "cattle.reap", "ok", &msg, None)
            })
            .await;
    } else {
        reaped = expired.iter().map(|e| e.0.clone()).collect();
        orphaned = orphans.iter().map(|s| s.name.clone()).collect();
    }
    Ok(json!({"dryRun": dry_run, "expired": reaped, "orphans": orphaned}))
}
