//! Helpers shared by several commands.

use std::path::Path;

use anyhow::Context;
use atrest_core::config::{self, EncryptionConfiguration, LoadOptions};
use atrest_core::Transformers;

/// Loads `path` with kube-apiserver's rules and builds every resource's transformer; KMS providers
/// are reached through the plugin sockets the config names.
pub fn load_transformers(
    path: &Path,
    opts: &LoadOptions,
) -> anyhow::Result<(EncryptionConfiguration, Transformers)> {
    let config =
        config::load_file(path, opts).with_context(|| format!("loading {}", path.display()))?;
    let transformers = Transformers::build(&config, super::kms::connector())
        .with_context(|| format!("building transformers from {}", path.display()))?;
    Ok((config, transformers))
}

/// Prints `text` on stdout; a reader that went away (`| head`) is a quiet success, not a panic.
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other.context("writing to stdout")?),
    }
}
