use std::process::ExitCode;

#[derive(clap::Args)]
pub struct KeygenArgs {}

pub fn run(_args: KeygenArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
