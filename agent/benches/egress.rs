//! Egress proxy benchmark, all in one run on loopback (see docs/PERFORMANCE.md, `## egress proxy`):
//! 1. bulk throughput of one CONNECT tunnel vs a direct TCP connection (1 GiB by default);
//! 2. new-connection rate (CONNECT + 200 + upstream greeting + close) vs Debian's tinyproxy
//!    with `FilterDefaultDeny Yes` and an equivalent one-entry filter;
//! 3. allowlist lookup cost at 10, 100, 1,000 and 10,000 entries.
//!
//! The proxy runs in its own process (this binary re-executed with `--serve-proxy`), with a bot
//! mapped to the current uid so every connection pays for the sock_diag identity lookup, and
//! with info-level decision logging to a file, as in production.
//! Knobs: EGRESS_BENCH_BYTES, EGRESS_BENCH_SECS, EGRESS_BENCH_CONC, EGRESS_BENCH_RUNS.

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
    let bytes = env_u64("EGRESS_BENCH_BYTES", 1 << 30);
    let secs = env_u64("EGRESS_BENCH_SECS", 5);
    let conc = env_u64("EGRESS_BENCH_CONC", 16) as usize;
    let runs = env_u64("EGRESS_BENCH_RUNS", 3);
    let dir = tempfile::Builder::new()
        .prefix("egress-bench-")
        .tempdir()
        .unwrap();

    println!(
        "# egress proxy benchmark ({} MiB per transfer, {runs} runs; {secs} s x {conc} clients for the connection rate)",
        bytes >> 20
    );
    println!();
    lookup_bench();

    // Upstreams: a bulk source and a greeter.
    let source = TcpListener::bind("127.0.0.1:0").unwrap();
    let source_port = source.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in source.incoming().flatten() {
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
    });
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
        format!(r#"{{"metricsListen": "off", "allow": ["localhost"], "allowRanges": ["127.0.0.0/8", "::1/128"], "limits": {{"maxConnsPerBot": 4096}}, "bots": {{"bench": {{"users": [{uid}]}}}}}}"#),
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
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("proxy.log")).unwrap())
        .spawn()
        .expect("start proxy");
    // Children are killed when the guard drops, also when a measurement panics.
    let _proxy = KillOnDrop(proxy);
    if !port_opens(proxy_port) {
        panic!(
            "proxy did not start: {}",
            std::fs::read_to_string(dir.path().join("proxy.log")).unwrap_or_default()
        );
    }

    // tinyproxy with its filter on: default deny, one ERE entry, CONNECT only to the two ports.
    let tiny = start_tinyproxy(dir.path(), greet_port, source_port);

    println!("## CONNECT tunnel throughput (download, best of {runs})");
    println!();
    let direct = best(runs, || transfer(source_port, None, bytes));
    let tunnel = best(runs, || transfer(proxy_port, Some(source_port), bytes));
    let gbps = |d: Duration| bytes as f64 * 8.0 / d.as_secs_f64() / 1e9;
    println!("| path | time | throughput |\n|---|---|---|");
    println!(
        "| direct TCP | {:.3} s | {:.2} Gbit/s |",
        direct.as_secs_f64(),
        gbps(direct)
    );
    println!(
        "| clawdlets CONNECT tunnel | {:.3} s | {:.2} Gbit/s |",
        tunnel.as_secs_f64(),
        gbps(tunnel)
    );
    if let Some((port, _)) = &tiny {
        let t = best(runs, || transfer(*port, Some(source_port), bytes));
        println!(
            "| tinyproxy CONNECT tunnel | {:.3} s | {:.2} Gbit/s |",
            t.as_secs_f64(),
            gbps(t)
        );
    }
    println!();
    println!(
        "tunnel / direct = {:.1} %",
        100.0 * direct.as_secs_f64() / tunnel.as_secs_f64()
    );
    println!();

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

fn port_opens(port: u16) -> bool {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
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

fn connect_via(proxy_port: u16, target_port: u16) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(("127.0.0.1", proxy_port))?;
    s.set_nodelay(true)?;
    write!(
        s,
        "CONNECT localhost:{target_port} HTTP/1.1\r\nHost: localhost:{target_port}\r\n\r\n"
    )?;
    let mut head = Vec::with_capacity(128);
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b)? == 0 {
            return Err(std::io::Error::other("proxy closed"));
        }
        head.push(b[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&head).to_string(),
        ));
    }
    Ok(s)
}

/// Reads `bytes` from the source, directly or through a proxy tunnel.
fn transfer(port: u16, via: Option<u16>, bytes: u64) -> Duration {
    let t = Instant::now();
    let mut s = match via {
        None => TcpStream::connect(("127.0.0.1", port)).unwrap(),
        Some(target) => connect_via(port, target).expect("tunnel"),
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
                    let r = connect_via(proxy_port, greet_port).and_then(|mut s| {
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
    std::fs::write(&filter, "^localhost$\n").unwrap();
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
             Filter \"{}\"\nFilterType ere\nFilterDefaultDeny Yes\nConnectPort {greet_port}\nConnectPort {source_port}\nDisableViaHeader Yes\n",
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
    if !port_opens(port) {
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
