//! The command line: clap structs grouped by concern, and dispatch to each concern's `run`.
//! Subcommand groups are added only when they work; each group's arguments live in its module.

use clap::{Parser, Subcommand};

use crate::exit::ExitCode;
use crate::logging::LogFormat;

/// Keeps a fleet of bot servers secure: SOPS secrets, orchestrator, egress proxy, host checks.
///
/// Exit codes: 0 success; 1 the command ran and found a problem; 2 the command could not run.
#[derive(Debug, Parser)]
#[command(name = "clawdlets", version, propagate_version = true)]
pub struct Cli {
    /// Log format on stderr (journald is picked automatically under systemd).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    /// More log output (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read and write SOPS files with age keys, compatible with the `sops` tool.
    Sops(Box<crate::sops::cli::SopsCmd>),
    /// Secrets: install them on a host (`install`); init, set, edit, rotate, rekey and check them
    /// in the operator repo.
    #[command(subcommand)]
    Secrets(crate::secrets::SecretsCmd),
    /// The bots' control plane daemon (unix socket + SQLite) and its cattle agent.
    Orchestrator(crate::orchestrator::OrchestratorArgs),
    /// Enqueue, list, show and cancel orchestrator jobs (the bots' client; JSON output).
    Jobs(crate::jobs::JobsArgs),
    /// Loopback HTTP(S) proxy that lets bots reach only allowlisted domains.
    EgressProxy(crate::egress::EgressArgs),
    /// Hardening checks of this host, or of a remote host's SSH exposure (--remote).
    Verify(crate::verify::VerifyArgs),
    /// Print a shell completion script for bash, zsh, fish, elvish or powershell.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// Long-running daemons log at info by default: their per-request decision and audit lines
    /// are the record operators rely on. One-shot commands stay quiet unless asked (`-v`).
    pub fn default_verbosity(&self) -> u8 {
        let daemon = match self {
            Command::EgressProxy(_) => true,
            Command::Orchestrator(args) => {
                matches!(
                    args.command,
                    crate::orchestrator::OrchestratorCommand::Serve(_)
                )
            }
            _ => false,
        };
        u8::from(daemon)
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Sops(cmd) => crate::sops::run(*cmd),
        Command::Secrets(cmd) => crate::secrets::run(cmd),
        Command::Orchestrator(args) => crate::orchestrator::run(args),
        Command::Jobs(args) => crate::jobs::run(args),
        Command::EgressProxy(args) => crate::egress::run(args),
        Command::Verify(args) => crate::verify::run(args),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "clawdlets",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::Success)
        }
    }
}
