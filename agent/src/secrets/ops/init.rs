//! `clawdlets secrets init --host H`: creates what is missing for one host and never touches what
//! exists (a second run plans nothing): the operator key (when the fleet has no recipient for
//! them yet), `.gitignore` for `.clawdlets/`, the host age key (encrypted to the operators, and
//! in plaintext only in the extra-files `key.txt`), `secrets/.sops.yaml`, one sops file per
//! declared secret, and the nixos-anywhere extra-files tree.
//!
//! Refuses to replace anything: a host key that the operator cannot decrypt is an error, never
//! a reason to silently generate a new one (that would lock a live host out of its secrets).

use std::path::PathBuf;

use anyhow::{Context as _, bail};

use super::keys::{self, AgeKey};
use super::plan::Plan;
use super::{CommonArgs, Ctx, GuardArgs, engine, generate, input, repo};
use crate::exit::ExitCode;
use crate::fleet::ValueSpec;
use crate::secret::SecretBytes;

/// Create the keys, sops files and extra-files tree of a host (idempotent).
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The host to initialise.
    #[arg(long)]
    pub host: String,
    /// Values for `provided` secrets: a JSON file `{"secrets": {"NAME": "VALUE"}}` (`-` = stdin).
    #[arg(long, value_name = "FILE")]
    pub from_json: Option<PathBuf>,
    /// Skip provided secrets that have no value (set them later with `secrets set`) instead of failing.
    #[arg(long)]
    pub allow_missing: bool,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub guard: GuardArgs,
}

pub fn run(args: InitArgs) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::open(&args.common)?;
    let host = ctx.host(&args.host)?.clone();
    let mut guard = args.guard.guard();
    if args
        .from_json
        .as_deref()
        .is_some_and(|p| p.as_os_str() == "-")
    {
        guard.interactive = false; // stdin carries the values
    }
    let repo = &ctx.repo;
    let mut plan = Plan::default();

    // 1. The operator key: loaded when present; created only for an operator the fleet has no
    //    recipient for yet (a listed recipient without its key is a lost key: refuse).
    let op_name = keys::operator_name(repo, &ctx.fleet, args.common.operator.as_deref())?;
    let op_path = repo.operator_key(&op_name);
    let listed = ctx
        .fleet
        .operators
        .iter()
        .find(|o| o.name == op_name)
        .and_then(|o| o.age_recipient.clone());
    // A key generated in this run can decrypt nothing yet; the identity is only used when the
    // key file exists (files we decrypt were encrypted to it).
    let (op_recipient, identity, new_op_key) = if op_path.exists() {
        let op = keys::load_operator(repo, &ctx.fleet, &op_name)?;
        (op.recipient, op.identity, None)
    } else if listed.is_none() {
        let key = AgeKey::generate();
        let identity = engine::Identity::new(op_path.clone());
        (key.recipient.clone(), identity, Some(key))
    } else {
        // load_operator produces the refusal message.
        keys::load_operator(repo, &ctx.fleet, &op_name)?;
        unreachable!("load_operator fails when the key file is missing");
    };
    if let Some(key) = &new_op_key {
        plan.create_if_missing(
            op_path.clone(),
            || Ok(key.key_file_text()),
            repo::FILE_MODE,
            format!("operator key of {op_name}"),
        )?;
        plan.write_public(
            repo.operator_pub(&op_name),
            SecretBytes::new(format!("{op_recipient}\n").into_bytes()),
            "operator recipient",
        );
    }
    if listed.is_none() {
        let text = crate::fleet::with_operator_recipient(&ctx.fleet_text, &op_name, &op_recipient)?;
        plan.write_public(
            repo.fleet_config(),
            SecretBytes::new(text.into_bytes()),
            format!("record {op_name}'s ageRecipient"),
        );
    }
    let operators = keys::operator_recipients(&ctx.fleet, Some((&op_name, &op_recipient)))?;

    // 2. `.clawdlets/` must never be committed.
    plan_gitignore(&mut plan, &ctx)?;

    // Enrolment: a new operator of a fleet that already has host keys can read nothing yet
    // (and must not rewrite .sops.yaml without the other hosts' rules). Create the key, record
    // the recipient, and stop; an existing operator then runs `rekey`.
    if new_op_key.is_some()
        && ctx
            .fleet
            .hosts
            .keys()
            .any(|h| repo.host_key_file(h).exists())
    {
        plan.notes.push(
            "enrolment: commit fleet/clawdlets.json with your recipient; an existing operator then runs `clawdlets secrets rekey` so you can read the fleet's secrets"
                .to_string(),
        );
        return super::execute(&ctx, &plan, &guard, &args.host);
    }

    // 3. The host key: decrypt the existing one, recover it from extra-files, or generate.
    let key_file = repo.host_key_file(&args.host);
    let extra_key = repo.extra_key(&args.host);
    let host_key = if key_file.exists() {
        let k = keys::read_host_key(repo, &args.host, &identity)?.expect("exists");
        if extra_key.exists() {
            let on_disk = keys::read_key_file(&extra_key)?;
            if on_disk.recipient != k.recipient {
                bail!(
                    "'{}' holds a different key ({}) than '{}' ({}): refusing to guess\nhint: `clawdlets secrets rekey --host {} --rotate-host-key` makes a new consistent pair",
                    repo.rel(&extra_key),
                    on_disk.recipient,
                    repo.rel(&key_file),
                    k.recipient,
                    args.host
                );
            }
        }
        plan.unchanged.push(key_file.clone());
        k
    } else {
        let (k, note) = if extra_key.exists() {
            (
                keys::read_key_file(&extra_key)?,
                "host key recovered from extra-files key.txt",
            )
        } else {
            (
                AgeKey::generate(),
                "new host age key, encrypted to the operators",
            )
        };
        let label = repo.rel(&key_file).to_string();
        let bytes = keys::encrypt_host_key(&k, &operators, &label)?;
        plan.write(key_file.clone(), bytes, repo::FILE_MODE, true, note);
        k
    };
    plan.create_if_missing(
        extra_key,
        || Ok(host_key.key_line()),
        repo::EXTRA_KEY_MODE,
        "host key for /var/lib/sops-nix/key.txt",
    )?;

    // 4. .sops.yaml from every initialised host plus this one.
    let hosts = if new_op_key.is_some() {
        vec![(args.host.clone(), host_key.recipient.clone())]
    } else {
        super::host_recipients(
            &ctx,
            &identity,
            &[(args.host.clone(), host_key.recipient.clone())],
        )?
    };
    super::plan_sops_yaml(&mut plan, &ctx, &hosts, &operators)?;

    // 5. One sops file per declared secret; existing files are kept as they are.
    let provided = match &args.from_json {
        Some(p) => Some(input::Provided::load(p)?),
        None => None,
    };
    if let Some(p) = &provided {
        for name in p.names() {
            if !host.secrets.contains_key(name) {
                bail!(
                    "--from-json: '{name}' is not declared in hosts.{}.secrets",
                    args.host
                );
            }
        }
    }
    let recipients = keys::host_secret_recipients(&host_key.recipient, &operators);
    let mut missing = Vec::new();
    let mut stale = Vec::new();
    for (name, spec) in &host.secrets {
        let path = repo.host_secret(&args.host, name);
        let label = repo.rel(&path).to_string();
        if path.exists() {
            let bytes = std::fs::read(&path).with_context(|| format!("cannot read '{label}'"))?;
            let env = engine::envelope(&bytes, &label)?;
            if env.top_level_keys != [name.clone()] {
                bail!(
                    "{label}: must hold exactly one top-level key '{name}' (found {:?})",
                    env.top_level_keys
                );
            }
            let have: std::collections::BTreeSet<&str> =
                env.age_recipients.iter().map(String::as_str).collect();
            let want: std::collections::BTreeSet<&str> =
                recipients.iter().map(String::as_str).collect();
            if have != want {
                stale.push(name.clone());
            }
            plan.unchanged.push(path);
            super::plan_extra_copy(&mut plan, repo, &args.host, name, &SecretBytes::new(bytes));
            continue;
        }
        let field = format!("hosts.{}.secrets.{name}", args.host);
        let from_json = provided.as_ref().and_then(|p| p.get(name));
        let (value, note) = if let Some(v) = from_json {
            let (v, how) = super::supplied_value(&spec.value, &field, v.clone())?;
            (
                v,
                with_how(format!("{} from --from-json", spec.value.kind()), how),
            )
        } else if spec.value.is_generated() {
            if matches!(spec.value, ValueSpec::PasswordHash { .. }) && !guard.dry_run {
                super::require_terminal_for_shown_once(&field)?;
            }
            let g = generate::generate(&spec.value, &format!("{}/{name}", args.host))?;
            if let Some(public) = &g.public {
                plan.notes.push(format!("public key of {name}: {public}"));
            }
            if let Some(pw) = g.shown_once {
                plan.shown_once
                    .push((format!("{name} on {}", args.host), pw));
            }
            (g.value, describe(&spec.value))
        } else if guard.dry_run {
            plan.notes.push(format!(
                "{name}: {} value needed (prompt, stdin via --from-json -, or --from-json FILE)",
                spec.value.kind()
            ));
            (
                SecretBytes::from("placeholder-never-written"),
                format!("{} (value not read in a dry run)", spec.value.kind()),
            )
        } else if guard.interactive {
            if matches!(spec.value, ValueSpec::PasswordHash { .. }) {
                let v = input::prompt_confirmed(&format!(
                    "login password {name} for {} (input hidden; only its hash is stored)",
                    args.host
                ))?;
                let (v, how) = super::supplied_value(&spec.value, &field, v)?;
                (v, with_how("password-hash at the prompt".into(), how))
            } else {
                (
                    input::prompt_secret(&format!(
                        "value of {name} for {} (input hidden)",
                        args.host
                    ))?,
                    "provided at the prompt".into(),
                )
            }
        } else {
            missing.push(name.clone());
            continue;
        };
        let encrypted = SecretBytes::new(engine::encrypt(
            &[(name.as_str(), &value)],
            &recipients,
            &label,
        )?);
        plan.write(path, encrypted.clone(), repo::FILE_MODE, true, note);
        super::plan_extra_copy(&mut plan, repo, &args.host, name, &encrypted);
    }
    if !missing.is_empty() {
        let fields: Vec<String> = missing
            .iter()
            .map(|n| format!("hosts.{}.secrets.{n}", args.host))
            .collect();
        if !args.allow_missing {
            bail!(
                "no value for operator-supplied secret(s) {} and stdin is not a terminal\nhint: pass --from-json FILE with {{\"secrets\": {{\"{}\": \"...\"}}}}, run on a terminal, or --allow-missing and `clawdlets secrets set` later",
                fields.join(", "),
                missing[0]
            );
        }
        plan.notes.push(format!(
            "skipped (no value): {}; set with `clawdlets secrets set {} NAME`",
            missing.join(", "),
            args.host
        ));
    }

    if !stale.is_empty() {
        plan.notes.push(format!(
            "recipients differ from the fleet for: {} (init never re-encrypts existing files): run `clawdlets secrets rekey --host {}`",
            stale.join(", "),
            args.host
        ));
    }

    // 6. Extra-files copies of secrets no longer declared would resurrect on install: drop them.
    if let Ok(rd) = std::fs::read_dir(repo.extra_secrets_dir(&args.host)) {
        for e in rd.flatten() {
            let fname = e.file_name().to_string_lossy().to_string();
            let declared = fname
                .strip_suffix(".yaml")
                .is_some_and(|n| host.secrets.contains_key(n));
            if !declared {
                plan.delete(e.path(), false, "not a declared secret of this host");
            }
        }
    }
    if plan
        .actions
        .iter()
        .any(|a| a.path.starts_with(repo.extra_files(&args.host)))
        || !plan.is_empty()
    {
        plan.notes.push(format!(
            "install with: nixos-anywhere --extra-files {} --flake .#{} {}",
            repo.rel(&repo.extra_files(&args.host)),
            args.host,
            host.target_host.as_deref().unwrap_or("root@HOST")
        ));
    }
    tracing::info!(event = "secrets_init_planned", host = %args.host, changes = plan.actions.len(), "init planned");
    super::execute(&ctx, &plan, &guard, &args.host)
}

/// A plan note plus what happened to a supplied value ("stored as its sha-512-crypt hash").
pub fn with_how(note: String, how: Option<String>) -> String {
    match how {
        Some(how) => format!("{note}, {how}"),
        None => note,
    }
}

fn describe(spec: &ValueSpec) -> String {
    match spec {
        ValueSpec::PasswordHash { generate: true, .. } => {
            "generated login password, stored as its sha-512-crypt hash (shown once)".into()
        }
        ValueSpec::PasswordHash { .. } => "password-hash".into(),
        ValueSpec::Hex { bytes } => format!("generated hex, {bytes} bytes"),
        ValueSpec::Base64 { bytes } => format!("generated base64, {bytes} bytes"),
        ValueSpec::Password { length } => format!("generated password, {length} chars"),
        ValueSpec::SshEd25519 => "generated ssh-ed25519 key".into(),
        ValueSpec::Wireguard => "generated wireguard key".into(),
        ValueSpec::Provided => "provided".into(),
    }
}

/// Adds `/.clawdlets/` to the repo's `.gitignore` when nothing there ignores it yet.
pub fn plan_gitignore(plan: &mut Plan, ctx: &Ctx) -> anyhow::Result<()> {
    let path = ctx.repo.gitignore();
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    // Ask git when this is a work tree (any pattern style, global excludes); else read the file.
    let by_git = std::process::Command::new("git")
        .arg("-C")
        .arg(&ctx.repo.root)
        .args([
            "check-ignore",
            "-q",
            "--no-index",
            ".clawdlets/keys/operators/x.agekey",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .ok()
        .and_then(|s| s.code());
    let ignored = by_git == Some(0)
        || current.lines().map(str::trim).any(|l| {
            matches!(
                l,
                ".clawdlets"
                    | ".clawdlets/"
                    | "/.clawdlets"
                    | "/.clawdlets/"
                    | ".clawdlets/**"
                    | "/.clawdlets/**"
            )
        });
    if !ignored {
        let mut text = current.clone();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str("# clawdlets: operator keys and the install payload (plaintext host keys)\n/.clawdlets/\n");
        plan.write_public(
            path,
            SecretBytes::new(text.into_bytes()),
            "ignore .clawdlets/",
        );
    }
    Ok(())
}
