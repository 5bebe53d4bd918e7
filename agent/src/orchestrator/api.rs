//! HTTP routes. On the unix socket: the clf v1 job API for bots and workers, `/healthz` and
//! `/metrics`; every request is bound to the connection's SO_PEERCRED identity, never to the
//! body. On the TCP cattle listener: only the bootstrap (`GET /v1/cattle/env`, bearer token) and
//! the signed VM calls. Errors are `{protocolVersion, error: {message, kind}}` with one short line.
//! Parsing and validation live here; state changes go through `queue`, `tokens` and `vmauth`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::App;
use super::audit::{self, Who};
use super::cattle;
use super::metrics::inc;
use super::peer::Actor;
use super::queue::{self, ClaimRequest, ListFilter, NewJob};
use super::store::StoreError;
use super::{tokens, vmauth};

pub const PROTOCOL_VERSION: u32 = 1;

pub type Resp = Response<Full<Bytes>>;

/// An HTTP error with a stable kind.
#[derive(Debug)]
pub struct ApiError {
    /// For 405: the method to use (sent as `Allow`).
    pub allow: Option<&'static str>,
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            allow: None,
            status,
            kind,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Conflict(_) => StatusCode::CONFLICT,
            StoreError::Forbidden(_) => StatusCode::FORBIDDEN,
            StoreError::Quota(_) => StatusCode::TOO_MANY_REQUESTS,
            StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
            StoreError::TooLong => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Full => StatusCode::INSUFFICIENT_STORAGE,
            StoreError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        if matches!(
            e,
            StoreError::Full | StoreError::Unavailable(_) | StoreError::TooLong
        ) {
            tracing::error!(event = "orchestrator.store_error", kind = e.kind(), error = %e, "request not stored");
        }
        ApiError::new(status, e.kind(), e.to_string())
    }
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(200).collect()
}

pub fn json_response(status: StatusCode, v: &Value) -> Resp {
    json_bytes(status, v.to_string().into_bytes())
}

fn json_bytes(status: StatusCode, body: Vec<u8>) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("valid response")
}

pub fn error_response(e: &ApiError) -> Resp {
    let mut r = json_response(
        e.status,
        &json!({"protocolVersion": PROTOCOL_VERSION, "error": {"message": one_line(&e.message), "kind": e.kind}}),
    );
    if let Some(allow) = e.allow {
        r.headers_mut()
            .insert("allow", hyper::header::HeaderValue::from_static(allow));
    }
    if e.status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
    }
    r
}

fn ok(mut v: Value) -> Result<Resp, ApiError> {
    v["protocolVersion"] = json!(PROTOCOL_VERSION);
    Ok(json_response(StatusCode::OK, &v))
}

/// `ok` for the hot answers: `body`'s fields then `protocolVersion`, serialized from typed
/// views without building a `Value` tree (which took ~15 % of the HTTP side's time).
fn answer<T: Serialize>(body: T) -> Result<Resp, ApiError> {
    #[derive(Serialize)]
    struct Versioned<T> {
        #[serde(flatten)]
        body: T,
        #[serde(rename = "protocolVersion")]
        protocol_version: u32,
    }
    let bytes = serde_json::to_vec(&Versioned {
        body,
        protocol_version: PROTOCOL_VERSION,
    })
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(json_bytes(StatusCode::OK, bytes))
}

/// `{"ok": true, "job": …}`, the answer of cancel, complete and fail.
#[derive(Serialize)]
struct JobAnswer<'a> {
    ok: bool,
    job: queue::Summary<'a>,
}

fn job_answer(job: &queue::JobRow) -> Result<Resp, ApiError> {
    answer(JobAnswer {
        ok: true,
        job: job.summary_view(),
    })
}

async fn read_body(app: &App, body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(app.settings.limits.request_timeout, collect).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            "request body was not received in time",
        )),
        Ok(Err(e)) => {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("request body exceeds {limit} bytes"),
                ))
            } else {
                Err(ApiError::bad(format!("cannot read request body: {e}")))
            }
        }
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.is_empty() {
        return serde_json::from_slice(b"{}")
            .map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

fn check_version(v: Option<u32>, required: bool) -> Result<(), ApiError> {
    match v {
        Some(PROTOCOL_VERSION) => Ok(()),
        None if !required => Ok(()),
        None => Err(ApiError::bad("protocolVersion is required (1)")),
        Some(other) => Err(ApiError::bad(format!(
            "unsupported protocolVersion {other}; this server speaks 1"
        ))),
    }
}

/// Connection facts for a unix-socket request.
#[derive(Debug, Clone)]
pub struct UnixPeer {
    pub uid: Option<u32>,
    pub actor: Option<Actor>,
}

/// Entry point for the unix socket.
pub async fn handle_unix(
    app: Arc<App>,
    peer: UnixPeer,
    req: Request<Incoming>,
) -> Result<Resp, std::convert::Infallible> {
    let r = route_unix(&app, &peer, req)
        .await
        .unwrap_or_else(|e| error_response(&e));
    app.metrics.status(r.status().as_u16());
    Ok(r)
}

fn method_not_allowed(allow: &'static str) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("method not allowed; use {allow}"),
    );
    e.allow = Some(allow);
    e
}

async fn route_unix(
    app: &Arc<App>,
    peer: &UnixPeer,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path == "/healthz" {
        return if method == Method::GET {
            ok(json!({"ok": true}))
        } else {
            Err(method_not_allowed("GET"))
        };
    }
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let known = path == "/metrics"
        || (segs.len() >= 2 && segs[0] == "v1" && segs[1] == "jobs" && segs.len() <= 4);
    if !known {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {path}"),
        ));
    }
    let Some(actor) = peer.actor.clone() else {
        let uid = peer.uid;
        return Err(refuse(
            app,
            Who {
                uid,
                name: "unknown",
            },
            "request",
            &format!("uid has no user entry: {path}"),
            format!(
                "uid {} is not a known user",
                uid.map(|u| u.to_string()).unwrap_or("?".into())
            ),
        )
        .await);
    };
    if path == "/metrics" {
        if method != Method::GET {
            return Err(method_not_allowed("GET"));
        }
        let counts = app.store.call(queue::counts).await?;
        return Ok(Response::builder()
            .status(200)
            .header("content-type", "text/plain; version=0.0.4")
            .body(Full::new(Bytes::from(app.metrics.render(&counts))))
            .expect("valid response"));
    }
    if !actor.admin && !app.bot_limiter.allow(&actor.name) {
        inc(&app.metrics.rate_limited);
        tracing::warn!(event = "orchestrator.rate_limited", actor = %actor.name, uid = actor.uid, "rate limit exceeded");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "rate limit exceeded; retry later",
        ));
    }
    let query = req.uri().query().unwrap_or("").to_string();
    let body = req.into_body();
    match (segs.as_slice(), &method) {
        (["v1", "jobs"], &Method::GET) => list(app, &actor, &query).await,
        (["v1", "jobs"], _) => Err(method_not_allowed("GET")),
        (["v1", "jobs", "enqueue"], &Method::POST) => enqueue(app, &actor, body).await,
        (["v1", "jobs", "claim"], &Method::POST) => claim(app, &actor, body).await,
        (["v1", "jobs", "enqueue" | "claim"], _) => Err(method_not_allowed("POST")),
        (["v1", "jobs", id], &Method::GET) => show(app, &actor, id).await,
        (["v1", "jobs", _], _) => Err(method_not_allowed("GET")),
        (["v1", "jobs", id, action], m)
            if ["cancel", "heartbeat", "complete", "fail"].contains(action) =>
        {
            if m != Method::POST {
                return Err(method_not_allowed("POST"));
            }
            worker_action(app, &actor, id, action, body).await
        }
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {path}"),
        )),
    }
}

fn valid_job_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "job not found",
        ));
    }
    Ok(())
}

fn valid_kind(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 64
        && k.as_bytes()[0].is_ascii_alphanumeric()
        && k.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EnqueueBody {
    protocol_version: Option<u32>,
    requester: Option<String>,
    idempotency_key: Option<String>,
    kind: String,
    #[serde(default)]
    payload: Value,
    run_at: Option<Value>,
    priority: Option<i64>,
    max_attempts: Option<i64>,
}

async fn deny(app: &App, actor: &Actor, action: &str, message: String) -> ApiError {
    let who = Who {
        uid: Some(actor.uid),
        name: &actor.name,
    };
    refuse(app, who, action, &message, message.clone()).await
}

/// Counts and audits a refusal (`audited` goes to the trail), then returns the 403 to answer
/// with (`answer` goes to the caller).
async fn refuse(app: &App, who: Who<'_>, action: &str, audited: &str, answer: String) -> ApiError {
    inc(&app.metrics.denied);
    let now = app.clock.now_ms();
    let (uid, name, action, audited) = (
        who.uid,
        who.name.to_string(),
        action.to_string(),
        audited.to_string(),
    );
    let _ = app
        .store
        .call(move |c| {
            let who = Who { uid, name: &name };
            audit::record(c, now, None, who, &action, "denied", &audited, None)
        })
        .await;
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", answer)
}

async fn enqueue(app: &Arc<App>, actor: &Actor, body: Incoming) -> Result<Resp, ApiError> {
    let s = &app.settings;
    let bytes = read_body(app, body, s.limits.max_body_bytes).await?;
    let b: EnqueueBody = parse(&bytes)?;
    check_version(b.protocol_version, true)?;
    if let Some(r) = &b.requester
        && r.trim() != actor.name
    {
        return Err(deny(
            app,
            actor,
            "enqueue",
            format!(
                "requester '{}' does not match the caller '{}'",
                one_line(r).chars().take(64).collect::<String>(),
                actor.name
            ),
        )
        .await);
    }
    if !valid_kind(&b.kind) {
        return Err(ApiError::bad("kind must be 1-64 of [a-z0-9._-]"));
    }
    if b.kind.starts_with(queue::INTERNAL_PREFIX)
        && !["cattle.spawn", "cattle.reap"].contains(&b.kind.as_str())
    {
        return Err(ApiError::bad(format!(
            "unknown cattle job kind '{}'",
            b.kind
        )));
    }
    let payload_json = b.payload.to_string();
    if payload_json.len() > s.limits.max_payload_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("payload exceeds {} bytes", s.limits.max_payload_bytes),
        ));
    }
    let key = b.idempotency_key.unwrap_or_default().trim().to_string();
    if key.len() > 200 || key.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "idempotencyKey must be at most 200 printable characters",
        ));
    }
    let now = app.clock.now_ms();
    let run_at = match &b.run_at {
        None => now,
        Some(Value::String(t)) if t.trim().is_empty() => now,
        Some(Value::String(t)) => super::clock::parse_time(t)
            .ok_or_else(|| ApiError::bad("runAt must be an RFC 3339 time"))?,
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| ApiError::bad("runAt must be unix milliseconds"))?,
        Some(_) => return Err(ApiError::bad("runAt must be an RFC 3339 time")),
    };
    let priority = b.priority.unwrap_or(0);
    if !(-1000..=1000).contains(&priority) {
        return Err(ApiError::bad("priority must be within -1000..1000"));
    }
    let default_attempts = if b.kind == "cattle.spawn" {
        1
    } else {
        s.queue.default_max_attempts as i64
    };
    let max_attempts = b.max_attempts.unwrap_or(default_attempts);
    if !(1..=25).contains(&max_attempts) {
        return Err(ApiError::bad("maxAttempts must be within 1..25"));
    }
    if b.kind == "cattle.spawn" {
        let spawn = cattle::validate_spawn(
            &b.payload,
            &s.env_keys,
            &s.privileged_env_keys,
            s.cattle.default_ttl_s,
            s.cattle.max_ttl_s,
        )
        .map_err(|e| ApiError::bad(e.to_string()))?;
        if !spawn.privileged.is_empty() && !actor.admin {
            return Err(deny(
                app,
                actor,
                "enqueue",
                format!(
                    "privileged options {:?} need root or the admin group",
                    spawn.privileged
                ),
            )
            .await);
        }
    } else if b.kind == "cattle.reap" {
        serde_json::from_value::<cattle::ReapPayload>(if b.payload.is_null() {
            json!({})
        } else {
            b.payload.clone()
        })
        .map_err(|e| ApiError::bad(format!("invalid cattle.reap payload: {e}")))?;
    }
    let job = NewJob {
        kind: b.kind.clone(),
        payload_json,
        idempotency_key: key,
        run_at,
        priority,
        max_attempts,
    };
    let quota = if actor.admin {
        None
    } else {
        Some(s.limits.max_queued_per_requester)
    };
    let a = actor.clone();
    let r = app
        .store
        .call(move |c| queue::enqueue(c, &a, &job, now, quota))
        .await?;
    if !r.existing {
        inc(&app.metrics.enqueued);
    }
    if b.kind.starts_with(queue::INTERNAL_PREFIX) {
        app.wake.notify_one();
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Enqueued<'a> {
        job_id: &'a str,
        existing: bool,
    }
    answer(Enqueued {
        job_id: &r.job_id,
        existing: r.existing,
    })
}

fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
                {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn list(app: &Arc<App>, actor: &Actor, query: &str) -> Result<Resp, ApiError> {
    let mut f = ListFilter {
        limit: 100,
        ..Default::default()
    };
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "status" => {
                for st in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !queue::STATUSES.contains(&st) {
                        return Err(ApiError::bad(format!(
                            "unknown status '{}'",
                            st.chars().take(32).collect::<String>()
                        )));
                    }
                    f.statuses.push(st.to_string());
                }
            }
            "kind" if !v.is_empty() => {
                if !valid_kind(&v) {
                    return Err(ApiError::bad("invalid kind"));
                }
                f.kind = Some(v);
            }
            "requester" if !v.is_empty() => f.requester = Some(v),
            "limit" if !v.is_empty() => {
                f.limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|l| (1..=500).contains(l))
                    .ok_or_else(|| ApiError::bad("limit must be within 1..500"))?;
            }
            "kind" | "requester" | "limit" => {}
            other => {
                return Err(ApiError::bad(format!(
                    "unknown query parameter '{}'",
                    other.chars().take(32).collect::<String>()
                )));
            }
        }
    }
    let a = actor.clone();
    let forbidden_requester = f.requester.clone();
    let rows = match app.store.call(move |c| queue::list(c, &a, &f)).await {
        Err(StoreError::Forbidden(m)) => {
            let _ = forbidden_requester;
            return Err(deny(app, actor, "list", m).await);
        }
        other => other?,
    };
    ok(json!({"jobs": rows.iter().map(|j| j.summary()).collect::<Vec<_>>()}))
}

async fn show(app: &Arc<App>, actor: &Actor, id: &str) -> Result<Resp, ApiError> {
    valid_job_id(id)?;
    let (a, id) = (actor.clone(), id.to_string());
    let job = app
        .store
        .call(move |c| queue::get_visible(c, &a, &id))
        .await?;
    ok(json!({"job": job.detail()}))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClaimBody {
    protocol_version: Option<u32>,
    worker_id: Option<String>,
    kinds: Option<Vec<String>>,
    limit: Option<u32>,
    lease_seconds: Option<u64>,
}

async fn claim(app: &Arc<App>, actor: &Actor, body: Incoming) -> Result<Resp, ApiError> {
    let bytes = read_body(app, body, 16 * 1024).await?;
    let b: ClaimBody = parse(&bytes)?;
    check_version(b.protocol_version, false)?;
    let kinds = b.kinds.unwrap_or_default();
    if kinds.len() > 32 || !kinds.iter().all(|k| valid_kind(k)) {
        return Err(ApiError::bad("kinds must be at most 32 valid kinds"));
    }
    let limit = b.limit.unwrap_or(1);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::bad("limit must be within 1..100"));
    }
    let q = &app.settings.queue;
    let lease_ms = b
        .lease_seconds
        .map(|s| s as i64 * 1000)
        .unwrap_or(q.lease_ms)
        .clamp(1000, q.max_lease_ms);
    let worker_id: String = b
        .worker_id
        .unwrap_or_else(|| format!("{}:{}", actor.name, actor.uid))
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect();
    let req = ClaimRequest {
        worker_id,
        kinds,
        limit,
        lease_ms,
        internal: false,
    };
    let now = app.clock.now_ms();
    let a = actor.clone();
    let claimed = app
        .store
        .call(move |c| queue::claim(c, &a, &req, now))
        .await?;
    for _ in &claimed {
        inc(&app.metrics.claimed);
    }
    #[derive(Serialize)]
    struct Jobs<'a> {
        jobs: Vec<queue::ClaimedView<'a>>,
    }
    answer(Jobs {
        jobs: claimed.iter().map(|c| c.view()).collect(),
    })
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LeaseBody {
    protocol_version: Option<u32>,
    lease_token: Option<i64>,
    lease_seconds: Option<u64>,
    result: Option<Value>,
    error: Option<String>,
    retry: Option<bool>,
}

async fn worker_action(
    app: &Arc<App>,
    actor: &Actor,
    id: &str,
    action: &str,
    body: Incoming,
) -> Result<Resp, ApiError> {
    valid_job_id(id)?;
    let s = &app.settings;
    let bytes = read_body(app, body, s.limits.max_body_bytes).await?;
    let b: LeaseBody = parse(&bytes)?;
    check_version(b.protocol_version, false)?;
    let now = app.clock.now_ms();
    let (a, id) = (actor.clone(), id.to_string());
    if action == "cancel" {
        let job = app
            .store
            .call(move |c| queue::cancel(c, &a, &id, now))
            .await?;
        inc(&app.metrics.canceled);
        return job_answer(&job);
    }
    let token = b
        .lease_token
        .ok_or_else(|| ApiError::bad("leaseToken is required"))?;
    match action {
        "heartbeat" => {
            let lease_ms = b
                .lease_seconds
                .map(|s| s as i64 * 1000)
                .unwrap_or(s.queue.lease_ms)
                .clamp(1000, s.queue.max_lease_ms);
            let until = app
                .store
                .call(move |c| queue::heartbeat(c, &a, &id, token, lease_ms, now))
                .await?;
            ok(json!({"ok": true, "leaseUntil": super::clock::iso(until)}))
        }
        "complete" => {
            let result = b.result.unwrap_or(Value::Null).to_string();
            if result.len() > s.limits.max_result_bytes {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("result exceeds {} bytes", s.limits.max_result_bytes),
                ));
            }
            let job = app
                .store
                .call(move |c| queue::complete(c, &a, &id, token, &result, now))
                .await?;
            inc(&app.metrics.completed);
            job_answer(&job)
        }
        _ => {
            let err: String = b
                .error
                .unwrap_or_else(|| "failed".into())
                .chars()
                .take(2000)
                .collect();
            let backoff = (s.queue.backoff_base_ms, s.queue.backoff_max_ms);
            let retry = b.retry.unwrap_or(true);
            let job = app
                .store
                .call(move |c| queue::fail(c, &a, &id, token, &err, retry, backoff, now))
                .await?;
            inc(&app.metrics.failed);
            job_answer(&job)
        }
    }
}

/// Entry point for the TCP cattle listener.
pub async fn handle_tcp(
    app: Arc<App>,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, std::convert::Infallible> {
    let r = route_tcp(&app, remote, req)
        .await
        .unwrap_or_else(|e| error_response(&e));
    app.metrics.status(r.status().as_u16());
    Ok(r)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

async fn route_tcp(
    app: &Arc<App>,
    remote: SocketAddr,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let path = req.uri().path().to_string();
    let source = remote.ip().to_string();
    let (allowed, allowed_name) = match path.as_str() {
        "/v1/cattle/env" => (Method::GET, "GET"),
        "/v1/cattle/heartbeat" | "/v1/cattle/result" => (Method::POST, "POST"),
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {path}"),
            ));
        }
    };
    if req.method() != allowed {
        return Err(method_not_allowed(allowed_name));
    }
    if !app.src_limiter.allow(&source) {
        inc(&app.metrics.rate_limited);
        tracing::warn!(event = "orchestrator.rate_limited", source = %source, "cattle source rate limit exceeded");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "rate limit exceeded; retry later",
        ));
    }
    if path == "/v1/cattle/env" {
        return cattle_env(app, &source, req).await;
    }
    let h = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (key_id, ts, nonce, sig) = (
        h(vmauth::H_KEY_ID),
        h(vmauth::H_TIMESTAMP),
        h(vmauth::H_NONCE),
        h(vmauth::H_SIGNATURE),
    );
    if !app.vm_limiter.allow(&key_id) {
        inc(&app.metrics.rate_limited);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "rate limit exceeded; retry later",
        ));
    }
    let method = req.method().as_str().to_string();
    let body = read_body(
        app,
        req.into_body(),
        app.settings.limits.max_result_bytes + 4096,
    )
    .await?;
    let now = app.clock.now_ms();
    let window = vmauth::Window {
        window_ms: app.settings.vm_auth.window_ms,
    };
    let master = app.master_key.clone();
    let (p2, b2, src) = (path.clone(), body.clone(), source.clone());
    let verified = app
        .store
        .call(move |c| {
            let s = vmauth::Signed {
                key_id: &key_id,
                timestamp: &ts,
                nonce: &nonce,
                signature: &sig,
            };
            vmauth::verify(c, &master, &s, &method, &p2, &b2, now, window, &src)
        })
        .await?;
    let vm = match verified {
        Ok(vm) => vm,
        Err(refusal) => {
            inc(&app.metrics.vm_requests_refused);
            tracing::warn!(event = "orchestrator.vm_request_refused", reason = refusal.kind(), source = %source, path = %path, "signed request refused");
            return Err(unauthorized("request signature refused"));
        }
    };
    if path == "/v1/cattle/heartbeat" {
        let job = vm.job_id.clone();
        let expires: Option<i64> = app
            .store
            .call(move |c| {
                c.execute("UPDATE jobs SET updated_at = ?2 WHERE job_id = ?1 AND status = 'running'", rusqlite::params![job, now])?;
                Ok(c.query_row("SELECT expires_at FROM vm_keys WHERE job_id = ?1 ORDER BY created_at DESC LIMIT 1", [&job], |r| r.get(0)).ok())
            })
            .await?;
        return ok(json!({"ok": true, "expiresAt": expires.map(super::clock::iso)}));
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ResultBody {
        ok: bool,
        result: Option<Value>,
        error: Option<String>,
    }
    let r: ResultBody = parse(&body)?;
    cattle::handler::finish(
        app,
        &vm.job_id,
        &vm.key_id,
        &vm.cattle_name,
        r.ok,
        r.result.unwrap_or(Value::Null),
        r.error,
    )
    .await?;
    ok(json!({"ok": true}))
}

async fn cattle_env(
    app: &Arc<App>,
    source: &str,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = crate::secret::SecretString::new(
        auth.strip_prefix("Bearer ")
            .unwrap_or("")
            .trim()
            .to_string(),
    );
    let now = app.clock.now_ms();
    let master = app.master_key.clone();
    let src = source.to_string();
    let out = app
        .store
        .call(move |c| {
            let grant = match tokens::consume(c, token.expose(), now, &src)? {
                Ok(g) => g,
                Err(r) => return Ok(Err(r)),
            };
            let expires: i64 = c
                .query_row(
                    "SELECT expires_at FROM cattle WHERE name = ?1",
                    [&grant.cattle_name],
                    |r| r.get(0),
                )
                .unwrap_or(now + 3_600_000);
            let (key_id, key) =
                vmauth::issue(c, &master, now, &grant.cattle_name, &grant.job_id, expires)?;
            Ok(Ok((grant, key_id, key, expires)))
        })
        .await?;
    let (grant, key_id, key, expires) = match out {
        Ok(v) => v,
        Err(refusal) => {
            inc(&app.metrics.tokens_refused);
            tracing::warn!(event = "orchestrator.token_refused", reason = refusal.kind(), source = %source, "bootstrap token refused");
            return Err(unauthorized(
                "invalid, expired or already used bootstrap token",
            ));
        }
    };
    inc(&app.metrics.tokens_consumed);
    // Values are read now, from the secrets directory, and exist only in this response.
    let mut env = grant.public_env.clone();
    let mut missing = Vec::new();
    for k in &grant.env_keys {
        match read_secret(&app.settings.secrets_dir, k).await {
            Some(v) => {
                env.insert(k.clone(), Value::String(v.expose().to_string()));
            }
            None => missing.push(k.clone()),
        }
    }
    if !missing.is_empty() {
        let (j, m) = (
            grant.job_id.clone(),
            format!("missing secrets for {}: {:?}", grant.cattle_name, missing),
        );
        let _ = app
            .store
            .call(move |c| {
                audit::record(
                    c,
                    now,
                    Some(&j),
                    Who::DAEMON,
                    "cattle.env",
                    "missing",
                    &m,
                    None,
                )
            })
            .await;
    }
    ok(json!({
        "ok": true,
        "env": env,
        "missingEnv": missing,
        "vm": {
            "keyId": key_id,
            "key": String::from_utf8_lossy(key.expose()),
            "cattleName": grant.cattle_name,
            "jobId": grant.job_id,
            "expiresAt": super::clock::iso(expires),
        }
    }))
}

/// Reads `<dir>/<KEY>` (or the lowercase name, as sops-nix secrets are usually named).
async fn read_secret(dir: &std::path::Path, key: &str) -> Option<crate::secret::SecretString> {
    for name in [key.to_string(), key.to_ascii_lowercase()] {
        let p = dir.join(&name);
        if let Ok(meta) = tokio::fs::metadata(&p).await
            && meta.is_file()
            && meta.len() <= 64 * 1024
            && let Ok(bytes) = tokio::fs::read(&p).await
        {
            let s = String::from_utf8(bytes).ok()?;
            return Some(crate::secret::SecretString::new(
                s.trim_end_matches('\n').to_string(),
            ));
        }
    }
    None
}
