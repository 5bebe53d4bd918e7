//! Operator-side secrets lifecycle (runs on the operator's machine, never on a host):
//! `secrets init/set/edit/rotate/rekey/check` over the repo layout in `repo.rs`.
//!
//! Every writing command builds a `plan::Plan` first, then the shared guard decides (dry-run,
//! confirmation, refusal) and applies it atomically. Values live in `SecretBytes` from the
//! moment they are generated or read until they are encrypted; no value reaches argv, stdout,
//! logs or error messages. This module must not decrypt onto persistent disk (`edit` uses a
//! private tmpfs directory) and must not print plaintext.

pub mod check;
pub mod edit;
pub mod engine;
pub mod generate;
pub mod hygiene;
pub mod init;
pub mod input;
pub mod keys;
pub mod passhash;
pub mod plan;
pub mod rekey;
pub mod repo;
pub mod rotate;
pub mod set;
pub mod sopsconfig;

use std::io::IsTerminal as _;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::exit::ExitCode;
use crate::fleet::Fleet;
use plan::{Decision, Guard, Plan};
use repo::Repo;

/// Options every operator command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// The operator repo (holding fleet/clawdlets.json). Default: the current directory or the
    /// nearest parent that has one.
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,
    /// Which operator of the fleet you are (default: the one whose key exists locally).
    #[arg(long, env = "CLAWDLETS_OPERATOR", value_name = "NAME")]
    pub operator: Option<String>,
}

/// The guard rails of every writing command.
#[derive(Debug, Clone, clap::Args)]
pub struct GuardArgs {
    /// Print the exact plan (files created, replaced, deleted) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Apply a plan that only creates files without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Confirm replacing or deleting existing secrets of HOST non-interactively.
    #[arg(long, value_name = "HOST")]
    pub confirm: Option<String>,
    /// Print the plan as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

impl GuardArgs {
    pub fn guard(&self) -> Guard {
        Guard {
            dry_run: self.dry_run,
            yes: self.yes,
            confirm: self.confirm.clone(),
            json: self.json,
            interactive: std::io::stdin().is_terminal(),
        }
    }
}

/// The loaded repo and fleet.
#[derive(Debug)]
pub struct Ctx {
    pub repo: Repo,
    pub fleet: Fleet,
    pub fleet_text: String,
    /// flock on the repo root directory, held until the command ends: two commands never plan
    /// and write the same repo at once. Locking a directory writes nothing (dry runs stay pure).
    _lock: std::fs::File,
}

impl Ctx {
    pub fn open(common: &CommonArgs) -> anyhow::Result<Ctx> {
        let repo = match &common.repo {
            Some(dir) => Repo::new(std::path::absolute(dir).context("cannot resolve --repo")?),
            None => {
                let cwd = std::env::current_dir().context("cannot read the current directory")?;
                Repo::discover(&cwd).with_context(|| {
                    format!(
                        "no fleet/clawdlets.json in '{}' or its parents\nhint: pass --repo DIR",
                        cwd.display()
                    )
                })?
            }
        };
        let lock = std::fs::File::open(&repo.root)
            .with_context(|| format!("cannot open '{}'", repo.root.display()))?;
        {
            use std::os::fd::AsRawFd as _;
            // SAFETY: flock on an fd we own; released when the File is dropped (process end).
            let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc != 0 {
                anyhow::bail!(
                    "another `clawdlets secrets` command is running in '{}'; try again when it has finished",
                    repo.root.display()
                );
            }
        }
        let path = repo.fleet_config();
        let fleet_text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read fleet config '{}'", path.display()))?;
        let fleet = crate::fleet::parse(&fleet_text, std::path::Path::new("fleet/clawdlets.json"))?;
        Ok(Ctx {
            repo,
            fleet,
            fleet_text,
            _lock: lock,
        })
    }

    /// The host's config, or an error naming the hosts that exist.
    pub fn host(&self, host: &str) -> anyhow::Result<&crate::fleet::Host> {
        self.fleet.hosts.get(host).with_context(|| {
            let known: Vec<&str> = self.fleet.hosts.keys().map(String::as_str).collect();
            format!(
                "host '{host}' is not in fleet/clawdlets.json (hosts: {})",
                known.join(", ")
            )
        })
    }
}

/// Prints the plan, lets the guard decide, applies it. Returns the exit code: 0 applied, dry
/// run or nothing to do; 1 refused.
pub fn execute(
    ctx: &Ctx,
    plan: &Plan,
    guard: &Guard,
    confirm_word: &str,
) -> anyhow::Result<ExitCode> {
    // The plan is shown before any prompt, so the operator confirms what they saw.
    if !guard.json {
        print!("{}", plan.render(&ctx.repo));
        for n in &plan.notes {
            println!("{n}");
        }
    }
    let decision = plan.decide(guard, confirm_word);
    let applied = decision == Decision::Apply;
    if applied {
        plan.apply(&ctx.repo)?;
    }
    if guard.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&plan.to_json(&ctx.repo, applied))?
        );
    }
    match decision {
        Decision::Apply => {
            eprintln!("applied {} change(s)", plan.actions.len());
            show_once(&plan.shown_once);
            Ok(ExitCode::Success)
        }
        Decision::DryRun => {
            eprintln!("dry run: nothing written");
            Ok(ExitCode::Success)
        }
        Decision::Nothing => Ok(ExitCode::Success),
        Decision::Refused(why) => {
            tracing::warn!(
                event = "secrets_plan_refused",
                host = confirm_word,
                "plan refused"
            );
            eprintln!("refused: {why}");
            Ok(ExitCode::Failure)
        }
    }
}

/// Prints generated login passwords once, on stderr (commands only generate them when stderr
/// is a terminal: `require_terminal_for_shown_once`). Only their hashes are stored.
fn show_once(items: &[(String, crate::secret::SecretBytes)]) {
    use std::io::Write as _;
    if items.is_empty() {
        return;
    }
    let mut err = std::io::stderr().lock();
    for (label, pw) in items {
        let _ = writeln!(
            err,
            "\nnew password of {label} (shown once: only its hash is stored; keep it in your password manager now):"
        );
        let _ = err.write_all(b"    ");
        // The one place a value is shown: a generated password, on the operator's terminal.
        let _ = err.write_all(pw.expose());
        let _ = err.write_all(b"\n\n");
    }
    let _ = err.flush();
    tracing::info!(
        event = "secrets_password_shown",
        count = items.len(),
        "generated login password(s) shown on the terminal"
    );
}

/// Refuses to generate a login password that could not be shown: it is printed once on stderr
/// and stored only as a hash, so stderr must be a terminal (not a log file or a CI capture).
pub fn require_terminal_for_shown_once(field: &str) -> anyhow::Result<()> {
    if std::io::stderr().is_terminal() {
        return Ok(());
    }
    anyhow::bail!(
        "{field}: a generated login password is shown once on the terminal and stored only as its hash, but stderr is not a terminal\nhint: run on a terminal, or supply the password yourself (--from-json FILE, or `clawdlets secrets set` on stdin) and clawdlets stores its hash"
    )
}

/// The value to store for an operator-supplied value of a secret of kind `spec`: for
/// `password-hash`, a password becomes its SHA-512-crypt hash (an existing crypt hash is kept);
/// every other kind stores what was supplied. Returns the value and, for password hashes, a
/// note for the plan. Errors name `field`, never the value.
pub fn supplied_value(
    spec: &crate::fleet::ValueSpec,
    field: &str,
    value: crate::secret::SecretBytes,
) -> anyhow::Result<(crate::secret::SecretBytes, Option<String>)> {
    match spec {
        crate::fleet::ValueSpec::PasswordHash { rounds, .. } => {
            let rounds = rounds.unwrap_or(crate::fleet::validate::DEFAULT_HASH_ROUNDS);
            let (v, how) = passhash::prepare(&value, rounds).with_context(|| field.to_string())?;
            Ok((v, Some(how.describe())))
        }
        _ => Ok((value, None)),
    }
}

/// Adds the extra-files copy of an encrypted secret (0400) to the plan.
pub fn plan_extra_copy(
    plan: &mut Plan,
    repo: &Repo,
    host: &str,
    name: &str,
    encrypted: &crate::secret::SecretBytes,
) {
    plan.write(
        repo.extra_secret(host, name),
        encrypted.clone(),
        repo::EXTRA_SECRET_MODE,
        false,
        "nixos-anywhere copy",
    );
}

/// Recipients (age1...) of every host whose key file exists, decrypted with the operator key;
/// `overrides` replace or add hosts (a key created or rotated by the current plan).
pub fn host_recipients(
    ctx: &Ctx,
    identity: &engine::Identity,
    overrides: &[(String, String)],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for host in ctx.fleet.hosts.keys() {
        if let Some((_, r)) = overrides.iter().find(|(h, _)| h == host) {
            out.push((host.clone(), r.clone()));
        } else if let Some(k) = keys::read_host_key(&ctx.repo, host, identity)? {
            out.push((host.clone(), k.recipient));
        }
    }
    Ok(out)
}

/// Adds `secrets/.sops.yaml` (rendered from the fleet, keeping rules and keys an operator added
/// for other paths) to the plan.
pub fn plan_sops_yaml(
    plan: &mut Plan,
    ctx: &Ctx,
    hosts: &[(String, String)],
    operators: &[String],
) -> anyhow::Result<()> {
    let path = ctx.repo.sops_yaml();
    let existing = match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read '{}'", path.display())),
    };
    let (text, kept) = keys::render_sops_yaml_over(existing.as_deref(), hosts, operators)?;
    let note = if kept.is_empty() {
        "creation rules".to_string()
    } else {
        format!("creation rules; kept: {}", kept.join(", "))
    };
    plan.write_public(
        path,
        crate::secret::SecretBytes::new(text.into_bytes()),
        note,
    );
    Ok(())
}

/// What a command needs to (re)write a host's secrets: the operator identity, the operators'
/// recipients and the host key. Refuses when the operator key is missing or the host was never
/// initialised.
#[derive(Debug)]
pub struct HostAccess {
    pub operator: keys::Operator,
    pub operators: Vec<String>,
    pub host_key: keys::AgeKey,
}

impl HostAccess {
    pub fn open(ctx: &Ctx, common: &CommonArgs, host: &str) -> anyhow::Result<HostAccess> {
        ctx.host(host)?;
        let name = keys::operator_name(&ctx.repo, &ctx.fleet, common.operator.as_deref())?;
        let operator = keys::load_operator(&ctx.repo, &ctx.fleet, &name)?;
        let operators = keys::operator_recipients(&ctx.fleet, None)?;
        let host_key = keys::read_host_key(&ctx.repo, host, &operator.identity)?.with_context(|| {
            format!(
                "host '{host}' has no key yet ('{}' is missing)\nhint: run `clawdlets secrets init --host {host}` first",
                ctx.repo.rel(&ctx.repo.host_key_file(host))
            )
        })?;
        Ok(HostAccess {
            operator,
            operators,
            host_key,
        })
    }

    /// Recipients of this host's secret files.
    pub fn recipients(&self) -> Vec<String> {
        keys::host_secret_recipients(&self.host_key.recipient, &self.operators)
    }
}

/// Encrypts one secret in the layout's format (a single top-level key named after the file).
pub fn encrypt_secret(
    name: &str,
    value: &crate::secret::SecretBytes,
    recipients: &[String],
    label: &str,
) -> anyhow::Result<crate::secret::SecretBytes> {
    Ok(crate::secret::SecretBytes::new(engine::encrypt(
        &[(name, value)],
        recipients,
        label,
    )?))
}

/// Decrypts one secret file and returns the value of its single key (named after the file).
pub fn decrypt_secret(
    path: &std::path::Path,
    name: &str,
    identity: &engine::Identity,
    label: &str,
) -> anyhow::Result<crate::secret::SecretBytes> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read '{label}'"))?;
    let entries = engine::decrypt(&bytes, identity, label)?;
    if entries.len() != 1 || entries[0].0 != name {
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        anyhow::bail!("{label}: must hold exactly one top-level key '{name}' (found {keys:?})");
    }
    Ok(entries.into_iter().next().expect("one entry").1)
}

/// The declared secret, or an error naming the fleet field.
pub fn declared<'a>(
    ctx: &'a Ctx,
    host: &str,
    name: &str,
) -> anyhow::Result<&'a crate::fleet::Secret> {
    ctx.host(host)?.secrets.get(name).with_context(|| {
        format!("secret '{name}' is not declared in hosts.{host}.secrets of fleet/clawdlets.json\nhint: declare it there first (with its value kind)")
    })
}

/// Refuses up front (before any prompt, editor or decryption) a destructive command that could
/// not be confirmed anyway: stdin is not a terminal and `--confirm HOST` is missing or wrong.
pub fn refuse_early(guard: &Guard, host: &str, destructive: bool) -> Option<ExitCode> {
    if !destructive || guard.dry_run {
        return None;
    }
    let why = match guard.confirm.as_deref() {
        Some(c) if c == host => return None,
        Some(c) => format!("--confirm '{c}' does not match the host '{host}'"),
        None if guard.interactive => return None,
        None => format!(
            "this replaces existing secrets of '{host}'; confirm with --confirm {host} (stdin is not a terminal)"
        ),
    };
    tracing::warn!(
        event = "secrets_plan_refused",
        host,
        "plan refused before it was built"
    );
    eprintln!("refused: {why}");
    Some(ExitCode::Failure)
}
