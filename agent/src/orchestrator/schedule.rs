//! Timers: re-queue expired leases every few seconds, prune old rows, reap expired cattle, and
//! ping the systemd watchdog. Each tick is one store call (pruning: one per chunk); a failing
//! tick is logged and retried on the next one. The watchdog has a task of its own, so a long
//! prune pass cannot starve it; it shares the event loop with everything else, so its pings
//! stop if the loop (HTTP or the store) hangs.

use std::sync::Arc;
use std::time::Duration;

use super::audit::{self, Who};
use super::store::StoreError;
use super::{App, cattle, notify, queue};

pub async fn run(app: Arc<App>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut leases = tokio::time::interval(Duration::from_secs(5));
    let mut prune = tokio::time::interval(app.settings.prune_interval);
    let mut reap = tokio::time::interval(app.settings.reap_interval);
    if let Some(every) = notify::watchdog_interval() {
        tokio::spawn(watchdog(every, stop.clone()));
    }
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = leases.tick() => {
                let now = app.clock.now_ms();
                match app.store.call(move |c| queue::expire_leases(c, now)).await {
                    Ok(n) if n > 0 => tracing::info!(event = "orchestrator.leases_expired", count = n, "expired leases handled"),
                    Ok(_) => {}
                    Err(e) => tracing::error!(event = "orchestrator.schedule_error", task = "leases", error = %e, "lease sweep failed"),
                }
            }
            _ = prune.tick() => {
                if let Err(e) = prune_all(&app, &stop).await {
                    tracing::error!(event = "orchestrator.schedule_error", task = "prune", error = %e, "prune failed");
                }
            }
            _ = reap.tick() => {
                if let Err(e) = cattle::handler::reap(&app, false).await {
                    tracing::error!(event = "orchestrator.schedule_error", task = "reap", error = %e, "reap failed");
                }
            }
        }
    }
}

async fn watchdog(every: Duration, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => notify::watchdog(),
        }
    }
}

/// Prunes step by step (each its own short transaction, requests run in between) until no
/// chunk is full or the daemon stops, then records one audit row for the whole pass.
async fn prune_all(app: &App, stop: &tokio::sync::watch::Receiver<bool>) -> Result<(), StoreError> {
    let (ret, nonce) = (app.settings.retention_ms, app.settings.vm_auth.nonce_ttl_ms);
    let mut removed = 0;
    loop {
        let now = app.clock.now_ms();
        let step = app
            .store
            .call(move |c| queue::prune(c, now, ret, nonce, queue::PRUNE_CHUNK))
            .await?;
        removed += step.rows;
        if !step.more || *stop.borrow() {
            break;
        }
    }
    let now = app.clock.now_ms();
    let message = format!("removed {removed} rows");
    app.store
        .call(move |c| audit::record(c, now, None, Who::DAEMON, "prune", "ok", &message, None))
        .await
}
