//! `clawdlets secrets check`: read-only checks for CI and pre-commit, no key needed.
//! - the fleet config validates;
//! - every file under `secrets/` is a sops file encrypted to exactly the recipients its
//!   `.sops.yaml` creation rule demands (missing and stale recipients are reported), follows
//!   the layout (one key named after the file, declared host and secret), and the rules match
//!   the fleet's operators;
//! - git tracks no private key anywhere and no plaintext secret material outside `secrets/`
//!   (index blobs are scanned, so a pre-commit hook sees what is about to be committed);
//! - `.clawdlets/` is ignored (`git check-ignore`) and nothing under it is tracked;
//! - the extra-files tree and local keys have the modes the layout demands.
//!
//! Output: one line per finding (`PATH: message [kind]`), or `--json`. Exit 0 clean, 1 findings,
//! 2 could not run. Findings never quote the matched secret.

use std::collections::BTreeSet;
use std::io::{BufRead as _, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context as _;
use serde::Serialize;

use super::keys::{HOST_PUBLIC_KEY, HOST_SECRET_KEY};
use super::repo::{self, Repo};
use super::{engine, hygiene, sopsconfig};
use crate::exit::ExitCode;
use crate::fleet::Fleet;

/// Check the repo: sops files, recipients, git hygiene, modes.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The operator repo (default: the current directory or the nearest parent with fleet/clawdlets.json).
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Print findings as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also decrypt every file with your operator key (MAC verified) and every host file with
    /// that host's extra-files key.txt. Needs the operator key; without it the check stays keyless.
    #[arg(long)]
    pub decrypt: bool,
    /// Which operator you are (for --decrypt).
    #[arg(long, env = "CLAWDLETS_OPERATOR", value_name = "NAME")]
    pub operator: Option<String>,
}

/// One problem found.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub path: String,
    pub kind: &'static str,
    pub message: String,
}

pub fn run(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let repo = match &args.repo {
        Some(d) => Repo::new(std::path::absolute(d).context("cannot resolve --repo")?),
        None => {
            let cwd = std::env::current_dir()?;
            Repo::discover(&cwd).with_context(|| {
                format!(
                    "no fleet/clawdlets.json in '{}' or its parents",
                    cwd.display()
                )
            })?
        }
    };
    let mut findings = check(&repo)?;
    if args.decrypt {
        findings.extend(check_decrypt(&repo, args.operator.as_deref())?);
        findings.sort();
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "ok": findings.is_empty(), "findings": findings })
            )?
        );
    } else {
        for f in &findings {
            println!("{}: {} [{}]", f.path, f.message, f.kind);
        }
    }
    if findings.is_empty() {
        eprintln!("secrets check: ok");
        Ok(ExitCode::Success)
    } else {
        tracing::warn!(
            event = "secrets_check_failed",
            findings = findings.len(),
            "secrets check found problems"
        );
        eprintln!("secrets check: {} finding(s)", findings.len());
        Ok(ExitCode::Failure)
    }
}

/// Runs every check; errors only when the checks cannot run at all (git missing).
pub fn check(repo: &Repo) -> anyhow::Result<Vec<Finding>> {
    let mut out = Vec::new();
    let mut add = |path: &str, kind: &'static str, message: String| {
        out.push(Finding {
            path: path.to_string(),
            kind,
            message,
        })
    };

    let fleet = match crate::fleet::load(&repo.fleet_config()) {
        Ok(f) => Some(f),
        Err(crate::fleet::FleetError::Invalid { problems, .. }) => {
            for p in problems {
                add("fleet/clawdlets.json", "fleet-invalid", p.to_string());
            }
            None
        }
        Err(e) => {
            add("fleet/clawdlets.json", "fleet-invalid", e.to_string());
            None
        }
    };
    let mut findings = out;
    check_sops_files(repo, fleet.as_ref(), &mut findings);
    check_git(repo, &mut findings)?;
    check_modes(repo, fleet.as_ref(), &mut findings);
    findings.sort();
    findings.dedup();
    Ok(findings)
}

fn f(path: impl Into<String>, kind: &'static str, message: impl Into<String>) -> Finding {
    Finding {
        path: path.into(),
        kind,
        message: message.into(),
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(&p, out),
            Ok(_) => out.push(p),
            Err(_) => {}
        }
    }
}

fn check_sops_files(repo: &Repo, fleet: Option<&Fleet>, out: &mut Vec<Finding>) {
    let secrets = repo.secrets_dir();
    if !secrets.is_dir() {
        return;
    }
    let cfg_path = repo.sops_yaml();
    let config = match sopsconfig::load(&cfg_path) {
        Ok(c) => Some(c),
        Err(e) => {
            out.push(f("secrets/.sops.yaml", "sops-config", e.to_string()));
            None
        }
    };
    let operators: Option<BTreeSet<String>> = fleet.map(|fl| {
        fl.operators
            .iter()
            .filter_map(|o| o.age_recipient.clone())
            .collect()
    });

    let mut files = Vec::new();
    walk(&secrets, &mut files);
    files.sort();
    for path in files {
        let rel_in_secrets = path
            .strip_prefix(&secrets)
            .expect("under secrets")
            .to_string_lossy()
            .to_string();
        let label = repo.rel(&path).to_string();
        if rel_in_secrets == ".sops.yaml" {
            continue;
        }
        let env = match engine::read_envelope(&path, &label) {
            Ok((_, env)) => env,
            Err(_) => {
                out.push(f(
                    &label,
                    "not-sops",
                    "not a valid sops file (plaintext under secrets/?)",
                ));
                continue;
            }
        };
        // Recipients demanded by the creation rule.
        if let Some(cfg) = &config {
            match cfg.rule_for(&rel_in_secrets) {
                None => out.push(f(
                    &label,
                    "no-rule",
                    "no creation rule in secrets/.sops.yaml matches this file",
                )),
                Some(want) => {
                    let have: BTreeSet<&str> =
                        env.age_recipients.iter().map(String::as_str).collect();
                    let want_set: BTreeSet<&str> = want.iter().map(String::as_str).collect();
                    for r in have.difference(&want_set) {
                        out.push(f(
                            &label,
                            "stale-recipient",
                            format!("encrypted to {r}, which its creation rule no longer lists (removed operator or old host key): run `clawdlets secrets rekey`"),
                        ));
                    }
                    for r in want_set.difference(&have) {
                        out.push(f(&label, "missing-recipient", format!("not encrypted to {r}, which its creation rule demands: run `clawdlets secrets rekey`")));
                    }
                }
            }
        }
        // Layout.
        let parts: Vec<&str> = rel_in_secrets.split('/').collect();
        match parts.as_slice() {
            ["hosts", host, file] => {
                let Some(name) = file.strip_suffix(".yaml") else {
                    out.push(f(&label, "layout", "host secret files are named <secret>.yaml"));
                    continue;
                };
                if env.top_level_keys != [name.to_string()] {
                    out.push(f(&label, "layout", format!("must hold exactly one top-level key '{name}' (found {})", env.top_level_keys.join(", "))));
                }
                if let Some(fl) = fleet {
                    match fl.hosts.get(*host) {
                        None => out.push(f(&label, "orphan", format!("host '{host}' is not in fleet/clawdlets.json"))),
                        Some(h) if !h.secrets.contains_key(name) => {
                            out.push(f(&label, "orphan", format!("secret '{name}' is not declared in hosts.{host}.secrets")))
                        }
                        _ => {}
                    }
                }
            }
            ["keys", "hosts", file] => {
                let Some(host) = file.strip_suffix(".agekey.yaml") else {
                    out.push(f(&label, "layout", "host key files are named <host>.agekey.yaml"));
                    continue;
                };
                let mut keys = env.top_level_keys.clone();
                keys.sort();
                if keys != [HOST_PUBLIC_KEY, HOST_SECRET_KEY] {
                    out.push(f(&label, "layout", format!("must hold exactly '{HOST_PUBLIC_KEY}' and '{HOST_SECRET_KEY}'")));
                }
                if let (Some(ops), Some(fl)) = (&operators, fleet) {
                    if !fl.hosts.contains_key(host) {
                        out.push(f(&label, "orphan", format!("host '{host}' is not in fleet/clawdlets.json")));
                    }
                    let have: BTreeSet<String> = env.age_recipients.iter().cloned().collect();
                    if &have != ops {
                        out.push(f(&label, "recipients", "host key file must be encrypted to exactly the fleet's operators: run `clawdlets secrets rekey`"));
                    }
                }
            }
            _ => out.push(f(&label, "layout", "unexpected file under secrets/ (expected hosts/<host>/<secret>.yaml or keys/hosts/<host>.agekey.yaml)")),
        }
    }

    // Rules against the fleet: operators in, nobody else (apart from one host key per host rule).
    if let (Some(cfg), Some(ops), Some(fl)) = (&config, &operators, fleet) {
        for host in fl.hosts.keys() {
            let key_file = format!("keys/hosts/{host}.agekey.yaml");
            if !secrets.join(&key_file).exists() {
                continue; // host not initialised yet
            }
            if let Some(want) = cfg.rule_for(&key_file) {
                let set: BTreeSet<String> = want.iter().cloned().collect();
                for r in set.difference(ops) {
                    out.push(f("secrets/.sops.yaml", "stale-rule", format!("rule for {key_file} lists {r}, which is not a fleet operator: run `clawdlets secrets rekey`")));
                }
                for r in ops.difference(&set) {
                    out.push(f("secrets/.sops.yaml", "stale-rule", format!("rule for {key_file} lacks operator recipient {r}: run `clawdlets secrets rekey`")));
                }
            }
            let probe = format!("hosts/{host}/probe.yaml");
            if let Some(want) = cfg.rule_for(&probe) {
                let set: BTreeSet<String> = want.iter().cloned().collect();
                let extra: Vec<&String> = set.difference(ops).collect();
                if extra.len() > 1 {
                    out.push(f("secrets/.sops.yaml", "stale-rule", format!("rule for hosts/{host}/ lists {} non-operator recipients (expected only the host key): run `clawdlets secrets rekey`", extra.len())));
                }
                for r in ops.difference(&set) {
                    out.push(f("secrets/.sops.yaml", "stale-rule", format!("rule for hosts/{host}/ lacks operator recipient {r}: run `clawdlets secrets rekey`")));
                }
            } else {
                out.push(f("secrets/.sops.yaml", "no-rule", format!("no creation rule for hosts/{host}/: run `clawdlets secrets init --host {host}`")));
            }
            for name in fl.hosts[host].secrets.keys() {
                let p = format!("hosts/{host}/{name}.yaml");
                if !secrets.join(&p).exists() {
                    out.push(f(format!("secrets/{p}"), "missing", format!("declared secret has no file: `clawdlets secrets set {host} {name}` or `secrets init --host {host}`")));
                }
            }
        }
    }
}

fn git(repo: &Repo) -> Command {
    let mut c = Command::new("git");
    c.arg("-C").arg(&repo.root);
    c
}

fn check_git(repo: &Repo, out: &mut Vec<Finding>) -> anyhow::Result<()> {
    let inside = git(repo)
        .args(["rev-parse", "--is-inside-work-tree"])
        .stderr(Stdio::null())
        .output()
        .context("cannot run git (needed for the hygiene checks)")?;
    if !inside.status.success() {
        out.push(f(
            ".",
            "not-git",
            "not a git repository: hygiene checks need git",
        ));
        return Ok(());
    }
    // `.clawdlets/` must be ignored. check-ignore works for paths that do not exist yet.
    let ignored = git(repo)
        .args([
            "check-ignore",
            "-q",
            "--no-index",
            ".clawdlets/keys/operators/x.agekey",
        ])
        .status()?;
    if !ignored.success() {
        out.push(f(".gitignore", "not-ignored", ".clawdlets/ (operator keys, plaintext host keys) is not ignored: add `/.clawdlets/` to .gitignore"));
    }

    // Tracked files (the index: what the next commit holds).
    let ls = git(repo).args(["ls-files", "-s", "-z"]).output()?;
    let mut entries = Vec::new();
    for rec in ls.stdout.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let rec = String::from_utf8_lossy(rec);
        // "<mode> <sha> <stage>\t<path>"
        let Some((meta, path)) = rec.split_once('\t') else {
            continue;
        };
        let mut it = meta.split(' ');
        let (Some(mode), Some(sha)) = (it.next(), it.next()) else {
            continue;
        };
        if mode == "160000" {
            continue; // submodule
        }
        entries.push((sha.to_string(), path.to_string()));
    }
    for (_, path) in &entries {
        let name = path.rsplit('/').next().unwrap_or(path);
        if path.starts_with(".clawdlets/") {
            out.push(f(path, "tracked-runtime", "files under .clawdlets/ must never be committed: `git rm --cached` it and rotate what it held"));
        } else if name.ends_with(".agekey")
            || name == "key.txt"
            || name == "keys.txt"
            || name.starts_with("id_ed25519") && !name.ends_with(".pub")
            || name == "id_rsa"
        {
            out.push(f(
                path,
                "tracked-private-key",
                "a private key file is tracked by git: `git rm --cached` it and rotate the key",
            ));
        }
    }
    // Scan blob contents through one `git cat-file --batch`.
    let mut child = git(repo)
        .args(["cat-file", "--batch"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let shas: Vec<String> = entries.iter().map(|(s, _)| s.clone()).collect();
    let writer = std::thread::spawn(move || {
        for s in shas {
            if writeln!(stdin, "{s}").is_err() {
                break;
            }
        }
    });
    let mut reader = std::io::BufReader::new(child.stdout.take().expect("piped"));
    for (_, path) in &entries {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 {
            break;
        }
        let size: usize = header
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut blob = vec![0u8; size];
        reader.read_exact(&mut blob)?;
        let mut nl = [0u8; 1];
        reader.read_exact(&mut nl)?;
        if size > 4 << 20 || blob.contains(&0) {
            continue; // binary or huge
        }
        let text = String::from_utf8_lossy(&blob);
        let in_secrets = path.starts_with("secrets/");
        let lockfile =
            path.ends_with(".lock") || path.ends_with("flake.lock") || path.ends_with(".sum");
        for hit in hygiene::scan(&text, !in_secrets && !lockfile) {
            let kind = if hit.private_key {
                "tracked-private-key"
            } else {
                "plaintext-secret"
            };
            let hint = if in_secrets && hit.private_key {
                "plaintext key material in secrets/: it must be sops-encrypted"
            } else {
                "secret material must live sops-encrypted under secrets/ (`clawdlets secrets set`); remove it and rotate it"
            };
            out.push(f(
                format!("{path}:{}", hit.line),
                kind,
                format!("looks like {}: {hint}", hit.what),
            ));
        }
        blob.iter_mut().for_each(|b| *b = 0);
    }
    let _ = writer.join();
    let _ = child.wait();
    Ok(())
}

fn mode_of(p: &Path) -> Option<u32> {
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| m.permissions().mode() & 0o7777)
}

fn check_modes(repo: &Repo, fleet: Option<&Fleet>, out: &mut Vec<Finding>) {
    let rt = repo.runtime_dir();
    if let Some(m) = mode_of(&rt)
        && m & 0o077 != 0
    {
        out.push(f(
            ".clawdlets",
            "mode",
            format!("mode {m:04o}: must not be accessible by other users (0700)"),
        ));
    }
    if let Ok(rd) = std::fs::read_dir(repo.operator_keys_dir()) {
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "agekey")
                && let Some(m) = mode_of(&p)
                && m & 0o077 != 0
            {
                out.push(f(
                    repo.rel(&p),
                    "mode",
                    format!("operator key has mode {m:04o}: must be 0600"),
                ));
            }
        }
    }
    let Ok(rd) = std::fs::read_dir(rt.join("extra-files")) else {
        return;
    };
    for e in rd.flatten() {
        let host = e.file_name().to_string_lossy().to_string();
        let base = e.path();
        for (sub, want) in repo::EXTRA_DIR_MODES {
            let p = if sub.is_empty() {
                base.clone()
            } else {
                base.join(sub)
            };
            if let Some(m) = mode_of(&p)
                && m != *want
            {
                out.push(f(repo.rel(&p), "mode", format!("mode {m:04o}, expected {want:04o} (nixos-anywhere copies modes onto the host)")));
            }
        }
        let key = repo.extra_key(&host);
        match mode_of(&key) {
            Some(m) if m & 0o077 != 0 => out.push(f(
                repo.rel(&key),
                "mode",
                format!("host key has mode {m:04o}: must be 0600"),
            )),
            Some(_) => {}
            None => {
                if fleet.is_some_and(|fl| fl.hosts.contains_key(&host)) {
                    out.push(f(
                        repo.rel(&key),
                        "missing",
                        "extra-files tree has no host key: run `clawdlets secrets init`",
                    ));
                }
            }
        }
        let dir = repo.extra_secrets_dir(&host);
        if let Some(m) = mode_of(&dir)
            && m != repo::HOST_SECRETS_DIR_MODE
        {
            out.push(f(
                repo.rel(&dir),
                "mode",
                format!("mode {m:04o}, expected 0700"),
            ));
        }
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let p = e.path();
                if let Some(m) = mode_of(&p)
                    && m != repo::EXTRA_SECRET_MODE
                {
                    out.push(f(
                        repo.rel(&p),
                        "mode",
                        format!("mode {m:04o}, expected 0400"),
                    ));
                }
                let name = e.file_name().to_string_lossy().to_string();
                let source = repo.host_secrets_dir(&host).join(&name);
                match (std::fs::read(&p), std::fs::read(&source)) {
                    (Ok(a), Ok(b)) if a != b => out.push(f(repo.rel(&p), "stale-copy", format!("differs from secrets/hosts/{host}/{name}: run `clawdlets secrets init --host {host}`"))),
                    (Ok(_), Err(_)) => out.push(f(repo.rel(&p), "stale-copy", format!("no secrets/hosts/{host}/{name}: the host would install a removed secret"))),
                    _ => {}
                }
            }
        }
    }
}

/// A `password-hash` secret must hold a crypt(3) hash: a plaintext there (e.g. a file made when
/// the secret was declared `password`) cannot log anyone in and should not be stored. Says what
/// is wrong, never the value.
fn login_password_problem(
    fleet: &crate::fleet::Fleet,
    rel: &str,
    entries: &[(String, crate::secret::SecretBytes)],
) -> Option<String> {
    let ["hosts", host, file] = rel.split('/').collect::<Vec<_>>()[..] else {
        return None;
    };
    let name = file.strip_suffix(".yaml")?;
    let spec = &fleet.hosts.get(host)?.secrets.get(name)?.value;
    if !matches!(spec, crate::fleet::ValueSpec::PasswordHash { .. }) {
        return None;
    }
    let value = entries.iter().find(|(k, _)| k == name).map(|(_, v)| v)?;
    match super::passhash::check_crypt_hash(value.expose()) {
        Some(Ok(_)) => None,
        Some(Err(e)) => Some(format!(
            "hosts.{host}.secrets.{name} is a password-hash secret: {e}"
        )),
        None => Some(format!(
            "hosts.{host}.secrets.{name} is a password-hash secret but holds no crypt(3) hash (a plaintext password cannot log in); replace it: `clawdlets secrets set {host} {name}`"
        )),
    }
}

/// `--decrypt`: every sops file opens with the operator key (MAC verified); host files also open
/// with the host's extra-files key. Values are dropped immediately, never printed; only the
/// values of `password-hash` secrets are looked at (is it a crypt hash?).
fn check_decrypt(repo: &Repo, operator: Option<&str>) -> anyhow::Result<Vec<Finding>> {
    let fleet = crate::fleet::load(&repo.fleet_config())?;
    let name = super::keys::operator_name(repo, &fleet, operator)?;
    let op = super::keys::load_operator(repo, &fleet, &name)?;
    let mut out = Vec::new();
    let mut files = Vec::new();
    walk(&repo.secrets_dir(), &mut files);
    files.sort();
    for path in files {
        let label = repo.rel(&path).to_string();
        if label.ends_with(".sops.yaml") {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if engine::envelope(&bytes, &label).is_err() {
            continue; // reported as not-sops already
        }
        let rel = path
            .strip_prefix(repo.secrets_dir())
            .map(|p| p.to_string_lossy().to_string())
            .unwrap_or_default();
        match engine::decrypt(&bytes, &op.identity, &label) {
            Err(e) => out.push(f(
                &label,
                "decrypt",
                format!("operator '{name}' cannot open it: {e}"),
            )),
            Ok(entries) => {
                if let Some(problem) = login_password_problem(&fleet, &rel, &entries) {
                    out.push(f(&label, "password_hash", problem));
                }
            }
        }
        if let ["hosts", host, _] = rel.split('/').collect::<Vec<_>>().as_slice() {
            let key = repo.extra_key(host);
            if key.exists() {
                let id = engine::Identity::new(key.clone());
                if let Err(e) = engine::decrypt(&bytes, &id, &label) {
                    out.push(f(
                        &label,
                        "decrypt",
                        format!("the host key in {} cannot open it: {e}", repo.rel(&key)),
                    ));
                }
            }
        }
    }
    Ok(out)
}
