//! stub
use crate::exit::ExitCode;
#[derive(Debug, clap::Args)]
pub struct CheckArgs {}
pub fn run(_args: CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("todo")
}
