//! Egress proxy benchmark, all in one run on loopback (see docs/PERFORMANCE.md, `## egress proxy`):
//! 1. bulk throughput of one CONNECT tunnel vs a direct TCP connection (1 GiB by default);
//! 2. new-connection rate (CONNECT + 200 + upstream greeting + close) vs Debian's tinyproxy
//!    with `FilterDefaultDeny Yes` and an equivalent one-entry filter;
//! 3. allowlist lookup cost at 10, 100, 1,000 and 10,000 entries.
//!
//! The proxy runs in its own process (this binary re-executed with `--serve-proxy`), with a bot
//! mapped to the current uid so every connection pays for the sock_diag identity lookup, and
//! with info-level decision logging to a file, as in production.
//! Knobs: EGRESS_BENCH_BYTES, EGRESS_BENCH_SECS, EGRESS_BENCH_CONC, EGRESS_BENCH_RUNS, and
//! EGRESS_BENCH_ONLY=lookup|tunnel|rate to run one part (for profiling).

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use clawdlets::egress::allowlist::{AllowList, normalize_host, parse_pattern};

#[derive(Parser)]
struct ServeProxy {
    #[command(flatten)]
    args: clawdlets::egress::EgressArgs,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--serve-proxy") {
        let p = ServeProxy::parse_from(
            std::iter::once("proxy".to_string()).chain(argv[2..].iter().cloned()),
        );
        clawdlets::logging::init(clawdlets::logging::LogFormat::Json, 1);
        let _ = clawdlets::egress::run(p.args);
        return;
    }
    if argv.get(1).map(String::as_str) == Some("--serve-source") {
        // The upstream inside the link namespace (see `Link`): address and byte count.
        serve_source(
            TcpListener::bind(&argv[2]).unwrap(),
            argv[3].parse().unwrap(),
        );
        return;
    }
    let bytes = env_u64("EGRESS_BENCH_BYTES", 1 << 30);
    let secs = env_u64("EGRESS_BENCH_SECS", 5);
    let conc = env_u64("EGRESS_BENCH_CONC", 16) as usize;
    let runs = env_u64("EGRESS_BENCH_RUNS", 3);
    let only = std::env::var("EGRESS_BENCH_ONLY").unwrap_or_default();
    let part = |name: &str| only.is_empty() || only == name;
    let dir = tempfile::Builder::new()
        .prefix("egress-bench-")
        .tempdir()
        .unwrap();

    println!(
        "# egress proxy benchmark ({} MiB per transfer, {runs} runs; {secs} s x {conc} clients for the connection rate)",
        bytes >> 20
    );
    println!();
    if part("lookup") {
        lookup_bench();
    }
    if !part("tunnel") && !part("rate") {
        return;
    }

    // Upstreams: a bulk source and a greeter.
    let source = TcpListener::bind("127.0.0.1:0").unwrap();
    let source_port = source.local_addr().unwrap().port();
    std::thread::spawn(move || serve_source(source, bytes));
    let link = if part("tunnel") {
        Link::create(bytes)
    } else {
        Err("not measured".into())
    };
    let greet = TcpListener::bind("127.0.0.1:0").unwrap();
    let greet_port = greet.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in greet.incoming().flatten() {
            let _ = c.write_all(b"ok\n");
        }
    });

    // Our proxy, in its own process.
    let proxy_port = free_port();
    let uid = nix::unistd::geteuid().as_raw();
    let cfg = dir.path().join("egress.json");
    std::fs::write(
        &cfg,
        format!(r#"{{"metricsListen": "off", "allow": ["localhost", "{LINK_ADDR}"], "allowRanges": ["127.0.0.0/8", "::1/128", "{LINK_ADDR}/32"], "limits": {{"maxConnsPerBot": 4096}}, "bots": {{"bench": {{"users": [{uid}]}}}}}}"#),
    )
    .unwrap();
    let exe = std::env::current_exe().unwrap();
    let proxy = Command::new(&exe)
        .arg("--serve-proxy")
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{proxy_port}"),
        ])
        .args([
            "--port",
            &source_port.to_string(),
            "--port",
            &greet_port.to_string(),
            "--port",
            &LINK_PORT.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("proxy.log")).unwrap())
        .spawn()
        .expect("start proxy");
    // Children are killed when the guard drops, also when a measurement panics.
    let proxy_pid = proxy.id();
    let _proxy = KillOnDrop(proxy);
    if !port_opens("127.0.0.1", proxy_port) {
        panic!(
            "proxy did not start: {}",
            std::fs::read_to_string(dir.path().join("proxy.log")).unwrap_or_default()
        );
    }

    // tinyproxy with its filter on: default deny, ERE entries for the two upstream hosts, CONNECT
    // only to the upstream ports.
    let tiny = start_tinyproxy(dir.path(), greet_port, source_port);
    let relay_port = start_reference_relay();

    if part("tunnel") {
        tunnel_bench(&TunnelBench {
            runs,
            bytes,
            proxy_port,
            relay_port,
            proxy_pid,
            tiny: tiny.as_ref().map(|t| (t.0, t.1.0.id())),
            local: Upstream {
                host: "localhost",
                port: source_port,
            },
            link: link.as_ref().ok(),
        });
        if let Err(why) = &link {
            println!("The veth link columns are missing: {why}.");
            println!();
        }
    }
    if !part("rate") {
        return;
    }
    println!("## New connections per second ({conc} concurrent clients, {secs} s each)");
    println!();
    let ours = conn_rate(proxy_port, greet_port, conc, Duration::from_secs(secs));
    println!("| proxy | connections/s | failures |\n|---|---|---|");
    println!(
        "| clawdlets egress-proxy (sock_diag identity, decision log) | {:.0} | {} |",
        ours.0, ours.1
    );
    if let Some((port, _)) = &tiny {
        let theirs = conn_rate(*port, greet_port, conc, Duration::from_secs(secs));
        println!(
            "| tinyproxy {} (FilterDefaultDeny, ERE filter) | {:.0} | {} |",
            tinyproxy_version(),
            theirs.0,
            theirs.1
        );
        println!();
        println!("clawdlets / tinyproxy = {:.2}x", ours.0 / theirs.0.max(1.0));
    } else {
        println!();
        println!(
            "tinyproxy not installed: no comparison (scripts/install-test-deps.sh installs it)"
        );
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn port_opens(host: &str, port: u16) -> bool {
    let t = Instant::now();
    while TcpStream::connect((host, port)).is_err() {
        if t.elapsed() > Duration::from_secs(20) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn best(runs: u64, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs.max(1)).map(|_| f()).min().unwrap()
}

/// A bulk upstream: sends `bytes` of filler to every connection.
fn serve_source(listener: TcpListener, bytes: u64) {
    for c in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let mut c = c;
            let _ = c.set_nodelay(true);
            let buf = vec![0x5au8; 256 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                if c.write_all(&buf[..n]).is_err() {
                    return;
                }
                left -= n as u64;
            }
        });
    }
}

/// The link upstream's address (RFC 2544 benchmarking range) and port, inside its namespace.
const LINK_ADDR: &str = "198.18.0.2";
const LINK_PORT: u16 = 9000;
/// The rate of the shaped link: faster than the uplink of any cloud VM a bot runs on.
const LINK_RATE: &str = "10gbit";
const LINK_RATE_LABEL: &str = "10 Gbit/s";

/// An upstream behind a veth pair in its own network namespace, as a server behind a NIC is:
/// the bulk source runs in there (this binary with `--serve-source`). Loopback is the
/// worst case for a relay (every hop is a memcpy on the same two cores); the link shows the
/// proxy on a path that is not the CPU itself. Needs root, `ip` and `tc` with tbf.
struct Link {
    ns: String,
    ns_if: String,
    source: Option<KillOnDrop>,
}

impl Link {
    fn create(bytes: u64) -> Result<Link, String> {
        if !nix::unistd::geteuid().is_root() {
            return Err("they need root (network namespaces)".into());
        }
        let id = std::process::id() % 100_000;
        let ns = format!("clf-bench-{id}");
        let (host_if, ns_if) = (format!("cbh{id}"), format!("cbn{id}"));
        let ip = |args: &[&str]| run_tool("ip", args);
        ip(&["netns", "add", &ns])?;
        // From here on, Drop deletes the namespace and with it the veth pair.
        let mut link = Link {
            ns: ns.clone(),
            ns_if: ns_if.clone(),
            source: None,
        };
        let host_addr = "198.18.0.1/30";
        let ns_addr = format!("{LINK_ADDR}/30");
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if, "netns", &ns,
        ])?;
        ip(&["addr", "add", host_addr, "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        ip(&["-n", &ns, "addr", "add", &ns_addr, "dev", &ns_if])?;
        ip(&["-n", &ns, "link", "set", &ns_if, "up"])?;
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        let exe = std::env::current_exe().unwrap();
        link.source = Some(KillOnDrop(
            Command::new("ip")
                .args(["netns", "exec", &ns])
                .arg(exe)
                .args(["--serve-source", &format!("0.0.0.0:{LINK_PORT}")])
                .arg(bytes.to_string())
                .spawn()
                .map_err(|e| format!("ip netns exec: {e}"))?,
        ));
        if !port_opens(LINK_ADDR, LINK_PORT) {
            return Err("the source in the namespace did not start".into());
        }
        link.shape(None)?;
        Ok(link)
    }

    /// Sets the rate of the namespace side's egress (the download direction); None = unshaped.
    fn shape(&self, rate: Option<&str>) -> Result<(), String> {
        let mut args = vec![
            "-n",
            &self.ns,
            "qdisc",
            "replace",
            "dev",
            &self.ns_if,
            "root",
        ];
        match rate {
            None => args.push("pfifo_fast"),
            Some(r) => args.extend(["tbf", "rate", r, "burst", "2mb", "latency", "50ms"]),
        }
        run_tool("tc", &args)
    }
}

/// Runs a setup tool; its stderr becomes the error.
fn run_tool(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        drop(self.source.take());
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// The smallest relay there is, as a reference floor: two blocking threads per tunnel, each
/// splicing socket -> pipe -> socket, no limits, no identity, no logging. Runs in this process.
fn start_reference_relay() -> u16 {
    use std::os::fd::AsRawFd;
    fn pump(from: &TcpStream, to: &TcpStream) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // SAFETY: plain fcntl/splice calls on fds owned by this frame.
        unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        let splice = |a: i32, b: i32, len: usize| unsafe {
            libc::splice(
                a,
                std::ptr::null_mut(),
                b,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE,
            )
        };
        loop {
            let n = splice(from.as_raw_fd(), w.as_raw_fd(), 1 << 20);
            if n <= 0 {
                let _ = to.shutdown(std::net::Shutdown::Write);
                return;
            }
            let mut left = n as usize;
            while left > 0 {
                let m = splice(r.as_raw_fd(), to.as_raw_fd(), left);
                if m <= 0 {
                    return;
                }
                left -= m as usize;
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(head) = read_head(&mut c) else { return };
                let target = head
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_string();
                let Ok(u) = TcpStream::connect(target) else {
                    return;
                };
                if c.write_all(b"HTTP/1.1 200 OK\r\n\r\n").is_err() {
                    return;
                }
                let (c2, u2) = (c.try_clone().unwrap(), u.try_clone().unwrap());
                let up = std::thread::spawn(move || pump(&c2, &u2));
                pump(&u, &c);
                let _ = up.join();
            });
        }
    });
    port
}

/// Reads an HTTP head byte by byte (so nothing after it is consumed).
fn read_head(s: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::with_capacity(128);
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            return Err(std::io::Error::other(
                "peer closed before the end of the head",
            ));
        }
        head.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// A transfer's far end: a name the proxy resolves (or an address) and a port.
#[derive(Clone, Copy)]
struct Upstream<'a> {
    host: &'a str,
    port: u16,
}

fn connect_via(proxy_port: u16, to: Upstream) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", proxy_port))?;
    s.set_nodelay(true)?;
    let target = format!("{}:{}", to.host, to.port);
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n")?;
    let head = read_head(&mut s)?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(std::io::Error::other(head));
    }
    Ok(s)
}

/// Reads `bytes` from the upstream, directly or through a proxy tunnel.
fn transfer(to: Upstream, via: Option<u16>, bytes: u64) -> Duration {
    let t = Instant::now();
    let mut s = match via {
        None => TcpStream::connect((to.host, to.port)).unwrap(),
        Some(proxy) => connect_via(proxy, to).expect("tunnel"),
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < bytes {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "stream ended after {got} bytes");
        got += n as u64;
    }
    t.elapsed()
}

struct TunnelBench<'a> {
    runs: u64,
    bytes: u64,
    proxy_port: u16,
    relay_port: u16,
    proxy_pid: u32,
    /// tinyproxy's port and pid.
    tiny: Option<(u16, u32)>,
    local: Upstream<'a>,
    link: Option<&'a Link>,
}

/// Throughput table: a column per path (loopback; veth unshaped; veth at LINK_RATE), a row per
/// way through; every cell is the best of `runs`.
fn tunnel_bench(b: &TunnelBench) {
    let remote = Upstream {
        host: LINK_ADDR,
        port: LINK_PORT,
    };
    let mut columns: Vec<(String, Upstream, Option<&str>)> =
        vec![("loopback".into(), b.local, None)];
    if b.link.is_some() {
        columns.push(("veth, unshaped".into(), remote, None));
        columns.push((
            format!("veth at {LINK_RATE_LABEL} (tbf)"),
            remote,
            Some(LINK_RATE),
        ));
    }
    // (name, proxy port, pid of the proxy process whose CPU time is counted)
    let mut rows: Vec<(String, Option<u16>, Option<u32>)> = vec![
        ("direct TCP".into(), None, None),
        (
            "clawdlets CONNECT tunnel".into(),
            Some(b.proxy_port),
            Some(b.proxy_pid),
        ),
        (
            "reference: minimal blocking splice relay".into(),
            Some(b.relay_port),
            None,
        ),
    ];
    if let Some((port, pid)) = b.tiny {
        rows.push(("tinyproxy CONNECT tunnel".into(), Some(port), Some(pid)));
    }
    let mut cells = vec![vec![Duration::ZERO; columns.len()]; rows.len()];
    // CPU seconds the proxy process spent per GiB moved, on loopback (column 0).
    let mut cpu_per_gib = vec![None; rows.len()];
    for (c, (_, to, rate)) in columns.iter().enumerate() {
        if let Some(link) = b.link {
            link.shape(*rate).expect("shape the link");
        }
        for (r, (_, via, pid)) in rows.iter().enumerate() {
            let cpu0 = pid.map(process_cpu);
            cells[r][c] = best(b.runs, || transfer(*to, *via, b.bytes));
            if c == 0
                && let (Some(pid), Some(cpu0)) = (pid, cpu0)
            {
                let gib = (b.runs.max(1) * b.bytes) as f64 / (1u64 << 30) as f64;
                cpu_per_gib[r] = Some((process_cpu(*pid) - cpu0) / gib);
            }
        }
    }
    if let Some(link) = b.link {
        let _ = link.shape(None);
    }
    let gbps = |d: Duration| b.bytes as f64 * 8.0 / d.as_secs_f64() / 1e9;
    println!(
        "## CONNECT tunnel throughput (download of {} MiB, Gbit/s, best of {})",
        b.bytes >> 20,
        b.runs
    );
    println!();
    let names: Vec<&str> = columns.iter().map(|c| c.0.as_str()).collect();
    println!("| path | {} |", names.join(" | "));
    println!("|---|{}", "---|".repeat(columns.len()));
    for (r, (name, _, _)) in rows.iter().enumerate() {
        let v: Vec<String> = cells[r]
            .iter()
            .map(|d| format!("{:.2}", gbps(*d)))
            .collect();
        println!("| {name} | {} |", v.join(" | "));
    }
    let ratio = |r: usize| -> Vec<String> {
        (0..columns.len())
            .map(|c| {
                format!(
                    "{:.1} %",
                    100.0 * cells[0][c].as_secs_f64() / cells[r][c].as_secs_f64()
                )
            })
            .collect()
    };
    println!(
        "| **clawdlets tunnel / direct** | {} |",
        ratio(1).join(" | ")
    );
    println!("| reference relay / direct | {} |", ratio(2).join(" | "));
    println!();
    println!("Proxy process CPU time per GiB moved (loopback column, user + system):");
    println!();
    for (r, (name, _, _)) in rows.iter().enumerate() {
        if let Some(cpu) = cpu_per_gib[r] {
            println!("- {name}: {:.0} ms/GiB", cpu * 1e3);
        }
    }
    println!();
}

/// User + system CPU seconds of a process (all its threads), from /proc/<pid>/stat.
fn process_cpu(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    f.iter().sum::<u64>() as f64 / hz
}

/// Full CONNECT cycles per second: connect, CONNECT, 200, upstream greeting, close.
fn conn_rate(proxy_port: u16, greet_port: u16, conc: usize, dur: Duration) -> (f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let workers: Vec<_> = (0..conc)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let r = connect_via(
                        proxy_port,
                        Upstream {
                            host: "localhost",
                            port: greet_port,
                        },
                    )
                    .and_then(|mut s| {
                        let mut g = [0u8; 3];
                        s.read_exact(&mut g)?;
                        if &g != b"ok\n" {
                            return Err(std::io::Error::other("bad greeting"));
                        }
                        Ok(())
                    });
                    match r {
                        Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    (
        ok.load(Ordering::Relaxed) as f64 / t.elapsed().as_secs_f64(),
        failed.load(Ordering::Relaxed),
    )
}

fn tinyproxy_version() -> String {
    Command::new("tinyproxy")
        .arg("-v")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .trim_start_matches("tinyproxy ")
                .to_string()
        })
        .unwrap_or_default()
}

fn start_tinyproxy(
    dir: &std::path::Path,
    greet_port: u16,
    source_port: u16,
) -> Option<(u16, KillOnDrop)> {
    let bin = ["/usr/bin/tinyproxy", "/usr/sbin/tinyproxy"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())?;
    let port = free_port();
    let filter = dir.join("filter");
    std::fs::write(
        &filter,
        format!("^localhost$\n^{}$\n", LINK_ADDR.replace('.', "\\.")),
    )
    .unwrap();
    let conf = dir.join("tinyproxy.conf");
    let log = dir.join("tinyproxy.log");
    std::fs::write(&log, "").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        &conf,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 256\nAllow 127.0.0.1\nLogFile \"{}\"\nLogLevel Info\n\
             Filter \"{}\"\nFilterType ere\nFilterDefaultDeny Yes\nConnectPort {greet_port}\nConnectPort {source_port}\nConnectPort {LINK_PORT}\nDisableViaHeader Yes\n",
            log.display(),
            filter.display()
        ),
    )
    .unwrap();
    let child = KillOnDrop(
        Command::new(bin)
            .args(["-d", "-c"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?,
    );
    if !port_opens("127.0.0.1", port) {
        eprintln!(
            "tinyproxy did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        return None;
    }
    Some((port, child))
}

/// Lookup cost against list size: the matcher walks the labels of the name, not the list.
fn lookup_bench() {
    println!("## Allowlist lookup cost");
    println!();
    println!("| entries | match (ns/lookup) | normalise + match (ns/lookup) |\n|---|---|---|");
    for n in [10usize, 100, 1_000, 10_000] {
        let mut list = AllowList::new();
        for i in 0..n {
            let p = match i % 3 {
                0 => format!("svc{i}.example{}.com", i % 50),
                1 => format!("*.svc{i}.corp.net"),
                _ => format!(".svc{i}.org"),
            };
            list.insert(&parse_pattern(&p).unwrap());
        }
        // Half hits, half misses, 3-5 labels each.
        let names: Vec<String> = (0..1024)
            .map(|k| {
                let i = (k * 7919) % n;
                match k % 4 {
                    0 => format!("svc{i}.example{}.com", i % 50),
                    1 => format!("api.eu.svc{i}.corp.net"),
                    2 => format!("cdn.unknown{k}.io"),
                    _ => format!("a.b.svc{i}.evil.org"),
                }
            })
            .collect();
        let iters = 2_000_000;
        let t = Instant::now();
        let mut hits = 0u64;
        for k in 0..iters {
            hits += list.matches_name(black_box(&names[k & 1023])) as u64;
        }
        let plain = t.elapsed().as_nanos() as f64 / iters as f64;
        let t = Instant::now();
        for k in 0..iters / 4 {
            if let Ok(h) = normalize_host(black_box(&names[k & 1023])) {
                hits += list.matches(&h) as u64;
            }
        }
        let full = t.elapsed().as_nanos() as f64 / (iters / 4) as f64;
        black_box(hits);
        println!("| {n} | {plain:.1} | {full:.1} |");
    }
    println!();
}
