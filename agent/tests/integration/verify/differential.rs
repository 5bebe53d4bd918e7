//! Differential testing of the nft evaluator against the kernel: load a ruleset into a target
//! namespace, fire real TCP SYNs and UDP datagrams in and out over veth pairs named eth0 and
//! tailscale0, observe what the kernel did, and require the evaluator's prediction to equal it
//! for every probe. Several namespace pairs work in parallel to keep this fast.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clawdlets::verify::nft::flow::{self, Probe, Seen};
use clawdlets::verify::nft::{self as nft};
use rand::SeedableRng;

use super::rulesets;
use crate::common::netns::{self, Netns};
use crate::common::probe::{self, Listeners, Observed};

const PORTS: &[u16] = &[22, 25, 80, 443, 587, 2525, 8080, 41641];
const TIMEOUT: Duration = Duration::from_millis(400);

struct Iface {
    name: &'static str,
    host: [&'static str; 2],
    peer: [&'static str; 2],
}

const IFACES: [Iface; 2] = [
    Iface {
        name: "eth0",
        host: ["203.0.113.1", "2001:db8:1::1"],
        peer: ["203.0.113.2", "2001:db8:1::2"],
    },
    Iface {
        name: "tailscale0",
        host: ["100.64.0.1", "fd7a:115c:a1e0::1"],
        peer: ["100.64.0.2", "fd7a:115c:a1e0::2"],
    },
];

/// A target namespace (rulesets go here) wired to a peer namespace by two veth pairs.
struct Lab {
    target: Netns,
    peer: Netns,
    _target_listen: Listeners,
    peer_listen: Listeners,
    target_seen: std::sync::Arc<Mutex<std::collections::HashSet<u64>>>,
}

impl Lab {
    fn new() -> Lab {
        let target = Netns::create("vt");
        let peer = Netns::create("vp");
        for (k, i) in IFACES.iter().enumerate() {
            let peer_if = format!("p{k}");
            netns::link(
                &target,
                i.name,
                &format!("{}/24", i.host[0]),
                &peer,
                &peer_if,
                &format!("{}/24", i.peer[0]),
            );
            let (hmac, pmac) = (
                format!("02:00:00:00:0{k}:01"),
                format!("02:00:00:00:0{k}:02"),
            );
            target.ip(&["link", "set", i.name, "address", &hmac]);
            peer.ip(&["link", "set", &peer_if, "address", &pmac]);
            target.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{}/64", i.host[1]),
                "dev",
                i.name,
                "nodad",
            ]);
            peer.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{}/64", i.peer[1]),
                "dev",
                &peer_if,
                "nodad",
            ]);
            // Static neighbours: rulesets that drop ICMPv6 or ARP-less paths must not break
            // delivery for reasons the evaluator does not model (neighbour discovery).
            for (ns, dev, addr, mac) in [
                (&target, i.name, i.peer[1], &pmac),
                (&peer, peer_if.as_str(), i.host[1], &hmac),
                (&target, i.name, i.peer[0], &pmac),
                (&peer, peer_if.as_str(), i.host[0], &hmac),
            ] {
                ns.ip(&[
                    "neigh",
                    "replace",
                    addr,
                    "lladdr",
                    mac,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ]);
            }
        }
        // ICMP error rate limits are runtime state, not ruleset semantics: switch them off so
        // every reject answers (the evaluator assumes an answer is sent).
        for ns in [&target, &peer] {
            crate::common::run_ok(ns.cmd("sysctl").args([
                "-qw",
                "net.ipv4.icmp_ratelimit=0",
                "net.ipv6.icmp.ratelimit=0",
                "net.ipv4.icmp_msgs_per_sec=100000",
                "net.ipv4.icmp_msgs_burst=100000",
            ]));
        }
        let tl = Listeners::start(&target, PORTS);
        let pl = Listeners::start(&peer, PORTS);
        let target_seen = tl.udp_seen.clone();
        Lab {
            target,
            peer,
            _target_listen: tl,
            peer_listen: pl,
            target_seen,
        }
    }

    /// Loads `text` and returns the ruleset as the kernel lists it (JSON, and the netlink
    /// bytecode listing the evaluator uses for what the JSON hides).
    fn load(&self, text: &str) -> Result<(String, String), String> {
        let out = self.target.load_nft(text);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let out = crate::common::run(self.target.cmd("nft").args(["-j", "list", "ruleset"]));
        let json = String::from_utf8(out.stdout).unwrap();
        let out =
            crate::common::run(
                self.target
                    .cmd("nft")
                    .args(["--debug=netlink", "list", "ruleset"]),
            );
        let netlink = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        Ok((json, netlink))
    }
}

#[derive(Default)]
struct Stats {
    rulesets: AtomicUsize,
    probes: AtomicUsize,
    inconclusive: AtomicUsize,
    load_errors: AtomicUsize,
    /// Rulesets whose listing needed the bytecode (hidden `meta nfproto`).
    bytecode: AtomicUsize,
    /// Probes that disagreed once and agreed when sent again.
    rechecked: AtomicUsize,
    mismatches: Mutex<Vec<String>>,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// Probes one loaded ruleset in every direction, protocol, interface, family and port.
fn compare(lab: &Lab, name: &str, text: &str, (json, netlink): (&str, &str), stats: &Stats) {
    let mut rs =
        nft::parse(json).unwrap_or_else(|e| panic!("{name}: nft JSON does not parse: {e}"));
    if nft::bytecode::needs_bytecode(&rs) {
        stats.bytecode.fetch_add(1, Ordering::Relaxed);
        nft::bytecode::apply(&mut rs, Some(netlink));
    }
    let mut meta = Vec::new();
    let mut flights = Vec::new();
    for inbound in [true, false] {
        for i in &IFACES {
            for fam in 0..2 {
                let host: IpAddr = i.host[fam].parse().unwrap();
                let peer: IpAddr = i.peer[fam].parse().unwrap();
                for &port in PORTS {
                    for tcp in [true, false] {
                        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) as u64;
                        let f = if inbound {
                            probe::start(&lab.peer, tcp, peer, SocketAddr::new(host, port), id)
                        } else {
                            probe::start(&lab.target, tcp, host, SocketAddr::new(peer, port), id)
                        };
                        meta.push(Probe {
                            inbound,
                            iface: i.name.to_string(),
                            l4proto: if tcp { nft::eval::TCP } else { nft::eval::UDP },
                            host_addr: host,
                            peer_addr: peer,
                            client_port: f.client_port,
                            server_port: port,
                            host_uid: Some(0),
                        });
                        flights.push(f);
                    }
                }
            }
        }
    }
    let seen = probe::finish(
        &mut flights,
        &[&lab.target_seen, &lab.peer_listen.udp_seen],
        TIMEOUT,
    );
    stats.rulesets.fetch_add(1, Ordering::Relaxed);
    for (p, obs) in meta.iter().zip(seen) {
        let want = flow::predict(&rs, p);
        let expected = match &want {
            Seen::Open => Observed::Open,
            Seen::Error => Observed::Error,
            Seen::Silent => Observed::Silent,
            Seen::OpenOrError if obs != Observed::Silent => obs,
            Seen::OpenOrError => Observed::Open,
            Seen::Inconclusive(why) => {
                if stats.inconclusive.fetch_add(1, Ordering::Relaxed) < 3 {
                    eprintln!(
                        "{name}: inconclusive probe ({} port {}): {why}",
                        p.iface, p.server_port
                    );
                }
                continue;
            }
        };
        stats.probes.fetch_add(1, Ordering::Relaxed);
        // Observations go through timeouts and ephemeral ports on a loaded machine: re-probe a
        // disagreement once (fresh socket, 2 s timeout) before calling it a mismatch. Firewall
        // semantics are deterministic, so a real mismatch reproduces.
        if expected != obs && recheck(lab, p, stats) {
            continue;
        }
        if expected != obs {
            let d = nft::evaluate(
                &rs,
                &if p.inbound {
                    nft::Packet::inbound(
                        &p.iface,
                        p.l4proto,
                        p.peer_addr,
                        p.host_addr,
                        p.client_port,
                        p.server_port,
                    )
                } else {
                    nft::Packet::outbound(
                        &p.iface,
                        p.l4proto,
                        p.host_addr,
                        p.peer_addr,
                        p.client_port,
                        p.server_port,
                    )
                },
            );
            let cat = format!(
                "CATEGORY {} {} v{} first={:?} evaluator={want:?} kernel={obs:?}",
                if p.inbound { "in" } else { "out" },
                if p.l4proto == nft::eval::TCP {
                    "tcp"
                } else {
                    "udp"
                },
                if p.host_addr.is_ipv4() { 4 } else { 6 },
                d.outcome
            );
            if let Ok(dir) = std::env::var("CLF_DIFF_DUMP") {
                let f = format!("{dir}/{}.txt", name.replace('/', "_"));
                let _ = std::fs::write(
                    &f,
                    format!("{cat} port {} iface {}\n{text}", p.server_port, p.iface),
                );
            }
            stats.mismatches.lock().unwrap().push(format!(
                "{name}: {} {} port {} via {} {}: evaluator {want:?}, kernel {obs:?}\n--- ruleset ---\n{text}",
                if p.inbound { "inbound" } else { "outbound" },
                if p.l4proto == nft::eval::TCP { "tcp" } else { "udp" },
                p.server_port,
                p.iface,
                p.host_addr,
            ));
        }
    }
}

/// Sends probe `p` again with a 2 s timeout; true when the kernel now agrees with the evaluator.
fn recheck(lab: &Lab, p: &Probe, stats: &Stats) -> bool {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed) as u64;
    let tcp = p.l4proto == nft::eval::TCP;
    let mut f = if p.inbound {
        probe::start(
            &lab.peer,
            tcp,
            p.peer_addr,
            SocketAddr::new(p.host_addr, p.server_port),
            id,
        )
    } else {
        probe::start(
            &lab.target,
            tcp,
            p.host_addr,
            SocketAddr::new(p.peer_addr, p.server_port),
            id,
        )
    };
    let again = Probe {
        client_port: f.client_port,
        ..p.clone()
    };
    let obs = probe::finish(
        std::slice::from_mut(&mut f),
        &[&lab.target_seen, &lab.peer_listen.udp_seen],
        Duration::from_secs(2),
    )[0];
    let agree = match flow::predict(&lab_rs(lab), &again) {
        Seen::Open => obs == Observed::Open,
        Seen::Error => obs == Observed::Error,
        Seen::Silent => obs == Observed::Silent,
        Seen::OpenOrError => obs != Observed::Silent,
        Seen::Inconclusive(_) => true,
    };
    if agree {
        stats.rechecked.fetch_add(1, Ordering::Relaxed);
    }
    agree
}

/// The ruleset currently loaded in the lab, parsed again (rechecks are rare).
fn lab_rs(lab: &Lab) -> nft::Ruleset {
    let out = crate::common::run(lab.target.cmd("nft").args(["-j", "list", "ruleset"]));
    let mut rs = nft::parse(&String::from_utf8_lossy(&out.stdout)).unwrap();
    if nft::bytecode::needs_bytecode(&rs) {
        let out =
            crate::common::run(
                lab.target
                    .cmd("nft")
                    .args(["--debug=netlink", "list", "ruleset"]),
            );
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        nft::bytecode::apply(&mut rs, Some(&text));
    }
    rs
}

fn run_all(cases: Vec<(String, String)>, workers: usize) -> Stats {
    let stats = Stats::default();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                let lab = Lab::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((name, text)) = cases.get(i) else {
                        break;
                    };
                    match lab.load(text) {
                        Ok((json, netlink)) => compare(&lab, name, text, (&json, &netlink), &stats),
                        Err(e) => {
                            stats.load_errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("{name}: nft refused the generated ruleset: {e}");
                        }
                    }
                }
            });
        }
    });
    stats
}

fn report(label: &str, st: &Stats, started: Instant) {
    let mism = st.mismatches.lock().unwrap();
    eprintln!(
        "differential {label}: {} rulesets, {} probes compared with the kernel, {} inconclusive (not compared), {} load errors, {} needed bytecode, {} re-probed once, {} mismatches, {:.1} s",
        st.rulesets.load(Ordering::Relaxed),
        st.probes.load(Ordering::Relaxed),
        st.inconclusive.load(Ordering::Relaxed),
        st.load_errors.load(Ordering::Relaxed),
        st.bytecode.load(Ordering::Relaxed),
        st.rechecked.load(Ordering::Relaxed),
        mism.len(),
        started.elapsed().as_secs_f64()
    );
    for m in mism.iter().take(2) {
        eprintln!("MISMATCH {m}");
    }
    let mut cats: std::collections::BTreeMap<String, usize> = Default::default();
    for m in mism.iter() {
        *cats
            .entry(
                m.split(": ")
                    .nth(1)
                    .unwrap_or("")
                    .split(" port")
                    .next()
                    .unwrap_or("")
                    .to_string(),
            )
            .or_default() += 1;
    }
    eprintln!("mismatch kinds: {cats:?}");
    assert!(
        mism.is_empty(),
        "{} evaluator/kernel mismatches (first ones above)",
        mism.len()
    );
}

#[test]
fn nixos_shaped_firewalls_match_the_kernel() {
    if !netns::available("nixos_shaped_firewalls_match_the_kernel") {
        return;
    }
    let started = Instant::now();
    let mut cases = Vec::new();
    for exposure in ["bootstrap", "public", "tailnet", "tailnet-trusted"] {
        for egress in ["smtp-only", "proxy-allowlist", "none"] {
            for tailscale in [true, false] {
                for reject in [false, true] {
                    cases.push((
                        format!("nixos/{exposure}/{egress}/ts={tailscale}/reject={reject}"),
                        rulesets::nixos(exposure, egress, tailscale, reject),
                    ));
                }
            }
        }
    }
    let st = run_all(cases, 4);
    assert_eq!(
        st.load_errors.load(Ordering::Relaxed),
        0,
        "every NixOS-shaped ruleset must load"
    );
    report("nixos-shaped", &st, started);
    assert!(st.rulesets.load(Ordering::Relaxed) >= 48);
}

#[test]
fn random_rulesets_match_the_kernel() {
    if !netns::available("random_rulesets_match_the_kernel") {
        return;
    }
    let started = Instant::now();
    let seed: u64 = std::env::var("CLF_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x05ee_dc1f);
    let n: usize = std::env::var("CLF_DIFF_RULESETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(220);
    eprintln!("random rulesets: seed {seed} (CLF_DIFF_SEED), count {n} (CLF_DIFF_RULESETS)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let cases: Vec<(String, String)> = (0..n)
        .map(|i| (format!("random/{seed}/{i}"), rulesets::random(&mut rng)))
        .collect();
    let st = run_all(cases, 6);
    report("random", &st, started);
    let loaded = st.rulesets.load(Ordering::Relaxed);
    assert!(
        loaded >= 200,
        "only {loaded} random rulesets loaded (generator produces invalid ones?)"
    );
    // The comparison is only meaningful if most predictions were conclusive.
    assert!(st.inconclusive.load(Ordering::Relaxed) * 10 < st.probes.load(Ordering::Relaxed));
}
