//! Documented process exit codes, shared by every subcommand.
//!
//! 0 success; 1 the command ran and found a problem (a failed check, a refused request);
//! 2 the command could not run (bad usage, unreadable input, missing key). Subcommands that have
//! their own meaning for 1 (verify) document it in their `--help`; one that runs a command for
//! the user (`sops exec-file`) exits with that command's status.

/// A process exit status with a documented meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything succeeded.
    Success,
    /// The command ran and reports a negative result (a check failed, a finding, a refusal).
    Failure,
    /// The command could not do its job: bad input, missing key, I/O error.
    Error,
    /// The exit status of a command we ran for the user (`sops exec-file`), passed through.
    Passthrough(u8),
}

impl ExitCode {
    /// Exit code for an error that reached `main`. Errors always mean "could not run".
    pub fn from_error(_err: &anyhow::Error) -> Self {
        ExitCode::Error
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        match code {
            ExitCode::Success => std::process::ExitCode::SUCCESS,
            ExitCode::Failure => std::process::ExitCode::from(1),
            ExitCode::Error => std::process::ExitCode::from(2),
            ExitCode::Passthrough(code) => std::process::ExitCode::from(code),
        }
    }
}
