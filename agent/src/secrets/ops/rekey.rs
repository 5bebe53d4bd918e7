//! stub
use crate::exit::ExitCode;
#[derive(Debug, clap::Args)]
pub struct RekeyArgs {}
pub fn run(_args: RekeyArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("todo")
}
