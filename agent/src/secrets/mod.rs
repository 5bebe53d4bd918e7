//! `clawdlets secrets ...`: the secrets lifecycle. On hosts, installation into /run/secrets
//! (`install`); on the operator's machine, `init`, `set`, `edit`, `rotate`, `rekey`, `check`
//! (module `ops`) over the repo's sops files. This file only routes subcommands; the logic lives in
//! the submodules. Must not print or log a secret value.

pub mod install;
pub mod ops;

use crate::exit::ExitCode;

/// Secrets: install on hosts; create, change, rotate, rekey and check them in the operator repo.
#[derive(Debug, clap::Subcommand)]
pub enum SecretsCmd {
    /// Materialize sops secrets into /run/secrets from a sops-nix manifest (host, activation).
    Install(install::InstallArgs),
    /// Create the keys, sops files and nixos-anywhere extra-files of a host (idempotent).
    Init(ops::init::InitArgs),
    /// Set one secret from stdin (or a hidden prompt); never from the command line.
    Set(ops::set::SetArgs),
    /// Edit one secret in $EDITOR on a private tmpfs file, then re-encrypt it.
    Edit(ops::edit::EditArgs),
    /// Replace secrets with new values (generated, or provided again).
    Rotate(ops::rotate::RotateArgs),
    /// Re-encrypt to the current recipients (operator added/removed, host key rotation).
    Rekey(ops::rekey::RekeyArgs),
    /// Check the repo for CI and pre-commit: sops files, recipients, git hygiene, modes.
    Check(ops::check::CheckArgs),
}

/// Runs one `secrets` subcommand.
pub fn run(cmd: SecretsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        SecretsCmd::Install(args) => install::run(args),
        SecretsCmd::Init(a) => ops::init::run(a),
        SecretsCmd::Set(a) => ops::set::run(a),
        SecretsCmd::Edit(a) => ops::edit::run(a),
        SecretsCmd::Rotate(a) => ops::rotate::run(a),
        SecretsCmd::Rekey(a) => ops::rekey::run(a),
        SecretsCmd::Check(a) => ops::check::run(a),
    }
}
