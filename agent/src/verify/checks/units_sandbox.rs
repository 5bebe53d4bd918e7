//! `units.sandbox`: `systemd-analyze security` overall exposure of the orchestrator, proxy and
//! bot units under a configurable threshold (default 5.0 of 10). Live when systemd is PID 1,
//! otherwise offline against the unit files under `--root` (`--offline=true --root=DIR`).

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
    // Live (systemd is PID 1 and this is /): the running manager's view, drop-ins and runtime
    // settings included. Otherwise judge the unit files under --root offline.
    let live = host.has_systemd();
    let root = host.root.to_string_lossy().into_owned();
    let root_arg = format!("--root={root}");
    let mut units: Vec<(String, bool)> = vec![(
        "clf-orchestrator.service".into(),
        host.cfg.orchestrator.is_some(),
    )];
    units.extend(host.cfg.proxy_unit.iter().map(|u| (u.clone(), true)));
    units.extend(host.cfg.bot_units.iter().map(|u| (u.clone(), true)));
    let threshold = host.cfg.security_threshold.unwrap_or(5.0);
    let mode = if live { "live" } else { "offline unit files" };
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let mut unsure = Vec::new();
    for (u, required) in &units {
        let mut args: Vec<&str> = vec!["security", "--no-pager"];
        if !live {
            args.extend(["--offline=true", root_arg.as_str()]);
        }
        args.extend(["--", u.as_str()]);
        match host.runner.run("systemd-analyze", &args) {
            Err(crate::verify::runner::RunError::NotFound(_)) => {
                return Check::skip(ID, "systemd-analyze is not installed");
            }
            Err(e) => unsure.push(e.to_string()),
            Ok(out) => match overall_exposure(&out.stdout) {
                Some(x) if x <= threshold => {
                    ok.push(format!("{u}: exposure {x:.1} <= {threshold:.1} ({mode})"))
                }
                Some(x) => bad.push(format!("{u}: exposure {x:.1} > {threshold:.1} ({mode})")),
                None if !required => {}
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
        return Check::inconclusive(
            ID,
            unsure,
            "run systemd-analyze security by hand to see why",
        );
    }
    if ok.is_empty() {
        return Check::skip(
            ID,
            format!("no clawdlets units found ({mode}) and none configured"),
        );
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
