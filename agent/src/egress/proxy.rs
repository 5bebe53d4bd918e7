//! The proxy server: accepts loopback connections, identifies the bot, reads one strictly parsed
//! request head under a deadline and a size limit, decides, and then either tunnels (CONNECT,
//! bytes relayed untouched, no TLS interception) or forwards one plain-HTTP request with
//! exact body framing and `Connection: close`.
//!
//! Every refusal answers with a status, an `X-Clawdlets-Egress-Error: <reason>` header and a
//! one-line explanation. This module must not dial anything `resolve::resolve_checked` did not
//! return, and must not forward a second request from the same client connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::allowlist::{Host, HostError, normalize_host};
use super::config::{DEFAULT_BOT, Mode, Policy, Settings};
use super::identity;
use super::log::{self, Decision, Record};
use super::metrics::Metrics;
use super::resolve::{self, DialError, ResolveError, Resolver};

/// The header that carries the reason id of every refusal. Stripped from upstream responses so
/// an upstream cannot forge a proxy denial.
pub const ERROR_HEADER: &str = "X-Clawdlets-Egress-Error";
const MAX_HEADERS: usize = 128;
const TUNNEL_BUF: usize = 64 * 1024;

/// One loaded configuration with its connection slots. Swapped as a whole on reload; open
/// connections keep the snapshot they started with.
#[derive(Debug)]
pub struct Runtime {
    pub settings: Settings,
    bot_slots: Vec<Arc<Semaphore>>,
    default_slots: Arc<Semaphore>,
    pub generation: u64,
}

impl Runtime {
    pub fn new(settings: Settings, generation: u64) -> Self {
        let bot_slots = settings
            .bots
            .iter()
            .map(|b| Arc::new(Semaphore::new(b.max_conns as usize)))
            .collect();
        let default_slots = Arc::new(Semaphore::new(settings.default_max_conns as usize));
        Runtime {
            settings,
            bot_slots,
            default_slots,
            generation,
        }
    }

    fn slots(&self, bot: Option<usize>) -> &Arc<Semaphore> {
        match bot {
            Some(i) => &self.bot_slots[i],
            None => &self.default_slots,
        }
    }

    fn policy(&self, bot: Option<usize>) -> &Policy {
        match bot {
            Some(i) => &self.settings.bots[i].policy,
            None => &self.settings.default_policy,
        }
    }

    fn bot_name(&self, bot: Option<usize>) -> &str {
        match bot {
            Some(i) => &self.settings.bots[i].name,
            None => DEFAULT_BOT,
        }
    }
}

/// State shared by all connections.
pub struct Shared {
    pub config: ArcSwap<Runtime>,
    pub metrics: Arc<Metrics>,
    pub resolver: Arc<dyn Resolver>,
    pub global_slots: Arc<Semaphore>,
}

impl Shared {
    pub fn new(
        settings: Settings,
        resolver: Arc<dyn Resolver>,
        metrics: Arc<Metrics>,
    ) -> Arc<Shared> {
        let global = Arc::new(Semaphore::new(settings.limits.max_conns as usize));
        metrics.config_generation.store(1, Ordering::Relaxed);
        Arc::new(Shared {
            config: ArcSwap::from_pointee(Runtime::new(settings, 1)),
            metrics,
            resolver,
            global_slots: global,
        })
    }

    /// Installs new settings atomically; connections already open keep the old ones.
    pub fn swap(&self, settings: Settings) -> u64 {
        let generation = self.config.load().generation + 1;
        self.config
            .store(Arc::new(Runtime::new(settings, generation)));
        self.metrics
            .config_generation
            .store(generation, Ordering::Relaxed);
        generation
    }
}

/// Accepts connections on `listener` forever.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(event = "egress.accept_error", error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let Ok(permit) = shared.global_slots.clone().try_acquire_owned() else {
                shared
                    .metrics
                    .rejected_overload
                    .fetch_add(1, Ordering::Relaxed);
                let mut stream = stream;
                let r = Reject::new(
                    503,
                    "proxy-overloaded",
                    "the proxy is at its connection limit; retry later",
                );
                let _ = stream.write_all(&r.response()).await;
                return;
            };
            shared
                .metrics
                .active_connections
                .fetch_add(1, Ordering::Relaxed);
            handle(&shared, stream, peer).await;
            shared
                .metrics
                .active_connections
                .fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// A refusal: status, stable reason id, and a human explanation.
#[derive(Debug, Clone)]
pub struct Reject {
    pub status: u16,
    pub reason: &'static str,
    pub message: String,
}

impl Reject {
    pub fn new(status: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Reject {
            status,
            reason,
            message: message.into(),
        }
    }

    fn response(&self) -> Vec<u8> {
        let text = match self.status {
            400 => "Bad Request",
            403 => "Forbidden",
            407 => "Proxy Authentication Required",
            408 => "Request Timeout",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            502 => "Bad Gateway",
            503 => "Service Unavailable",
            504 => "Gateway Timeout",
            _ => "Error",
        };
        let body = format!(
            "clawdlets egress proxy: {} ({})\n",
            self.message, self.reason
        );
        let mut extra = String::new();
        if self.status == 407 {
            extra.push_str("Proxy-Authenticate: Basic realm=\"clawdlets-egress\"\r\n");
        }
        if self.status == 429 || self.status == 503 {
            extra.push_str("Retry-After: 1\r\n");
        }
        format!(
            "HTTP/1.1 {} {text}\r\n{ERROR_HEADER}: {}\r\n{extra}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.status,
            self.reason,
            body.len()
        )
        .into_bytes()
    }
}

/// The parsed request head, owning its data.
#[derive(Debug)]
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    len: usize,
}

impl Head {
    fn all(&self, name: &str) -> impl Iterator<Item = &[u8]> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn one(&self, name: &str) -> Result<Option<&[u8]>, Reject> {
        let mut it = self.all(name);
        let first = it.next();
        if it.next().is_some() {
            return Err(Reject::new(
                400,
                "malformed-request",
                format!("more than one {name} header"),
            ));
        }
        Ok(first)
    }
}

/// Reads until the end of the head, within the size limit and the deadline.
async fn read_head(
    stream: &mut TcpStream,
    max: usize,
    deadline: Duration,
) -> Result<Option<Vec<u8>>, Reject> {
    let mut buf = Vec::with_capacity(2048);
    let fut = async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.map_err(|_| None)?;
            if n == 0 {
                return Err(if buf.is_empty() {
                    None
                } else {
                    Some(Reject::new(
                        400,
                        "malformed-request",
                        "connection closed inside the request head",
                    ))
                });
            }
            let scan_from = buf.len().saturating_sub(3);
            buf.extend_from_slice(&chunk[..n]);
            if buf[scan_from..].windows(4).any(|w| w == b"\r\n\r\n") {
                return Ok(());
            }
            if buf.len() > max {
                return Err(Some(Reject::new(
                    431,
                    "header-too-large",
                    format!("request head larger than {max} bytes"),
                )));
            }
        }
    };
    match tokio::time::timeout(deadline, fut).await {
        Err(_) => Err(Reject::new(
            408,
            "header-timeout",
            format!("request head not received within {}s", deadline.as_secs()),
        )),
        Ok(Err(None)) => Ok(None),
        Ok(Err(Some(r))) => Err(r),
        Ok(Ok(())) => Ok(Some(buf)),
    }
}

fn parse_head(buf: &[u8], max: usize) -> Result<Head, Reject> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(Reject::new(
                400,
                "malformed-request",
                "incomplete request head",
            ));
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Reject::new(
                431,
                "header-too-large",
                format!("more than {MAX_HEADERS} headers"),
            ));
        }
        Err(e) => {
            return Err(Reject::new(
                400,
                "malformed-request",
                format!("unparseable request head: {e}"),
            ));
        }
    };
    if len > max {
        return Err(Reject::new(
            431,
            "header-too-large",
            format!("request head larger than {max} bytes"),
        ));
    }
    let method = req.method.unwrap_or_default().to_string();
    let target = req.path.unwrap_or_default().to_string();
    let headers = req
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    Ok(Head {
        method,
        target,
        headers,
        len,
    })
}

/// What the request asks for.
#[derive(Debug)]
struct Target {
    host: Host,
    port: u16,
    connect: bool,
    /// Origin-form path and query for plain HTTP (forwarded, never logged).
    path: String,
}

fn split_authority(auth: &str) -> Result<(&str, Option<&str>), Reject> {
    if auth.contains('@') {
        return Err(Reject::new(
            403,
            "userinfo",
            "credentials in the authority (user@host) are refused",
        ));
    }
    if auth.starts_with('[') {
        let close = auth
            .rfind(']')
            .ok_or_else(|| Reject::new(400, "malformed-host", "unbalanced '[' in authority"))?;
        let (h, rest) = auth.split_at(close + 1);
        return match rest {
            "" => Ok((h, None)),
            r if r.starts_with(':') => Ok((h, Some(&r[1..]))),
            _ => Err(Reject::new(
                400,
                "malformed-host",
                "garbage after ']' in authority",
            )),
        };
    }
    match auth.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Ok((h, Some(p))),
        Some(_) => Err(Reject::new(
            400,
            "malformed-host",
            "IPv6 literals must be written in brackets",
        )),
        None => Ok((auth, None)),
    }
}

fn parse_port(p: &str) -> Result<u16, Reject> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reject::new(
            400,
            "malformed-request",
            "port is not a number",
        ));
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(Reject::new(400, "malformed-request", "port out of range")),
        Ok(n) => Ok(n),
    }
}

fn host_reject(e: HostError) -> Reject {
    let status = match e {
        HostError::Malformed(_) => 400,
        _ => 403,
    };
    Reject {
        status,
        reason: e.kind(),
        message: e.to_string(),
    }
}

fn parse_target(head: &Head) -> Result<Target, Reject> {
    if head.method == "CONNECT" {
        if head.target.contains(['/', '?', '#']) {
            return Err(Reject::new(
                400,
                "malformed-request",
                "CONNECT needs host:port",
            ));
        }
        let (h, p) = split_authority(&head.target)?;
        let port =
            parse_port(p.ok_or_else(|| {
                Reject::new(400, "malformed-request", "CONNECT target has no port")
            })?)?;
        let host = normalize_host(h).map_err(host_reject)?;
        return Ok(Target {
            host,
            port,
            connect: true,
            path: String::new(),
        });
    }
    let t = head.target.as_str();
    let lower = t.get(..8).unwrap_or("").to_ascii_lowercase();
    if lower.starts_with("https://") {
        return Err(Reject::new(
            400,
            "use-connect",
            "the proxy does not originate TLS; send CONNECT for https",
        ));
    }
    if !lower.starts_with("http://") {
        return Err(Reject::new(
            400,
            "not-a-proxy-request",
            "expected an absolute http:// URI or CONNECT",
        ));
    }
    let rest = &t[7..];
    if rest.contains('#') {
        return Err(Reject::new(
            400,
            "malformed-request",
            "fragment in request target",
        ));
    }
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (auth, path) = rest.split_at(end);
    let (h, p) = split_authority(auth)?;
    let port = match p {
        Some(p) => parse_port(p)?,
        None => 80,
    };
    let host = normalize_host(h).map_err(host_reject)?;
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok(Target {
        host,
        port,
        connect: false,
        path,
    })
}

/// The Host header, when present, must name the same host and port as the target.
fn check_host_header(head: &Head, target: &Target) -> Result<bool, Reject> {
    let Some(value) = head.one("host")? else {
        return Ok(false);
    };
    let mismatch = || {
        Reject::new(
            403,
            "host-mismatch",
            "Host header differs from the request target",
        )
    };
    let value = std::str::from_utf8(value).map_err(|_| mismatch())?;
    let (h, p) = split_authority(value.trim())?;
    let host = normalize_host(h).map_err(|_| mismatch())?;
    if host != target.host {
        return Err(mismatch());
    }
    match p {
        Some(p) if parse_port(p).map_err(|_| mismatch())? != target.port => Err(mismatch()),
        // A CONNECT Host without port, or a plain request to the default port.
        None if !target.connect && target.port != 80 => Err(mismatch()),
        _ => Ok(true),
    }
}

fn check_framing(head: &Head) -> Result<Framing, Reject> {
    let te: Vec<&[u8]> = head.all("transfer-encoding").collect();
    let cl: Vec<&[u8]> = head.all("content-length").collect();
    if !te.is_empty() {
        if !cl.is_empty() {
            return Err(Reject::new(
                400,
                "malformed-request",
                "both Transfer-Encoding and Content-Length",
            ));
        }
        if te.len() != 1 || !te[0].eq_ignore_ascii_case(b"chunked") {
            return Err(Reject::new(
                400,
                "malformed-request",
                "only 'Transfer-Encoding: chunked' is accepted",
            ));
        }
        return Ok(Framing::Chunked);
    }
    match cl.as_slice() {
        [] => Ok(Framing::Length(0)),
        [v] => {
            let s = std::str::from_utf8(v).unwrap_or("");
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Reject::new(
                    400,
                    "malformed-request",
                    "invalid Content-Length",
                ));
            }
            s.parse()
                .map(Framing::Length)
                .map_err(|_| Reject::new(400, "malformed-request", "invalid Content-Length"))
        }
        _ => Err(Reject::new(
            400,
            "malformed-request",
            "more than one Content-Length header",
        )),
    }
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(u64),
    Chunked,
}

/// Per-connection bookkeeping for the decision line.
struct Ctx<'a> {
    shared: &'a Shared,
    rt: Arc<Runtime>,
    bot: Option<usize>,
    identity: &'static str,
    host: String,
    port: u16,
    kind: &'static str,
    start: Instant,
}

impl Ctx<'_> {
    fn finish(
        &self,
        decision: Decision,
        reason: &str,
        status: u16,
        up: u64,
        down: u64,
        upstream: Option<SocketAddr>,
    ) {
        let bot = self.rt.bot_name(self.bot);
        let host = if self.host.is_empty() {
            "-"
        } else {
            &self.host
        };
        log::emit(&Record {
            bot,
            identity: self.identity,
            host,
            port: self.port,
            kind: self.kind,
            decision,
            reason,
            status,
            bytes_up: up,
            bytes_down: down,
            duration: self.start.elapsed(),
            upstream,
        });
        self.shared
            .metrics
            .decision(bot, self.kind, decision.as_str(), reason);
        if up + down > 0 {
            self.shared.metrics.bytes(bot, up, down);
        }
    }

    async fn refuse(&self, stream: &mut TcpStream, r: &Reject) {
        self.finish(Decision::Deny, r.reason, r.status, 0, 0, None);
        let _ = stream.write_all(&r.response()).await;
        let _ = stream.shutdown().await;
    }
}

async fn handle(shared: &Shared, mut stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let rt = shared.config.load_full();
    let local = stream.local_addr().ok();
    let mut ctx = Ctx {
        shared,
        rt: rt.clone(),
        bot: None,
        identity: "none",
        host: String::new(),
        port: 0,
        kind: "-",
        start: Instant::now(),
    };
    // The kernel's answer about who owns the client socket; only asked when bots exist.
    if !rt.settings.bots.is_empty()
        && let Some(local) = local
    {
        match identity::peer_uid(peer, local) {
            Ok(uid) => {
                ctx.bot = rt.settings.bot_for_uid(uid);
                if ctx.bot.is_some() {
                    ctx.identity = "uid";
                }
            }
            Err(e) => tracing::debug!(error = %e, %peer, "sock_diag lookup failed"),
        }
    }
    // Slots are taken before the head is read, so a slow bot only exhausts its own share.
    let Ok(mut slot) = rt.slots(ctx.bot).clone().try_acquire_owned() else {
        shared
            .metrics
            .rejected_overload
            .fetch_add(1, Ordering::Relaxed);
        let r = Reject::new(
            429,
            "too-many-connections",
            format!("bot '{}' is at its connection limit", rt.bot_name(ctx.bot)),
        );
        ctx.refuse(&mut stream, &r).await;
        return;
    };
    let limits = &rt.settings.limits;
    let buf = match read_head(&mut stream, limits.max_header_bytes, limits.header_timeout).await {
        Ok(Some(b)) => b,
        Ok(None) => return, // closed before sending anything: nothing to decide
        Err(r) => {
            ctx.refuse(&mut stream, &r).await;
            return;
        }
    };
    let head = match parse_head(&buf, limits.max_header_bytes) {
        Ok(h) => h,
        Err(r) => {
            ctx.refuse(&mut stream, &r).await;
            return;
        }
    };
    ctx.kind = if head.method == "CONNECT" {
        "connect"
    } else {
        "http"
    };
    let target = match parse_target(&head) {
        Ok(t) => t,
        Err(r) => {
            ctx.refuse(&mut stream, &r).await;
            return;
        }
    };
    ctx.host = target.host.to_string();
    ctx.port = target.port;
    let has_host = match check_host_header(&head, &target) {
        Ok(h) => h,
        Err(r) => {
            ctx.refuse(&mut stream, &r).await;
            return;
        }
    };
    // Proxy-Authorization: the fallback identity, and a cross-check of the kernel's answer.
    match authenticate(&rt, &head) {
        Ok(None) => {}
        Ok(Some(b)) => {
            if ctx.bot.is_some_and(|u| u != b) {
                let r = Reject::new(
                    403,
                    "identity-conflict",
                    format!(
                        "credentials name bot '{}' but the connection belongs to bot '{}'",
                        rt.bot_name(Some(b)),
                        rt.bot_name(ctx.bot)
                    ),
                );
                ctx.refuse(&mut stream, &r).await;
                return;
            }
            if ctx.bot.is_none() {
                ctx.bot = Some(b);
                ctx.identity = "proxy-auth";
                match rt.slots(ctx.bot).clone().try_acquire_owned() {
                    Ok(s) => slot = s,
                    Err(_) => {
                        let r = Reject::new(
                            429,
                            "too-many-connections",
                            format!("bot '{}' is at its connection limit", rt.bot_name(ctx.bot)),
                        );
                        ctx.refuse(&mut stream, &r).await;
                        return;
                    }
                }
            }
        }
        Err(r) => {
            ctx.refuse(&mut stream, &r).await;
            return;
        }
    }
    if ctx.bot.is_none() && rt.settings.require_identity {
        let r = Reject::new(
            403,
            "unidentified",
            "the caller maps to no bot and requireIdentity is set",
        );
        ctx.refuse(&mut stream, &r).await;
        return;
    }
    let framing = if target.connect {
        Framing::Length(0)
    } else {
        match check_framing(&head) {
            Ok(f) => f,
            Err(r) => {
                ctx.refuse(&mut stream, &r).await;
                return;
            }
        }
    };

    // Policy: port list and allowlist. Report mode lets these through and says so.
    let policy = rt.policy(ctx.bot);
    let mut would_deny: Option<Reject> = None;
    if !policy.port_allowed(target.port) {
        would_deny = Some(Reject::new(
            403,
            "port-not-allowed",
            format!(
                "port {} is not allowed for bot '{}'",
                target.port,
                rt.bot_name(ctx.bot)
            ),
        ));
    } else if !policy.allow.matches(&target.host) {
        let reason = if matches!(target.host, Host::Ip(_)) {
            "ip-literal-not-allowed"
        } else {
            "host-not-allowed"
        };
        would_deny = Some(Reject::new(
            403,
            reason,
            format!(
                "'{}' is not on the allowlist of bot '{}'",
                target.host,
                rt.bot_name(ctx.bot)
            ),
        ));
    }
    if let Some(r) = &would_deny
        && rt.settings.mode == Mode::Enforce
    {
        ctx.refuse(&mut stream, r).await;
        return;
    }

    // Addresses: resolve once, check all, dial only those.
    let addrs = match &target.host {
        Host::Ip(ip) => {
            let a = SocketAddr::new(*ip, target.port);
            match rt.settings.address.check(a) {
                Ok(()) => vec![a],
                Err(class) => {
                    let r = Reject::new(
                        403,
                        forbidden_reason(class),
                        format!("{ip} is a {} address", class.kind()),
                    );
                    ctx.refuse(&mut stream, &r).await;
                    return;
                }
            }
        }
        Host::Name(name) => {
            let t0 = Instant::now();
            let res = resolve::resolve_checked(
                &*shared.resolver,
                name,
                target.port,
                &rt.settings.address,
                limits.dns_timeout,
            )
            .await;
            shared.metrics.dns_seconds.observe(t0.elapsed());
            match res {
                Ok(a) => a,
                Err(e) => {
                    let r = match e {
                        ResolveError::Dns(m) => {
                            Reject::new(502, "dns-failure", format!("cannot resolve '{name}': {m}"))
                        }
                        ResolveError::DnsTimeout => {
                            Reject::new(504, "dns-timeout", format!("resolving '{name}' timed out"))
                        }
                        ResolveError::Forbidden { addr, class } => Reject::new(
                            403,
                            forbidden_reason(class),
                            format!("'{name}' resolves to {addr}, a {} address", class.kind()),
                        ),
                    };
                    ctx.refuse(&mut stream, &r).await;
                    return;
                }
            }
        }
    };
    let t0 = Instant::now();
    let upstream = match resolve::dial(&addrs, limits.connect_timeout).await {
        Ok(s) => s,
        Err(e) => {
            let r = match e {
                DialError::Timeout => Reject::new(
                    504,
                    "upstream-connect-timeout",
                    format!("connecting to {} timed out", ctx.host),
                ),
                DialError::Failed(e) => Reject::new(
                    502,
                    "upstream-connect-failed",
                    format!("cannot connect to {}: {e}", ctx.host),
                ),
            };
            ctx.refuse(&mut stream, &r).await;
            return;
        }
    };
    shared.metrics.connect_seconds.observe(t0.elapsed());
    let peer_addr = upstream.peer_addr().ok();
    let (decision, reason) = match &would_deny {
        Some(r) => (Decision::ReportWouldDeny, r.reason),
        None => (Decision::Allow, "allowed"),
    };
    if let Some(r) = &would_deny {
        // Report mode: say it now, so a long tunnel does not delay the signal.
        tracing::warn!(event = "egress.would_deny", bot = rt.bot_name(ctx.bot), host = %ctx.host, port = ctx.port, reason = r.reason, "report mode: enforce would deny");
    }
    let leftover = buf[head.len..].to_vec();
    let idle = limits.idle_timeout;
    let result = if target.connect {
        let sni = match &target.host {
            Host::Name(n) if rt.settings.sni_check => Some((n.as_str(), limits.header_timeout)),
            _ => None,
        };
        tunnel(stream, upstream, leftover, idle, sni).await
    } else {
        forward_http(
            stream, upstream, &head, &target, has_host, framing, leftover, idle,
        )
        .await
    };
    drop(slot);
    if let Some((reason, message)) = &result.denied {
        tracing::warn!(event = "egress.sni", host = %ctx.host, detail = %message, "tunnel closed");
        ctx.finish(
            Decision::Deny,
            reason,
            403,
            result.up,
            result.down,
            peer_addr,
        );
        return;
    }
    let status = if target.connect { 200 } else { result.status };
    let reason = match (&result.error, decision) {
        (Some(e), Decision::Allow) => e.as_str(),
        _ => reason,
    };
    ctx.finish(decision, reason, status, result.up, result.down, peer_addr);
}

fn forbidden_reason(class: super::classify::DenyClass) -> &'static str {
    use super::classify::DenyClass::*;
    match class {
        Unspecified => "destination-unspecified",
        Loopback => "destination-loopback",
        Private => "destination-private",
        LinkLocal => "destination-link-local",
        CloudMetadata => "destination-cloud-metadata",
        Cgnat => "destination-cgnat",
        Multicast => "destination-multicast",
        Broadcast => "destination-broadcast",
        Documentation => "destination-documentation",
        Benchmarking => "destination-benchmarking",
        Reserved => "destination-reserved",
        UniqueLocal => "destination-unique-local",
        Nat64 => "destination-nat64",
        SixToFour => "destination-6to4",
        Teredo => "destination-teredo",
        Ipv4Compatible => "destination-ipv4-compatible",
        SelfConnection => "destination-self",
    }
}

/// `Ok(Some(bot))` for valid credentials, `Ok(None)` when none were sent.
fn authenticate(rt: &Runtime, head: &Head) -> Result<Option<usize>, Reject> {
    let Some(value) = head.one("proxy-authorization")? else {
        return Ok(None);
    };
    let bad = || {
        Reject::new(
            407,
            "bad-credentials",
            "Proxy-Authorization is not valid Basic credentials of a bot",
        )
    };
    let creds = identity::parse_basic(value).ok_or_else(bad)?;
    let idx = rt.settings.bot_index(&creds.user).ok_or_else(bad)?;
    let Some(pw) = &rt.settings.bots[idx].password else {
        return Err(bad());
    };
    if crate::secret::ct_eq(pw.expose().as_bytes(), creds.password.expose().as_bytes()) {
        Ok(Some(idx))
    } else {
        Err(bad())
    }
}

/// Byte counts and outcome of a relayed connection.
struct Relayed {
    up: u64,
    down: u64,
    status: u16,
    error: Option<String>,
    /// A denial decided after the tunnel was set up (SNI check): reason id and message.
    denied: Option<(&'static str, String)>,
}

/// Relays bytes both ways until both sides are done or the idle timeout fires. Half-closes are
/// passed on, so request/response protocols over the tunnel finish cleanly. With `sni`, the
/// client's first TLS record is checked before any client byte reaches upstream; upstream bytes
/// flow meanwhile, so server-speaks-first protocols are not held up.
async fn relay(
    mut client: TcpStream,
    mut upstream: TcpStream,
    leftover: Vec<u8>,
    idle: Option<Duration>,
    sni: Option<(&str, Duration)>,
) -> Relayed {
    enum Stop {
        Io(std::io::Error),
        Denied(&'static str, String),
        ClientGone,
    }
    let (mut cr, cw) = client.split();
    let (ur, mut uw) = upstream.split();
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let a = async {
        let mut first = leftover;
        if let Some((host, deadline)) = sni {
            if first.is_empty() {
                // No deadline of its own: the idle watchdog bounds a silent client.
                let mut b = [0u8; 1];
                match cr.read(&mut b).await {
                    Ok(1) => first.push(b[0]),
                    _ => return Err(Stop::ClientGone),
                }
                last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
            }
            match tokio::time::timeout(deadline, check_sni(&mut cr, &mut first, host)).await {
                Err(_) => {
                    return Err(Stop::Denied(
                        "tls-hello-timeout",
                        "no complete TLS ClientHello within the header deadline".into(),
                    ));
                }
                Ok(Err(("client-gone", _))) => return Err(Stop::ClientGone),
                Ok(Err((reason, message))) => return Err(Stop::Denied(reason, message)),
                Ok(Ok(())) => {}
            }
        }
        if !first.is_empty() {
            uw.write_all(&first).await.map_err(Stop::Io)?;
            up.fetch_add(first.len() as u64, Ordering::Relaxed);
        }
        splice_pump(cr.as_ref(), uw.as_ref(), &up, &last, start)
            .await
            .map_err(Stop::Io)
    };
    let b = async {
        splice_pump(ur.as_ref(), cw.as_ref(), &down, &last, start)
            .await
            .map_err(Stop::Io)
    };
    let both = async { tokio::try_join!(a, b).map(|_| ()) };
    let outcome = match idle {
        None => both.await,
        Some(idle) => tokio::select! {
            r = both => r,
            _ = idle_watchdog(&last, start, idle) => Err(Stop::Io(std::io::Error::other("idle-timeout"))),
        },
    };
    let (error, denied) = match outcome {
        Ok(()) => (None, None),
        Err(Stop::ClientGone) => (Some("client-gone".to_string()), None),
        Err(Stop::Denied(r, m)) => (None, Some((r, m))),
        Err(Stop::Io(e)) if e.kind() == std::io::ErrorKind::Other => (Some(e.to_string()), None),
        Err(Stop::Io(e)) => (Some(e.kind().to_string()), None),
    };
    let _ = client.shutdown().await;
    Relayed {
        up: up.load(Ordering::Relaxed),
        down: down.load(Ordering::Relaxed),
        status: if denied.is_some() { 403 } else { 200 },
        error,
        denied,
    }
}

/// Resolves once nothing was written either way for `idle` (per `last`, ms since `start`).
async fn idle_watchdog(last: &AtomicU64, start: Instant, idle: Duration) {
    loop {
        let since = start
            .elapsed()
            .saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
        if since >= idle {
            return;
        }
        tokio::time::sleep(idle - since).await;
    }
}

/// An `AsyncWrite` that records the time of its last successful write, for idle timeouts.
struct Activity<'a, W> {
    inner: W,
    last: &'a AtomicU64,
    start: Instant,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for Activity<'_, W> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r
            && *n > 0
        {
            self.last
                .store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Moves bytes from one socket to the other through a kernel pipe with splice(2), so tunnel
/// payload is never copied through user space. Falls back to a buffered copy when no pipe can
/// be made. Shuts down the writer's send side at EOF.
async fn splice_pump(
    from: &TcpStream,
    to: &TcpStream,
    count: &AtomicU64,
    last: &AtomicU64,
    start: Instant,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use tokio::io::Interest;
    const CHUNK: usize = 1 << 20;
    let Ok((pipe_r, pipe_w)) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
    else {
        return copy_ready(from, to, count, last, start).await;
    };
    // A bigger pipe means fewer syscalls per megabyte; failure just keeps the default 64 KiB.
    // SAFETY: F_SETPIPE_SZ on a pipe fd we own; no memory is passed.
    unsafe { libc::fcntl(pipe_w.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    let splice = |src: i32, dst: i32, len: usize| -> std::io::Result<usize> {
        // SAFETY: both fds are open for the duration of the call; null offsets mean "current
        // position", as required for sockets and pipes.
        let n = unsafe {
            libc::splice(
                src,
                std::ptr::null_mut(),
                dst,
                std::ptr::null_mut(),
                len,
                flags,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    };
    loop {
        from.readable().await?;
        let n = match from.try_io(Interest::READABLE, || {
            splice(from.as_raw_fd(), pipe_w.as_raw_fd(), CHUNK)
        }) {
            Ok(0) => {
                let _ =
                    nix::sys::socket::shutdown(to.as_raw_fd(), nix::sys::socket::Shutdown::Write);
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe_r.as_raw_fd(), to.as_raw_fd(), left)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Buffered copy between shared socket references (the fallback of `splice_pump`).
async fn copy_ready(
    from: &TcpStream,
    to: &TcpStream,
    count: &AtomicU64,
    last: &AtomicU64,
    start: Instant,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; TUNNEL_BUF];
    loop {
        from.readable().await?;
        let n = match from.try_read(&mut buf) {
            Ok(0) => {
                use std::os::fd::AsRawFd;
                let _ =
                    nix::sys::socket::shutdown(to.as_raw_fd(), nix::sys::socket::Shutdown::Write);
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut off = 0;
        while off < n {
            to.writable().await?;
            match to.try_write(&buf[off..n]) {
                Ok(m) => off += m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        count.fetch_add(n as u64, Ordering::Relaxed);
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

async fn tunnel(
    mut client: TcpStream,
    upstream: TcpStream,
    leftover: Vec<u8>,
    idle: Option<Duration>,
    sni: Option<(&str, Duration)>,
) -> Relayed {
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return Relayed {
            up: 0,
            down: 0,
            status: 200,
            error: Some("client-gone".into()),
            denied: None,
        };
    }
    relay(client, upstream, leftover, idle, sni).await
}

/// Reads the rest of the client's first TLS record into `buf` (kept for forwarding) and requires
/// its SNI, when present, to name `host`. Non-TLS tunnels pass unchecked.
async fn check_sni<R: AsyncRead + Unpin>(
    client: &mut R,
    buf: &mut Vec<u8>,
    host: &str,
) -> Result<(), (&'static str, String)> {
    use super::sni::{Sni, client_hello_sni};
    let sni = loop {
        match client_hello_sni(buf) {
            Sni::Incomplete(want) => {
                let mut chunk = vec![0u8; want.saturating_sub(buf.len()).max(1)];
                let n = client
                    .read(&mut chunk)
                    .await
                    .map_err(|_| ("client-gone", String::new()))?;
                if n == 0 {
                    return Err(("client-gone", String::new()));
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            other => break other,
        }
    };
    match sni {
        Sni::NotTls | Sni::Absent => Ok(()),
        Sni::Malformed | Sni::Incomplete(_) => {
            Err(("tls-hello-malformed", "unparseable TLS ClientHello".into()))
        }
        Sni::Name(name) => match normalize_host(&name) {
            Ok(Host::Name(n)) if n == host => Ok(()),
            _ => Err((
                "sni-mismatch",
                format!(
                    "TLS SNI '{}' differs from the CONNECT host",
                    name.escape_debug()
                ),
            )),
        },
    }
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
];

fn filtered_headers(headers: &[(String, Vec<u8>)], out: &mut Vec<u8>) {
    // Headers named in Connection are hop-by-hop too.
    let named: Vec<String> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
        .flat_map(|(_, v)| {
            String::from_utf8_lossy(v)
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    for (n, v) in headers {
        let lower = n.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str())
            || named.contains(&lower)
            || lower == ERROR_HEADER.to_ascii_lowercase()
        {
            continue;
        }
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v);
        out.extend_from_slice(b"\r\n");
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward_http(
    client: TcpStream,
    mut upstream: TcpStream,
    head: &Head,
    target: &Target,
    has_host: bool,
    framing: Framing,
    leftover: Vec<u8>,
    idle: Option<Duration>,
) -> Relayed {
    let mut out = Vec::with_capacity(head.len + 64);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if !has_host {
        let auth = if target.port == 80 {
            target.host.to_string()
        } else {
            format!("{}:{}", target.host, target.port)
        };
        out.extend_from_slice(format!("Host: {auth}\r\n").as_bytes());
    }
    filtered_headers(&head.headers, &mut out);
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    if upstream.write_all(&out).await.is_err() {
        return Relayed {
            up: 0,
            down: 0,
            status: 502,
            error: Some("upstream-write".into()),
            denied: None,
        };
    }
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let up = AtomicU64::new(0);
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let mut cw = Activity {
        inner: cw,
        last: &last,
        start,
    };
    let mut uw = Activity {
        inner: uw,
        last: &last,
        start,
    };
    let body = async {
        let mut reader = BufReader::new(std::io::Cursor::new(leftover).chain(cr));
        let r: std::io::Result<()> = async {
            match framing {
                Framing::Length(n) => {
                    let mut limited = (&mut reader).take(n);
                    let copied = tokio::io::copy(&mut limited, &mut uw).await?;
                    up.fetch_add(copied, Ordering::Relaxed);
                    if copied != n {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "short body",
                        ));
                    }
                    Ok(())
                }
                Framing::Chunked => copy_chunked(&mut reader, &mut uw, &up).await,
            }
        }
        .await;
        // Keep the upstream write side open: closing it early makes some servers drop the reply.
        if let Err(e) = r {
            return e;
        }
        std::future::pending::<std::io::Error>().await
    };
    let down = async {
        let mut ur = BufReader::new(ur);
        let mut total = 0u64;
        let mut status = 502;
        loop {
            let (bytes, code) = match relay_response_head(&mut ur, &mut cw).await {
                Ok(x) => x,
                Err(_) => return (total, status, Some("bad-upstream-response".to_string())),
            };
            total += bytes;
            status = code;
            if !(100..200).contains(&code) || code == 101 {
                break;
            }
        }
        match tokio::io::copy(&mut ur, &mut cw).await {
            Ok(n) => total += n,
            Err(e) => return (total, status, Some(e.kind().to_string())),
        }
        let _ = cw.shutdown().await;
        (total, status, None)
    };
    let run = async {
        tokio::select! {
            e = body => (0, 400, Some(format!("request-body: {}", e.kind()))),
            d = down => d,
        }
    };
    let (down, status, error) = match idle {
        Some(t) => tokio::select! {
            x = run => x,
            _ = idle_watchdog(&last, start, t) => (0, 504, Some("idle-timeout".to_string())),
        },
        None => run.await,
    };
    Relayed {
        up: up.load(Ordering::Relaxed),
        down,
        status,
        error,
        denied: None,
    }
}

/// Relays chunked framing verbatim, stopping after the last chunk and its trailers.
async fn copy_chunked<R, W>(r: &mut R, w: &mut W, count: &AtomicU64) -> std::io::Result<()>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    loop {
        let mut line = Vec::new();
        (&mut *r).take(4096).read_until(b'\n', &mut line).await?;
        if !line.ends_with(b"\r\n") {
            return Err(bad("bad chunk size line"));
        }
        let text =
            std::str::from_utf8(&line[..line.len() - 2]).map_err(|_| bad("bad chunk size"))?;
        let size_str = text.split(';').next().unwrap_or("").trim();
        if size_str.is_empty() || size_str.len() > 15 {
            return Err(bad("bad chunk size"));
        }
        let size = u64::from_str_radix(size_str, 16).map_err(|_| bad("bad chunk size"))?;
        w.write_all(&line).await?;
        count.fetch_add(line.len() as u64, Ordering::Relaxed);
        if size == 0 {
            // Trailers, then the empty line.
            loop {
                let mut t = Vec::new();
                (&mut *r).take(8192).read_until(b'\n', &mut t).await?;
                if !t.ends_with(b"\n") {
                    return Err(bad("bad trailer"));
                }
                w.write_all(&t).await?;
                count.fetch_add(t.len() as u64, Ordering::Relaxed);
                if t == b"\r\n" {
                    w.flush().await?;
                    return Ok(());
                }
            }
        }
        let mut data = (&mut *r).take(size + 2);
        let n = tokio::io::copy(&mut data, w).await?;
        if n != size + 2 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "short chunk",
            ));
        }
        count.fetch_add(n, Ordering::Relaxed);
    }
}

/// Reads one response head from upstream, drops hop-by-hop headers and any forged
/// `X-Clawdlets-Egress-Error`, adds `Connection: close`, and writes it to the client.
async fn relay_response_head<R, W>(r: &mut R, w: &mut W) -> std::io::Result<(u64, u16)>
where
    R: tokio::io::AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad response head");
    let mut buf = Vec::new();
    loop {
        let n = (&mut *r).take(8192).read_until(b'\n', &mut buf).await?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Err(bad());
        }
        if buf.ends_with(b"\r\n\r\n") || buf == b"\r\n" {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&buf) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(bad()),
    }
    let code = resp.code.ok_or_else(bad)?;
    let owned: Vec<(String, Vec<u8>)> = resp
        .headers
        .iter()
        .map(|h| (h.name.to_string(), h.value.to_vec()))
        .collect();
    let mut out = format!("HTTP/1.1 {code} {}\r\n", resp.reason.unwrap_or("")).into_bytes();
    filtered_headers(&owned, &mut out);
    if !(100..200).contains(&code) {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    w.write_all(&out).await?;
    Ok((out.len() as u64, code))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        parse_head(raw.as_bytes(), 16384).unwrap()
    }

    fn target(raw: &str) -> Result<Target, Reject> {
        parse_target(&head(raw))
    }

    #[test]
    fn connect_targets() {
        let t =
            target("CONNECT Example.COM.:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n").unwrap();
        assert_eq!(t.host, Host::Name("example.com".into()));
        assert_eq!(t.port, 443);
        let cases = [
            ("CONNECT user@example.com:443 HTTP/1.1\r\n\r\n", "userinfo"),
            ("CONNECT example.com HTTP/1.1\r\n\r\n", "malformed-request"),
            (
                "CONNECT example.com:0 HTTP/1.1\r\n\r\n",
                "malformed-request",
            ),
            (
                "CONNECT example.com:+443 HTTP/1.1\r\n\r\n",
                "malformed-request",
            ),
            (
                "CONNECT example.com:99999 HTTP/1.1\r\n\r\n",
                "malformed-request",
            ),
            (
                "CONNECT [example.com]:443 HTTP/1.1\r\n\r\n",
                "malformed-host",
            ),
            (
                "CONNECT 2130706433:443 HTTP/1.1\r\n\r\n",
                "obfuscated-ip-literal",
            ),
            (
                "CONNECT 0x7f.1:443 HTTP/1.1\r\n\r\n",
                "obfuscated-ip-literal",
            ),
            ("CONNECT ::1:443 HTTP/1.1\r\n\r\n", "malformed-host"),
            (
                "CONNECT http://example.com:443 HTTP/1.1\r\n\r\n",
                "malformed-request",
            ),
        ];
        for (raw, reason) in cases {
            assert_eq!(target(raw).unwrap_err().reason, reason, "{raw}");
        }
    }

    #[test]
    fn absolute_uris() {
        let t = target("GET http://Example.com/a?b=c HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((t.port, t.path.as_str()), (80, "/a?b=c"));
        let t = target("GET http://example.com:8080?x HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!((t.port, t.path.as_str()), (8080, "/?x"));
        assert_eq!(
            target("GET /a HTTP/1.1\r\n\r\n").unwrap_err().reason,
            "not-a-proxy-request"
        );
        assert_eq!(
            target("GET https://example.com/ HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .reason,
            "use-connect"
        );
        assert_eq!(
            target("GET http://a:b@example.com/ HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .reason,
            "userinfo"
        );
        assert_eq!(
            target("GET http://0177.0.0.1/ HTTP/1.1\r\n\r\n")
                .unwrap_err()
                .reason,
            "obfuscated-ip-literal"
        );
    }

    #[test]
    fn host_header_must_match() {
        let ok = |raw: &str| {
            let h = head(raw);
            check_host_header(&h, &parse_target(&h).unwrap())
        };
        assert!(ok("CONNECT a.com:443 HTTP/1.1\r\nHost: A.com.:443\r\n\r\n").unwrap());
        assert!(ok("CONNECT a.com:443 HTTP/1.1\r\nHost: a.com\r\n\r\n").unwrap());
        assert!(!ok("CONNECT a.com:443 HTTP/1.1\r\n\r\n").unwrap());
        assert_eq!(
            ok("CONNECT a.com:443 HTTP/1.1\r\nHost: b.com:443\r\n\r\n")
                .unwrap_err()
                .reason,
            "host-mismatch"
        );
        assert_eq!(
            ok("CONNECT a.com:443 HTTP/1.1\r\nHost: a.com:80\r\n\r\n")
                .unwrap_err()
                .reason,
            "host-mismatch"
        );
        assert_eq!(
            ok("GET http://a.com/ HTTP/1.1\r\nHost: b.com\r\n\r\n")
                .unwrap_err()
                .reason,
            "host-mismatch"
        );
        assert_eq!(
            ok("GET http://a.com:81/ HTTP/1.1\r\nHost: a.com\r\n\r\n")
                .unwrap_err()
                .reason,
            "host-mismatch"
        );
        assert_eq!(
            ok("GET http://a.com/ HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\n\r\n")
                .unwrap_err()
                .reason,
            "malformed-request"
        );
    }

    #[test]
    fn framing_rules() {
        let f = |raw: &str| check_framing(&head(raw));
        assert!(matches!(
            f("POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n"),
            Ok(Framing::Length(5))
        ));
        assert!(matches!(
            f("POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Ok(Framing::Chunked)
        ));
        assert!(
            f("POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
                .is_err()
        );
        assert!(
            f("POST http://a/ HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n").is_err()
        );
        assert!(f("POST http://a/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n").is_err());
        assert!(f("POST http://a/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n").is_err());
    }

    #[test]
    fn malformed_heads() {
        for raw in [
            "GET\r\n\r\n",
            "GET http://a/ HTTP/2.0\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\n folded\r\n\r\n",
        ] {
            assert!(parse_head(raw.as_bytes(), 16384).is_err(), "{raw:?}");
        }
    }

    #[tokio::test]
    async fn chunked_body_stops_at_the_last_chunk() {
        let input =
            b"4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\nT: v\r\n\r\nGET http://evil/ HTTP/1.1\r\n\r\n";
        let mut r = BufReader::new(&input[..]);
        let mut out = Vec::new();
        let c = AtomicU64::new(0);
        copy_chunked(&mut r, &mut out, &c).await.unwrap();
        assert_eq!(out, &input[..input.len() - 29]);
        let mut r = BufReader::new(&b"zz\r\n"[..]);
        assert!(copy_chunked(&mut r, &mut Vec::new(), &c).await.is_err());
    }
}
