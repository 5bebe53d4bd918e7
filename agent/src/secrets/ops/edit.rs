//! `clawdlets secrets edit HOST NAME`: decrypts one secret into a private directory on a RAM
//! filesystem (`crate::editor`), runs $VISUAL/$EDITOR on it, re-encrypts a changed value, and
//! removes the directory afterwards. A persistent directory is refused unless
//! `--allow-persistent-tmp`.

use anyhow::{Context as _, bail};

use super::plan::Plan;
use super::{CommonArgs, Ctx, GuardArgs, HostAccess, input, repo};
use crate::editor::{private_dir, run_editor, write_private_file};
use crate::exit::ExitCode;
use crate::secret::SecretBytes;

/// Edit one secret in $EDITOR (plaintext only on a private RAM filesystem).
#[derive(Debug, clap::Args)]
pub struct EditArgs {
    /// The host.
    pub host: String,
    /// The secret name.
    pub name: String,
    /// Allow a temporary directory on persistent disk when no tmpfs is available (the plaintext
    /// may then survive on disk blocks).
    #[arg(long)]
    pub allow_persistent_tmp: bool,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub guard: GuardArgs,
}

pub fn run(args: EditArgs) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::open(&args.common)?;
    let spec = super::declared(&ctx, &args.host, &args.name)?.value.clone();
    let access = HostAccess::open(&ctx, &args.common, &args.host)?;
    let guard = args.guard.guard();
    if let Some(code) = super::refuse_early(&guard, &args.host, true) {
        return Ok(code);
    }
    let path = ctx.repo.host_secret(&args.host, &args.name);
    let label = ctx.repo.rel(&path).to_string();
    if !path.exists() {
        bail!(
            "'{label}' does not exist\nhint: `clawdlets secrets set {} {}` creates it",
            args.host,
            args.name
        );
    }
    let old = super::decrypt_secret(&path, &args.name, &access.operator.identity, &label)?;

    let new = {
        let dir = private_dir(args.allow_persistent_tmp)?;
        let file = dir.path.join(&args.name);
        write_private_file(&file, old.expose())?;
        run_editor(&file)?;
        let edited = SecretBytes::new(
            std::fs::read(&file)
                .with_context(|| format!("cannot read back '{}'", file.display()))?,
        );
        // Editors append a final newline; keep the original's convention.
        if old.expose().ends_with(b"\n") {
            edited
        } else {
            input::strip_one_newline(edited)
        }
        // `dir` drops here: file overwritten and removed, directory removed.
    };
    if new.is_empty() {
        bail!("the edited value is empty; nothing written");
    }
    if new.ct_eq(old.expose()) {
        eprintln!("{label}: unchanged");
        return Ok(ExitCode::Success);
    }
    // password-hash: a password typed over the hash is stored as its hash.
    let field = format!("hosts.{}.secrets.{}", args.host, args.name);
    let (new, how) = super::supplied_value(&spec, &field, new)?;
    let encrypted = super::encrypt_secret(&args.name, &new, &access.recipients(), &label)?;
    let mut plan = Plan::default();
    plan.write(
        path,
        encrypted.clone(),
        repo::FILE_MODE,
        true,
        super::init::with_how("edited value".into(), how),
    );
    super::plan_extra_copy(&mut plan, &ctx.repo, &args.host, &args.name, &encrypted);
    tracing::info!(event = "secret_edited", host = %args.host, secret = %args.name, operator = %access.operator.name, "secret edit planned");
    super::execute(&ctx, &plan, &guard, &args.host)
}
