//! Prometheus counters kept in atomics (no locks on the request path) and the text exposition.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Metrics {
    pub requests_2xx: AtomicU64,
    pub requests_4xx: AtomicU64,
    pub requests_5xx: AtomicU64,
    pub enqueued: AtomicU64,
    pub claimed: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub canceled: AtomicU64,
    pub denied: AtomicU64,
    pub rate_limited: AtomicU64,
    pub tokens_consumed: AtomicU64,
    pub tokens_refused: AtomicU64,
    pub vm_requests_refused: AtomicU64,
    pub connections_refused: AtomicU64,
}

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn status(&self, code: u16) {
        match code {
            200..=299 => inc(&self.requests_2xx),
            400..=499 => inc(&self.requests_4xx),
            _ => inc(&self.requests_5xx),
        }
    }

    /// Renders the exposition; `jobs` are counts by status from the store.
    pub fn render(&self, jobs: &[(String, i64)]) -> String {
        let mut s = String::new();
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "# HELP clf_http_requests_total HTTP requests answered, by status class."
        );
        let _ = writeln!(s, "# TYPE clf_http_requests_total counter");
        for (class, c) in [
            ("2xx", &self.requests_2xx),
            ("4xx", &self.requests_4xx),
            ("5xx", &self.requests_5xx),
        ] {
            let _ = writeln!(s, "clf_http_requests_total{{class=\"{class}\"}} {}", g(c));
        }
        let counters = [
            ("clf_jobs_enqueued_total", "Jobs enqueued.", &self.enqueued),
            (
                "clf_jobs_claimed_total",
                "Jobs claimed by workers.",
                &self.claimed,
            ),
            (
                "clf_jobs_completed_total",
                "Jobs completed.",
                &self.completed,
            ),
            (
                "clf_jobs_failed_total",
                "Job failures reported by workers.",
                &self.failed,
            ),
            ("clf_jobs_canceled_total", "Jobs canceled.", &self.canceled),
            (
                "clf_requests_denied_total",
                "Requests refused for identity or permission reasons.",
                &self.denied,
            ),
            (
                "clf_requests_rate_limited_total",
                "Requests refused by a rate limit.",
                &self.rate_limited,
            ),
            (
                "clf_bootstrap_tokens_consumed_total",
                "Bootstrap tokens consumed.",
                &self.tokens_consumed,
            ),
            (
                "clf_bootstrap_tokens_refused_total",
                "Bootstrap token presentations refused.",
                &self.tokens_refused,
            ),
            (
                "clf_vm_requests_refused_total",
                "Signed VM requests refused.",
                &self.vm_requests_refused,
            ),
            (
                "clf_connections_refused_total",
                "Connections refused at the connection limit.",
                &self.connections_refused,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                s,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                g(c)
            );
        }
        let _ = writeln!(
            s,
            "# HELP clf_jobs Jobs waiting or in progress, by status (finished jobs: clf_jobs_*_total).\n# TYPE clf_jobs gauge"
        );
        for st in ["queued", "running"] {
            let n = jobs
                .iter()
                .find(|(k, _)| k == st)
                .map(|(_, n)| *n)
                .unwrap_or(0);
            let _ = writeln!(s, "clf_jobs{{status=\"{st}\"}} {n}");
        }
        s
    }
}
