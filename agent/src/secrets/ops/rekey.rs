//! `clawdlets secrets rekey`: makes every sops file match the recipients the fleet demands now.
//! Files whose recipients only grew are re-encrypted for the new set; files that lost a
//! recipient (operator removed, host key rotated) are re-encrypted with a NEW data key, so a
//! removed operator holding an old copy of the data key still cannot open the current files.
//! `--rotate-host-key` replaces a host's age key and prints how to push it to a live host.
//!
//! What revocation cannot undo (also in docs/secrets.md): old ciphertexts in git history stay
//! readable with the removed key, and any value the person saw stays known — rotate values.

use std::collections::BTreeSet;

use anyhow::{Context as _, bail};

use super::keys::{self, AgeKey};
use super::plan::Plan;
use super::{CommonArgs, Ctx, GuardArgs, engine, repo};
use crate::exit::ExitCode;
use crate::secret::SecretBytes;

/// Re-encrypt to the current recipients; rotate a host key.
#[derive(Debug, clap::Args)]
pub struct RekeyArgs {
    /// Only these hosts (default: every initialised host).
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Replace the host's age key (needs exactly one --host); prints the steps for a live host.
    #[arg(long)]
    pub rotate_host_key: bool,
    /// Re-encrypt every file with a new data key even when its recipients are right.
    #[arg(long)]
    pub rotate_data_keys: bool,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub guard: GuardArgs,
}

pub fn run(args: RekeyArgs) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::open(&args.common)?;
    let guard = args.guard.guard();
    for h in &args.hosts {
        ctx.host(h)?;
    }
    if args.rotate_host_key && args.hosts.len() != 1 {
        bail!("--rotate-host-key needs exactly one --host");
    }
    let name = keys::operator_name(&ctx.repo, &ctx.fleet, args.common.operator.as_deref())?;
    let operator = keys::load_operator(&ctx.repo, &ctx.fleet, &name)?;
    let operators = keys::operator_recipients(&ctx.fleet, None)?;
    let wanted_ops: BTreeSet<&str> = operators.iter().map(String::as_str).collect();
    let hosts: Vec<String> = if args.hosts.is_empty() {
        ctx.fleet.hosts.keys().cloned().collect()
    } else {
        args.hosts.clone()
    };

    let mut plan = Plan::default();
    let mut removed_any: BTreeSet<String> = BTreeSet::new();
    let mut overrides = Vec::new();
    let mut touched = Vec::new();
    for host in &hosts {
        let Some(old_key) = keys::read_host_key(&ctx.repo, host, &operator.identity)? else {
            plan.notes
                .push(format!("{host}: not initialised (no host key), skipped"));
            continue;
        };
        let new_key = if args.rotate_host_key {
            AgeKey::generate()
        } else {
            old_key.clone()
        };
        overrides.push((host.clone(), new_key.recipient.clone()));

        // The host key file: operators only.
        let key_path = ctx.repo.host_key_file(host);
        let key_label = ctx.repo.rel(&key_path).to_string();
        let (_, env) = engine::read_envelope(&key_path, &key_label)?;
        let removed = diff(&env.age_recipients, &wanted_ops);
        if args.rotate_host_key || args.rotate_data_keys || !same(&env.age_recipients, &wanted_ops)
        {
            let bytes = keys::encrypt_host_key(&new_key, &operators, &key_label)?;
            let note = if args.rotate_host_key {
                "new host key".to_string()
            } else {
                reason(&removed, "operators", true)
            };
            plan.write(
                key_path.clone(),
                bytes,
                repo::FILE_MODE,
                args.rotate_host_key || !removed.is_empty(),
                note,
            );
            removed_any.extend(removed);
            touched.push(host.clone());
        } else {
            plan.unchanged.push(key_path);
        }
        if args.rotate_host_key {
            plan.write(
                ctx.repo.extra_key(host),
                new_key.key_line(),
                repo::EXTRA_KEY_MODE,
                true,
                "new host key for key.txt",
            );
        }

        // Every sops file of the host (declared or not): host key + operators.
        let want = keys::host_secret_recipients(&new_key.recipient, &operators);
        let want_set: BTreeSet<&str> = want.iter().map(String::as_str).collect();
        let dir = ctx.repo.host_secrets_dir(host);
        let mut files: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
                .collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        let declared = &ctx.fleet.hosts[host].secrets;
        for path in files {
            let label = ctx.repo.rel(&path).to_string();
            let (bytes, env) = engine::read_envelope(&path, &label)?;
            let removed = diff(&env.age_recipients, &want_set);
            let secret_name = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            if args.rotate_data_keys || !same(&env.age_recipients, &want_set) {
                // Any removed recipient (or --rotate-data-keys): a new data key for every value.
                // Additions only: the same data key re-wrapped for the new set.
                let new_dk = args.rotate_data_keys || !removed.is_empty();
                let encrypted = SecretBytes::new(
                    engine::rekey(&bytes, &operator.identity, &want, new_dk, &label)
                        .with_context(|| format!("operator '{name}' cannot re-key it; another operator must run rekey"))?,
                );
                let note = if args.rotate_host_key
                    && removed.len() == 1
                    && removed[0] == old_key.recipient
                {
                    "re-encrypted for the new host key (new data key)".to_string()
                } else {
                    reason(&removed, "recipients", new_dk)
                };
                plan.write(
                    path.clone(),
                    encrypted.clone(),
                    repo::FILE_MODE,
                    !removed.is_empty(),
                    note,
                );
                if declared.contains_key(&secret_name) {
                    super::plan_extra_copy(&mut plan, &ctx.repo, host, &secret_name, &encrypted);
                }
                removed_any.extend(
                    removed
                        .into_iter()
                        .filter(|r| *r != old_key.recipient || !args.rotate_host_key),
                );
                if !touched.contains(host) {
                    touched.push(host.clone());
                }
            } else {
                plan.unchanged.push(path.clone());
                if declared.contains_key(&secret_name) {
                    super::plan_extra_copy(
                        &mut plan,
                        &ctx.repo,
                        host,
                        &secret_name,
                        &SecretBytes::new(bytes),
                    );
                }
            }
        }
        if args.rotate_host_key {
            print_host_rotation_steps(&mut plan, &ctx, host, &old_key, &new_key);
        }
    }
    let all_hosts = super::host_recipients(&ctx, &operator.identity, &overrides)?;
    super::plan_sops_yaml(&mut plan, &ctx, &all_hosts, &operators)?;

    if !removed_any.is_empty() {
        plan.notes.push(format!(
            "revoked: {} can no longer open the current files (new data keys). They can still open the old versions in git history and know every value they ever saw: rotate those values with `clawdlets secrets rotate HOST`.",
            removed_any.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    tracing::info!(event = "secrets_rekey_planned", hosts = ?touched, removed = removed_any.len(), operator = %name, "rekey planned");
    let confirm_word = if touched.len() <= 1 && hosts.len() == 1 {
        hosts[0].clone()
    } else {
        "fleet".to_string()
    };
    super::execute(&ctx, &plan, &guard, &confirm_word)
}

fn same(current: &[String], wanted: &BTreeSet<&str>) -> bool {
    let cur: BTreeSet<&str> = current.iter().map(String::as_str).collect();
    &cur == wanted && cur.len() == current.len()
}

fn diff(current: &[String], wanted: &BTreeSet<&str>) -> Vec<String> {
    current
        .iter()
        .filter(|r| !wanted.contains(r.as_str()))
        .cloned()
        .collect()
}

fn reason(removed: &[String], what: &str, new_data_key: bool) -> String {
    match (removed.len(), new_data_key) {
        (0, false) => format!("re-wrapped for the current {what} (same data key)"),
        (0, true) => format!("re-encrypted for the current {what} (new data key)"),
        (n, _) => format!("removed {n} recipient(s): new data key"),
    }
}

fn print_host_rotation_steps(plan: &mut Plan, ctx: &Ctx, host: &str, old: &AgeKey, new: &AgeKey) {
    let target = ctx.fleet.hosts[host]
        .target_host
        .clone()
        .unwrap_or_else(|| "root@HOST".into());
    let key = ctx.repo.rel(&ctx.repo.extra_key(host)).to_string();
    let dir = ctx.repo.rel(&ctx.repo.extra_secrets_dir(host)).to_string();
    plan.notes.push(format!(
        "host key of {host}: {} -> {}\n\
         The live host still holds only the old key. Push the new one without a gap:\n\
         \x20 1. add the new key next to the old one (a key file may hold several identities):\n\
         \x20    ssh {target} 'umask 077; cat >> /var/lib/sops-nix/key.txt' < {key}\n\
         \x20 2. commit secrets/ and deploy the re-encrypted files:\n\
         \x20    nixos-rebuild switch --flake .#{host} --target-host {target}\n\
         \x20    (or: rsync -a --delete {dir}/ {target}:/var/lib/clawdlets/secrets/hosts/{host}/ and run `clawdlets secrets install` there)\n\
         \x20 3. once secrets installed cleanly, keep only the new key:\n\
         \x20    ssh {target} 'install -m 0600 /dev/stdin /var/lib/sops-nix/key.txt' < {key}\n\
         \x20 4. a leaked old key still opens old copies of these files (git history): rotate the values too.",
        old.recipient, new.recipient
    ));
}
