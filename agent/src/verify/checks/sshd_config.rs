//! `sshd.config`: sshd's *effective* settings (`sshd -T`), for the default context and with
//! `-C` for the admin user connecting from a public and from a tailnet address, so `Match`
//! blocks are evaluated the way sshd itself evaluates them.

use super::firewall::{PUBLIC_V4, TAILNET_V4};
use crate::verify::host::Host;
use crate::verify::report::Check;

const ID: &str = "sshd.config";

/// `sshd -T` (with `-C spec` when given) as lowercase key/value pairs, in output order.
pub fn effective(host: &Host, spec: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let key = spec.map(str::to_string);
    if let Some(hit) = host.sshd_cache.lock().expect("sshd cache lock").get(&key) {
        return hit.clone();
    }
    let res = run_sshd(host, spec);
    host.sshd_cache
        .lock()
        .expect("sshd cache lock")
        .insert(key, res.clone());
    res
}

fn run_sshd(host: &Host, spec: Option<&str>) -> Result<Vec<(String, String)>, String> {
    let cfg_path = host.path("/etc/ssh/sshd_config");
    let cfg = cfg_path.to_string_lossy().into_owned();
    let mut args: Vec<&str> = vec!["-T"];
    if !host.is_live() {
        args.extend(["-f", cfg.as_str()]);
    }
    if let Some(s) = spec {
        args.extend(["-C", s]);
    }
    let out = host.runner.run("sshd", &args).map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(format!(
            "`sshd {}` failed: {}",
            args.join(" "),
            out.stderr.trim()
        ));
    }
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect())
}

fn get<'a>(kv: &'a [(String, String)], key: &str) -> Option<&'a str> {
    kv.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Problems with one context's settings.
pub fn judge(kv: &[(String, String)]) -> Vec<String> {
    let mut bad = Vec::new();
    let mut want = |key: &str, ok: &dyn Fn(&str) -> bool, expect: &str| match get(kv, key) {
        Some(v) if ok(v) => {}
        Some(v) => bad.push(format!("{key} {v} (want {expect})")),
        None => bad.push(format!("{key} missing from sshd -T (want {expect})")),
    };
    want("passwordauthentication", &|v| v == "no", "no");
    // OpenSSH < 8.7 names it challengeresponseauthentication.
    if get(kv, "kbdinteractiveauthentication").is_some() {
        want("kbdinteractiveauthentication", &|v| v == "no", "no");
    } else {
        want("challengeresponseauthentication", &|v| v == "no", "no");
    }
    want(
        "permitrootlogin",
        &|v| matches!(v, "no" | "prohibit-password" | "without-password"),
        "prohibit-password or no",
    );
    want("pubkeyauthentication", &|v| v == "yes", "yes");
    want("x11forwarding", &|v| v == "no", "no");
    want("allowagentforwarding", &|v| v == "no", "no");
    want("permitemptypasswords", &|v| v == "no", "no");
    want(
        "maxauthtries",
        &|v| v.parse::<u32>().is_ok_and(|n| n <= 3),
        "<= 3",
    );
    bad
}

pub fn run(host: &Host) -> Check {
    let admin = host.cfg.admin_user.clone().unwrap_or_else(|| "root".into());
    let contexts = [
        ("default".to_string(), None),
        (
            format!("user={admin} from {PUBLIC_V4}"),
            Some(format!("user={admin},host=verify.invalid,addr={PUBLIC_V4}")),
        ),
        (
            format!("user={admin} from {TAILNET_V4}"),
            Some(format!(
                "user={admin},host=verify.invalid,addr={TAILNET_V4}"
            )),
        ),
    ];
    // The three sshd runs are independent: run them at once.
    let results: Vec<Result<Vec<(String, String)>, String>> = std::thread::scope(|s| {
        let hs: Vec<_> = contexts
            .iter()
            .map(|(_, spec)| s.spawn(move || effective(host, spec.as_deref())))
            .collect();
        hs.into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("sshd -T runner panicked".into()))
            })
            .collect()
    });
    let mut ev = Vec::new();
    let mut failed = false;
    for ((label, _), res) in contexts.iter().zip(results) {
        match res {
            Err(e) => {
                return Check::inconclusive(
                    ID,
                    vec![e],
                    "run as root where sshd and its host keys are installed",
                );
            }
            Ok(kv) => {
                let bad = judge(&kv);
                if bad.is_empty() {
                    ev.push(format!("{label}: password/kbd-interactive off, root {}, pubkey on, forwarding off, maxauthtries {}",
                        get(&kv, "permitrootlogin").unwrap_or("?"), get(&kv, "maxauthtries").unwrap_or("?")));
                } else {
                    failed = true;
                    ev.push(format!("{label}: {}", bad.join("; ")));
                }
            }
        }
    }
    if failed {
        Check::fail(
            ID,
            ev,
            "set services.openssh.settings: PasswordAuthentication=false, KbdInteractiveAuthentication=false, PermitRootLogin=\"prohibit-password\", X11Forwarding=false, AllowAgentForwarding=false, MaxAuthTries=3 (check Match blocks too)",
        )
    } else {
        Check::pass(ID, ev)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn judge_names_every_weak_setting() {
        let kv: Vec<(String, String)> = "passwordauthentication yes\nkbdinteractiveauthentication no\npermitrootlogin yes\n\
             pubkeyauthentication yes\nx11forwarding yes\nallowagentforwarding no\npermitemptypasswords no\nmaxauthtries 6"
            .lines()
            .map(|l| {
                let (k, v) = l.split_once(' ').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect();
        let bad = super::judge(&kv).join("; ");
        for w in [
            "passwordauthentication yes",
            "permitrootlogin yes",
            "x11forwarding yes",
            "maxauthtries 6",
        ] {
            assert!(bad.contains(w), "{w} not in {bad}");
        }
        assert!(!bad.contains("allowagentforwarding"));
    }
}
