//! `egress.proxy` (egress proxy-allowlist): every bot unit has `IPAddressDeny=any` with only
//! loopback allowed (`systemctl show`), the cgroup-BPF filter is really attached to the running
//! unit's cgroup (systemd fails open without it), and the proxy listens on loopback only
//! (`/proc/net/tcp{,6}`).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::Path;

use crate::verify::config::Egress;
use crate::verify::host::Host;
use crate::verify::report::Check;

const ID: &str = "egress.proxy";

fn show(host: &Host, unit: &str) -> Result<Vec<(String, String)>, String> {
    let out = host
        .runner
        .run(
            "systemctl",
            &[
                "show",
                "-p",
                "IPAddressDeny,IPAddressAllow,ControlGroup,ActiveState,LoadState,MainPID",
                "--",
                unit,
            ],
        )
        .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!(
            "`systemctl show {unit}` failed: {}",
            out.stderr.trim()
        ));
    }
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn prop<'a>(kv: &'a [(String, String)], k: &str) -> &'a str {
    kv.iter()
        .find(|(a, _)| a == k)
        .map_or("", |(_, v)| v.as_str())
}

fn is_loopback_cidr(c: &str) -> bool {
    let (addr, _) = c.split_once('/').unwrap_or((c, ""));
    addr.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// Number of BPF programs attached to a cgroup for one attach type (BPF_PROG_QUERY).
pub fn bpf_prog_count(cgroup: &Path, attach_type: u32) -> Result<u32, String> {
    use std::os::fd::AsRawFd;
    let dir = std::fs::File::open(cgroup).map_err(|e| format!("{}: {e}", cgroup.display()))?;
    #[repr(C)]
    #[derive(Default)]
    struct Query {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: u32,
        prog_attach_flags: u64,
    }
    let mut q = Query {
        target_fd: dir.as_raw_fd() as u32,
        attach_type,
        ..Default::default()
    };
    const BPF_PROG_QUERY: libc::c_long = 16;
    // SAFETY: BPF_PROG_QUERY reads and writes only the attr struct we pass, sized correctly;
    // with prog_ids = 0 the kernel only fills prog_cnt.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &mut q as *mut Query,
            std::mem::size_of::<Query>() as libc::c_uint,
        )
    };
    if rc != 0 {
        return Err(format!(
            "BPF_PROG_QUERY on {}: {}",
            cgroup.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(q.prog_cnt)
}

/// The unit's directory in the cgroup v2 hierarchy (unified, or hybrid under `unified/`).
pub fn cgroup_dir(host: &Host, control_group: &str) -> std::path::PathBuf {
    let hybrid = host.path(format!("/sys/fs/cgroup/unified{control_group}"));
    if hybrid.is_dir() {
        hybrid
    } else {
        host.path(format!("/sys/fs/cgroup{control_group}"))
    }
}

/// Listening TCP sockets as (address, port, inode), from /proc/net/tcp and tcp6.
pub fn tcp_listeners(host: &Host) -> Vec<(IpAddr, u16, u64)> {
    let mut out = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(host.path(file)) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let Some((a, p)) = f[1].split_once(':') else {
                continue;
            };
            let Ok(port) = u16::from_str_radix(p, 16) else {
                continue;
            };
            let addr = if v6 {
                let Ok(raw) = u128::from_str_radix(a, 16) else {
                    continue;
                };
                // Four little-endian 32-bit words.
                let b = raw.to_be_bytes();
                let mut o = [0u8; 16];
                for w in 0..4 {
                    for i in 0..4 {
                        o[w * 4 + i] = b[w * 4 + 3 - i];
                    }
                }
                IpAddr::from(o)
            } else {
                let Ok(raw) = u32::from_str_radix(a, 16) else {
                    continue;
                };
                IpAddr::from(raw.swap_bytes().to_be_bytes())
            };
            out.push((addr, port, f[9].parse().unwrap_or(0)));
        }
    }
    out
}

fn socket_inodes(host: &Host, pid: &str) -> HashSet<u64> {
    let mut set = HashSet::new();
    if let Ok(rd) = std::fs::read_dir(host.path(format!("/proc/{pid}/fd"))) {
        for e in rd.flatten() {
            if let Ok(t) = std::fs::read_link(e.path())
                && let Some(n) = t
                    .to_str()
                    .and_then(|s| s.strip_prefix("socket:["))
                    .and_then(|s| s.strip_suffix(']'))
            {
                set.insert(n.parse().unwrap_or(0));
            }
        }
    }
    set
}

pub fn run(host: &Host) -> Check {
    if host.cfg.egress != Some(Egress::ProxyAllowlist) {
        return Check::skip(
            ID,
            format!(
                "egress mode is {}, not proxy-allowlist",
                crate::verify::config::show(host.cfg.egress)
            ),
        );
    }
    let mut bad = Vec::new();
    let mut ok = Vec::new();
    let mut unsure = Vec::new();
    if host.cfg.bot_units.is_empty() {
        unsure.push("no botUnits in the verify config: nothing to check".to_string());
    }
    for unit in &host.cfg.bot_units {
        let kv = match show(host, unit) {
            Ok(kv) => kv,
            Err(e) => {
                unsure.push(e);
                continue;
            }
        };
        if prop(&kv, "LoadState") != "loaded" {
            bad.push(format!("{unit}: LoadState={}", prop(&kv, "LoadState")));
            continue;
        }
        let deny: Vec<&str> = prop(&kv, "IPAddressDeny").split_whitespace().collect();
        let allow: Vec<&str> = prop(&kv, "IPAddressAllow").split_whitespace().collect();
        if !(deny.contains(&"0.0.0.0/0") && deny.contains(&"::/0")) {
            bad.push(format!(
                "{unit}: IPAddressDeny={:?} (want any)",
                deny.join(" ")
            ));
        }
        let extra: Vec<&&str> = allow.iter().filter(|c| !is_loopback_cidr(c)).collect();
        if !extra.is_empty() {
            bad.push(format!(
                "{unit}: IPAddressAllow has non-loopback {extra:?} (bots could bypass the proxy)"
            ));
        }
        if prop(&kv, "ActiveState") == "active" {
            let cg = cgroup_dir(host, prop(&kv, "ControlGroup"));
            // BPF_CGROUP_INET_INGRESS = 0, BPF_CGROUP_INET_EGRESS = 1.
            match (bpf_prog_count(&cg, 0), bpf_prog_count(&cg, 1)) {
                (Ok(i), Ok(e)) if i > 0 && e > 0 => ok.push(format!("{unit}: deny any, allow loopback; BPF attached (ingress {i}, egress {e})")),
                (Ok(i), Ok(e)) => bad.push(format!("{unit}: IP filter configured but not enforced (ingress {i}, egress {e} BPF programs): systemd fails open")),
                (Err(e), _) | (_, Err(e)) => unsure.push(format!("{unit}: cannot confirm the BPF filter: {e}")),
            }
        } else {
            ok.push(format!(
                "{unit}: deny any, allow loopback (not running: BPF attachment not checked)"
            ));
        }
    }
    // The proxy listens on loopback only.
    let listeners = tcp_listeners(host);
    let mut mine: Vec<(IpAddr, u16)> = Vec::new();
    let pid = host
        .cfg
        .proxy_unit
        .as_ref()
        .and_then(|u| show(host, u).ok())
        .map(|kv| prop(&kv, "MainPID").to_string());
    match pid.filter(|p| !p.is_empty() && p != "0") {
        Some(pid) => {
            let inodes = socket_inodes(host, &pid);
            mine.extend(
                listeners
                    .iter()
                    .filter(|l| inodes.contains(&l.2))
                    .map(|l| (l.0, l.1)),
            );
            ok.push(format!("proxy main PID {pid} listens on {mine:?}"));
        }
        None => {
            let ports: Vec<u16> = if host.cfg.proxy_ports.is_empty() {
                vec![3128, 9810]
            } else {
                host.cfg.proxy_ports.clone()
            };
            mine.extend(
                listeners
                    .iter()
                    .filter(|l| ports.contains(&l.1))
                    .map(|l| (l.0, l.1)),
            );
            ok.push(format!("listeners on proxy ports {ports:?}: {mine:?}"));
        }
    }
    if mine.is_empty() {
        unsure.push("no proxy listener found".into());
    }
    for (a, p) in &mine {
        if !a.is_loopback() {
            bad.push(format!("proxy listens on {a}:{p}, not loopback"));
        }
    }
    if !bad.is_empty() {
        return Check::fail(
            ID,
            bad,
            "set IPAddressDeny=any and IPAddressAllow=localhost on bot units (cgroup v2 with BPF required), and bind the proxy to 127.0.0.1/::1 only",
        );
    }
    if !unsure.is_empty() {
        ok.extend(unsure);
        return Check::inconclusive(
            ID,
            ok,
            "run as root on the host under systemd with the bot and proxy units configured",
        );
    }
    Check::pass(ID, ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::config::VerifyConfig;
    use crate::verify::report::Status;
    use crate::verify::runner::RecordedRunner;

    const SHOW: &str = "systemctl show -p IPAddressDeny,IPAddressAllow,ControlGroup,ActiveState,LoadState,MainPID -- ";

    fn cfg() -> VerifyConfig {
        serde_json::from_str(r#"{"egress":"proxy-allowlist","botUnits":["bot-a.service"],"proxyUnit":"proxy.service"}"#).unwrap()
    }

    fn proc_root(listen: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("proc/net")).unwrap();
        let head = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";
        std::fs::write(
            d.path().join("proc/net/tcp"),
            format!("{head}   0: {listen} 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0\n"),
        )
        .unwrap();
        std::fs::write(d.path().join("proc/net/tcp6"), head).unwrap();
        d
    }

    #[test]
    fn non_loopback_allow_and_public_proxy_listener_fail() {
        // 0100007F:0C38 is 127.0.0.1:3128; 00000000:0C38 is 0.0.0.0:3128.
        let runner = RecordedRunner::default()
            .with(&format!("{SHOW}bot-a.service"), "IPAddressDeny=0.0.0.0/0 ::/0\nIPAddressAllow=127.0.0.0/8 10.0.0.0/8\nControlGroup=/system.slice/bot-a.service\nActiveState=inactive\nLoadState=loaded\nMainPID=0\n")
            .with(&format!("{SHOW}proxy.service"), "MainPID=0\nLoadState=loaded\n");
        let root = proc_root("00000000:0C38");
        let host = Host::new(root.path().into(), cfg(), &runner);
        let c = run(&host);
        assert_eq!(c.status, Status::Fail, "{c:?}");
        let ev = c.evidence.join("\n");
        assert!(ev.contains("non-loopback"), "{ev}");
        assert!(ev.contains("proxy listens on 0.0.0.0:3128"), "{ev}");
    }

    #[test]
    fn deny_any_allow_loopback_and_loopback_proxy_pass_when_not_running() {
        let runner = RecordedRunner::default()
            .with(&format!("{SHOW}bot-a.service"), "IPAddressDeny=0.0.0.0/0 ::/0\nIPAddressAllow=127.0.0.0/8 ::1/128\nControlGroup=\nActiveState=inactive\nLoadState=loaded\nMainPID=0\n")
            .with(&format!("{SHOW}proxy.service"), "MainPID=0\nLoadState=loaded\n");
        let root = proc_root("0100007F:0C38");
        let host = Host::new(root.path().into(), cfg(), &runner);
        let c = run(&host);
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert!(c.evidence.join(" ").contains("127.0.0.1"), "{c:?}");
    }

    #[test]
    fn configured_filter_without_bpf_programs_fails_open_detection() {
        // A real cgroup with no BPF programs attached: what systemd leaves behind when it
        // "proceeds WITHOUT firewalling".
        let base = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .into_iter()
            .find(|b| std::path::Path::new(b).join("cgroup.procs").exists());
        let Some(base) = base else { return };
        let name = format!("clf-verify-test-{}", std::process::id());
        if std::fs::create_dir(format!("{base}/{name}")).is_err() {
            return; // not root
        }
        let runner = RecordedRunner::default()
            .with(&format!("{SHOW}bot-a.service"), &format!("IPAddressDeny=0.0.0.0/0 ::/0\nIPAddressAllow=127.0.0.0/8 ::1/128\nControlGroup=/{name}\nActiveState=active\nLoadState=loaded\nMainPID=0\n"))
            .with(&format!("{SHOW}proxy.service"), "MainPID=0\n");
        let host = Host::new("/".into(), cfg(), &runner);
        let c = run(&host);
        let _ = std::fs::remove_dir(format!("{base}/{name}"));
        let ev = c.evidence.join("\n");
        assert_eq!(c.status, Status::Fail, "{c:?}");
        assert!(
            ev.contains("configured but not enforced (ingress 0, egress 0"),
            "{ev}"
        );
    }
}
