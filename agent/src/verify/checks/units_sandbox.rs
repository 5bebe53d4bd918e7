//! `units.sandbox`: `systemd-analyze security` overall exposure of the orchestrator, proxy and
//! bot units under a configurable threshold (default 5.0 of 10). Skips where systemd is not PID 1.

use crate::verify::host::Host;
use crate::verify::report::Check;

const ID: &str = "units.sandbox";

/// The overall exposure from `systemd-analyze security UNIT` output.
pub fn overall_exposure(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.split_once("Overall exposure level for ").map(|(_, r)| r))
        .and_then(|r| r.split_once(": ").map(|(_, v)| v))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

pub fn run(host: &Host) -> Check {
    if !host.has_systemd() {
        return Check::skip(ID, "systemd is not PID 1 here (no /run/systemd/system)");
    }
    let mut units: Vec<String> = vec!["clf-orchestrator.service".into()];
    units.extend(host.cfg.proxy_unit.iter().cloned());
    units.extend(host.cfg.bot_units.iter().cloned());
    let threshold = host.cfg.security_threshold.unwrap_or(5.0);
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let mut unsure = Vec::new();
    for u in &units {
        match host
            .runner
            .run("systemd-analyze", &["security", "--no-pager", "--", u])
        {
            Err(e) => unsure.push(e.to_string()),
            Ok(out) => match overall_exposure(&out.stdout) {
                Some(x) if x <= threshold => {
                    ok.push(format!("{u}: exposure {x:.1} <= {threshold:.1}"))
                }
                Some(x) => bad.push(format!("{u}: exposure {x:.1} > {threshold:.1}")),
                None if u == "clf-orchestrator.service" && host.cfg.orchestrator.is_none() => {}
                None => bad.push(format!("{u}: not assessed: {}", out.stderr.trim())),
            },
        }
    }
    if !bad.is_empty() {
        return Check::fail(
            ID,
            bad,
            "add systemd sandboxing (ProtectSystem=strict, PrivateTmp, NoNewPrivileges, RestrictAddressFamilies, SystemCallFilter...) or raise securityThreshold",
        );
    }
    if !unsure.is_empty() {
        return Check::inconclusive(ID, unsure, "install systemd-analyze");
    }
    Check::pass(ID, ok)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_overall_exposure_line() {
        let t = "  NAME  DESCRIPTION  EXPOSURE\n✗ PrivateNetwork= ...\n\n→ Overall exposure level for bot-a.service: 4.2 OK 🙂\n";
        assert_eq!(super::overall_exposure(t), Some(4.2));
        assert_eq!(super::overall_exposure("nothing"), None);
    }
}
