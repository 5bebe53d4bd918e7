//! `clawdlets verify --remote HOST`, run from an operator's machine: is TCP/22 on HOST open,
//! closed or filtered from here (judged against sshExposure), and does the fleet repository pass
//! `clawdlets secrets check` (repo hygiene)? Never touches HOST beyond one TCP handshake.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use super::config::{SshExposure, VerifyConfig};
use super::report::Check;
use super::runner::Runner;

/// What a TCP connect attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
    /// The handshake completed.
    Open,
    /// The host answered with a RST (or ICMP port unreachable).
    Closed,
    /// No answer before the timeout, or an ICMP filter/unreachable error.
    Filtered,
}

/// Probes `addr` once with a connect timeout.
pub fn probe(addr: SocketAddr, timeout: Duration) -> (PortState, String) {
    match TcpStream::connect_timeout(&addr, timeout) {
        Ok(_) => (PortState::Open, format!("{addr}: handshake completed")),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            (PortState::Closed, format!("{addr}: connection refused"))
        }
        Err(e) => (PortState::Filtered, format!("{addr}: {e}")),
    }
}

fn ssh_check(target: &str, cfg: &VerifyConfig) -> Check {
    const ID: &str = "remote.ssh";
    let hostport = if target.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{target}]:22")
    } else if (target.contains(':') && !target.starts_with('[')) || target.contains("]:") {
        // Already host:port or [v6]:port.
        target.to_string()
    } else {
        format!("{target}:22")
    };
    let addrs: Vec<SocketAddr> = match hostport.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            return Check::inconclusive(
                ID,
                vec![format!("cannot resolve {target}: {e}")],
                "check the host name",
            );
        }
    };
    let intent = cfg.ssh_exposure.unwrap_or(SshExposure::Tailnet);
    let mut ev = vec![format!("sshExposure {}", super::config::show(Some(intent)))];
    let mut open = false;
    for a in addrs {
        let (state, line) = probe(a, Duration::from_secs(3));
        ev.push(format!("{line} ({state:?})"));
        open |= state == PortState::Open;
    }
    match (intent, open) {
        (SshExposure::Tailnet, true) => Check::fail(
            ID,
            ev,
            "SSH answers on the public address: apply sshExposure=tailnet (lockdown) and redeploy",
        ),
        (SshExposure::Tailnet, false) | (_, true) => Check::pass(ID, ev),
        (_, false) => Check::fail(
            ID,
            ev,
            "SSH does not answer although sshExposure allows it: check the firewall and sshd",
        ),
    }
}

/// Findings of `secrets check --json` (`{"ok": bool, "findings": [{path, kind, message}]}`)
/// as evidence lines; the raw output when it is not that shape.
fn findings(stdout: &str) -> Vec<String> {
    let parsed: Option<Vec<String>> = serde_json::from_str::<serde_json::Value>(stdout)
        .ok()
        .and_then(|v| {
            v.get("findings")?.as_array().map(|a| {
                a.iter()
                    .map(|f| {
                        let s =
                            |k: &str| f.get(k).and_then(|x| x.as_str()).unwrap_or("?").to_string();
                        format!("{}: {} [{}]", s("path"), s("message"), s("kind"))
                    })
                    .collect()
            })
        });
    parsed.unwrap_or_else(|| stdout.lines().map(str::to_string).collect())
}

fn hygiene_check(repo: Option<&Path>, runner: &dyn Runner) -> Check {
    const ID: &str = "remote.secrets-hygiene";
    let exe = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "clawdlets".into());
    let dir = repo
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| ".".into());
    // Run inside the repository (the runner's working directory).
    match runner.run(&exe, &["secrets", "check", "--json"]) {
        Err(e) => Check::skip(ID, format!("`clawdlets secrets check` could not run: {e}")),
        Ok(out) if out.status == Some(2) && out.stderr.contains("unrecognized subcommand") => {
            Check::skip(
                ID,
                "`clawdlets secrets check` is not available in this build",
            )
        }
        Ok(out) if out.success() => Check::pass(
            ID,
            vec![format!("`clawdlets secrets check` is clean in {dir}")],
        ),
        Ok(out) if out.status == Some(1) => {
            let mut ev: Vec<String> = findings(&out.stdout).into_iter().take(20).collect();
            ev.insert(
                0,
                format!("`clawdlets secrets check` found problems in {dir}"),
            );
            Check::fail(
                ID,
                ev,
                "run `clawdlets secrets check` in the repository and fix what it reports",
            )
        }
        Ok(out) => Check::inconclusive(
            ID,
            vec![format!(
                "secrets check could not run: {}",
                out.stderr.trim()
            )],
            "run it by hand to see why",
        ),
    }
}

/// The remote checks, in report order.
pub fn run(
    target: &str,
    cfg: &VerifyConfig,
    repo: Option<&Path>,
    runner: &dyn Runner,
) -> Vec<Check> {
    let t = std::time::Instant::now();
    let mut a = ssh_check(target, cfg);
    a.duration_ms = t.elapsed().as_millis() as u64;
    let t = std::time::Instant::now();
    let mut b = hygiene_check(repo, runner);
    b.duration_ms = t.elapsed().as_millis() as u64;
    vec![a, b]
}

#[cfg(test)]
mod tests {
    #[test]
    fn secrets_check_json_findings_become_evidence() {
        let out = r#"{"ok": false, "findings": [{"path": "secrets/hosts/a/x.yaml", "kind": "not-sops", "message": "not a sops file"}]}"#;
        assert_eq!(
            super::findings(out),
            vec!["secrets/hosts/a/x.yaml: not a sops file [not-sops]".to_string()]
        );
        assert_eq!(
            super::findings("plain line"),
            vec!["plain line".to_string()]
        );
    }
}
