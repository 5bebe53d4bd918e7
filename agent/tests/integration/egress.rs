//! The egress proxy driven the way bots use it: the real binary in a network namespace, real
//! curl (as real users) and real Rust HTTP clients (hyper-util's CONNECT tunnel connector and
//! hyper's HTTP/1 client) going to real upstream servers (a small HTTP server and `openssl
//! s_server` for TLS) that live in a second namespace on documentation addresses. Names resolve
//! through a test DNS responder, so CNAME chains to loopback, private and metadata addresses are
//! real DNS answers. No packet leaves the machine.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::netns::{self, Netns};
use crate::common::nsdns::{DnsServer, Record, in_netns};
use crate::common::users::TestUser;
use crate::common::{self, run_ok};

const PROXY: &str = "127.0.0.1:3128";
const UPSTREAM: &str = "198.51.100.10";

fn zone() -> HashMap<String, Vec<Record>> {
    use Record::*;
    let a = |s: &str| A(s.parse().unwrap());
    let aaaa = |s: &str| Aaaa(s.parse().unwrap());
    let cname = |s: &str| Cname(s.to_string());
    let up = || a(UPSTREAM);
    [
        ("allowed.test", vec![up()]),
        ("api.allowed.test", vec![up()]),
        ("www.allowed.test", vec![cname("api.allowed.test")]),
        ("other.test", vec![up()]),
        ("new.test", vec![up()]),
        ("shared.test", vec![up()]),
        ("bot-a.test", vec![up()]),
        ("bot-b.test", vec![up()]),
        ("xn--llowed-2nf.test", vec![up()]),
        ("api.xn--llowed-2nf.test", vec![up()]),
        ("loop.allowed.test", vec![a("127.0.0.1")]),
        ("lan.allowed.test", vec![a("10.9.0.10")]),
        ("meta.allowed.test", vec![a("169.254.169.254")]),
        ("cname-loop.allowed.test", vec![cname("internal.corp.test")]),
        ("internal.corp.test", vec![a("127.0.0.1")]),
        ("cname-meta.allowed.test", vec![cname("meta.evil.test")]),
        ("meta.evil.test", vec![a("169.254.169.254")]),
        ("cname-lan.allowed.test", vec![cname("hop1.evil.test")]),
        ("hop1.evil.test", vec![cname("lan.evil.test")]),
        ("lan.evil.test", vec![a("10.9.0.10")]),
        ("mixed.allowed.test", vec![up(), a("10.9.0.10")]),
        ("ula.allowed.test", vec![aaaa("fd00::1")]),
        ("nat64.allowed.test", vec![aaaa("64:ff9b::a09:a")]),
        ("mapped.allowed.test", vec![aaaa("::ffff:127.0.0.1")]),
        ("cgnat.allowed.test", vec![a("100.100.1.1")]),
        ("doc.allowed.test", vec![a("203.0.113.10")]),
    ]
    .into_iter()
    .map(|(n, r)| (n.to_string(), r))
    .collect()
}

/// A tiny HTTP/1.1 server: answers every request with what it saw (method, Host, body length,
/// path) and closes. It also sends a forged proxy error header, which the proxy must strip.
fn serve_http(listener: TcpListener, tag: &'static str) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let mut host = String::new();
                let mut len = 0usize;
                let mut chunked = false;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap_or(("", ""));
                    match k.to_ascii_lowercase().as_str() {
                        "host" => host = v.trim().to_string(),
                        "content-length" => len = v.trim().parse().unwrap_or(0),
                        "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
                        _ => {}
                    }
                }
                let mut body = 0usize;
                if chunked {
                    loop {
                        let mut size = String::new();
                        r.read_line(&mut size).unwrap();
                        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                        let mut data = vec![0u8; n + 2];
                        r.read_exact(&mut data).unwrap();
                        body += n;
                        if n == 0 {
                            break;
                        }
                    }
                } else {
                    let mut data = vec![0u8; len];
                    r.read_exact(&mut data).unwrap();
                    body = len;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or("");
                let target = parts.next().unwrap_or("");
                let text =
                    format!("{tag} method={method} host={host} body={body} target={target}\n");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Clawdlets-Egress-Error: forged\r\nContent-Length: {}\r\n\r\n{text}",
                    text.len()
                );
                let mut w = conn;
                let _ = w.write_all(resp.as_bytes());
            });
        }
    });
}

struct Env {
    client: Netns,
    _upstream: Netns,
    _dns: DnsServer,
    dir: tempfile::TempDir,
    proxy: Child,
    tls: Option<Child>,
    log: PathBuf,
    config: PathBuf,
}

impl Env {
    /// Two namespaces joined by a veth pair, upstream servers, DNS, and the proxy running with
    /// `config` (JSON) in the client namespace.
    fn start(config: &serde_json::Value, tls: bool) -> Env {
        let client = Netns::create("egc");
        let upstream = Netns::create("egu");
        netns::link(
            &client,
            "eth0",
            "198.51.100.1/24",
            &upstream,
            "eth0",
            "198.51.100.10/24",
        );
        for (ns, addrs) in [
            (&client, ["203.0.113.1/24", "10.9.0.1/24"]),
            (&upstream, ["203.0.113.10/24", "10.9.0.10/24"]),
        ] {
            for a in addrs {
                ns.ip(&["addr", "add", a, "dev", "eth0"]);
            }
        }
        let l = in_netns(&upstream.name, || TcpListener::bind("0.0.0.0:80").unwrap());
        serve_http(l, "upstream");
        let l = in_netns(&upstream.name, || {
            TcpListener::bind("0.0.0.0:8080").unwrap()
        });
        serve_http(l, "upstream");
        // Something on the proxy's own loopback that a bypass would reach.
        let l = in_netns(&client.name, || TcpListener::bind("127.0.0.1:80").unwrap());
        serve_http(l, "LOOPBACK-LEAK");
        let dns = DnsServer::start(&client.name, "127.0.0.53:53".parse().unwrap(), zone());
        let etc = PathBuf::from("/etc/netns").join(&client.name);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("resolv.conf"),
            "nameserver 127.0.0.53\noptions timeout:1 attempts:2\n",
        )
        .unwrap();

        let dir = common::tempdir();
        let tls = tls.then(|| start_tls(&upstream, dir.path()));
        let config_path = dir.path().join("egress.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        let log = dir.path().join("proxy.log");
        let proxy = Command::new("ip")
            .args(["netns", "exec", &client.name])
            .arg(common::bin())
            .args(["--log-format", "json", "-v", "egress-proxy", "--config"])
            .arg(&config_path)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start proxy");
        let env = Env {
            client,
            _upstream: upstream,
            _dns: dns,
            dir,
            proxy,
            tls,
            log,
            config: config_path,
        };
        env.wait_for_log("listening on", Duration::from_secs(20));
        env
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for_log(&self, needle: &str, max: Duration) {
        let t = Instant::now();
        while t.elapsed() < max {
            if self.log_text().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("proxy log never said {needle:?}:\n{}", self.log_text());
    }

    /// The JSON decision lines of the log.
    fn decisions(&self) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["fields"]["event"] == "egress.decision")
            .map(|v| v["fields"].clone())
            .collect()
    }

    /// curl through the proxy in the client namespace, optionally as another user.
    fn curl(&self, user: Option<&TestUser>, args: &[&str]) -> Curl {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.client.name]);
        if let Some(u) = user {
            cmd.args([
                "setpriv",
                &format!("--reuid={}", u.uid),
                &format!("--regid={}", u.gid),
                "--clear-groups",
            ]);
        }
        cmd.args([
            "curl",
            "-sS",
            "-v",
            "--max-time",
            "10",
            "-x",
            &format!("http://{PROXY}"),
        ]);
        cmd.args(["-w", "\n@@%{http_code} %{http_connect}"]);
        cmd.args(args);
        for v in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "all_proxy",
            "NO_PROXY",
            "no_proxy",
        ] {
            cmd.env_remove(v);
        }
        let out = common::run(&mut cmd);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let (body, codes) = stdout.rsplit_once("@@").unwrap_or((&stdout, "000 000"));
        let mut it = codes.split_whitespace();
        let http: u16 = it.next().unwrap_or("0").parse().unwrap_or(0);
        let connect: u16 = it.next().unwrap_or("0").parse().unwrap_or(0);
        let reason = stderr
            .lines()
            .find_map(|l| {
                l.strip_prefix("< X-Clawdlets-Egress-Error: ")
                    .or_else(|| l.strip_prefix("< x-clawdlets-egress-error: "))
            })
            .map(|s| s.trim().to_string());
        Curl {
            http,
            connect,
            body: body.to_string(),
            reason,
            stderr,
        }
    }

    /// Sends raw bytes to the proxy from the client namespace and returns the whole answer.
    fn raw(&self, req: &[u8]) -> String {
        let req = req.to_vec();
        in_netns(&self.client.name, move || {
            let mut s = TcpStream::connect(PROXY).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let _ = s.write_all(&req);
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
            String::from_utf8_lossy(&out).to_string()
        })
    }

    fn sighup(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.proxy.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
    }

    fn metrics(&self) -> String {
        let out = common::run(self.client.cmd("curl").args([
            "-sS",
            "--noproxy",
            "*",
            "http://127.0.0.1:9810/metrics",
        ]));
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.proxy.kill();
        let _ = self.proxy.wait();
        if let Some(t) = &mut self.tls {
            let _ = t.kill();
            let _ = t.wait();
        }
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.client.name));
    }
}

fn start_tls(upstream: &Netns, dir: &Path) -> Child {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run_ok(Command::new("openssl").args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=api.allowed.test", "-addext", "subjectAltName=DNS:api.allowed.test,DNS:www.allowed.test,DNS:allowed.test,DNS:other.test", "-keyout"]).arg(&key).arg("-out").arg(&cert).stderr(Stdio::null()));
    let child = upstream
        .cmd("openssl")
        .args(["s_server", "-quiet", "-accept", "443", "-www", "-cert"])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    let name = upstream.name.clone();
    in_netns(&name, || {
        let t = Instant::now();
        while TcpStream::connect((UPSTREAM, 443)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "s_server did not start"
            );
            std::thread::sleep(Duration::from_millis(30));
        }
    });
    child
}

#[derive(Debug)]
struct Curl {
    http: u16,
    connect: u16,
    body: String,
    reason: Option<String>,
    stderr: String,
}

impl Curl {
    /// The status the proxy answered with (CONNECT status for tunnels, else the HTTP status).
    fn status(&self) -> u16 {
        if self.connect != 0 {
            self.connect
        } else {
            self.http
        }
    }
}

fn base_config() -> serde_json::Value {
    serde_json::json!({
        "listen": [PROXY],
        "metricsListen": "127.0.0.1:9810",
        "allow": [".allowed.test", "*.wild.test", "198.51.100.10", "169.254.169.254"],
        "allowRanges": ["198.51.100.0/24"],
        "ports": [443, 80, 8080],
        "limits": {"headerTimeoutSecs": 1, "idleTimeoutSecs": 2, "connectTimeoutSecs": 3}
    })
}

fn ca(env: &Env) -> String {
    env.dir.path().join("cert.pem").display().to_string()
}

#[test]
fn egress_allows_listed_names_and_denies_every_bypass() {
    if !netns::available("egress_allows_listed_names_and_denies_every_bypass")
        || !common::require_tool("egress", "curl")
        || !common::require_tool("egress", "openssl")
        || !common::require_tool("egress", "setpriv")
    {
        return;
    }
    let env = Env::start(&base_config(), true);
    let cacert = ca(&env);

    // Allowed: HTTPS through a CONNECT tunnel (real TLS end to end, no interception).
    let r = env.curl(None, &["--cacert", &cacert, "https://api.allowed.test/"]);
    assert_eq!((r.connect, r.http), (200, 200), "{r:?}");
    assert!(r.body.contains("s_server"), "{r:?}");
    // The CNAME www → api is followed by the resolver; the final address is what is checked.
    let r = env.curl(None, &["--cacert", &cacert, "https://www.allowed.test/"]);
    assert_eq!(r.http, 200, "{r:?}");
    // CONNECT to an allowed name with a TLS ClientHello for another name (shared CDN trick):
    // the SNI must name the CONNECT host.
    let r = env.curl(
        None,
        &[
            "--cacert",
            &cacert,
            "--connect-to",
            "other.test:443:api.allowed.test:443",
            "https://other.test/",
        ],
    );
    assert_eq!(r.connect, 200, "{r:?}");
    assert_ne!(r.http, 200, "SNI mismatch must not reach upstream: {r:?}");
    assert!(!r.body.contains("s_server"), "{r:?}");
    // Plain HTTP by absolute URI; the path and query reach upstream, the forged header does not.
    let r = env.curl(
        None,
        &["-i", "http://api.allowed.test/secret-path?token=abc123"],
    );
    assert_eq!(r.http, 200, "{r:?}");
    assert!(
        r.body.contains(
            "upstream method=GET host=api.allowed.test body=0 target=/secret-path?token=abc123"
        ),
        "{r:?}"
    );
    assert!(
        !r.body
            .to_ascii_lowercase()
            .contains("x-clawdlets-egress-error"),
        "forged header passed: {r:?}"
    );
    // Mixed case and a trailing dot normalise to the listed name.
    let r = env.curl(None, &["http://API.Allowed.TEST./"]);
    assert_eq!(r.http, 200, "{r:?}");
    // Squid `.allowed.test` includes the apex.
    assert_eq!(env.curl(None, &["http://allowed.test/"]).http, 200);
    // Request bodies: fixed length and chunked.
    let r = env.curl(
        None,
        &["--data-binary", "0123456789", "http://api.allowed.test/up"],
    );
    assert!(
        r.body.contains("method=POST") && r.body.contains("body=10"),
        "{r:?}"
    );
    let r = env.curl(
        None,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            "hello world",
            "http://api.allowed.test/c",
        ],
    );
    assert!(r.body.contains("body=11"), "{r:?}");
    // CONNECT to port 80 is allowed by the default port list.
    assert_eq!(
        env.curl(None, &["-p", "http://api.allowed.test/"]).http,
        200
    );
    // A listed IP literal inside an allowed range.
    assert_eq!(env.curl(None, &["http://198.51.100.10/"]).http, 200);

    // Denied, each with its reason, over both CONNECT and plain HTTP where it applies.
    let cases: &[(&[&str], u16, &str)] = &[
        (&["http://other.test/"], 403, "host-not-allowed"),
        (&["-p", "http://other.test/"], 403, "host-not-allowed"),
        (
            &["--cacert", &cacert, "https://other.test/"],
            403,
            "host-not-allowed",
        ),
        // `*.wild.test` excludes the apex.
        (&["http://wild.test/"], 403, "host-not-allowed"),
        (
            &["-p", "http://api.allowed.test:22/"],
            403,
            "port-not-allowed",
        ),
        (&["http://api.allowed.test:8443/"], 403, "port-not-allowed"),
        // Punycode look-alike (Cyrillic 'а').
        (&["http://xn--llowed-2nf.test/"], 403, "host-not-allowed"),
        (
            &["http://api.xn--llowed-2nf.test/"],
            403,
            "host-not-allowed",
        ),
        // Names that resolve to forbidden addresses, directly and through CNAME chains.
        (&["http://loop.allowed.test/"], 403, "destination-loopback"),
        (
            &["-p", "http://loop.allowed.test/"],
            403,
            "destination-loopback",
        ),
        (&["http://lan.allowed.test/"], 403, "destination-private"),
        (
            &["http://meta.allowed.test/"],
            403,
            "destination-cloud-metadata",
        ),
        (
            &["http://cname-loop.allowed.test/"],
            403,
            "destination-loopback",
        ),
        (
            &["-p", "http://cname-meta.allowed.test/"],
            403,
            "destination-cloud-metadata",
        ),
        (
            &["http://cname-lan.allowed.test/"],
            403,
            "destination-private",
        ),
        (&["http://mixed.allowed.test/"], 403, "destination-private"),
        (
            &["http://ula.allowed.test/"],
            403,
            "destination-unique-local",
        ),
        (&["http://nat64.allowed.test/"], 403, "destination-nat64"),
        (
            &["http://mapped.allowed.test/"],
            403,
            "destination-loopback",
        ),
        (&["http://cgnat.allowed.test/"], 403, "destination-cgnat"),
        (
            &["http://doc.allowed.test/"],
            403,
            "destination-documentation",
        ),
        // IP literals: unlisted, listed-but-metadata, and curl's normalised decimal form.
        (&["http://203.0.113.10/"], 403, "ip-literal-not-allowed"),
        (&["http://127.0.0.1/"], 403, "ip-literal-not-allowed"),
        (
            &["http://169.254.169.254/latest/meta-data/"],
            403,
            "destination-cloud-metadata",
        ),
        (&["http://2130706433/"], 403, "ip-literal-not-allowed"),
        (&["http://[::1]/"], 403, "ip-literal-not-allowed"),
        (
            &["-H", "Host: other.test", "http://api.allowed.test/"],
            403,
            "host-mismatch",
        ),
        (&["http://no-such-name.allowed.test/"], 502, "dns-failure"),
    ];
    for (args, status, reason) in cases {
        let r = env.curl(None, args);
        assert_eq!(
            (r.status(), r.reason.as_deref()),
            (*status, Some(*reason)),
            "{args:?}: {}",
            r.stderr
        );
        assert!(
            !r.body.contains("LOOPBACK-LEAK") && !r.body.contains("upstream"),
            "{args:?} reached a server"
        );
    }

    // Raw requests for spellings curl would clean up before sending.
    let raw_cases: &[(&str, &str)] = &[
        (
            "CONNECT 2130706433:80 HTTP/1.1\r\n\r\n",
            "403 Forbidden\r\nX-Clawdlets-Egress-Error: obfuscated-ip-literal",
        ),
        (
            "CONNECT 0x7f000001:80 HTTP/1.1\r\n\r\n",
            "obfuscated-ip-literal",
        ),
        (
            "CONNECT 0177.0.0.1:80 HTTP/1.1\r\n\r\n",
            "obfuscated-ip-literal",
        ),
        ("CONNECT 127.1:80 HTTP/1.1\r\n\r\n", "obfuscated-ip-literal"),
        (
            "GET http://0x7f.0.0.1/ HTTP/1.1\r\nHost: 0x7f.0.0.1\r\n\r\n",
            "obfuscated-ip-literal",
        ),
        (
            "CONNECT user@api.allowed.test:443 HTTP/1.1\r\n\r\n",
            "403 Forbidden\r\nX-Clawdlets-Egress-Error: userinfo",
        ),
        (
            "GET http://user:pw@api.allowed.test/ HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n",
            "userinfo",
        ),
        (
            "CONNECT api.allowed.test:443 HTTP/1.1\r\nHost: other.test:443\r\n\r\n",
            "host-mismatch",
        ),
        (
            "CONNECT api.allowed.test:443 HTTP/1.1\r\nHost: api.allowed.test:22\r\n\r\n",
            "host-mismatch",
        ),
        (
            "CONNECT [api.allowed.test]:443 HTTP/1.1\r\n\r\n",
            "400 Bad Request\r\nX-Clawdlets-Egress-Error: malformed-host",
        ),
        (
            "CONNECT [[api.allowed.test]]:443 HTTP/1.1\r\n\r\n",
            "malformed-host",
        ),
        (
            "CONNECT api.allowed.test%2e:443 HTTP/1.1\r\n\r\n",
            "malformed-host",
        ),
        (
            "CONNECT api.allowed.test..:443 HTTP/1.1\r\n\r\n",
            "malformed-host",
        ),
        (
            "CONNECT api.allowed.test HTTP/1.1\r\n\r\n",
            "malformed-request",
        ),
        (
            "GET / HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n",
            "not-a-proxy-request",
        ),
        (
            "GET https://api.allowed.test/ HTTP/1.1\r\n\r\n",
            "use-connect",
        ),
        (
            "GET http://api.allowed.test/ HTTP/1.1\r\nBad Header: x\r\n\r\n",
            "malformed-request",
        ),
        (
            "POST http://api.allowed.test/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "malformed-request",
        ),
        (
            "GET http://api.allowed.test/ HTTP/1.1\r\nHost: api.allowed.test\r\nHost: other.test\r\n\r\n",
            "malformed-request",
        ),
        (
            "GET http://api.allowed.test/ HTTP/1.1\r\nProxy-Authorization: Basic bm9ib2R5Onh4\r\n\r\n",
            "407 Proxy Authentication Required",
        ),
        (
            "\x16\x03\x01\x02\x00\x01\x00\x01\x03\x03\r\n\r\n",
            "malformed-request",
        ),
    ];
    for (req, want) in raw_cases {
        let resp = env.raw(req.as_bytes());
        assert!(resp.contains(want), "{req:?} → {resp}");
        assert!(
            !resp.contains("upstream") && !resp.contains("LOOPBACK"),
            "{req:?} reached a server: {resp}"
        );
    }
    // Oversized head.
    let big = format!(
        "GET http://api.allowed.test/ HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    assert!(env.raw(big.as_bytes()).contains(
        "431 Request Header Fields Too Large\r\nX-Clawdlets-Egress-Error: header-too-large"
    ));
    // Slow client: a head that never completes is cut off at the header deadline (1 s here).
    let t = Instant::now();
    let resp = env.raw(b"GET http://api.allowed.test/ HTTP/1.1\r\nX-Slow: ");
    assert!(
        resp.contains("408 Request Timeout") && resp.contains("header-timeout"),
        "{resp}"
    );
    assert!(t.elapsed() < Duration::from_secs(5));

    // A real Rust HTTP client: hyper-util's CONNECT tunnel connector, and hyper with an absolute URI.
    let name = env.client.name.clone();
    let rust = in_netns(&name, || {
        std::panic::catch_unwind(rust_clients).map_err(|e| format!("{e:?}"))
    });
    if let Err(e) = rust {
        let log: Vec<String> = env
            .log_text()
            .lines()
            .rev()
            .take(10)
            .map(str::to_string)
            .collect();
        panic!("rust clients failed: {e}\nlast log lines: {log:#?}");
    }

    // Idle tunnels are closed after idleTimeoutSecs (2 s here).
    let idle = in_netns(&name, || {
        let mut s = TcpStream::connect(PROXY).unwrap();
        s.write_all(b"CONNECT api.allowed.test:80 HTTP/1.1\r\nHost: api.allowed.test:80\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 39];
        s.read_exact(&mut buf).unwrap();
        assert!(buf.starts_with(b"HTTP/1.1 200"));
        let t = Instant::now();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let n = s.read(&mut [0u8; 16]).unwrap_or(0);
        (n, t.elapsed())
    });
    assert_eq!(idle.0, 0, "idle tunnel should be closed");
    assert!(
        idle.1 >= Duration::from_millis(1500) && idle.1 < Duration::from_secs(6),
        "{:?}",
        idle.1
    );

    // One decision line per request with bot/host/port/decision/reason, never the path or query.
    let decisions = env.decisions();
    let find = |host: &str, reason: &str| {
        decisions
            .iter()
            .any(|d| d["host"] == host && d["reason"] == reason && d["bot"] == "default")
    };
    assert!(find("other.test", "host-not-allowed"));
    assert!(find(
        "cname-meta.allowed.test",
        "destination-cloud-metadata"
    ));
    let allowed = decisions
        .iter()
        .find(|d| {
            d["host"] == "api.allowed.test"
                && d["decision"] == "allow"
                && d["kind"] == "connect"
                && d["port"] == 443
        })
        .expect("allow line for the HTTPS request");
    assert!(allowed["bytes_down"].as_u64().unwrap() > 1000, "{allowed}");
    assert!(allowed["bytes_up"].as_u64().unwrap() > 100, "{allowed}");
    assert!(allowed["duration_ms"].is_u64());
    let log = env.log_text();
    assert!(
        !log.contains("secret-path") && !log.contains("abc123"),
        "path or query leaked into the log"
    );

    let m = env.metrics();
    assert!(m.contains(r#"clawdlets_egress_requests_total{bot="default",kind="http",decision="deny",reason="host-not-allowed"}"#), "{m}");
    assert!(
        m.contains(r#"clawdlets_egress_bytes_total{bot="default",direction="down"}"#),
        "{m}"
    );
}

/// hyper-util's legacy client with its CONNECT `Tunnel` connector, and hyper's HTTP/1 client
/// sending an absolute-form request: allowed and denied, from inside the client namespace.
fn rust_clients() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::client::legacy::connect::proxy::Tunnel;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The Tunnel connector CONNECTs to port 443 unless the URI names another port.
        let tunnel = Tunnel::new(
            format!("http://{PROXY}").parse().unwrap(),
            HttpConnector::new(),
        );
        let client: Client<_, Empty<bytes::Bytes>> =
            Client::builder(TokioExecutor::new()).build(tunnel);
        let resp = client
            .get("http://api.allowed.test:8080/via-tunnel".parse().unwrap())
            .await
            .expect("tunnelled GET");
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("upstream method=GET host=api.allowed.test"),
            "{body:?}"
        );
        let denied = client.get("http://other.test:8080/".parse().unwrap()).await;
        assert!(denied.is_err(), "tunnel to an unlisted host must fail");

        for (uri, status, reason) in [
            ("http://www.allowed.test/abs", 200, None),
            ("http://other.test/abs", 403, Some("host-not-allowed")),
            (
                "http://meta.allowed.test/abs",
                403,
                Some("destination-cloud-metadata"),
            ),
        ] {
            let stream = tokio::net::TcpStream::connect(PROXY).await.unwrap();
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = http::Request::get(uri)
                .header("host", uri[7..].split('/').next().unwrap())
                .body(Empty::<bytes::Bytes>::new())
                .unwrap();
            let resp = send.send_request(req).await.unwrap();
            assert_eq!(resp.status(), status, "{uri}");
            assert_eq!(
                resp.headers()
                    .get("x-clawdlets-egress-error")
                    .map(|v| v.to_str().unwrap().to_string())
                    .as_deref(),
                reason,
                "{uri}"
            );
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            if status == 200 {
                assert!(
                    String::from_utf8_lossy(&body).contains("host=www.allowed.test"),
                    "{body:?}"
                );
            } else {
                assert!(
                    String::from_utf8_lossy(&body).contains("clawdlets egress proxy:"),
                    "{body:?}"
                );
            }
        }
    });
}

#[test]
fn egress_identifies_bots_by_peer_uid_and_proxy_auth() {
    if !netns::available("egress_identifies_bots_by_peer_uid_and_proxy_auth")
        || !common::require_tool("egress", "curl")
        || !common::require_tool("egress", "setpriv")
    {
        return;
    }
    let a = TestUser::create("ega", &[]);
    let b = TestUser::create("egb", &[]);
    let dir = common::tempdir();
    let pw = dir.path().join("bot-b.pw");
    std::fs::write(&pw, "test-only-password\n").unwrap();
    let config = serde_json::json!({
        "listen": [PROXY],
        "metricsListen": "127.0.0.1:9810",
        "allow": ["shared.test"],
        "allowRanges": ["198.51.100.0/24"],
        "limits": {"maxConnsPerBot": 2},
        "bots": {
            "bot-a": {"users": [a.name], "allow": ["bot-a.test"], "maxConns": 16},
            "bot-b": {"users": [b.uid], "allow": ["bot-b.test"], "passwordFile": pw, "inheritDefault": false, "maxConns": 16}
        }
    });
    let env = Env::start(&config, false);
    let get = |user: Option<&TestUser>, url: &str, extra: &[&str]| {
        let mut args: Vec<&str> = extra.to_vec();
        args.push(url);
        env.curl(user, &args)
    };
    // Each bot reaches its own list (plus the default list unless inheritDefault is false).
    assert_eq!(get(Some(&a), "http://bot-a.test/", &[]).http, 200);
    assert_eq!(get(Some(&a), "http://shared.test/", &[]).http, 200);
    let r = get(Some(&a), "http://bot-b.test/", &[]);
    assert_eq!(
        (r.http, r.reason.as_deref()),
        (403, Some("host-not-allowed"))
    );
    assert!(r.body.contains("bot 'bot-a'"), "{r:?}");
    assert_eq!(get(Some(&b), "http://bot-b.test/", &[]).http, 200);
    assert_eq!(get(Some(&b), "http://bot-a.test/", &[]).http, 403);
    assert_eq!(get(Some(&b), "http://shared.test/", &[]).http, 403);
    // CONNECT tunnels are identified the same way.
    assert_eq!(get(Some(&a), "http://bot-a.test/", &["-p"]).http, 200);
    assert_eq!(get(Some(&b), "http://bot-a.test/", &["-p"]).connect, 403);
    // Root maps to no bot: the default list only.
    assert_eq!(get(None, "http://shared.test/", &[]).http, 200);
    assert_eq!(get(None, "http://bot-a.test/", &[]).http, 403);
    // Proxy-Authorization is the fallback identity for callers no uid maps to...
    assert_eq!(
        get(
            None,
            "http://bot-b.test/",
            &["--proxy-user", "bot-b:test-only-password"]
        )
        .http,
        200
    );
    assert_eq!(
        get(
            None,
            "http://bot-b.test/",
            &["-p", "--proxy-user", "bot-b:test-only-password"]
        )
        .http,
        200
    );
    let r = get(None, "http://bot-b.test/", &["--proxy-user", "bot-b:wrong"]);
    assert_eq!(
        (r.http, r.reason.as_deref()),
        (407, Some("bad-credentials"))
    );
    // ...and cannot override what the kernel says about the connection.
    let r = get(
        Some(&a),
        "http://bot-b.test/",
        &["--proxy-user", "bot-b:test-only-password"],
    );
    assert_eq!(
        (r.http, r.reason.as_deref()),
        (403, Some("identity-conflict"))
    );

    let d = env.decisions();
    assert!(d.iter().any(|d| d["bot"] == "bot-a"
        && d["identity"] == "uid"
        && d["host"] == "bot-a.test"
        && d["decision"] == "allow"));
    assert!(
        d.iter().any(|d| d["bot"] == "bot-b"
            && d["identity"] == "proxy-auth"
            && d["decision"] == "allow")
    );
    assert!(
        !env.log_text().contains("test-only-password"),
        "password in log"
    );

    // maxConnsPerBot: the default bot (root) holds 2 slots, the third is refused, bots are not affected.
    let name = env.client.name.clone();
    let third = in_netns(&name, || {
        let held: Vec<TcpStream> = (0..2).map(|_| TcpStream::connect(PROXY).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(200));
        let mut s = TcpStream::connect(PROXY).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        drop(held);
        out
    });
    assert!(
        third.contains("429 Too Many Requests") && third.contains("too-many-connections"),
        "{third}"
    );
    assert_eq!(get(Some(&a), "http://bot-a.test/", &[]).http, 200);
}

#[test]
fn egress_reload_keeps_open_tunnels_and_rejects_bad_configs() {
    if !netns::available("egress_reload_keeps_open_tunnels_and_rejects_bad_configs")
        || !common::require_tool("egress", "curl")
    {
        return;
    }
    let mut config = base_config();
    config["limits"] = serde_json::json!({"idleTimeoutSecs": 60});
    let env = Env::start(&config, false);
    let name = env.client.name.clone();
    let connect = |host: &str| -> (TcpStream, String) {
        let req = format!("CONNECT {host}:80 HTTP/1.1\r\nHost: {host}:80\r\n\r\n");
        in_netns(&name, move || {
            let mut s = TcpStream::connect(PROXY).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            (s, String::from_utf8_lossy(&head).to_string())
        })
    };
    let (mut tunnel, head) = connect("api.allowed.test");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // New list without allowed.test; the open tunnel keeps working, new requests see the new list.
    let mut next = base_config();
    next["allow"] = serde_json::json!(["new.test"]);
    std::fs::write(&env.config, serde_json::to_vec(&next).unwrap()).unwrap();
    env.sighup();
    env.wait_for_log("\"generation\":2", Duration::from_secs(10));
    tunnel
        .write_all(
            b"GET /after-reload HTTP/1.1\r\nHost: api.allowed.test\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut out = String::new();
    tunnel.read_to_string(&mut out).unwrap();
    assert!(
        out.contains("upstream method=GET host=api.allowed.test"),
        "open tunnel broken by reload: {out}"
    );
    assert!(connect("api.allowed.test").1.starts_with("HTTP/1.1 403"));
    assert!(connect("new.test").1.starts_with("HTTP/1.1 200"));

    // A bad config is refused and the previous one stays in force.
    std::fs::write(&env.config, br#"{"allow": ["*bad.test"]}"#).unwrap();
    env.sighup();
    env.wait_for_log("keeping the previous config", Duration::from_secs(10));
    assert!(
        env.log_text().contains("*bad.test"),
        "reload error should name the entry"
    );
    assert!(connect("new.test").1.starts_with("HTTP/1.1 200"));
    assert!(
        env.metrics()
            .contains("clawdlets_egress_config_reloads_total{result=\"failed\"} 1")
    );

    // Report mode lets unlisted names through with a `report` decision; address checks still hold.
    next["mode"] = serde_json::json!("report");
    std::fs::write(&env.config, serde_json::to_vec(&next).unwrap()).unwrap();
    env.sighup();
    env.wait_for_log("\"generation\":3", Duration::from_secs(10));
    let r = env.curl(None, &["http://other.test/"]);
    assert_eq!(r.http, 200, "{r:?}");
    let r = env.curl(None, &["http://loop.allowed.test/"]);
    assert_eq!(
        (r.http, r.reason.as_deref()),
        (403, Some("destination-loopback"))
    );
    assert!(env.decisions().iter().any(|d| d["host"] == "other.test"
        && d["decision"] == "report"
        && d["reason"] == "host-not-allowed"));
}

#[test]
fn egress_check_config_names_bad_entries() {
    let dir = common::tempdir();
    let check = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let out = common::run(
            common::clawdlets(dir.path())
                .args(["egress-proxy", "--check-config", "--json", "--config"])
                .arg(&p),
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (code, stdout, _) = check(
        "ok.toml",
        "allow = [\".example.com\", \"*.api.test\"]\nports = [443]\n[bots.maren]\nusers = [4242]\nallow = [\"discord.com\"]\n",
    );
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["bots"][0]["name"], "maren");
    assert_eq!(v["ports"], serde_json::json!([443]));
    for (file, text, needle) in [
        (
            "listen.json",
            r#"{"listen": ["0.0.0.0:3128"]}"#,
            "not a loopback address",
        ),
        (
            "metrics.json",
            r#"{"metricsListen": "10.0.0.1:9810"}"#,
            "metricsListen",
        ),
        (
            "pattern.json",
            r#"{"allow": ["ok.test", "a.*.test"]}"#,
            "allow[1]",
        ),
        ("star.json", r#"{"allow": ["*"]}"#, "bare wildcard"),
        ("unknown.json", r#"{"allowed": []}"#, "unknown field"),
        (
            "range.json",
            r#"{"allowRanges": ["::ffff:0:0/96"]}"#,
            "allowRanges[0]",
        ),
        ("ext.yaml", "allow: []", "*.toml or *.json"),
    ] {
        let (code, _, stderr) = check(file, text);
        assert_eq!(code, Some(2), "{file}: {stderr}");
        assert!(stderr.contains(needle), "{file}: {stderr}");
    }
    let out = common::run(common::clawdlets(dir.path()).args([
        "egress-proxy",
        "--check-config",
        "--listen",
        "0.0.0.0:1",
    ]));
    assert_eq!(out.status.code(), Some(2));
}
