use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum KmsCommand {
    /// Not implemented yet.
    Todo,
}

pub fn run(_cmd: KmsCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not implemented yet")
}

/// The KMS client every command uses for `kms` providers in a config.
/// OWNER: kms helper — replace with the gRPC connector from `atrest-kms`.
pub fn connector() -> std::sync::Arc<dyn atrest_core::kms::KmsConnector> {
    std::sync::Arc::new(atrest_core::kms::NoKms)
}
