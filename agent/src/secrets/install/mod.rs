//! `clawdlets secrets install`: a drop-in for sops-nix's `sops-install-secrets`. Reads the manifest
//! the sops-nix NixOS module renders, decrypts every sops file once with identities held only in
//! memory, writes generation N+1 into the secrets ramfs (owner and mode set before any byte),
//! switches `symlinkPath` atomically, requests unit restarts/reloads and prunes old generations.
//! On any failure before the switch the active generation is untouched and the new one removed.
//!
//! Owns: the install flow and its files under the secrets mount, custom `path` symlinks, the
//! restart/reload lists. Must not: write plaintext outside the mount, write key material anywhere
//! (no `age-keys.txt`), log values, or follow a symlink it did not create.

mod engine;
mod error;
mod generation;
mod keys;
mod manifest;
mod mount;
mod switch;
mod templates;
mod units;
mod users;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

pub use error::InstallError;

use crate::exit::ExitCode;
use crate::secret::SecretBytes;
use engine::{Engine, EngineError, Opened};
use generation::{MountDir, Owners};
use switch::LinkState;
use units::{ChangeKind, Changes, Delivery};
use validate::{Content, OwnerMode, Plan};

/// Build-time validation modes (sops-nix's `-check-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckMode {
    /// Install (the default).
    Off,
    /// Validate the manifest only: no sops file is read, no user looked up, no key needed.
    Manifest,
    /// Also read every sops file: it must be a sops file of the declared format holding every key.
    Sopsfile,
}

/// Materialize sops secrets into the secrets ramfs (sops-nix manifest, drop-in for
/// sops-install-secrets).
///
/// Exit codes: 0 installed (or the check passed); 1 the check found a problem, or the new
/// generation is active but pruning/restart requests failed; 2 nothing was installed (the
/// previous generation stays active).
#[derive(Debug, Clone, clap::Args)]
pub struct InstallArgs {
    /// The manifest JSON rendered by the NixOS module (manifest.json or manifest-for-users.json).
    #[arg(long, value_name = "FILE", required_unless_present = "manifest_arg")]
    pub manifest: Option<PathBuf>,

    /// The manifest as a positional argument, as sops-install-secrets takes it.
    #[arg(value_name = "MANIFEST", conflicts_with = "manifest", hide = true)]
    pub manifest_arg: Option<PathBuf>,

    /// Prefix every absolute path of the manifest (and /run/nixos, /etc/passwd lookups) with DIR.
    /// Runs without root: then nothing is mounted or chowned. See docs/secrets-install.md.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// Validate instead of installing (used at build time; needs no key and no root).
    #[arg(long, value_enum, default_value_t = CheckMode::Off)]
    pub check_mode: CheckMode,

    /// Create ageKeyFile when it is missing: derived from the first ed25519 SSH host key in
    /// ageSshKeyPaths, or freshly generated when there is none.
    #[arg(long)]
    pub generate_age_key: bool,

    /// Compute changes and write the dry-activation unit lists; change nothing else
    /// (also enabled by NIXOS_ACTION=dry-activate).
    #[arg(long)]
    pub dry_activate: bool,

    /// Do not look up users and groups: everything is root:root (the neededForUsers manifest).
    #[arg(long)]
    pub ignore_passwd: bool,

    /// Print a JSON report (or error) on stdout.
    #[arg(long)]
    pub json: bool,
}

/// What a run did, printed with `--json`.
#[derive(Debug, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub mode: &'static str,
    pub secrets: usize,
    pub templates: usize,
    pub sops_files: usize,
    pub generation: Option<u64>,
    pub previous_generation: Option<u64>,
    pub changes: Changes,
    pub requested: Vec<String>,
    pub pruned: Vec<u64>,
    pub warnings: Vec<String>,
}

/// The `secrets install` entry.
pub fn run(args: InstallArgs) -> anyhow::Result<ExitCode> {
    let manifest = args
        .manifest
        .clone()
        .or(args.manifest_arg.clone())
        .expect("clap requires one");
    let result = install(
        &args,
        &manifest,
        &Context::from_process(),
        &keys::make_engine,
    );
    match result {
        Ok(report) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            }
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            Ok(if report.warnings.is_empty() {
                ExitCode::Success
            } else {
                ExitCode::Failure
            })
        }
        Err(e) => {
            // The message itself goes to stderr once (main); this is the structured event.
            tracing::info!(event = "secrets_install_failed", kind = e.kind(), error = %e, "secrets install failed");
            if args.json {
                let v =
                    serde_json::json!({ "error": { "kind": e.kind(), "message": e.to_string() } });
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            if args.check_mode != CheckMode::Off {
                eprintln!("error: {e}");
                return Ok(ExitCode::Failure);
            }
            let hint = if e.kind() == "not-root" {
                ""
            } else {
                "\nthe previous generation of secrets stays active"
            };
            Err(anyhow::anyhow!("{e}{hint}"))
        }
    }
}

/// Makes the SOPS engine: `(plan, generate_age_key, check_only)`.
pub(crate) type EngineFactory = dyn Fn(&Plan, bool, bool) -> Result<Box<dyn Engine>, InstallError>;

/// What the flow reads from the process environment, injectable for tests.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    pub is_root: bool,
    pub runtime_dir: Option<String>,
    /// `NIXOS_ACTION=dry-activate`.
    pub dry_env: bool,
    /// `SOPS_RESTART_UNITS_VIA_SYSTEMCTL=1`.
    pub via_systemctl: bool,
    /// `CLAWDLETS_SYSTEMCTL`: the systemctl program to run (tests, sandboxes).
    pub systemctl: Option<PathBuf>,
}

impl Context {
    fn from_process() -> Context {
        Context {
            is_root: nix::unistd::geteuid().is_root(),
            runtime_dir: std::env::var("XDG_RUNTIME_DIR").ok(),
            dry_env: std::env::var("NIXOS_ACTION").is_ok_and(|a| a == "dry-activate"),
            via_systemctl: std::env::var("SOPS_RESTART_UNITS_VIA_SYSTEMCTL")
                .is_ok_and(|v| v == "1"),
            systemctl: std::env::var_os("CLAWDLETS_SYSTEMCTL").map(PathBuf::from),
        }
    }
}

/// The whole flow; `make_engine` is injected so unit tests can use an in-memory engine.
pub(crate) fn install(
    args: &InstallArgs,
    manifest_path: &Path,
    ctx: &Context,
    make_engine: &EngineFactory,
) -> Result<Report, InstallError> {
    let bytes = std::fs::read(manifest_path).map_err(|e| InstallError::ManifestRead {
        path: manifest_path.into(),
        source: e,
    })?;
    let m = manifest::parse(&bytes).map_err(|e| InstallError::ManifestParse {
        path: manifest_path.into(),
        detail: e.to_string(),
    })?;
    // Links written under --root hold host paths, so the prefix must be absolute.
    let root_abs = match &args.root {
        Some(r) => Some(
            r.canonicalize()
                .map_err(|e| InstallError::io("cannot use --root", r, e))?,
        ),
        None => None,
    };
    let root = root_abs.as_deref();
    let runtime_dir = ctx.runtime_dir.clone();
    let dry = args.dry_activate || ctx.dry_env;

    if args.check_mode != CheckMode::Off {
        let plan = validate::plan(&m, root, OwnerMode::Skip, runtime_dir.as_deref())?;
        let mut report = summary(
            &plan,
            if args.check_mode == CheckMode::Manifest {
                "check-manifest"
            } else {
                "check-sopsfile"
            },
        );
        if args.check_mode == CheckMode::Sopsfile {
            let engine = make_engine(&plan, false, true)?;
            check_sops_files(&plan, engine.as_ref())?;
        }
        report.warnings.clear();
        return Ok(report);
    }

    if m.user_mode && runtime_dir.is_none() {
        return Err(InstallError::invalid(
            "manifest",
            "userMode needs XDG_RUNTIME_DIR to be set",
        ));
    }
    if root.is_none() && !m.user_mode && !ctx.is_root {
        return Err(InstallError::NotRoot);
    }
    let privileged = ctx.is_root && !m.user_mode;
    let dir = users::Directory::new(root);
    let owner_mode = if args.ignore_passwd {
        OwnerMode::Root
    } else if dry {
        OwnerMode::Lenient(&dir)
    } else {
        OwnerMode::Resolve(&dir)
    };
    let plan = validate::plan(&m, root, owner_mode, runtime_dir.as_deref())?;
    let mut report = summary(&plan, if dry { "dry-activate" } else { "install" });
    let keys_gid = if args.ignore_passwd {
        0
    } else {
        dir.keys_gid()
    };
    let owners = Owners {
        chown: privileged,
        keys_gid,
    };

    // Everything that can refuse the run does so before a single file is written.
    let current = switch::read_current(&plan.link, &plan.mount)?;
    let mut link_states = Vec::with_capacity(plan.items.len());
    for item in &plan.items {
        link_states.push(match &item.link {
            Some((path, target)) => Some(switch::inspect_link(
                path,
                target,
                &plan.link,
                owners.chown.then_some(()).and(item.ids),
                &item.what(),
            )?),
            None => None,
        });
    }
    let t0 = std::time::Instant::now();
    let engine = make_engine(&plan, args.generate_age_key, false)?;
    let values = decrypt_values(&plan, engine.as_ref())?;
    tracing::debug!(
        elapsed_us = t0.elapsed().as_micros() as u64,
        files = plan.sources.len(),
        "decrypted"
    );
    drop(engine);

    let delivery = delivery(ctx, root, dry);
    if dry {
        let old = current.and_then(|n| {
            MountDir::open(&plan.mount)
                .ok()
                .and_then(|mnt| mnt.open_generation(n))
        });
        report.previous_generation = current;
        report.changes = units::detect(old.as_ref(), &plan.items, &values, owners.chown);
        log_changes(&plan, &report.changes, true);
        report.requested = units::deliver(&report.changes, &delivery)?;
        return Ok(report);
    }

    mount::prepare(&plan.mount, plan.use_tmpfs, privileged, keys_gid)?;
    let mnt = MountDir::open(&plan.mount)?;
    // Read again under the lock: a concurrent run may have switched in between.
    let current = switch::read_current(&plan.link, &plan.mount)?;
    let leftovers = mnt.remove_leftovers(current)?;
    if !leftovers.is_empty() {
        tracing::info!(removed = ?leftovers, "removed leftovers of interrupted runs");
    }
    let n = current.unwrap_or(0) + 1;
    let mut generation = mnt.create_generation(n, owners)?;
    let old = current.and_then(|c| mnt.open_generation(c));
    // Comparing with the active generation only reads it, so it runs beside the writer.
    let (written, changes) = std::thread::scope(|s| {
        let detector = s.spawn(|| units::detect(old.as_ref(), &plan.items, &values, owners.chown));
        let written = plan
            .items
            .iter()
            .zip(&values)
            .try_for_each(|(item, value)| {
                generation.write(&item.what(), &item.rel, item.ids, item.mode, value.expose())
            });
        (
            written,
            detector.join().expect("change detection does not panic"),
        )
    });
    written?;
    generation.finish()?;
    drop(values);
    report.previous_generation = current;
    report.changes = changes;
    tracing::debug!(
        elapsed_us = t0.elapsed().as_micros() as u64,
        generation = n,
        "generation written, changes detected"
    );

    for (item, state) in plan.items.iter().zip(&link_states) {
        if let (Some((path, target)), Some(LinkState::Missing | LinkState::Replace)) =
            (&item.link, state)
        {
            switch::replace_link(path, target, if owners.chown { item.ids } else { None })?;
        }
    }
    switch::replace_link(
        &plan.link,
        &switch::generation_target(&plan.mount_for_links, n),
        None,
    )?;
    generation.commit();
    report.generation = Some(n);
    tracing::info!(
        event = "secrets_installed",
        generation = n,
        secrets = report.secrets,
        templates = report.templates,
        path = %plan.link.display(),
        "secrets installed"
    );
    log_changes(&plan, &report.changes, false);

    // The new generation is active; what follows can only produce warnings (exit 1).
    match units::deliver(&report.changes, &delivery) {
        Ok(said) => report.requested = said,
        Err(e) => report.warnings.push(e.to_string()),
    }
    tracing::debug!(elapsed_us = t0.elapsed().as_micros() as u64, "switched");
    match mnt.prune(n, plan.keep_generations) {
        Ok(p) => report.pruned = p,
        Err(e) => report
            .warnings
            .push(format!("cannot prune old generations: {e}")),
    }
    tracing::debug!(elapsed_us = t0.elapsed().as_micros() as u64, "pruned");
    Ok(report)
}

fn summary(plan: &Plan, mode: &'static str) -> Report {
    let templates = plan.items.iter().filter(|i| i.is_template).count();
    let mut warnings = Vec::new();
    if !plan.pgp_sources.is_empty() {
        warnings.push(format!(
            "PGP key sources are not supported and were ignored: {}",
            plan.pgp_sources.join(", ")
        ));
    }
    for w in &warnings {
        tracing::info!("{w}");
    }
    Report {
        mode,
        secrets: plan.items.len() - templates,
        templates,
        sops_files: plan.sources.len(),
        ..Default::default()
    }
}

fn delivery(ctx: &Context, root: Option<&Path>, dry: bool) -> Delivery {
    if ctx.via_systemctl {
        // Under --root only an explicit override is run: a sandbox must never restart host units.
        match (ctx.systemctl.clone(), root) {
            (Some(p), _) => return Delivery::Systemctl { program: p, dry },
            (None, None) => {
                return Delivery::Systemctl {
                    program: "systemctl".into(),
                    dry,
                };
            }
            (None, Some(_)) => return Delivery::Report,
        }
    }
    Delivery::ActivationLists {
        nixos_dir: validate::host_path(root, "/run/nixos"),
        dry,
    }
}

/// The sops-nix style change lines (`adding secrets: a, b`), when `logging.secretChanges`.
fn log_changes(plan: &Plan, changes: &Changes, dry: bool) {
    for (what, kind) in &changes.changed {
        tracing::info!(event = "secret_changed", item = %what, change = ?kind, dry, "secret changed");
    }
    for r in &changes.removed {
        tracing::info!(event = "secret_removed", path = %r, dry, "secret removed");
    }
    if !plan.logging.secret_changes {
        return;
    }
    let names = |kind: ChangeKind| -> Vec<String> {
        changes
            .changed
            .iter()
            .filter(|(_, k)| *k == kind)
            .map(|(w, _)| w.clone())
            .collect()
    };
    let lines = [
        (names(ChangeKind::Added), "adding", "would add"),
        (names(ChangeKind::Modified), "modifying", "would modify"),
        (
            names(ChangeKind::Metadata),
            "changing owner/mode of",
            "would change owner/mode of",
        ),
        (changes.removed.clone(), "removing", "would remove"),
    ];
    for (list, verb, dry_verb) in lines {
        if !list.is_empty() {
            eprintln!("{} {}", if dry { dry_verb } else { verb }, list.join(", "));
        }
    }
}

fn sops_err(plan: &Plan, source: usize, e: EngineError) -> InstallError {
    let s = &plan.sources[source];
    let users: Vec<&str> = plan
        .items
        .iter()
        .filter(|i| matches!(i.content, Content::Secret { source: x, .. } if x == source))
        .map(|i| i.name.as_str())
        .collect();
    let secret = match users.len() {
        0 | 1 => format!("secret '{}'", s.first_secret),
        2 | 3 => format!("secrets '{}'", users.join("', '")),
        more => format!(
            "secrets '{}', '{}' and {} more",
            users[0],
            users[1],
            more - 2
        ),
    };
    InstallError::SopsFile {
        secret,
        file: s.display.clone(),
        sops_kind: e.kind,
        detail: e.detail,
    }
}

fn check_sops_files(plan: &Plan, engine: &dyn Engine) -> Result<(), InstallError> {
    for (i, s) in plan.sources.iter().enumerate() {
        let keys: Vec<&[String]> = plan
            .items
            .iter()
            .filter_map(|it| match &it.content {
                Content::Secret {
                    source,
                    key: Some(k),
                } if *source == i => Some(k.as_slice()),
                _ => None,
            })
            .collect();
        engine
            .check(&s.path, s.format, &keys)
            .map_err(|e| sops_err(plan, i, e))?;
    }
    Ok(())
}

/// One sops file's decryption outcome.
type OpenResult = Result<Box<dyn Opened>, EngineError>;

/// Decrypts every sops file once (in parallel), then picks each secret's value and renders the
/// templates. Values are aligned with `plan.items`.
fn decrypt_values(plan: &Plan, engine: &dyn Engine) -> Result<Vec<SecretBytes>, InstallError> {
    let n = plan.sources.len();
    let slots: Mutex<Vec<Option<OpenResult>>> = Mutex::new((0..n).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(n)
        .max(1);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let src = &plan.sources[i];
                    let r = engine.open(&src.path, src.format);
                    slots.lock().expect("no panics while held")[i] = Some(r);
                }
            });
        }
    });
    let mut opened = Vec::with_capacity(n);
    for (i, slot) in slots
        .into_inner()
        .expect("threads joined")
        .into_iter()
        .enumerate()
    {
        match slot.expect("every source was opened") {
            Ok(o) => opened.push(o),
            Err(e) => return Err(sops_err(plan, i, e)),
        }
    }
    let mut values: Vec<Option<SecretBytes>> = Vec::with_capacity(plan.items.len());
    for item in &plan.items {
        values.push(match &item.content {
            Content::Secret { source, key } => {
                let o = &opened[*source];
                let r = match key {
                    None => o.whole(),
                    Some(k) => o.value(k),
                };
                Some(r.map_err(|e| InstallError::Value {
                    secret: item.name.clone(),
                    file: plan.sources[*source].display.clone(),
                    detail: e.detail,
                })?)
            }
            Content::Template { .. } => None,
        });
    }
    drop(opened);
    let phs: Vec<&[u8]> = plan
        .placeholders
        .iter()
        .map(|(p, _)| p.as_slice())
        .collect();
    let secret_values: Vec<SecretBytes> = plan
        .placeholders
        .iter()
        .map(|(_, i)| values[*i].clone().expect("placeholders name secrets"))
        .collect();
    let secret_refs: Vec<&[u8]> = secret_values.iter().map(|v| v.expose()).collect();
    Ok(plan
        .items
        .iter()
        .zip(values)
        .map(|(item, v)| match (&item.content, v) {
            (Content::Template { text }, _) => templates::render(text, &phs, &secret_refs),
            (_, Some(v)) => v,
            (_, None) => unreachable!("secrets always have a value"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    //! The whole flow against an in-memory engine, unprivileged in a `--root` sandbox. Real
    //! mounts, owners and the real SOPS engine are covered by `tests/integration/install.rs`.
    use super::engine::fake::FakeEngine;
    use super::*;
    use std::collections::BTreeMap;
    use std::os::unix::fs::PermissionsExt;

    struct Sandbox {
        dir: tempfile::TempDir,
        files: BTreeMap<PathBuf, BTreeMap<String, String>>,
    }

    impl Sandbox {
        fn new() -> Sandbox {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("run/nixos")).unwrap();
            Sandbox {
                dir,
                files: BTreeMap::new(),
            }
        }
        fn root(&self) -> &Path {
            self.dir.path()
        }
        fn set(&mut self, file: &str, key: &str, value: &str) {
            let p = self.root().join(file.trim_start_matches('/'));
            self.files
                .entry(p)
                .or_default()
                .insert(key.into(), value.into());
        }
        fn install(&self, manifest: &str, dry: bool) -> Result<Report, InstallError> {
            let mpath = self.root().join("manifest.json");
            std::fs::write(&mpath, manifest).unwrap();
            let args = InstallArgs {
                manifest: Some(mpath.clone()),
                manifest_arg: None,
                root: Some(self.root().into()),
                check_mode: CheckMode::Off,
                generate_age_key: false,
                dry_activate: dry,
                ignore_passwd: false,
                json: false,
            };
            let ctx = Context {
                is_root: false,
                runtime_dir: None,
                dry_env: false,
                via_systemctl: false,
                systemctl: None,
            };
            let files = self.files.clone();
            let factory =
                move |_: &Plan, _: bool, _: bool| -> Result<Box<dyn Engine>, InstallError> {
                    Ok(Box::new(FakeEngine {
                        files: files.clone(),
                    }))
                };
            install(&args, &mpath, &ctx, &factory)
        }
        fn read(&self, p: &str) -> String {
            std::fs::read_to_string(self.root().join(p)).unwrap()
        }
        fn link(&self) -> PathBuf {
            std::fs::read_link(self.root().join("run/secrets")).unwrap()
        }
    }

    const MANIFEST: &str = r#"{"secrets":[
        {"name":"db","key":"db/password","sopsFile":"/s/a.yaml","mode":"0440","restartUnits":["db.service"]},
        {"name":"bots/token","key":"token","sopsFile":"/s/a.yaml","path":"/etc/bot/token","reloadUnits":["bot.service"]}],
      "templates":[{"name":"app.env","content":"PW=<P1>\nTOKEN=<P2>\n","mode":"0400","restartUnits":["app.service"]}],
      "placeholderBySecretName":{"db":"<P1>","bots/token":"<P2>"}}"#;

    #[test]
    fn installs_switches_detects_changes_and_prunes() {
        let mut sb = Sandbox::new();
        sb.set("/s/a.yaml", "db/password", "hunter2");
        sb.set("/s/a.yaml", "token", "t0k");
        let r = sb.install(MANIFEST, false).unwrap();
        assert_eq!(r.generation, Some(1));
        assert!(
            r.changes.restart.is_empty(),
            "first boot requests no restarts"
        );
        assert_eq!(sb.link(), sb.root().join("run/secrets.d/1"));
        assert_eq!(sb.read("run/secrets/db"), "hunter2");
        assert_eq!(
            sb.read("run/secrets/rendered/app.env"),
            "PW=hunter2\nTOKEN=t0k\n"
        );
        assert_eq!(sb.read("etc/bot/token"), "t0k");
        let mode = std::fs::metadata(sb.root().join("run/secrets/db"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o440);

        // Same values: nothing changes, nothing restarts.
        let r = sb.install(MANIFEST, false).unwrap();
        assert_eq!(r.generation, Some(2));
        assert!(r.changes.changed.is_empty() && r.changes.restart.is_empty());
        assert_eq!(r.pruned, vec![1]);

        // A new value restarts its units and the template's.
        sb.set("/s/a.yaml", "db/password", "correct horse");
        let r = sb.install(MANIFEST, false).unwrap();
        assert_eq!(r.changes.restart, vec!["db.service", "app.service"]);
        assert!(r.changes.reload.is_empty());
        assert_eq!(
            sb.read("run/nixos/activation-restart-list"),
            "db.service\napp.service\n"
        );
        assert_eq!(
            sb.read("run/secrets/rendered/app.env"),
            "PW=correct horse\nTOKEN=t0k\n"
        );
        assert!(!sb.root().join("run/secrets.d/2").exists());

        // A mode change alone counts (sops-nix ignores it).
        let r = sb
            .install(&MANIFEST.replace("\"0440\"", "\"0400\""), false)
            .unwrap();
        assert_eq!(
            r.changes.changed,
            vec![("secret 'db'".to_string(), ChangeKind::Metadata)]
        );
        assert_eq!(r.changes.restart, vec!["db.service"]);

        // A removed secret is reported.
        let one = r#"{"secrets":[{"name":"db","key":"db/password","sopsFile":"/s/a.yaml","mode":"0400"}]}"#;
        let r = sb.install(one, false).unwrap();
        assert_eq!(r.changes.removed, vec!["bots/token", "rendered/app.env"]);
    }

    #[test]
    fn any_failure_keeps_the_previous_generation_and_removes_the_new_one() {
        let mut sb = Sandbox::new();
        sb.set("/s/a.yaml", "db/password", "hunter2");
        sb.set("/s/a.yaml", "token", "t0k");
        sb.install(MANIFEST, false).unwrap();
        let bad = MANIFEST.replace("\"key\":\"token\"", "\"key\":\"missing/key\"");
        let e = sb.install(&bad, false).unwrap_err().to_string();
        assert!(
            e.contains("secret 'bots/token'")
                && e.contains("missing/key")
                && e.contains("/s/a.yaml"),
            "{e}"
        );
        let e = sb
            .install(
                &MANIFEST.replace("/s/a.yaml\",\"path", "/s/nope.yaml\",\"path"),
                false,
            )
            .unwrap_err();
        assert!(matches!(e, InstallError::SopsFile { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("secret 'bots/token': sops file '/s/nope.yaml'"),
            "{e}"
        );
        assert_eq!(sb.link(), sb.root().join("run/secrets.d/1"));
        let names: Vec<String> = std::fs::read_dir(sb.root().join("run/secrets.d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["1"]);
        assert_eq!(sb.read("run/secrets/db"), "hunter2");
    }

    #[test]
    fn planted_file_at_a_custom_path_is_refused_before_anything_is_written() {
        let mut sb = Sandbox::new();
        sb.set("/s/a.yaml", "db/password", "hunter2");
        sb.set("/s/a.yaml", "token", "t0k");
        std::fs::create_dir_all(sb.root().join("etc/bot")).unwrap();
        std::fs::write(sb.root().join("etc/bot/token"), "planted").unwrap();
        let e = sb.install(MANIFEST, false).unwrap_err();
        assert_eq!(e.kind(), "planted", "{e}");
        assert!(e.to_string().contains("secret 'bots/token'"), "{e}");
        assert!(!sb.root().join("run/secrets").exists());
        assert_eq!(sb.read("etc/bot/token"), "planted");
    }

    #[test]
    fn dry_activate_writes_only_the_dry_lists() {
        let mut sb = Sandbox::new();
        sb.set("/s/a.yaml", "db/password", "hunter2");
        sb.set("/s/a.yaml", "token", "t0k");
        sb.install(MANIFEST, false).unwrap();
        sb.set("/s/a.yaml", "token", "new");
        let r = sb.install(MANIFEST, true).unwrap();
        assert_eq!(r.generation, None);
        assert_eq!(r.changes.reload, vec!["bot.service"]);
        assert_eq!(
            sb.read("run/nixos/dry-activation-reload-list"),
            "bot.service\n"
        );
        assert!(!sb.root().join("run/nixos/activation-reload-list").exists());
        assert_eq!(sb.link(), sb.root().join("run/secrets.d/1"));
        assert_eq!(sb.read("run/secrets/bots/token"), "t0k");
        assert!(!sb.root().join("run/secrets.d/2").exists());
    }
}
