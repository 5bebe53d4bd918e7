//! `clawdlets secrets set HOST NAME`: sets one declared secret to a value read from stdin (or a
//! hidden prompt on a terminal), encrypted to the host and the operators, and refreshes the
//! extra-files copy. Replacing an existing value needs `--confirm HOST` (stdin carries the
//! value, so there is nobody to ask). The value never appears in argv. For a `password-hash`
//! secret the value is the login password (or an existing crypt hash): only its hash is stored.

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
    let spec = super::declared(&ctx, &args.host, &args.name)?.value.clone();
    let field = format!("hosts.{}.secrets.{}", args.host, args.name);
    let access = HostAccess::open(&ctx, &args.common, &args.host)?;
    let mut guard = args.guard.guard();
    let path = ctx.repo.host_secret(&args.host, &args.name);
    if let Some(code) = super::refuse_early(&guard, &args.host, path.exists()) {
        return Ok(code);
    }
    let is_login = matches!(spec, crate::fleet::ValueSpec::PasswordHash { .. });
    let (value, source) = if std::io::stdin().is_terminal() {
        let label = if is_login {
            format!(
                "login password {} for {} (input hidden; only its hash is stored)",
                args.name, args.host
            )
        } else {
            format!("value of {} for {} (input hidden)", args.name, args.host)
        };
        (input::prompt_confirmed(&label)?, "value from the prompt")
    } else {
        // stdin is the value: no prompt can follow.
        guard.interactive = false;
        (input::read_stdin_value(args.raw)?, "value from stdin")
    };
    // password-hash: the password becomes its hash here; the plaintext goes no further.
    let (value, how) = super::supplied_value(&spec, &field, value)?;
    let label = ctx.repo.rel(&path).to_string();
    let encrypted = super::encrypt_secret(&args.name, &value, &access.recipients(), &label)?;
    drop(value);
    let mut plan = Plan::default();
    plan.write(
        path,
        encrypted.clone(),
        repo::FILE_MODE,
        true,
        super::init::with_how(source.into(), how),
    );
    super::plan_extra_copy(&mut plan, &ctx.repo, &args.host, &args.name, &encrypted);
    plan.notes.push(format!("deploy: nixos-rebuild switch --flake .#{0} (or push secrets/hosts/{0}/ and run `clawdlets secrets install` on the host)", args.host));
    tracing::info!(event = "secret_set", host = %args.host, secret = %args.name, operator = %access.operator.name, "secret set planned");
    super::execute(&ctx, &plan, &guard, &args.host)
}
