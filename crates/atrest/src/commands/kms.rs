use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum KmsCommand {
    /// Not implemented yet.
    Todo,
}

pub fn run(_cmd: KmsCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
