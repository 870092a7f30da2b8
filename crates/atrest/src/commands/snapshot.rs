use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum SnapshotCommand {
    /// Not implemented yet.
    Todo,
}

pub fn run(_cmd: SnapshotCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
