//! Helpers shared by several commands.

use std::path::Path;

use anyhow::Context;
use atrest_core::config::{self, EncryptionConfiguration, LoadOptions};
use atrest_core::{KmsOutage, ResourceTransformer, TransformError, Transformers};
use atrest_store::etcd::EtcdError;

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
    emit(std::process::ExitCode::SUCCESS, |out| {
        out.write_all(text.as_bytes()).context("writing to stdout")
    })
    .map(|_| ())
}

/// The one error every command gives when a KMS provider of the config is not answering (plugin
/// down, unhealthy, backend failing): it names the provider and endpoint and says that this is an
/// outage, not data loss, and what happened to the command's work (`consequence`).
pub fn kms_outage(outage: &KmsOutage, consequence: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{outage} — an outage, not data loss: {consequence}; start the plugin (or repair its backend) and run the command again"
    )
}

/// What commands that read before they report say when a KMS provider is down at the start.
pub const NOTHING_DONE: &str = "no report was made and nothing was changed";

/// Stops with [`kms_outage`] unless every KMS v2 provider of the config can say its current key ID.
pub fn check_kms(transformers: &Transformers) -> anyhow::Result<()> {
    transformers
        .check_kms()
        .map_err(|o| kms_outage(&o, NOTHING_DONE))
}

/// [`check_kms`] for the providers of one resource only (commands that read one object).
pub fn check_kms_for(transformer: &ResourceTransformer) -> anyhow::Result<()> {
    transformer
        .check_kms()
        .map_err(|o| kms_outage(&o, NOTHING_DONE))
}

/// An etcd-side failure with `context`, except a KMS outage, which gets [`kms_outage`] with
/// `consequence` instead (it has nothing to do with etcd).
pub fn etcd_failure(err: EtcdError, context: String, consequence: &str) -> anyhow::Error {
    match err {
        EtcdError::Kms(outage) => kms_outage(&outage, consequence),
        EtcdError::NothingWritten(inner) if matches!(*inner, EtcdError::Kms(_)) => {
            etcd_failure(*inner, context, consequence)
        }
        other => anyhow::Error::new(other).context(context),
    }
}

/// A failed read of one value: a KMS outage becomes [`kms_outage`]; `None` for an undecryptable
/// value (the caller lists it, exit 4).
pub fn outage_of(err: &TransformError, consequence: &str) -> Option<anyhow::Error> {
    err.outage().map(|o| kms_outage(o, consequence))
}

/// Whether `err` comes from writing to a closed pipe (the reader of `| head` exited).
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .map(std::io::Error::kind)
            .or_else(|| e.downcast_ref::<serde_json::Error>()?.io_error_kind())
            == Some(std::io::ErrorKind::BrokenPipe)
    })
}

/// Prints a report to stdout and returns the command's exit code `code`; when the reader closed
/// the pipe, stops quietly with the same code (the verdict does not depend on who reads it).
pub fn emit(
    code: std::process::ExitCode,
    print: impl FnOnce(&mut dyn std::io::Write) -> anyhow::Result<()>,
) -> anyhow::Result<std::process::ExitCode> {
    let mut out = std::io::stdout().lock();
    let printed = print(&mut out).and_then(|()| Ok(std::io::Write::flush(&mut out)?));
    match printed {
        Ok(()) => Ok(code),
        Err(e) if is_broken_pipe(&e) => Ok(code),
        Err(e) => Err(e),
    }
}

/// The one parser of every duration flag: `5s`, `500ms`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 5s, 500ms)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("duration {s:?} must be positive"));
    }
    std::time::Duration::try_from_secs_f64(secs).map_err(|_| format!("duration {s:?} is too large"))
}

/// Largest stdin `encrypt`, `decrypt` and `decode` read: one etcd value (base64 of it included)
/// with room to spare; `/dev/zero` does not exhaust memory.
pub const MAX_STDIN_BYTES: u64 = 64 << 20;

/// All of stdin, one etcd value: at most [`MAX_STDIN_BYTES`], base64-decoded (whitespace ignored)
/// when `base64`.
pub fn read_stdin_value(base64: bool) -> anyhow::Result<zeroize::Zeroizing<Vec<u8>>> {
    use base64::Engine as _;
    use std::io::Read as _;
    let mut raw = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin()
        .take(MAX_STDIN_BYTES + 1)
        .read_to_end(&mut raw)
        .context("reading stdin")?;
    anyhow::ensure!(
        raw.len() as u64 <= MAX_STDIN_BYTES,
        "stdin is larger than {MAX_STDIN_BYTES} bytes; one etcd value is at most etcd's --max-request-bytes (1.5 MiB by default)"
    );
    if !base64 {
        return Ok(raw);
    }
    let text: zeroize::Zeroizing<Vec<u8>> = zeroize::Zeroizing::new(
        raw.iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect(),
    );
    Ok(zeroize::Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text.as_slice())
            .context("stdin is not valid base64")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1e30s").is_err());
        assert!(parse_duration("99999999999999999999999h").is_err());
    }
}
