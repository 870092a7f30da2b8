use std::process::ExitCode;

#[derive(clap::Args)]
pub struct GetArgs {}

pub fn run(_args: GetArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
