//! stub
use crate::exit::ExitCode;
#[derive(Debug, clap::Args)]
pub struct SetArgs {}
pub fn run(_args: SetArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("todo")
}
