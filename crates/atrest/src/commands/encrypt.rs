use std::process::ExitCode;

#[derive(clap::Args)]
pub struct EncryptArgs {}

pub fn run(_args: EncryptArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
