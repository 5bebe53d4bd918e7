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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::config::VerifyConfig;
    use crate::verify::report::Status;
    use crate::verify::runner::RecordedRunner;

    const OPEN: &str = r#"{"nftables":[{"table":{"family":"inet","name":"f","handle":1}},
        {"chain":{"family":"inet","table":"f","name":"input","handle":1,"type":"filter","hook":"input","prio":0,"policy":"drop"}},
        {"rule":{"family":"inet","table":"f","chain":"input","handle":2,"expr":[
          {"match":{"op":"==","left":{"payload":{"protocol":"tcp","field":"dport"}},"right":{"set":[22,2222]}}},{"accept":null}]}}]}"#;

    fn host_with<'a>(runner: &'a RecordedRunner, cfg: &str, root: &std::path::Path) -> Host<'a> {
        Host::new(
            root.into(),
            serde_json::from_str::<VerifyConfig>(cfg).unwrap(),
            runner,
        )
    }

    #[test]
    fn recorded_ruleset_with_sshd_port_from_sshd_t() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir
            .path()
            .join("etc/ssh/sshd_config")
            .to_string_lossy()
            .into_owned();
        let runner = RecordedRunner::default()
            .with("nft -j list ruleset", OPEN)
            .with(
                &format!("sshd -T -f {cfg}"),
                "port 2222\npasswordauthentication no\n",
            );
        let host = host_with(&runner, r#"{"sshExposure":"tailnet"}"#, dir.path());
        let c = run(&host);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            c.evidence
                .iter()
                .any(|e| e.contains("tcp/2222 from 198.51.100.23")),
            "{c:?}"
        );
        let host = host_with(&runner, r#"{"sshExposure":"bootstrap"}"#, dir.path());
        assert_eq!(run(&host).status, Status::Pass);
    }

    #[test]
    fn nft_failure_is_inconclusive_not_pass() {
        let dir = tempfile::tempdir().unwrap();
        let runner = RecordedRunner::default();
        let host = host_with(&runner, r#"{"sshExposure":"tailnet"}"#, dir.path());
        let c = run(&host);
        assert_eq!(c.status, Status::Inconclusive, "{c:?}");
    }
}
