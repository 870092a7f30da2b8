use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum BackupCommand {
    /// Not implemented yet.
    Todo,
}

pub fn run(_cmd: BackupCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
