//! Prometheus metrics in the text exposition format, served at `/metrics` on a separate loopback
//! port. Label values are config-defined bot names and fixed reason ids, so cardinality is bounded.
//!
//! This module never labels by destination host: hosts are attacker-chosen and unbounded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0];

/// A fixed-bucket histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if s <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                self.counts[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// (bot, kind, decision, reason)
type DecisionKey = (String, &'static str, &'static str, String);

/// All counters of one proxy process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (bot, kind, decision, reason) → count
    decisions: Mutex<BTreeMap<DecisionKey, u64>>,
    /// (bot, direction) → bytes
    bytes: Mutex<BTreeMap<(String, &'static str), u64>>,
    pub active_connections: AtomicI64,
    pub rejected_overload: AtomicU64,
    pub reloads_ok: AtomicU64,
    pub reloads_failed: AtomicU64,
    pub config_generation: AtomicU64,
    pub dns_seconds: Histogram,
    pub connect_seconds: Histogram,
}

impl Metrics {
    pub fn decision(&self, bot: &str, kind: &'static str, decision: &'static str, reason: &str) {
        let mut m = self.decisions.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((bot.to_string(), kind, decision, reason.to_string()))
            .or_default() += 1;
    }

    pub fn bytes(&self, bot: &str, up: u64, down: u64) {
        let mut m = self.bytes.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((bot.to_string(), "up")).or_default() += up;
        *m.entry((bot.to_string(), "down")).or_default() += down;
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP clawdlets_egress_requests_total Proxy decisions by bot, kind, decision and reason.\n");
        out.push_str("# TYPE clawdlets_egress_requests_total counter\n");
        for ((bot, kind, decision, reason), n) in self
            .decisions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "clawdlets_egress_requests_total{{bot=\"{}\",kind=\"{kind}\",decision=\"{decision}\",reason=\"{}\"}} {n}",
                escape(bot),
                escape(reason)
            );
        }
        out.push_str(
            "# HELP clawdlets_egress_bytes_total Bytes relayed, up = client to upstream.\n",
        );
        out.push_str("# TYPE clawdlets_egress_bytes_total counter\n");
        for ((bot, dir), n) in self.bytes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "clawdlets_egress_bytes_total{{bot=\"{}\",direction=\"{dir}\"}} {n}",
                escape(bot)
            );
        }
        let gauges = [
            (
                "clawdlets_egress_active_connections",
                "gauge",
                "Client connections open now.",
                self.active_connections.load(Ordering::Relaxed).to_string(),
            ),
            (
                "clawdlets_egress_overload_rejections_total",
                "counter",
                "Connections refused by a connection limit.",
                self.rejected_overload.load(Ordering::Relaxed).to_string(),
            ),
            (
                "clawdlets_egress_config_generation",
                "gauge",
                "Number of the config in use (1 = loaded at start).",
                self.config_generation.load(Ordering::Relaxed).to_string(),
            ),
        ];
        for (name, ty, help, v) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}\n{name} {v}");
        }
        let _ = writeln!(
            out,
            "# HELP clawdlets_egress_config_reloads_total SIGHUP reloads by result.\n# TYPE clawdlets_egress_config_reloads_total counter\nclawdlets_egress_config_reloads_total{{result=\"ok\"}} {}\nclawdlets_egress_config_reloads_total{{result=\"failed\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed)
        );
        self.dns_seconds.render(
            &mut out,
            "clawdlets_egress_dns_seconds",
            "Name lookup time.",
        );
        self.connect_seconds.render(
            &mut out,
            "clawdlets_egress_upstream_connect_seconds",
            "Upstream TCP connect time.",
        );
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` (and `/healthz`) until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            let read = tokio::time::timeout(Duration::from_secs(5), async {
                loop {
                    let r = stream.read(&mut buf[n..]).await?;
                    if r == 0 {
                        break;
                    }
                    n += r;
                    if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") || n == buf.len() {
                        break;
                    }
                }
                Ok::<_, std::io::Error>(())
            })
            .await;
            if !matches!(read, Ok(Ok(()))) {
                return;
            }
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            let path = match req.parse(&buf[..n]) {
                Ok(httparse::Status::Complete(_)) => req.path.unwrap_or(""),
                _ => "",
            };
            let (status, ctype, body) = match (req.method, path) {
                (Some("GET"), "/metrics") => (
                    "200 OK",
                    "text/plain; version=0.0.4; charset=utf-8",
                    metrics.render(),
                ),
                (Some("GET"), "/healthz") => ("200 OK", "text/plain", "ok\n".to_string()),
                _ => ("404 Not Found", "text/plain", "not found\n".to_string()),
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
