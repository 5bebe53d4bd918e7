//! The `clawdlets` binary: parse the command line, set up logging, dispatch, map errors to exit codes.
//! All logic lives in the library; this file only owns presentation of the final error.

use clap::Parser;
use clawdlets::cli::Cli;
use clawdlets::exit::ExitCode;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let verbosity = cli.verbose.max(cli.command.default_verbosity());
    clawdlets::logging::init(cli.log_format, verbosity);
    match clawdlets::cli::run(cli) {
        Ok(code) => code.into(),
        Err(err) => {
            // `{:#}` prints the whole context chain on one line; messages never carry secret values.
            eprintln!("error: {err:#}");
            ExitCode::from_error(&err).into()
        }
    }
}
