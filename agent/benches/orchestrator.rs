//! Orchestrator throughput benchmark: N concurrent clients each run full job cycles
//! (enqueue → claim → complete) over the unix socket against a running daemon, and then the
//! same cycle on Redis Streams (XADD → XREADGROUP → XACK) as the baseline, in the same run.
//! Prints throughput and p50/p99 latency per cycle and per request as JSON lines, and the HTTP
//! layer's own ceiling (three `GET /healthz` per cycle, no store) with the same clients.
//! Driven by `scripts/bench/orchestrator.sh`, which starts both servers.
//!
//! Usage: orchestrator --socket PATH [--redis unix:///path] [--clients 16] [--seconds 5]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

struct Args {
    socket: String,
    redis: Option<String>,
    clients: usize,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        socket: String::new(),
        redis: None,
        clients: 16,
        seconds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--socket" => a.socket = it.next().unwrap_or_default(),
            "--redis" => a.redis = it.next(),
            "--clients" => a.clients = it.next().and_then(|v| v.parse().ok()).unwrap_or(16),
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).unwrap_or(5),
            // cargo bench passes --bench; ignore anything else.
            _ => {}
        }
    }
    a
}

#[derive(Default)]
struct Samples {
    cycles: u64,
    cycle_us: Vec<u32>,
    request_us: Vec<u32>,
    errors: u64,
}

fn pct(v: &mut [u32], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i] as f64 / 1000.0
}

fn report(name: &str, clients: usize, elapsed: Duration, mut all: Samples) -> Value {
    let r = json!({
        "system": name,
        "clients": clients,
        "seconds": (elapsed.as_secs_f64() * 100.0).round() / 100.0,
        "cycles": all.cycles,
        "cyclesPerSecond": (all.cycles as f64 / elapsed.as_secs_f64()).round(),
        "cycleP50Ms": pct(&mut all.cycle_us, 0.50),
        "cycleP99Ms": pct(&mut all.cycle_us, 0.99),
        "requestP50Ms": pct(&mut all.request_us, 0.50),
        "requestP99Ms": pct(&mut all.request_us, 0.99),
        "errors": all.errors,
    });
    println!("{r}");
    r
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Sends one request (a JSON body for POST, none for GET); returns the body of a 2xx answer.
async fn call(
    tx: &mut Sender,
    method: &str,
    path: &str,
    body: Option<String>,
    s: &mut Samples,
) -> Option<Bytes> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost");
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req
        .body(Full::new(body.map(Bytes::from).unwrap_or_default()))
        .ok()?;
    let t = Instant::now();
    let answer = async {
        let resp = tx.send_request(req).await.ok()?;
        let ok = resp.status().is_success();
        let bytes = resp.into_body().collect().await.ok()?.to_bytes();
        ok.then_some(bytes)
    }
    .await;
    s.request_us.push(t.elapsed().as_micros() as u32);
    // A refusal and a broken connection alike are errors in the report.
    if answer.is_none() {
        s.errors += 1;
    }
    answer
}

/// One keep-alive HTTP/1.1 connection to the daemon's socket.
async fn connect(socket: &str) -> Sender {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect to orchestrator");
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::task::spawn_local(conn);
    tx
}

/// The HTTP layer's ceiling on this machine: the same clients and connections, each "cycle" three
/// `GET /healthz` round trips (no identity check, no SQLite). No cycle of real requests can be
/// faster than this.
async fn healthz_client(socket: String, deadline: Instant, _id: usize) -> Samples {
    let mut tx = connect(&socket).await;
    let mut s = Samples::default();
    while Instant::now() < deadline {
        let t = Instant::now();
        let mut ok = true;
        for _ in 0..3 {
            ok &= call(&mut tx, "GET", "/healthz", None, &mut s)
                .await
                .is_some();
        }
        if ok {
            s.cycles += 1;
            s.cycle_us.push(t.elapsed().as_micros() as u32);
        }
    }
    s
}

/// The part of a claim answer the client needs (the rest is skipped unparsed).
#[derive(serde::Deserialize)]
struct ClaimAnswer {
    jobs: Vec<ClaimedJob>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClaimedJob {
    job_id: String,
    lease_token: i64,
}

/// A client as lean as a production worker would be: bodies written directly, answers parsed
/// into the fields it uses, so the client thread takes little of the machine from the servers.
async fn orch_client(socket: String, deadline: Instant, id: usize) -> Samples {
    let mut tx = connect(&socket).await;
    let mut s = Samples::default();
    let mut i = 0u64;
    while Instant::now() < deadline {
        i += 1;
        let t = Instant::now();
        let enq = format!(
            r#"{{"protocolVersion":1,"kind":"bench.cycle","payload":{{"client":{id},"i":{i}}}}}"#
        );
        if call(&mut tx, "POST", "/v1/jobs/enqueue", Some(enq), &mut s)
            .await
            .is_none()
        {
            continue;
        }
        let mut done = false;
        for _ in 0..10 {
            let claim = r#"{"kinds":["bench.cycle"]}"#.to_string();
            let Some(answer) = call(&mut tx, "POST", "/v1/jobs/claim", Some(claim), &mut s).await
            else {
                break;
            };
            let Some(job) = serde_json::from_slice::<ClaimAnswer>(&answer)
                .ok()
                .and_then(|a| a.jobs.into_iter().next())
            else {
                continue;
            };
            let path = format!("/v1/jobs/{}/complete", job.job_id);
            let body = format!(
                r#"{{"leaseToken":{},"result":{{"ok":true}}}}"#,
                job.lease_token
            );
            done = call(&mut tx, "POST", &path, Some(body), &mut s)
                .await
                .is_some();
            break;
        }
        if done {
            s.cycles += 1;
            s.cycle_us.push(t.elapsed().as_micros() as u32);
        }
    }
    s
}

async fn redis_client(url: String, deadline: Instant, id: usize) -> Samples {
    let client = redis::Client::open(url).expect("redis url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let consumer = format!("c{id}");
    let mut s = Samples::default();
    let mut i = 0u64;
    while Instant::now() < deadline {
        i += 1;
        let t = Instant::now();
        let payload = json!({"client": id, "i": i}).to_string();
        let r: redis::RedisResult<String> = redis::cmd("XADD")
            .arg("bench")
            .arg("*")
            .arg("payload")
            .arg(&payload)
            .query_async(&mut con)
            .await;
        s.request_us.push(t.elapsed().as_micros() as u32);
        if r.is_err() {
            s.errors += 1;
            continue;
        }
        let t2 = Instant::now();
        let r: redis::RedisResult<redis::Value> = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("g")
            .arg(&consumer)
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg("bench")
            .arg(">")
            .query_async(&mut con)
            .await;
        s.request_us.push(t2.elapsed().as_micros() as u32);
        let Some(msg_id) = r.ok().and_then(|v| first_id(&v)) else {
            s.errors += 1;
            continue;
        };
        let t3 = Instant::now();
        let r: redis::RedisResult<i64> = redis::cmd("XACK")
            .arg("bench")
            .arg("g")
            .arg(&msg_id)
            .query_async(&mut con)
            .await;
        s.request_us.push(t3.elapsed().as_micros() as u32);
        if r == Ok(1) {
            s.cycles += 1;
            s.cycle_us.push(t.elapsed().as_micros() as u32);
        } else {
            s.errors += 1;
        }
    }
    s
}

/// The id of the first entry in an XREADGROUP reply: [[stream, [[id, [fields]]]]] (RESP2) or a
/// map of stream → entries (RESP3).
fn first_id(v: &redis::Value) -> Option<String> {
    use redis::Value as V;
    let arr = |v: &V| -> Option<Vec<V>> {
        match v {
            V::Array(a) => Some(a.clone()),
            V::Map(m) => Some(m.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect()),
            _ => None,
        }
    };
    let streams = arr(v)?;
    let entries = match streams.first()? {
        V::Array(pair) => arr(pair.get(1)?)?,
        _ => arr(streams.get(1)?)?,
    };
    match arr(entries.first()?)?.first()? {
        V::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        V::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

async fn run_all<F, Fut>(clients: usize, seconds: u64, f: F) -> (Duration, Samples)
where
    F: Fn(Instant, usize) -> Fut,
    Fut: std::future::Future<Output = Samples> + 'static,
{
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let set = tokio::task::LocalSet::new();
    let handles: Vec<_> = (0..clients)
        .map(|i| set.spawn_local(f(deadline, i)))
        .collect();
    let mut all = Samples::default();
    set.run_until(async {
        for h in handles {
            let s = h.await.expect("client task");
            all.cycles += s.cycles;
            all.errors += s.errors;
            all.cycle_us.extend(s.cycle_us);
            all.request_us.extend(s.request_us);
        }
    })
    .await;
    (start.elapsed(), all)
}

fn main() {
    let a = args();
    if a.socket.is_empty() {
        eprintln!(
            "usage: orchestrator --socket PATH [--redis URL] [--clients N] [--seconds S] (see scripts/bench/orchestrator.sh)"
        );
        return;
    }
    // One client thread for all clients; the servers get the rest of the machine.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let socket = a.socket.clone();
        let (el, s) = run_all(a.clients, a.seconds, |d, i| {
            orch_client(socket.clone(), d, i)
        })
        .await;
        report("clawdlets-orchestrator", a.clients, el, s);
        let socket = a.socket.clone();
        let (el, s) = run_all(a.clients, a.seconds, |d, i| {
            healthz_client(socket.clone(), d, i)
        })
        .await;
        report("clawdlets-http-only-3x-healthz", a.clients, el, s);
        if let Some(url) = &a.redis {
            let client = redis::Client::open(url.as_str()).expect("redis url");
            let mut con = client
                .get_multiplexed_async_connection()
                .await
                .expect("connect to redis");
            let _: redis::RedisResult<()> =
                redis::cmd("DEL").arg("bench").query_async(&mut con).await;
            let _: redis::RedisResult<()> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg("bench")
                .arg("g")
                .arg("$")
                .arg("MKSTREAM")
                .query_async(&mut con)
                .await;
            let url = url.clone();
            let (el, s) =
                run_all(a.clients, a.seconds, |d, i| redis_client(url.clone(), d, i)).await;
            report("redis-streams", a.clients, el, s);
        }
    });
}
