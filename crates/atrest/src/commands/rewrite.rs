use std::process::ExitCode;

#[derive(clap::Args)]
pub struct RewriteArgs {}

pub fn run(_args: RewriteArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}
