//! `egress.smtp`: outbound TCP and UDP to 25, 465, 587 and 2525 are dropped or rejected on the
//! output path, for root and for every bot user (rules may match on `meta skuid`).

use super::firewall::{ANY_IFACE, HOST_V4, HOST_V6, PUBLIC_V4, PUBLIC_V6, Tally, first_lines};
use crate::verify::config::Egress;
use crate::verify::host::Host;
use crate::verify::nft::Packet;
use crate::verify::nft::eval::{TCP, UDP};
use crate::verify::report::Check;

const ID: &str = "egress.smtp";
pub const SMTP_PORTS: [u16; 4] = [25, 465, 587, 2525];

pub fn run(host: &Host) -> Check {
    if host.cfg.egress == Some(Egress::None) {
        return Check::skip(
            ID,
            "egress mode none: outbound mail is not restricted by policy",
        );
    }
    let rs = match host.ruleset() {
        Ok(rs) => rs,
        Err(e) => return Check::inconclusive(ID, vec![e], "run as root on the host with nftables"),
    };
    let mut users: Vec<(String, u32)> = vec![("root".into(), 0)];
    let mut unknown_users = Vec::new();
    for u in &host.cfg.bot_users {
        match host.uid(u) {
            Some(uid) => users.push((u.clone(), uid)),
            None => unknown_users.push(u.clone()),
        }
    }
    let mut ifaces: Vec<String> = host.interfaces();
    ifaces.push(ANY_IFACE.into());
    let mut t = Tally::default();
    for oif in &ifaces {
        for (src, dst) in [(HOST_V4, PUBLIC_V4), (HOST_V6, PUBLIC_V6)] {
            for proto in [TCP, UDP] {
                for port in SMTP_PORTS {
                    for (name, uid) in &users {
                        let mut pkt = Packet::outbound(oif, proto, src, dst, 40000, port);
                        pkt.uid = Some(*uid);
                        pkt.gid = Some(*uid);
                        let p = if proto == TCP { "tcp" } else { "udp" };
                        t.add(rs, format!("{p}/{port} to {dst} via {oif} as {name}"), &pkt);
                    }
                }
            }
        }
    }
    let mut ev = vec![format!(
        "{} output probes ({} interfaces, users {:?}): {} blocked, {} accepted",
        t.probes,
        ifaces.len(),
        users.iter().map(|u| u.0.as_str()).collect::<Vec<_>>(),
        t.blocked,
        t.accepted.len()
    )];
    if !unknown_users.is_empty() {
        ev.push(format!(
            "bot users not in /etc/passwd (not probed): {unknown_users:?}"
        ));
    }
    if !t.accepted.is_empty() {
        ev.extend(first_lines(&t.accepted, 5));
        return Check::fail(
            ID,
            ev,
            "outbound SMTP is open: enable clawdlets egress smtp-only (drops tcp/udp 25,465,587,2525 on output)",
        );
    }
    if !t.inconclusive.is_empty() || !unknown_users.is_empty() {
        ev.extend(first_lines(&t.inconclusive, 5));
        return Check::inconclusive(ID, ev, "some probes could not be decided; see evidence");
    }
    Check::pass(ID, ev)
}
