//! `tailnet.udp`: UDP 41641 (tailscaled's direct-connection port) is accepted from the internet
//! in tailscale mode, and not otherwise.

use super::firewall::{first_lines, public_inbound};
use crate::verify::config::Tailnet;
use crate::verify::host::Host;
use crate::verify::nft::eval::UDP;
use crate::verify::report::Check;

const ID: &str = "tailnet.udp";

pub fn run(host: &Host) -> Check {
    let Some(mode) = host.cfg.tailnet else {
        return Check::skip(ID, "tailnet mode is not set in the verify config");
    };
    let rs = match host.ruleset() {
        Ok(rs) => rs,
        Err(e) => return Check::inconclusive(ID, vec![e], "run as root on the host with nftables"),
    };
    let t = public_inbound(host, rs, UDP, &[41641]);
    let mut ev = vec![format!(
        "tailnet {}; {} probes of udp/41641: {} accepted",
        crate::verify::config::show(Some(mode)),
        t.probes,
        t.accepted.len()
    )];
    let open = !t.accepted.is_empty();
    if !t.inconclusive.is_empty() && (mode == Tailnet::None) != open {
        ev.extend(first_lines(&t.inconclusive, 5));
        return Check::inconclusive(
            ID,
            ev,
            "the ruleset uses constructs the evaluator does not model",
        );
    }
    match (mode, open) {
        (Tailnet::Tailscale, true) | (Tailnet::None, false) => {
            ev.extend(first_lines(&t.accepted, 2));
            Check::pass(ID, ev)
        }
        (Tailnet::Tailscale, false) => Check::fail(
            ID,
            ev,
            "UDP 41641 is blocked: tailscale falls back to relayed (DERP) traffic; open services.tailscale.port in the firewall",
        ),
        (Tailnet::None, true) => {
            ev.extend(first_lines(&t.accepted, 5));
            Check::fail(ID, ev, "UDP 41641 is open without tailscale: close it")
        }
    }
}
