//! What a client sees when it opens a TCP connection or sends a UDP datagram, predicted from
//! per-packet verdicts: the first packet, then the answer it provokes (SYN-ACK, RST or ICMP
//! error) on its own path. Used by the differential tests against the kernel and by checks that
//! want the end-to-end answer rather than one packet's fate.

use std::net::IpAddr;

use super::eval::{CtState, Outcome, Packet, Path, TCP, UDP, evaluate};
use super::model::Ruleset;

/// The client-visible result of a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// TCP connected, or the UDP datagram reached the listener.
    Open,
    /// The client got an error back quickly (RST, ICMP unreachable, or EPERM for local sends).
    Error,
    /// Nothing came back before the timeout.
    Silent,
    /// The evaluator could not tell.
    Inconclusive(String),
}

/// One probe: a TCP connect or UDP send between this host and a peer.
#[derive(Debug, Clone)]
pub struct Probe {
    /// Inbound (peer → host) when true, outbound (host → peer) otherwise.
    pub inbound: bool,
    /// The host's interface the probe crosses.
    pub iface: String,
    pub l4proto: u8,
    pub host_addr: IpAddr,
    pub peer_addr: IpAddr,
    pub client_port: u16,
    pub server_port: u16,
}

fn reply(first: &Packet, l4proto: u8, tcp_flags: u8, ct: CtState) -> Packet {
    let back_path = match first.path {
        Path::LocalIn => Path::LocalOut,
        Path::LocalOut => Path::LocalIn,
    };
    let iface = first.iif.clone().or(first.oif.clone()).unwrap_or_default();
    let ports = l4proto == TCP || l4proto == UDP;
    Packet {
        path: back_path,
        iif: (back_path == Path::LocalIn).then(|| iface.clone()),
        oif: (back_path == Path::LocalOut).then_some(iface),
        l4proto,
        saddr: first.daddr,
        daddr: first.saddr,
        sport: if ports { first.dport } else { None },
        dport: if ports { first.sport } else { None },
        tcp_flags,
        ct_state: ct,
        uid: None,
        gid: None,
        rp_ok: true,
    }
}

fn err_packet(first: &Packet, tcp_reset: bool) -> Packet {
    if tcp_reset && first.l4proto == TCP {
        reply(first, TCP, 0x14, CtState::Related)
    } else {
        let icmp = if first.saddr.is_ipv4() { super::eval::ICMP } else { super::eval::ICMPV6 };
        reply(first, icmp, 0, CtState::Related)
    }
}

/// Predicts what the client of `probe` sees.
pub fn predict(rs: &Ruleset, probe: &Probe) -> Seen {
    let first = if probe.inbound {
        Packet::inbound(&probe.iface, probe.l4proto, probe.peer_addr, probe.host_addr, probe.client_port, probe.server_port)
    } else {
        Packet::outbound(&probe.iface, probe.l4proto, probe.host_addr, probe.peer_addr, probe.client_port, probe.server_port)
    };
    let d = evaluate(rs, &first);
    match (d.outcome, probe.inbound) {
        (Outcome::Inconclusive(w), _) => Seen::Inconclusive(w),
        // A locally sent packet that is dropped or rejected fails the send call itself.
        (Outcome::Drop | Outcome::Reject { .. }, false) => Seen::Error,
        (Outcome::Drop, true) => Seen::Silent,
        (Outcome::Reject { tcp_reset }, true) => {
            match evaluate(rs, &err_packet(&first, tcp_reset)).outcome {
                Outcome::Accept => Seen::Error,
                Outcome::Inconclusive(w) => Seen::Inconclusive(w),
                _ => Seen::Silent,
            }
        }
        (Outcome::Accept, _) if probe.l4proto != TCP => Seen::Open,
        (Outcome::Accept, _) => match evaluate(rs, &reply(&first, TCP, 0x12, CtState::Established)).outcome {
            Outcome::Accept => Seen::Open,
            Outcome::Inconclusive(w) => Seen::Inconclusive(w),
            _ => Seen::Silent,
        },
    }
}
