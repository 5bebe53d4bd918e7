//! One structured log line per proxy decision (`event = "egress.decision"`): bot, host, port,
//! kind, decision, reason, bytes up/down and duration. Allowed connections are logged at info
//! when they end; denials and report-mode would-denials at warn as soon as they are decided.
//!
//! Only the authority (host and port) is logged: never a path, query string or header value.

use std::time::Duration;

/// The outcome of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny,
    /// Report mode: allowed, but enforce mode would have denied it.
    ReportWouldDeny,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::ReportWouldDeny => "report",
        }
    }
}

/// Everything one decision line carries.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    pub bot: &'a str,
    /// How the bot was identified: `uid`, `proxy-auth` or `none`.
    pub identity: &'a str,
    pub host: &'a str,
    pub port: u16,
    /// `connect` or `http`.
    pub kind: &'a str,
    pub decision: Decision,
    pub reason: &'a str,
    pub status: u16,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration: Duration,
    pub upstream: Option<std::net::SocketAddr>,
}

/// Emits the line.
pub fn emit(r: &Record<'_>) {
    let upstream = r.upstream.map(|a| a.to_string()).unwrap_or_default();
    let duration_ms = r.duration.as_millis() as u64;
    macro_rules! line {
        ($lvl:ident) => {
            tracing::$lvl!(
                event = "egress.decision",
                bot = r.bot,
                identity = r.identity,
                host = r.host,
                port = r.port,
                kind = r.kind,
                decision = r.decision.as_str(),
                reason = r.reason,
                status = r.status,
                bytes_up = r.bytes_up,
                bytes_down = r.bytes_down,
                duration_ms,
                upstream = upstream.as_str(),
                "egress {} {}:{} for {}: {}",
                r.decision.as_str(),
                r.host,
                r.port,
                r.bot,
                r.reason
            )
        };
    }
    match r.decision {
        Decision::Allow => line!(info),
        Decision::Deny | Decision::ReportWouldDeny => line!(warn),
    }
}
