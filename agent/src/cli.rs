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
    /// Print a shell completion script for bash, zsh, fish, elvish or powershell.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The bots' control plane daemon (unix socket + SQLite) and its cattle agent.
    Orchestrator(crate::orchestrator::OrchestratorArgs),
    /// Enqueue, list, show and cancel orchestrator jobs (the bots' client; JSON output).
    Jobs(crate::jobs::JobsArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
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
        Command::Orchestrator(args) => crate::orchestrator::run(args),
        Command::Jobs(args) => crate::jobs::run(args),
    }
}
