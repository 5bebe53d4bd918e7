//! `ssh.firewall`: would a TCP SYN to sshd's port(s) from a public address on a non-tailnet
//! interface be accepted by the live nftables ruleset? Judged against `sshExposure`: tailnet
//! (the default) wants it blocked; bootstrap and public want it open (a closed port would lock
//! the operators out).

use super::firewall::{first_lines, public_inbound, ssh_ports};
use crate::verify::config::SshExposure;
use crate::verify::host::Host;
use crate::verify::nft::eval::TCP;
use crate::verify::report::Check;

const ID: &str = "ssh.firewall";

pub fn run(host: &Host) -> Check {
    let rs = match host.ruleset() {
        Ok(rs) => rs,
        Err(e) => {
            return Check::inconclusive(
                ID,
                vec![e],
                "run as root on the host with nftables (`nft -j list ruleset` must work)",
            );
        }
    };
    let ports = ssh_ports(host);
    let t = public_inbound(host, rs, TCP, &ports);
    let (intent, why) = match host.cfg.ssh_exposure {
        Some(e) => (e, "from verify config"),
        None => (
            SshExposure::Tailnet,
            "default; set sshExposure in /etc/clawdlets/verify.json",
        ),
    };
    let mut ev = vec![format!(
        "sshExposure {} ({why}); {} probes of tcp/{ports:?} from public sources on public interfaces, {} rules evaluated",
        crate::verify::config::show(Some(intent)),
        t.probes,
        rs.rule_count()
    )];
    // The third fact next to policy and firewall: where sshd actually listens.
    let listening: Vec<String> = super::egress_proxy::tcp_listeners(host)
        .into_iter()
        .filter(|l| ports.contains(&l.1))
        .map(|l| std::net::SocketAddr::new(l.0, l.1).to_string())
        .collect();
    if !listening.is_empty() {
        ev.push(format!("sshd listening sockets: {}", listening.join(", ")));
    }
    let exposed = !t.accepted.is_empty();
    match intent {
        SshExposure::Tailnet if exposed => {
            ev.extend(first_lines(&t.accepted, 5));
            Check::fail(
                ID,
                ev,
                "SSH is reachable from the internet: set sshExposure=tailnet in the fleet config and redeploy (openFirewall off, allow 22 only on tailscale0)",
            )
        }
        _ if !t.inconclusive.is_empty() && !exposed => {
            ev.extend(first_lines(&t.inconclusive, 5));
            Check::inconclusive(
                ID,
                ev,
                "the ruleset uses constructs the evaluator does not model; inspect them by hand (see docs/verify.md)",
            )
        }
        SshExposure::Tailnet => {
            ev.push(format!("all {} probes dropped or rejected", t.blocked));
            Check::pass(ID, ev)
        }
        SshExposure::Bootstrap | SshExposure::Public if exposed => {
            ev.push(format!(
                "open to the internet as intended: {}",
                t.accepted[0]
            ));
            Check::pass(ID, ev)
        }
        SshExposure::Bootstrap | SshExposure::Public => {
            ev.push("no public probe is accepted".into());
            Check::fail(
                ID,
                ev,
                "sshExposure says SSH is public but the firewall blocks it: operators may be locked out; fix the config or the firewall",
            )
        }
    }
}
