//! stub
use crate::exit::ExitCode;
#[derive(Debug, clap::Args)]
pub struct EditArgs {}
pub fn run(_args: EditArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("todo")
}
