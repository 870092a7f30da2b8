use std::process::ExitCode;

#[derive(clap::Args)]
pub struct DecryptArgs {}

pub fn run(_args: DecryptArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
