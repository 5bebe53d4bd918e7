//! stub
use crate::exit::ExitCode;
#[derive(Debug, clap::Args)]
pub struct RotateArgs {}
pub fn run(_args: RotateArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("todo")
}
