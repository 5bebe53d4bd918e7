//! Shared reasoning of the firewall checks: which packets represent "the internet" and "the
//! tailnet", and how a batch of evaluator decisions becomes evidence. Representative sources are
//! a documentation address per family plus every globally routable address the ruleset itself
//! mentions, so an allowlisted source cannot hide an exposure.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::verify::host::Host;
use crate::verify::nft::{Outcome, Packet, Ruleset, eval};

/// Interface name that stands for "any interface the ruleset does not name".
pub const ANY_IFACE: &str = "clf-other0";

pub const PUBLIC_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 23));
pub const PUBLIC_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x7, 0, 0, 0, 0, 0x23));
pub const HOST_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10));
pub const HOST_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x1, 0, 0, 0, 0, 0x10));
pub const TAILNET_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 7, 7));
pub const TAILNET_V6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0x77));
pub const TAILNET_HOST_V4: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 1, 1));
pub const TAILNET_HOST_V6: IpAddr =
    IpAddr::V6(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0x11));

/// True for addresses reachable from the internet (documentation ranges count as public).
pub fn is_public(a: &IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            !(v.is_private()
                || v.is_loopback()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_multicast()
                || v.is_broadcast()
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            !(v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// Public source addresses to probe with: defaults plus global addresses the ruleset names.
pub fn public_sources(rs: &Ruleset) -> Vec<IpAddr> {
    let mut v = vec![PUBLIC_V4, PUBLIC_V6];
    v.extend(eval::mentioned_addrs(rs).into_iter().filter(is_public));
    v.sort();
    v.dedup();
    v
}

/// Interfaces that face the internet: every real one except loopback and the tailnet
/// interface, plus a name the ruleset does not mention.
pub fn public_ifaces(host: &Host) -> Vec<String> {
    let tn = host.cfg.tailnet_iface();
    let mut v: Vec<String> = host.interfaces().into_iter().filter(|i| i != tn).collect();
    v.push(ANY_IFACE.to_string());
    v
}

/// Outcome of many probes.
#[derive(Debug, Default)]
pub struct Tally {
    pub accepted: Vec<String>,
    pub blocked: usize,
    pub inconclusive: Vec<String>,
    pub probes: usize,
}

impl Tally {
    pub fn add(&mut self, rs: &Ruleset, what: String, pkt: &Packet) {
        self.probes += 1;
        let d = eval::evaluate(rs, pkt);
        match d.outcome {
            Outcome::Accept => self.accepted.push(format!("{what}: accepted by {}", d.by)),
            Outcome::Drop | Outcome::Reject { .. } => self.blocked += 1,
            Outcome::Inconclusive(w) => self.inconclusive.push(format!("{what}: cannot tell: {w}")),
        }
    }
}

/// Inbound probes of `l4proto` to `ports` from public sources on public interfaces.
pub fn public_inbound(host: &Host, rs: &Ruleset, l4proto: u8, ports: &[u16]) -> Tally {
    let mut t = Tally::default();
    let proto = if l4proto == eval::TCP { "tcp" } else { "udp" };
    for iface in public_ifaces(host) {
        for src in public_sources(rs) {
            let dst = if src.is_ipv4() { HOST_V4 } else { HOST_V6 };
            for &port in ports {
                let pkt = Packet::inbound(&iface, l4proto, src, dst, 40000, port);
                t.add(rs, format!("{proto}/{port} from {src} on {iface}"), &pkt);
            }
        }
    }
    t
}

/// Shows at most a few lines of a long list.
pub fn first_lines(v: &[String], n: usize) -> Vec<String> {
    let mut out: Vec<String> = v.iter().take(n).cloned().collect();
    if v.len() > n {
        out.push(format!("… and {} more", v.len() - n));
    }
    out
}

/// sshd's listening ports from `sshd -T`, or 22.
pub fn ssh_ports(host: &Host) -> Vec<u16> {
    let mut ports: Vec<u16> = super::sshd_config::effective(host, None)
        .map(|kv| {
            kv.iter()
                .filter(|(k, _)| k == "port")
                .filter_map(|(_, v)| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    if ports.is_empty() {
        ports.push(22);
    }
    ports.sort();
    ports.dedup();
    ports
}
