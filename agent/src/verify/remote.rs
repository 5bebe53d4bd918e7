//! `clawdlets verify --remote HOST`, run from an operator's machine: is TCP/22 on HOST open,
//! closed or filtered from here (judged against sshExposure), and does the fleet repository pass
//! `clawdlets secrets check` (repo hygiene)? Never touches HOST beyond one TCP handshake.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use super::config::{SshExposure, VerifyConfig};
use super::report::Check;

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
fn hygiene_check(repo: Option<&Path>) -> Check {
    use crate::secrets::ops::{check, repo::Repo};
    const ID: &str = "remote.secrets-hygiene";
    let repo = match repo {
        Some(dir) => match std::path::absolute(dir) {
            Ok(abs) => Repo::new(abs),
            Err(e) => {
                return Check::inconclusive(
                    ID,
                    vec![format!("cannot resolve --repo '{}': {e}", dir.display())],
                    "pass an existing fleet repository with --repo DIR",
                );
            }
        },
        None => {
            let cwd = std::env::current_dir().unwrap_or_else(|_| ".".into());
            match Repo::discover(&cwd) {
                Some(repo) => repo,
                None => {
                    return Check::skip(
                        ID,
                        format!(
                            "no fleet repository (fleet/clawdlets.json) in '{}' or its parents; pass --repo DIR",
                            cwd.display()
                        ),
                    );
                }
            }
        }
    };
    let dir = repo.root.display().to_string();
    match check::check(&repo) {
        Ok(findings) if findings.is_empty() => Check::pass(
            ID,
            vec![format!("`clawdlets secrets check` is clean in {dir}")],
        ),
        Ok(findings) => {
            let mut ev = vec![format!(
                "`clawdlets secrets check` found {} problem(s) in {dir}",
                findings.len()
            )];
            ev.extend(
                findings
                    .iter()
                    .take(20)
                    .map(|f| format!("{}: {} [{}]", f.path, f.message, f.kind)),
            );
            Check::fail(
                ID,
                ev,
                "run `clawdlets secrets check` in the repository and fix what it reports",
            )
        }
        Err(e) => Check::inconclusive(
            ID,
            vec![format!("secrets check could not run in {dir}: {e:#}")],
            "run `clawdlets secrets check` there by hand to see why",
        ),
    }
}

/// The remote checks, in report order.
pub fn run(target: &str, cfg: &VerifyConfig, repo: Option<&Path>) -> Vec<Check> {
    let t = std::time::Instant::now();
    let mut a = ssh_check(target, cfg);
    a.duration_ms = t.elapsed().as_millis() as u64;
    let t = std::time::Instant::now();
    let mut b = hygiene_check(repo);
    b.duration_ms = t.elapsed().as_millis() as u64;
    vec![a, b]
}
