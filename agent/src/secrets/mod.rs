//! `clawdlets secrets ...`: host-side installation of sops secrets (`install`) and, from the
//! operator commands, the secrets' life cycle. This file only routes subcommands; each one lives
//! in its own module. It must not hold logic of its own.

pub mod install;

use crate::exit::ExitCode;

/// Secrets: install on hosts, manage in the operator repo.
#[derive(Debug, clap::Subcommand)]
pub enum SecretsCmd {
    /// Materialize sops secrets into /run/secrets from a sops-nix manifest (host, activation).
    Install(install::InstallArgs),
}

/// Runs one `secrets` subcommand.
pub fn run(cmd: SecretsCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        SecretsCmd::Install(args) => install::run(args),
    }
}
