//! `clawdlets secrets rotate HOST [NAME...]`: new values for a host's secrets. Without names,
//! every generated secret rotates (provided ones too when `--from-json` carries them); login
//! passwords (`password-hash`) rotate only when named or given in `--from-json`. Each file
//! is encrypted afresh (new data key). Needs `--confirm HOST` or the host name at the prompt.
//! Prints the new public halves (SSH, WireGuard) and the units to restart.

use std::path::PathBuf;

use anyhow::bail;

use super::plan::Plan;
use super::{CommonArgs, Ctx, GuardArgs, HostAccess, generate, input, repo};
use crate::exit::ExitCode;

/// Replace secrets with new values.
#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The host.
    pub host: String,
    /// Secrets to rotate (default: every generated secret of the host except login passwords).
    pub names: Vec<String>,
    /// New values for provided secrets: `{"secrets": {"NAME": "VALUE"}}` (`-` = stdin).
    #[arg(long, value_name = "FILE")]
    pub from_json: Option<PathBuf>,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub guard: GuardArgs,
}

pub fn run(args: RotateArgs) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::open(&args.common)?;
    let host = ctx.host(&args.host)?.clone();
    for n in &args.names {
        super::declared(&ctx, &args.host, n)?;
    }
    let access = HostAccess::open(&ctx, &args.common, &args.host)?;
    let mut guard = args.guard.guard();
    let provided = match &args.from_json {
        Some(p) => {
            if p.as_os_str() == "-" {
                guard.interactive = false;
            }
            Some(input::Provided::load(p)?)
        }
        None => None,
    };
    if let Some(p) = &provided {
        for n in p.names() {
            if !host.secrets.contains_key(n) {
                bail!(
                    "--from-json: '{n}' is not declared in hosts.{}.secrets",
                    args.host
                );
            }
        }
    }
    if let Some(code) = super::refuse_early(&guard, &args.host, true) {
        return Ok(code);
    }
    let names: Vec<String> = if args.names.is_empty() {
        host.secrets
            .iter()
            .filter(|(n, s)| {
                s.value.rotates_by_default()
                    || provided.as_ref().is_some_and(|p| p.get(n).is_some())
            })
            .map(|(n, _)| n.clone())
            .collect()
    } else {
        args.names.clone()
    };
    if names.is_empty() {
        bail!(
            "nothing to rotate on '{}': no generated secrets and no --from-json values",
            args.host
        );
    }
    let recipients = access.recipients();
    let mut plan = Plan::default();
    let mut units = Vec::new();
    for name in &names {
        let spec = &host.secrets[name];
        let path = ctx.repo.host_secret(&args.host, name);
        let label = ctx.repo.rel(&path).to_string();
        let field = format!("hosts.{}.secrets.{name}", args.host);
        let is_login = matches!(spec.value, crate::fleet::ValueSpec::PasswordHash { .. });
        let (value, note) = if let Some(v) = provided.as_ref().and_then(|p| p.get(name)) {
            let (v, how) = super::supplied_value(&spec.value, &field, v.clone())?;
            (
                v,
                super::init::with_how("new value from --from-json".into(), how),
            )
        } else if spec.value.is_generated() {
            if is_login && !guard.dry_run {
                super::require_terminal_for_shown_once(&field)?;
            }
            let g = generate::generate(&spec.value, &format!("{}/{name}", args.host))?;
            if let Some(public) = &g.public {
                plan.notes
                    .push(format!("new public key of {name}: {public}"));
            }
            if let Some(pw) = g.shown_once {
                plan.shown_once
                    .push((format!("{name} on {}", args.host), pw));
            }
            (g.value, format!("new {} value", spec.value.kind()))
        } else if guard.dry_run {
            (
                crate::secret::SecretBytes::from("placeholder-never-written"),
                format!("{} (value not read in a dry run)", spec.value.kind()),
            )
        } else if guard.interactive {
            if is_login {
                let v = input::prompt_confirmed(&format!(
                    "new login password {name} for {} (input hidden; only its hash is stored)",
                    args.host
                ))?;
                let (v, how) = super::supplied_value(&spec.value, &field, v)?;
                (
                    v,
                    super::init::with_how("new value from the prompt".into(), how),
                )
            } else {
                (
                    input::prompt_secret(&format!(
                        "new value of {name} for {} (input hidden)",
                        args.host
                    ))?,
                    "new value from the prompt".into(),
                )
            }
        } else {
            bail!(
                "{field} is supplied by the operator: pass its new value with --from-json FILE or run on a terminal"
            );
        };
        let encrypted = super::encrypt_secret(name, &value, &recipients, &label)?;
        plan.write(path, encrypted.clone(), repo::FILE_MODE, true, note);
        super::plan_extra_copy(&mut plan, &ctx.repo, &args.host, name, &encrypted);
        units.extend(spec.restart_units.iter().cloned());
        tracing::info!(event = "secret_rotated", host = %args.host, secret = %name, operator = %access.operator.name, "secret rotation planned");
    }
    plan.notes.push(format!(
        "deploy: commit secrets/, then `nixos-rebuild switch --flake .#{0} --target-host {1}` (the old values stay valid until then)",
        args.host,
        host.target_host.as_deref().unwrap_or("root@HOST")
    ));
    if !units.is_empty() {
        units.sort();
        units.dedup();
        plan.notes
            .push(format!("units restarted on deploy: {}", units.join(" ")));
    }
    plan.notes.push(
        "revoke old values where they are issued (e.g. regenerate the bot token at its provider)"
            .into(),
    );
    super::execute(&ctx, &plan, &guard, &args.host)
}
