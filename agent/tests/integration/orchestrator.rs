//! Orchestrator end to end: real socket, real SQLite, real users, `curl --unix-socket` as the
//! outside client, kill -9 under load, a legacy-schema migration, a full disk, and the local
//! cattle bootstrapping over TCP with its one-time token and signed requests.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::orchestrator::{Daemon, curl_as, http};
use crate::common::users::{TestGroup, TestUser};
use crate::common::{self, require_root, require_tool};

fn ready(test: &str) -> bool {
    require_root(test)
        && require_tool(test, "curl")
        && require_tool(test, "setpriv")
        && require_tool(test, "sqlite3")
}

fn enqueue_body(kind: &str, extra: Value) -> String {
    let mut b = json!({"protocolVersion": 1, "kind": kind, "payload": {"n": 1}});
    if let (Value::Object(b), Value::Object(e)) = (&mut b, extra) {
        b.extend(e);
    }
    b.to_string()
}

#[test]
fn orchestrator_identity_isolation_and_permissions() {
    if !ready("orchestrator_identity_isolation_and_permissions") {
        return;
    }
    let bots = TestGroup::create("clfb");
    let admins = TestGroup::create("clfa");
    let a = TestUser::create("bota", &[&bots.name]);
    let b = TestUser::create("botb", &[&bots.name]);
    let admin = TestUser::create("adm", &[&bots.name, &admins.name]);
    let outsider = TestUser::create("out", &[]);
    let d = Daemon::start(
        &bots.name,
        json!({"adminGroup": admins.name, "envKeys": []}),
        false,
    );
    let s = &d.socket;

    // The socket is 0660 root:<bots>.
    let meta = std::fs::metadata(s).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    // A bot enqueues; the requester is its own user name even when the body does not say so.
    let (st, v) = curl_as(
        a.uid,
        a.gid,
        s,
        "POST",
        "/v1/jobs/enqueue",
        Some(&enqueue_body("test.echo", json!({"idempotencyKey": "k1"}))),
    );
    assert_eq!(st, 200, "{v}");
    let job = v["jobId"].as_str().unwrap().to_string();
    let (_, again) = curl_as(
        a.uid,
        a.gid,
        s,
        "POST",
        "/v1/jobs/enqueue",
        Some(&enqueue_body(
            "test.echo",
            json!({"idempotencyKey": "k1", "requester": a.name}),
        )),
    );
    assert_eq!(
        again["jobId"],
        job.as_str(),
        "idempotent per requester and key"
    );
    assert_eq!(again["existing"], true);

    // Impersonation is refused and audited with the real uid.
    let (st, v) = curl_as(
        b.uid,
        b.gid,
        s,
        "POST",
        "/v1/jobs/enqueue",
        Some(&enqueue_body("test.echo", json!({"requester": a.name}))),
    );
    assert_eq!(st, 403, "{v}");
    assert_eq!(v["protocolVersion"], 1);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not match")
    );

    // Another bot neither sees, lists, claims nor cancels the job.
    assert_eq!(
        curl_as(b.uid, b.gid, s, "GET", &format!("/v1/jobs/{job}"), None).0,
        404
    );
    assert_eq!(
        curl_as(
            b.uid,
            b.gid,
            s,
            "POST",
            &format!("/v1/jobs/{job}/cancel"),
            Some("{}")
        )
        .0,
        404
    );
    let (st, v) = curl_as(b.uid, b.gid, s, "GET", "/v1/jobs", None);
    assert_eq!((st, v["jobs"].as_array().unwrap().len()), (200, 0));
    assert_eq!(
        curl_as(
            b.uid,
            b.gid,
            s,
            "GET",
            &format!("/v1/jobs?requester={}", a.name),
            None
        )
        .0,
        403
    );
    let (_, v) = curl_as(b.uid, b.gid, s, "POST", "/v1/jobs/claim", Some("{}"));
    assert_eq!(v["jobs"].as_array().unwrap().len(), 0);

    // The owner and the admin group see it.
    let (st, v) = curl_as(a.uid, a.gid, s, "GET", &format!("/v1/jobs/{job}"), None);
    assert_eq!(
        (st, v["job"]["requester"].as_str()),
        (200, Some(a.name.as_str()))
    );
    assert_eq!(v["job"]["payload"]["n"], 1);
    let (_, v) = curl_as(admin.uid, admin.gid, s, "GET", "/v1/jobs", None);
    assert_eq!(v["jobs"].as_array().unwrap().len(), 1);

    // Privileged options need root or the admin group.
    let spawn = |extra: Value| {
        enqueue_body("cattle.spawn", json!({"payload": {"persona": "rex", "task": {"taskId": "t"}, "withGithubToken": true}}).as_object().unwrap().clone().into_iter().chain(extra.as_object().unwrap().clone()).collect::<serde_json::Map<_, _>>().into())
    };
    assert_eq!(
        curl_as(
            a.uid,
            a.gid,
            s,
            "POST",
            "/v1/jobs/enqueue",
            Some(&spawn(json!({})))
        )
        .0,
        403
    );
    assert_eq!(
        curl_as(
            admin.uid,
            admin.gid,
            s,
            "POST",
            "/v1/jobs/enqueue",
            Some(&spawn(json!({})))
        )
        .0,
        200
    );

    // Cancel: the owner may; twice is a conflict (409).
    assert_eq!(
        curl_as(
            a.uid,
            a.gid,
            s,
            "POST",
            &format!("/v1/jobs/{job}/cancel"),
            Some("{}")
        )
        .0,
        200
    );
    let (st, v) = curl_as(
        a.uid,
        a.gid,
        s,
        "POST",
        &format!("/v1/jobs/{job}/cancel"),
        Some("{}"),
    );
    assert_eq!(st, 409, "{v}");

    // A user outside the group cannot even connect.
    assert_eq!(
        curl_as(outsider.uid, outsider.gid, s, "GET", "/healthz", None).0,
        0
    );

    // Refusals are audited with the caller's uid.
    let denied = d.sql(&format!(
        "SELECT count(*) FROM events WHERE actor_uid = {} AND outcome = 'denied'",
        b.uid
    ));
    assert!(
        denied.parse::<i64>().unwrap() >= 3,
        "denials audited: {denied}"
    );
    drop(d);
}

fn raw(socket: &std::path::Path, bytes: &[u8]) -> (u16, Value) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    common::orchestrator::parse_response(&buf)
}

#[test]
fn orchestrator_bad_input_gets_clear_errors() {
    if !ready("orchestrator_bad_input_gets_clear_errors") {
        return;
    }
    let bots = TestGroup::create("clfb");
    let a = TestUser::create("bota", &[&bots.name]);
    let d = Daemon::start(
        &bots.name,
        json!({"limits": {"headerTimeoutSeconds": 1, "requestTimeoutSeconds": 1, "ratePerSecond": 0.5, "rateBurst": 3, "maxQueuedPerRequester": 2}}),
        false,
    );
    let s = &d.socket;
    let err = |v: &Value| v["error"]["message"].as_str().unwrap_or("").to_string();
    let (st, v) = d.get("/v1/nothing");
    assert_eq!((st, v["protocolVersion"].as_i64()), (404, Some(1)));
    let (st, _) = d.get("/v1/jobs/enqueue/extra/deep");
    assert_eq!(st, 404);
    let (st, v) = d.get("/v1/jobs/enqueue");
    assert_eq!(st, 405, "{v}");
    // (method, path, body, expected status, text the error message must contain)
    type Refused<'a> = (&'a str, &'a str, Option<&'a [u8]>, u16, &'a str);
    let refused: [Refused; 8] = [
        ("DELETE", "/v1/jobs", None, 405, ""),
        (
            "POST",
            "/v1/jobs/enqueue",
            Some(b"{\"protocolVersion\":1,"),
            400,
            "invalid JSON",
        ),
        (
            "POST",
            "/v1/jobs/enqueue",
            Some(b"{\"protocolVersion\":2,\"kind\":\"a\"}"),
            400,
            "protocolVersion",
        ),
        // Unknown fields are refused.
        (
            "POST",
            "/v1/jobs/enqueue",
            Some(b"{\"protocolVersion\":1,\"kind\":\"a\",\"maxAttempt\":3}"),
            400,
            "",
        ),
        (
            "POST",
            "/v1/jobs/enqueue",
            Some(b"{\"protocolVersion\":1,\"kind\":\"BAD KIND\"}"),
            400,
            "",
        ),
        ("GET", "/v1/jobs?status=exploded", None, 400, ""),
        ("GET", "/v1/jobs?limit=100000", None, 400, ""),
        (
            "POST",
            "/v1/jobs/zzz/complete",
            Some(b"{\"leaseToken\":1}"),
            404,
            "",
        ),
    ];
    for (method, path, body, status, message) in refused {
        let (st, v) = http(s, method, path, body);
        assert_eq!(st, status, "{method} {path}: {v}");
        assert!(err(&v).contains(message), "{method} {path}: {v}");
    }
    let big = format!(
        "{{\"protocolVersion\":1,\"kind\":\"a\",\"payload\":\"{}\"}}",
        "x".repeat(300 * 1024)
    );
    let (st, v) = http(s, "POST", "/v1/jobs/enqueue", Some(big.as_bytes()));
    assert_eq!(st, 413, "{v}");
    let mid = format!(
        "{{\"protocolVersion\":1,\"kind\":\"a\",\"payload\":\"{}\"}}",
        "x".repeat(100 * 1024)
    );
    let (st, _) = http(s, "POST", "/v1/jobs/enqueue", Some(mid.as_bytes()));
    assert_eq!(st, 413, "payload over maxPayloadBytes");
    let (st, _) = http(
        s,
        "POST",
        "/v1/jobs/..%2f..%2fetc/complete",
        Some(b"{\"leaseToken\":1}"),
    );
    assert_eq!(st, 404);

    // A slow client that never finishes its headers is cut off by the header timeout.
    let t = Instant::now();
    let mut slow = UnixStream::connect(s).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "slow header client held for {:?}",
        t.elapsed()
    );
    // A slow body gets 408 after the request timeout.
    let t = Instant::now();
    let mut slow = UnixStream::connect(s).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(
        b"POST /v1/jobs/enqueue HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"proto",
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = slow.read_to_end(&mut buf);
    assert_eq!(common::orchestrator::parse_response(&buf).0, 408);
    assert!(t.elapsed() < Duration::from_secs(5));
    // The server is still healthy and a pipelined garbage request line is refused.
    let (st, _) = raw(s, b"GARBAGE\r\n\r\n");
    assert_ne!(st, 200);
    assert_eq!(d.get("/healthz").0, 200);

    // Bots are rate limited (root is not) and have a queued-jobs quota.
    let mut codes = Vec::new();
    for i in 0..5 {
        codes.push(
            curl_as(
                a.uid,
                a.gid,
                s,
                "POST",
                "/v1/jobs/enqueue",
                Some(&enqueue_body(
                    "t.x",
                    json!({"idempotencyKey": format!("r{i}")}),
                )),
            )
            .0,
        );
    }
    assert_eq!(&codes[..2], &[200, 200], "{codes:?}");
    assert_eq!(codes[2], 429, "quota of 2 queued jobs: {codes:?}");
    assert!(codes[3..].contains(&429), "rate limited: {codes:?}");
    for _ in 0..20 {
        assert_eq!(d.get("/healthz").0, 200);
    }
}

#[test]
fn orchestrator_refuses_unsafe_socket_dir_and_wildcard_listen() {
    if !require_root("orchestrator_refuses_unsafe_socket_dir_and_wildcard_listen") {
        return;
    }
    let mut d = Daemon::configured("root", json!({}), false);
    let dir = d.socket.parent().unwrap().to_path_buf();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = common::run(&mut d.command());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("world-writable"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = common::run(d.command().args(["--cattle-listen", "0.0.0.0:18337"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("every interface"));
    // SIGTERM shuts down cleanly, removes the socket and folds the WAL into the database.
    d.spawn();
    let (st, v) = d.post(
        "/v1/jobs/enqueue",
        &json!({"protocolVersion": 1, "kind": "before.stop"}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(d.stop(), Some(0));
    assert!(!d.socket.exists());
    let wal = std::fs::metadata(format!("{}-wal", d.state.display())).map_or(0, |m| m.len());
    assert_eq!(wal, 0, "the writer's last checkpoint truncates the WAL");
    assert_eq!(
        d.sql("SELECT count(*) FROM jobs WHERE kind = 'before.stop'"),
        "1"
    );
}

/// A `sqlite3` reader that closes while the daemon runs must not delete the daemon's WAL: that
/// happens if the daemon ever lost its POSIX locks on the database (closing any descriptor of
/// the file drops them all), and the daemon's later commits then go to an unlinked file.
#[test]
fn orchestrator_outside_readers_never_take_the_daemons_wal() {
    if !ready("orchestrator_outside_readers_never_take_the_daemons_wal") {
        return;
    }
    let d = Daemon::start("root", json!({}), false);
    let enqueue = |i: u32| {
        let (st, v) = d.post(
            "/v1/jobs/enqueue",
            &json!({"protocolVersion": 1, "kind": "seen.by.readers", "payload": {"i": i}}),
        );
        assert_eq!(st, 200, "{v}");
    };
    for i in 0..3 {
        enqueue(i);
        // Each call is a reader process that opens, reads and closes the database.
        let n = d.sql("SELECT count(*) FROM jobs WHERE kind = 'seen.by.readers'");
        assert_eq!(
            n,
            (i + 1).to_string(),
            "a reader sees every acknowledged job"
        );
        assert!(
            std::path::Path::new(&format!("{}-wal", d.state.display())).exists(),
            "the WAL stays while the daemon runs"
        );
    }
}

/// The systemd protocol as a service manager sees it: READY with a STATUS once listening,
/// WATCHDOG pings at half of WATCHDOG_USEC while serving, STOPPING on SIGTERM.
#[test]
fn orchestrator_speaks_sd_notify_ready_watchdog_stopping() {
    if !ready("orchestrator_speaks_sd_notify_ready_watchdog_stopping") {
        return;
    }
    let d = Daemon::configured("root", json!({}), false);
    let notify_path = d.root.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // WATCHDOG_PID must name the daemon: the shell's pid, which `exec` keeps.
    let inner = d.command();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" \"$@\"")
        .arg(inner.get_program())
        .args(inner.get_args())
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "300000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let mut child = cmd.spawn().unwrap();
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let started = Instant::now();
    while seen.iter().filter(|m| m.contains("WATCHDOG=1")).count() < 4 {
        let n = notify.recv(&mut buf).expect("a notification within 5 s");
        seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let watchdog_window = started.elapsed();
    assert!(
        seen[0].contains("READY=1") && seen[0].contains("STATUS=listening on"),
        "{seen:?}"
    );
    // Four pings at 150 ms intervals (the first at once): well under 2 s.
    assert!(
        watchdog_window < Duration::from_secs(2),
        "{watchdog_window:?}"
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    loop {
        let n = notify.recv(&mut buf).expect("STOPPING within 5 s");
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if m.contains("STOPPING=1") {
            break;
        }
        assert!(m.contains("WATCHDOG=1"), "unexpected notification {m:?}");
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn orchestrator_kill9_under_load_loses_no_acknowledged_job() {
    if !ready("orchestrator_kill9_under_load_loses_no_acknowledged_job") {
        return;
    }
    let mut d = Daemon::start("root", json!({}), false);
    // Two leases that will go stale: claimed before the crash, never completed.
    for i in 0..2 {
        d.post(
            "/v1/jobs/enqueue",
            &json!({"protocolVersion": 1, "kind": "stale.job", "payload": {"i": i}}),
        );
    }
    let (_, v) = d.post(
        "/v1/jobs/claim",
        &json!({"kinds": ["stale.job"], "limit": 2, "leaseSeconds": 1}),
    );
    let stale: Vec<(String, i64)> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["jobId"].as_str().unwrap().to_string(),
                j["leaseToken"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(stale.len(), 2);

    let stop = Arc::new(AtomicBool::new(false));
    let socket = d.socket.clone();
    let mut threads = Vec::new();
    for t in 0..6 {
        let (stop, socket) = (stop.clone(), socket.clone());
        threads.push(std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut completed = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = json!({"protocolVersion": 1, "kind": "load.job", "idempotencyKey": format!("t{t}-{i}"), "payload": {"t": t, "i": i}});
                let (st, v) = http(&socket, "POST", "/v1/jobs/enqueue", Some(body.to_string().as_bytes()));
                if st == 200 {
                    acked.push(v["jobId"].as_str().unwrap().to_string());
                }
                if t % 2 == 0 {
                    let (st, v) = http(&socket, "POST", "/v1/jobs/claim", Some(b"{\"kinds\":[\"load.job\"]}"));
                    if st == 200
                        && let Some(j) = v["jobs"].as_array().and_then(|a| a.first()) {
                            let id = j["jobId"].as_str().unwrap().to_string();
                            let body = json!({"leaseToken": j["leaseToken"], "result": {"ok": true}});
                            let (st, _) = http(&socket, "POST", &format!("/v1/jobs/{id}/complete"), Some(body.to_string().as_bytes()));
                            if st == 200 {
                                completed.push(id);
                            }
                        }
                }
            }
            (acked, completed)
        }));
    }
    std::thread::sleep(Duration::from_millis(1500));
    d.kill9();
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut completed = Vec::new();
    for t in threads {
        let (a, c) = t.join().unwrap();
        acked.extend(a);
        completed.extend(c);
    }
    assert!(acked.len() > 50, "load ran: {} acknowledged", acked.len());
    d.spawn();
    assert_eq!(d.sql("PRAGMA integrity_check"), "ok");
    // Every acknowledged enqueue and every acknowledged completion survived.
    let ids: std::collections::HashSet<String> = d
        .sql("SELECT job_id FROM jobs WHERE kind = 'load.job'")
        .lines()
        .map(str::to_string)
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !ids.contains(*id)).collect();
    assert!(lost.is_empty(), "{} acknowledged jobs lost", lost.len());
    for id in completed.iter().take(50) {
        let (_, v) = d.get(&format!("/v1/jobs/{id}"));
        assert_eq!(v["job"]["status"], "done", "completed job {id}");
    }
    // No job completed twice.
    let dup = d.sql("SELECT count(*) FROM (SELECT job_id FROM events WHERE action = 'complete' AND outcome = 'ok' GROUP BY job_id HAVING count(*) > 1)");
    assert_eq!(dup, "0");
    // The stale leases expire (1 s) and are claimed again; the old holder cannot complete.
    std::thread::sleep(Duration::from_millis(1100));
    let (_, v) = d.post(
        "/v1/jobs/claim",
        &json!({"kinds": ["stale.job"], "limit": 5}),
    );
    let again: Vec<&str> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["jobId"].as_str().unwrap())
        .collect();
    assert_eq!(again.len(), 2, "expired leases are re-claimed: {v}");
    for (id, token) in &stale {
        let (st, v) = d.post(
            &format!("/v1/jobs/{id}/complete"),
            &json!({"leaseToken": token, "result": 1}),
        );
        assert_eq!(st, 409, "stale worker refused: {v}");
    }
    let attempts = d.sql("SELECT group_concat(attempt) FROM jobs WHERE kind = 'stale.job'");
    assert_eq!(attempts, "2,2");
}

#[test]
fn orchestrator_migrates_a_legacy_clf_database() {
    if !ready("orchestrator_migrates_a_legacy_clf_database") {
        return;
    }
    let mut d = Daemon::start("root", json!({}), false);
    d.stop();
    for f in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{f}", d.state.display()));
    }
    let ddl = clawdlets::orchestrator::store::schema::legacy_v3_ddl();
    // Recent enough that retention pruning at startup keeps them.
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        - 3_600_000;
    let rows = format!("
INSERT INTO jobs VALUES ('legacy-1','cattle.spawn','{{\"persona\":\"rex\"}}','bot-maren','idem-1','done',0,{t},{t},{t},1,1,NULL,NULL,NULL,'{{\"ok\":true}}');
INSERT INTO jobs VALUES ('legacy-2','legacy.other','{{}}','bot-other','','queued',5,{t},{t},{t},0,1,NULL,NULL,NULL,NULL);
INSERT INTO job_events (job_id, at, type, message, attempt) VALUES ('legacy-1',{t},'enqueue','',0),('legacy-1',{t},'ack','',1);
INSERT INTO cattle_bootstrap_tokens VALUES ('deadbeef',1,9999999999999,NULL,'legacy-1','bot-maren','c1','[]','{{}}');
");
    common::run_ok(
        Command::new("sqlite3")
            .arg(&d.state)
            .arg(format!("{ddl}{rows}")),
    );
    assert_eq!(d.sql("PRAGMA user_version"), "3");
    d.spawn();
    assert_eq!(d.sql("PRAGMA user_version"), "5");
    // Version 5's partial indexes cover the rows that were there.
    assert_eq!(
        d.sql("SELECT count(*) FROM jobs INDEXED BY jobs_queued WHERE status = 'queued'"),
        "1"
    );
    let (st, v) = d.get("/v1/jobs/legacy-1");
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["job"]["requester"], "bot-maren");
    assert_eq!(v["job"]["idempotencyKey"], "idem-1");
    assert_eq!(
        v["job"]["createdAt"],
        clawdlets::orchestrator::clock::iso(t).as_str()
    );
    assert_eq!(v["job"]["result"]["ok"], true);
    let (_, v) = d.get("/v1/jobs?status=queued");
    assert_eq!(v["jobs"][0]["jobId"], "legacy-2");
    assert_eq!(
        d.sql("SELECT count(*) FROM events WHERE job_id = 'legacy-1'"),
        "2"
    );
    assert_eq!(
        d.sql("SELECT count(*) FROM bootstrap_tokens"),
        "0",
        "legacy tokens are revoked"
    );
    assert!(
        d.sql("SELECT message FROM events WHERE action = 'migrate.v4'")
            .contains("revoked 1")
    );
    // The idempotency index still works across the upgrade.
    let (_, v) = d.post(
        "/v1/jobs/enqueue",
        &json!({"protocolVersion": 1, "kind": "x", "idempotencyKey": "idem-1"}),
    );
    assert_ne!(v["jobId"], "legacy-1", "keys are per requester");
}

#[test]
fn orchestrator_full_disk_fails_cleanly_and_keeps_acknowledged_jobs() {
    if !ready("orchestrator_full_disk_fails_cleanly_and_keeps_acknowledged_jobs") {
        return;
    }
    let mut d = Daemon::start("root", json!({}), false);
    d.stop();
    let state_dir = d.state.parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&state_dir).unwrap();
    std::fs::create_dir(&state_dir).unwrap();
    common::run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs"])
            .arg(&state_dir),
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).output();
        }
    }
    let _guard = Unmount(state_dir.clone());
    d.spawn();
    let payload = "y".repeat(60 * 1024);
    let mut acked = Vec::new();
    let mut full = None;
    for i in 0..40 {
        let (st, v) = d.post(
            "/v1/jobs/enqueue",
            &json!({"protocolVersion": 1, "kind": "fill", "payload": format!("{i}{payload}")}),
        );
        if st == 200 {
            acked.push(v["jobId"].as_str().unwrap().to_string());
        } else {
            full = Some((st, v));
            break;
        }
    }
    let (st, v) = full.expect("the 1 MiB disk filled up");
    assert_eq!(st, 507, "{v}");
    assert_eq!(v["error"]["kind"], "storage_full");
    assert!(!acked.is_empty());
    // Still serving reads, and every acknowledged job is intact, also after a restart.
    assert_eq!(d.get("/healthz").0, 200);
    assert_eq!(d.get(&format!("/v1/jobs/{}", acked[0])).0, 200);
    d.kill9();
    d.spawn();
    assert_eq!(d.sql("PRAGMA integrity_check"), "ok");
    for id in &acked {
        assert_eq!(
            d.get(&format!("/v1/jobs/{id}")).0,
            200,
            "acknowledged job {id}"
        );
    }
    d.stop();
}

fn wait_done(d: &Daemon, job: &str, uid_gid: Option<(u32, u32)>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = match uid_gid {
            Some((u, g)) => curl_as(u, g, &d.socket, "GET", &format!("/v1/jobs/{job}"), None),
            None => d.get(&format!("/v1/jobs/{job}")),
        };
        let st = v["job"]["status"].as_str().unwrap_or("").to_string();
        if st == "done" || st == "failed" {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "job {job} stuck: {v}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn orchestrator_local_cattle_bootstraps_with_a_one_time_token() {
    if !ready("orchestrator_local_cattle_bootstraps_with_a_one_time_token") {
        return;
    }
    let bots = TestGroup::create("clfb");
    let a = TestUser::create("bota", &[&bots.name]);
    let copy_dir = common::tempdir();
    let keep = copy_dir.path().join("user-data");
    // The "VM" keeps a copy of its user_data so the test can replay the token afterwards.
    let cmd = format!(
        "cp \"$1\" {} && exec {} orchestrator cattle-agent --user-data \"$1\"",
        keep.display(),
        common::bin().display()
    );
    let d = Daemon::start(
        &bots.name,
        json!({"envKeys": ["OPENAI_API_KEY"], "cattle": {"local": {"command": ["/bin/sh", "-c", cmd, "vm", "{userData}"]}}}),
        true,
    );
    let secret_value = "sk-test-4f1c9e0b7a";
    std::fs::write(d.secrets.join("OPENAI_API_KEY"), secret_value).unwrap();
    let payload = json!({"persona": "rex", "task": {"schemaVersion": 1, "taskId": "t-42", "type": "clawdbot.gateway.agent", "message": "hello cattle", "callbackUrl": "http://evil"}});
    let (st, v) = curl_as(a.uid, a.gid, &d.socket, "POST", "/v1/jobs/enqueue", Some(&json!({"protocolVersion": 1, "requester": a.name, "kind": "cattle.spawn", "payload": payload}).to_string()));
    assert_eq!(st, 200, "{v}");
    let job = v["jobId"].as_str().unwrap().to_string();
    let v = wait_done(&d, &job, Some((a.uid, a.gid)));
    assert_eq!(v["job"]["status"], "done", "{v}\n{}", d.log_text());
    let result = &v["job"]["result"];
    assert_eq!(result["ok"], true);
    assert_eq!(result["result"]["echo"], "hello cattle");
    assert_eq!(result["result"]["taskId"], "t-42");
    assert_eq!(
        result["result"]["envBytes"].as_u64().unwrap() as usize,
        secret_value.len() + 1
    );

    // The secret value is in no database file and no log line.
    for f in ["", "-wal"] {
        let bytes = std::fs::read(format!("{}{f}", d.state.display())).unwrap_or_default();
        assert!(
            !bytes
                .windows(secret_value.len())
                .any(|w| w == secret_value.as_bytes()),
            "secret in state{f}"
        );
    }
    assert!(!d.log_text().contains(secret_value));
    let ud = std::fs::read_to_string(&keep).unwrap();
    assert!(
        !ud.contains(secret_value),
        "user_data carries only the token"
    );
    assert!(!ud.contains("http://evil"), "callbackUrl blanked");

    // The token was single use: presenting it again is refused and audited as reuse.
    let token = ud
        .split("clf_boot_")
        .nth(1)
        .unwrap()
        .split('\\')
        .next()
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    let token = format!("clf_boot_{token}");
    let addr = d.cattle_addr.clone().unwrap();
    let out = common::run(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        &format!("Authorization: Bearer {token}"),
        &format!("http://{addr}/v1/cattle/env"),
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
    assert_eq!(
        d.sql("SELECT count(*) FROM events WHERE action = 'token.consume' AND outcome = 'reused'"),
        "1"
    );
    assert!(
        !d.sql("SELECT group_concat(message) FROM events")
            .contains(&token[9..30]),
        "token not in audit"
    );
    // The cattle listener serves nothing but the cattle routes.
    let out = common::run(Command::new("curl").args([
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        &format!("http://{addr}/v1/jobs"),
    ]));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    // The VM was torn down.
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.sql("SELECT status FROM cattle") != "reaped" {
        assert!(Instant::now() < deadline, "cattle not reaped");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tcp(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    common::orchestrator::parse_response(&buf)
}

#[test]
fn orchestrator_signed_vm_requests_refuse_replay_skew_and_forgery() {
    if !ready("orchestrator_signed_vm_requests_refuse_replay_skew_and_forgery") {
        return;
    }
    use clawdlets::orchestrator::vmauth;
    let copy_dir = common::tempdir();
    let keep = copy_dir.path().join("user-data");
    // This "VM" only hands its user_data to the test, which then plays the VM by hand.
    let cmd = format!("cp \"$1\" {}", keep.display());
    let d = Daemon::start(
        "root",
        json!({"envKeys": ["API_KEY"], "cattle": {"local": {"command": ["/bin/sh", "-c", cmd, "vm", "{userData}"]}}}),
        true,
    );
    std::fs::write(d.secrets.join("api_key"), "test-secret-value\n").unwrap();
    let (_, v) = d.post("/v1/jobs/enqueue", &json!({"protocolVersion": 1, "kind": "cattle.spawn", "payload": {"persona": "ada", "task": {"taskId": "t"}}}));
    let job = v["jobId"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !keep.exists() {
        assert!(
            Instant::now() < deadline,
            "VM not started: {}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(50));
    let ud = std::fs::read_to_string(&keep).unwrap();
    let token = format!(
        "clf_boot_{}",
        ud.split("clf_boot_")
            .nth(1)
            .unwrap()
            .split('\\')
            .next()
            .unwrap()
    );
    let addr = d.cattle_addr.clone().unwrap();
    let bearer = |t: &str| vec![("Authorization".to_string(), format!("Bearer {t}"))];

    // Garbage and a forged token are refused before the real one is used.
    assert_eq!(
        tcp(
            &addr,
            "GET",
            "/v1/cattle/env",
            &bearer("clf_boot_nope"),
            b""
        )
        .0,
        401
    );
    let mut forged = token.clone();
    forged.replace_range(12..13, if &forged[12..13] == "A" { "B" } else { "A" });
    assert_eq!(
        tcp(&addr, "GET", "/v1/cattle/env", &bearer(&forged), b"").0,
        401
    );
    assert_eq!(
        tcp(&addr, "POST", "/v1/cattle/env", &bearer(&token), b"").0,
        405
    );
    let (st, env) = tcp(&addr, "GET", "/v1/cattle/env", &bearer(&token), b"");
    assert_eq!(st, 200, "{env}");
    assert_eq!(
        env["env"]["API_KEY"], "test-secret-value",
        "read from the secrets dir at request time"
    );
    assert_eq!(
        tcp(&addr, "GET", "/v1/cattle/env", &bearer(&token), b"").0,
        401,
        "single use"
    );

    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(env["vm"]["key"].as_str().unwrap())
        .unwrap();
    let key_id = env["vm"]["keyId"].as_str().unwrap().to_string();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let signed = |path: &str, body: &[u8], ts: i64, nonce: &str, k: &[u8]| {
        let sig = vmauth::sign(k, "POST", path, body, ts, nonce);
        vec![
            (vmauth::H_KEY_ID.to_string(), key_id.clone()),
            (vmauth::H_TIMESTAMP.to_string(), ts.to_string()),
            (vmauth::H_NONCE.to_string(), nonce.to_string()),
            (vmauth::H_SIGNATURE.to_string(), sig),
        ]
    };
    let hb = b"{\"status\":\"running\"}";
    let n1 = vmauth::new_nonce();
    let h = signed("/v1/cattle/heartbeat", hb, now(), &n1, &key);
    assert_eq!(tcp(&addr, "POST", "/v1/cattle/heartbeat", &h, hb).0, 200);
    assert_eq!(
        tcp(&addr, "POST", "/v1/cattle/heartbeat", &h, hb).0,
        401,
        "replayed nonce"
    );
    let skew = signed(
        "/v1/cattle/heartbeat",
        hb,
        now() - 120,
        &vmauth::new_nonce(),
        &key,
    );
    assert_eq!(
        tcp(&addr, "POST", "/v1/cattle/heartbeat", &skew, hb).0,
        401,
        "clock skew"
    );
    let future = signed(
        "/v1/cattle/heartbeat",
        hb,
        now() + 120,
        &vmauth::new_nonce(),
        &key,
    );
    assert_eq!(
        tcp(&addr, "POST", "/v1/cattle/heartbeat", &future, hb).0,
        401,
        "clock skew ahead"
    );
    let wrong = signed(
        "/v1/cattle/heartbeat",
        hb,
        now(),
        &vmauth::new_nonce(),
        &[7u8; 32],
    );
    assert_eq!(
        tcp(&addr, "POST", "/v1/cattle/heartbeat", &wrong, hb).0,
        401,
        "wrong key"
    );
    let other_path = signed(
        "/v1/cattle/heartbeat",
        hb,
        now(),
        &vmauth::new_nonce(),
        &key,
    );
    assert_eq!(
        tcp(&addr, "POST", "/v1/cattle/result", &other_path, hb).0,
        401,
        "signature bound to the path"
    );
    let tampered = signed(
        "/v1/cattle/heartbeat",
        hb,
        now(),
        &vmauth::new_nonce(),
        &key,
    );
    assert_eq!(
        tcp(
            &addr,
            "POST",
            "/v1/cattle/heartbeat",
            &tampered,
            b"{\"status\":\"evil\"}"
        )
        .0,
        401,
        "body bound"
    );
    assert_eq!(
        tcp(&addr, "POST", "/v1/cattle/heartbeat", &[], hb).0,
        401,
        "unsigned"
    );
    let refused = d.sql("SELECT group_concat(outcome) FROM (SELECT outcome FROM events WHERE action = 'vm.request' ORDER BY id)");
    assert_eq!(
        refused,
        "replay,clock_skew,clock_skew,bad_signature,bad_signature,bad_signature,malformed"
    );

    let body = json!({"ok": true, "result": {"answer": 42}}).to_string();
    let h = signed(
        "/v1/cattle/result",
        body.as_bytes(),
        now(),
        &vmauth::new_nonce(),
        &key,
    );
    assert_eq!(
        tcp(&addr, "POST", "/v1/cattle/result", &h, body.as_bytes()).0,
        200
    );
    let v = wait_done(&d, &job, None);
    assert_eq!(v["job"]["result"]["result"]["answer"], 42);
    // After the result the VM key is revoked.
    let h = signed(
        "/v1/cattle/heartbeat",
        hb,
        now(),
        &vmauth::new_nonce(),
        &key,
    );
    assert_eq!(
        tcp(&addr, "POST", "/v1/cattle/heartbeat", &h, hb).0,
        401,
        "revoked key"
    );
}

#[test]
fn orchestrator_jobs_cli_prints_json_with_documented_exit_codes() {
    if !ready("orchestrator_jobs_cli_prints_json_with_documented_exit_codes") {
        return;
    }
    let bots = TestGroup::create("clfb");
    let a = TestUser::create("bota", &[&bots.name]);
    let b = TestUser::create("botb", &[&bots.name]);
    let d = Daemon::start(&bots.name, json!({}), false);
    let jobs = |u: &TestUser, args: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={}", u.uid),
            &format!("--regid={}", u.gid),
            "--init-groups",
            "--",
        ])
        .arg(common::bin())
        .arg("jobs")
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .env_remove("CLF_ORCHESTRATOR_SOCKET");
        let out = cmd.output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code(), v)
    };
    let (code, v) = jobs(
        &a,
        &[
            "enqueue",
            "--kind",
            "test.cli",
            "--payload",
            "{\"x\":1}",
            "--idempotency-key",
            "cli-1",
        ],
    );
    assert_eq!(code, Some(0), "{v}");
    let id = v["jobId"].as_str().unwrap().to_string();
    let (code, v) = jobs(&a, &["show", &id]);
    assert_eq!(
        (code, v["job"]["payload"]["x"].as_i64()),
        (Some(0), Some(1))
    );
    assert_eq!(v["job"]["requester"], a.name.as_str());
    let (code, v) = jobs(&a, &["list", "--status", "queued"]);
    assert_eq!(
        (code, v["jobs"].as_array().map(Vec::len)),
        (Some(0), Some(1))
    );
    let (code, v) = jobs(&b, &["show", &id]);
    assert_eq!(code, Some(1), "another bot's job is refused: {v}");
    assert_eq!(v["error"]["kind"], "not_found");
    let (code, _) = jobs(&b, &["cancel", &id]);
    assert_eq!(code, Some(1));
    let (code, v) = jobs(&a, &["cancel", &id]);
    assert_eq!(
        (code, v["job"]["status"].as_str()),
        (Some(0), Some("canceled"))
    );
    let (code, _) = jobs(&a, &["enqueue", "--kind", "x", "--payload", "not json"]);
    assert_eq!(code, Some(2));
    let out = common::run(common::clawdlets(d.root.path()).args([
        "jobs",
        "--socket",
        "/nonexistent/sock",
        "list",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("hint:"));
}

#[test]
fn orchestrator_accepts_a_socket_activated_listener() {
    if !ready("orchestrator_accepts_a_socket_activated_listener")
        || !require_tool(
            "orchestrator_accepts_a_socket_activated_listener",
            "systemd-socket-activate",
        )
    {
        return;
    }
    let root = common::tempdir();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = root.path().join("orch.sock");
    let log = std::fs::File::create(root.path().join("log")).unwrap();
    let mut child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .arg(common::bin())
        .args([
            "-v",
            "--log-format",
            "text",
            "orchestrator",
            "serve",
            "--group",
            "root",
            "--socket",
        ])
        .arg(&socket)
        .arg("--state")
        .arg(root.path().join("state/s.sqlite"))
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "socket-activate did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The first connection starts the daemon, which serves on the inherited socket.
    let (st, v) = http(&socket, "GET", "/healthz", None);
    assert_eq!(st, 200, "{v}");
    let (st, _) = http(
        &socket,
        "POST",
        "/v1/jobs/enqueue",
        Some(b"{\"protocolVersion\":1,\"kind\":\"sa\"}"),
    );
    assert_eq!(st, 200);
    let text = std::fs::read_to_string(root.path().join("log")).unwrap();
    assert!(text.contains("socket-activated"), "{text}");
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
