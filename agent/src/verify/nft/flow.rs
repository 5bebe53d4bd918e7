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
    /// TCP connected, but the handshake's final ACK is rejected: the client may see the
    /// connection succeed or fail, depending on how fast the error arrives.
    OpenOrError,
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
    /// Owner of the host-side socket (the client when outbound, the listener when inbound),
    /// for rules that match `meta skuid`/`skgid`.
    pub host_uid: Option<u32>,
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
        icmp_type: None,
        ct_state: ct,
        uid: None,
        gid: None,
        rp_ok: Some(true),
    }
}

fn err_packet(first: &Packet, tcp_reset: bool) -> Packet {
    if tcp_reset && first.l4proto == TCP {
        reply(first, TCP, 0x14, CtState::Related)
    } else {
        let icmp = if first.saddr.is_ipv4() {
            super::eval::ICMP
        } else {
            super::eval::ICMPV6
        };
        let mut p = reply(first, icmp, 0, CtState::Related);
        // Destination unreachable, in either family.
        p.icmp_type = Some(if first.saddr.is_ipv4() { 3 } else { 1 });
        p
    }
}

/// Predicts what the client of `probe` sees.
pub fn predict(rs: &Ruleset, probe: &Probe) -> Seen {
    let first = if probe.inbound {
        Packet::inbound(
            &probe.iface,
            probe.l4proto,
            probe.peer_addr,
            probe.host_addr,
            probe.client_port,
            probe.server_port,
        )
    } else {
        let mut p = Packet::outbound(
            &probe.iface,
            probe.l4proto,
            probe.host_addr,
            probe.peer_addr,
            probe.client_port,
            probe.server_port,
        );
        p.uid = probe.host_uid;
        p.gid = probe.host_uid;
        p
    };
    let d = evaluate(rs, &first);
    match (d.outcome, probe.inbound) {
        (Outcome::Inconclusive(w), _) => Seen::Inconclusive(w),
        // Linux TCP over IPv6 does not abort a connect on an ICMPv6 unreachable (measured:
        // the client retransmits until its timeout), so an ICMP reject looks like a drop.
        (Outcome::Reject { tcp_reset: false }, _)
            if probe.l4proto == TCP && first.saddr.is_ipv6() =>
        {
            Seen::Silent
        }
        // A dropped local UDP send fails the send call itself (EPERM); a dropped SYN is
        // retransmitted silently by TCP.
        (Outcome::Drop, false) if probe.l4proto == TCP => Seen::Silent,
        (Outcome::Drop, false) => Seen::Error,
        (Outcome::Reject { .. }, false) if probe.l4proto != TCP => Seen::Error,
        // A rejected local SYN: the RST or ICMP error goes to this host itself, over loopback.
        (Outcome::Reject { tcp_reset }, false) => {
            let mut out = err_packet(&first, tcp_reset);
            if out.l4proto != TCP {
                // icmp_send answers from a local address: here, the sender's own.
                out.saddr = first.saddr;
            }
            out.path = Path::LocalOut;
            out.iif = None;
            out.oif = Some("lo".into());
            let mut back = out.clone();
            back.path = Path::LocalIn;
            back.iif = Some("lo".into());
            back.oif = None;
            back.rp_ok = None;
            match (evaluate(rs, &out).outcome, evaluate(rs, &back).outcome) {
                (Outcome::Inconclusive(w), _) | (_, Outcome::Inconclusive(w)) => {
                    Seen::Inconclusive(w)
                }
                (Outcome::Accept, Outcome::Accept) => Seen::Error,
                _ => Seen::Silent,
            }
        }
        (Outcome::Drop, true) => Seen::Silent,

        (Outcome::Reject { tcp_reset }, true) => {
            match evaluate(rs, &err_packet(&first, tcp_reset)).outcome {
                Outcome::Accept => Seen::Error,
                Outcome::Inconclusive(w) => Seen::Inconclusive(w),
                _ => Seen::Silent,
            }
        }
        (Outcome::Accept, _) if probe.l4proto != TCP => Seen::Open,
        (Outcome::Accept, _) => {
            let mut synack = reply(&first, TCP, 0x12, CtState::Established);
            if probe.inbound {
                // The kernel attributes a SYN-ACK to the listening socket.
                synack.uid = probe.host_uid;
                synack.gid = probe.host_uid;
            }
            match evaluate(rs, &synack).outcome {
                Outcome::Accept => {
                    // The client's ACK completes the handshake on the first packet's path.
                    let mut ack = first.clone();
                    ack.tcp_flags = 0x10;
                    ack.ct_state = CtState::Established;
                    match evaluate(rs, &ack).outcome {
                        Outcome::Inconclusive(w) => Seen::Inconclusive(w),
                        Outcome::Reject { .. } => Seen::OpenOrError,
                        _ => Seen::Open,
                    }
                }
                Outcome::Inconclusive(w) => Seen::Inconclusive(w),
                _ => Seen::Silent,
            }
        }
    }
}
