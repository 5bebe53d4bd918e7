//! `ssh.tailnet-only` (sshExposure tailnet): sshd's port is accepted from a tailnet address on
//! the tailnet interface, and from nowhere else.

use super::firewall::{
    TAILNET_HOST_V4, TAILNET_HOST_V6, TAILNET_V4, TAILNET_V6, Tally, first_lines, public_inbound,
    ssh_ports,
};
use crate::verify::config::{SshExposure, Tailnet};
use crate::verify::host::Host;
use crate::verify::nft::Packet;
use crate::verify::nft::eval::TCP;
use crate::verify::report::Check;

const ID: &str = "ssh.tailnet-only";

pub fn run(host: &Host) -> Check {
    if host.cfg.ssh_exposure != Some(SshExposure::Tailnet) {
        return Check::skip(
            ID,
            format!(
                "sshExposure is {}, not tailnet",
                crate::verify::config::show(host.cfg.ssh_exposure)
            ),
        );
    }
    if host.cfg.tailnet == Some(Tailnet::None) {
        return Check::fail(
            ID,
            vec!["sshExposure tailnet with tailnet none: nothing could reach SSH".into()],
            "enable tailnet mode tailscale or choose another sshExposure",
        );
    }
    let rs = match host.ruleset() {
        Ok(rs) => rs,
        Err(e) => return Check::inconclusive(ID, vec![e], "run as root on the host with nftables"),
    };
    let ports = ssh_ports(host);
    let tn = host.cfg.tailnet_iface();
    let mut tail = Tally::default();
    for (src, dst) in [(TAILNET_V4, TAILNET_HOST_V4), (TAILNET_V6, TAILNET_HOST_V6)] {
        for &p in &ports {
            let pkt = Packet::inbound(tn, TCP, src, dst, 40000, p);
            tail.add(rs, format!("tcp/{p} from {src} on {tn}"), &pkt);
        }
    }
    let public = public_inbound(host, rs, TCP, &ports);
    let mut ev = vec![format!(
        "{} tailnet probes: {} accepted; {} public probes: {} accepted",
        tail.probes,
        tail.accepted.len(),
        public.probes,
        public.accepted.len()
    )];
    if !public.accepted.is_empty() {
        ev.extend(first_lines(&public.accepted, 5));
        return Check::fail(
            ID,
            ev,
            "SSH must be accepted only on the tailnet interface; remove public SSH rules (openFirewall = false)",
        );
    }
    let v4_ok = tail
        .accepted
        .iter()
        .any(|a| a.contains(&TAILNET_V4.to_string()));
    if !v4_ok && tail.inconclusive.is_empty() {
        return Check::fail(
            ID,
            ev,
            format!(
                "SSH is not accepted on {tn}: allow it with networking.firewall.interfaces.{tn}.allowedTCPPorts"
            ),
        );
    }
    if !tail.inconclusive.is_empty() || !public.inconclusive.is_empty() {
        ev.extend(first_lines(
            &[tail.inconclusive, public.inconclusive].concat(),
            5,
        ));
        return Check::inconclusive(
            ID,
            ev,
            "the ruleset uses constructs the evaluator does not model",
        );
    }
    ev.extend(first_lines(&tail.accepted, 2));
    Check::pass(ID, ev)
}
