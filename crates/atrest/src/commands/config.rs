use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Not implemented yet.
    Todo,
}

pub fn run(_cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
