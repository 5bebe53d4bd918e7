//! Harness for orchestrator tests: a daemon in a temp root (socket dir 0755 so other test users
//! can reach the socket, state dir private), a tiny HTTP/1.1 client over the unix socket for
//! load, and `curl --unix-socket` run as a given uid (via `setpriv`) as the outside client.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running `clawdlets orchestrator serve`.
pub struct Daemon {
    pub root: tempfile::TempDir,
    pub socket: PathBuf,
    pub state: PathBuf,
    pub secrets: PathBuf,
    pub log: PathBuf,
    pub cattle_addr: Option<String>,
    pub child: Option<Child>,
    group: String,
    config: PathBuf,
    cattle_listen: bool,
}

impl Daemon {
    /// Starts a daemon whose socket belongs to `group`; `config` is merged into a base config
    /// that points the secrets dir and the local cattle work dir into the temp root.
    pub fn start(group: &str, config: Value, cattle_listen: bool) -> Daemon {
        let mut d = Daemon::configured(group, config, cattle_listen);
        d.spawn();
        d
    }

    /// A daemon's root, config and paths, not started (for tests that run `command()` their own
    /// way first).
    pub fn configured(group: &str, config: Value, cattle_listen: bool) -> Daemon {
        let root = super::tempdir();
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let run = root.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o755)).unwrap();
        let secrets = root.path().join("secrets");
        std::fs::create_dir(&secrets).unwrap();
        let mut cfg = serde_json::json!({
            "secretsDir": secrets,
            "cattle": {"backend": "local", "local": {"workDir": root.path().join("cattle")}},
        });
        merge(&mut cfg, config);
        let config_path = root.path().join("config.json");
        std::fs::write(&config_path, cfg.to_string()).unwrap();
        Daemon {
            socket: run.join("orchestrator.sock"),
            state: root.path().join("state/state.sqlite"),
            log: root.path().join("daemon.log"),
            secrets,
            root,
            cattle_addr: None,
            child: None,
            group: group.to_string(),
            config: config_path,
            cattle_listen,
        }
    }

    /// The command line (for tests that expect a refusal to start).
    pub fn command(&self) -> Command {
        let mut cmd = super::clawdlets(self.root.path());
        cmd.args(["-v", "orchestrator", "serve", "--socket"])
            .arg(&self.socket)
            .arg("--state")
            .arg(&self.state)
            .args(["--group", &self.group, "--config"])
            .arg(&self.config);
        if self.cattle_listen {
            cmd.args(["--cattle-listen", "127.0.0.1:0"]);
        }
        cmd
    }

    /// (Re)starts the process and waits until the socket answers.
    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self
            .command()
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start orchestrator");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(st)) = self.child.as_mut().unwrap().try_wait() {
                panic!("orchestrator exited with {st}: {}", self.log_text());
            }
            if self.socket.exists() && http(&self.socket, "GET", "/healthz", None).0 == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "orchestrator did not start: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.cattle_listen {
            let text = self.log_text();
            let addr = text
                .rsplit("cattle at http://")
                .next()
                .and_then(|s| s.split(|c: char| c.is_whitespace() || c == '\u{1b}').next())
                .map(str::to_string);
            self.cattle_addr = addr;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        child.wait().ok().and_then(|s| s.code())
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs SQL with the sqlite3 CLI against the state file.
    pub fn sql(&self, q: &str) -> String {
        let out = super::run_ok(Command::new("sqlite3").arg(&self.state).arg(q));
        String::from_utf8(out).unwrap().trim().to_string()
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        http(&self.socket, "GET", path, None)
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        http(
            &self.socket,
            "POST",
            path,
            Some(body.to_string().as_bytes()),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// One request over the unix socket as the current user (root in CI); connection closed after.
pub fn http(socket: &Path, method: &str, path: &str, body: Option<&[u8]>) -> (u16, Value) {
    let Ok(mut s) = UnixStream::connect(socket) else {
        return (0, Value::Null);
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let body = body.unwrap_or(b"");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    // The server may answer from the head alone (404, 413) and close before reading the body, so a
    // failed write is not the end: the response is still there to read.
    let _ = s.write_all(&request);
    let mut buf = Vec::new();
    if s.read_to_end(&mut buf).is_err() && buf.is_empty() {
        return (0, Value::Null);
    }
    parse_response(&buf)
}

pub fn parse_response(buf: &[u8]) -> (u16, Value) {
    let text = String::from_utf8_lossy(buf);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// `curl --unix-socket` run as `uid`/`gid` with that user's groups. Returns (status, JSON);
/// status 0 when curl could not connect.
pub fn curl_as(
    uid: u32,
    gid: u32,
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut cmd = Command::new("setpriv");
    cmd.args([
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--init-groups",
        "--",
        "curl",
        "-sS",
        "-w",
        "\n%{http_code}",
    ])
    .arg("--unix-socket")
    .arg(socket)
    .args(["-X", method, &format!("http://localhost{path}")]);
    if let Some(b) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary", b]);
    }
    let out = cmd.output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}
