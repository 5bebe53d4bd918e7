//! `clawdlets secrets set HOST NAME`: sets one declared secret to a value read from stdin (or a
//! hidden prompt on a terminal), encrypted to the host and the operators, and refreshes the
//! extra-files copy. Replacing an existing value needs `--confirm HOST` (stdin carries the
//! value, so there is nobody to ask). The value never appears in argv.

use std::io::IsTerminal as _;

use super::plan::Plan;
use super::{CommonArgs, Ctx, GuardArgs, HostAccess, input, repo};
use crate::exit::ExitCode;

/// Set one secret from stdin or a hidden prompt.
#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// The host.
    pub host: String,
    /// The secret name (declared in hosts.HOST.secrets).
    pub name: String,
    /// Keep the value byte for byte (by default one trailing newline is removed).
    #[arg(long)]
    pub raw: bool,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub guard: GuardArgs,
}

pub fn run(args: SetArgs) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::open(&args.common)?;
    super::declared(&ctx, &args.host, &args.name)?;
    let access = HostAccess::open(&ctx, &args.common, &args.host)?;
    let mut guard = args.guard.guard();
    let path = ctx.repo.host_secret(&args.host, &args.name);
    if let Some(code) = super::refuse_early(&guard, &args.host, path.exists()) {
        return Ok(code);
    }
    let value = if std::io::stdin().is_terminal() {
        let v = input::prompt_secret(&format!(
            "value of {} for {} (input hidden)",
            args.name, args.host
        ))?;
        let again = input::prompt_secret("again")?;
        if !v.ct_eq(again.expose()) {
            anyhow::bail!("the two values differ; nothing written");
        }
        v
    } else {
        // stdin is the value: no prompt can follow.
        guard.interactive = false;
        input::read_stdin_value(args.raw)?
    };
    let label = ctx.repo.rel(&path).to_string();
    let encrypted = super::encrypt_secret(&args.name, &value, &access.recipients(), &label)?;
    drop(value);
    let mut plan = Plan::default();
    plan.write(
        path,
        encrypted.clone(),
        repo::FILE_MODE,
        true,
        "value from stdin",
    );
    super::plan_extra_copy(&mut plan, &ctx.repo, &args.host, &args.name, &encrypted);
    plan.notes.push(format!("deploy: nixos-rebuild switch --flake .#{0} (or push secrets/hosts/{0}/ and run `clawdlets secrets install` on the host)", args.host));
    tracing::info!(event = "secret_set", host = %args.host, secret = %args.name, operator = %access.operator.name, "secret set planned");
    super::execute(&ctx, &plan, &guard, &args.host)
}
