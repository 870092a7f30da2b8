//! `atrest keygen`: a fresh key for aescbc, aesgcm or secretbox from the OS CSPRNG, as base64 or as a
//! ready-to-paste provider snippet.

use std::io::Write;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use zeroize::Zeroizing;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyProvider {
    Aescbc,
    Aesgcm,
    Secretbox,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyFormat {
    /// The base64 secret only.
    #[default]
    Base64,
    /// A provider snippet for an EncryptionConfiguration.
    Yaml,
}

#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// The provider the key is for.
    #[arg(long, value_enum)]
    pub provider: KeyProvider,
    /// Key size in bytes: 16, 24 or 32 for AES (default 32); secretbox keys are always 32.
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["16", "24", "32"]))]
    pub size: Option<String>,
    /// Key name in the YAML snippet (default `key-<UTC date>`).
    #[arg(long)]
    pub name: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: KeyFormat,
}

pub fn run(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let size: usize = args
        .size
        .as_deref()
        .unwrap_or("32")
        .parse()
        .context("--size")?;
    if args.provider == KeyProvider::Secretbox && size != 32 {
        anyhow::bail!("secretbox keys are 32 bytes, not {size}");
    }
    let key = atrest_core::providers::generate_key(size).context("generating a key")?;
    let secret = Zeroizing::new(B64.encode(key.as_slice()));
    let text = match args.output {
        KeyFormat::Base64 => Zeroizing::new(format!("{}\n", secret.as_str())),
        KeyFormat::Yaml => {
            let provider = match args.provider {
                KeyProvider::Aescbc => "aescbc",
                KeyProvider::Aesgcm => "aesgcm",
                KeyProvider::Secretbox => "secretbox",
            };
            let name = args.name.clone().unwrap_or_else(default_name);
            Zeroizing::new(format!(
                "- {provider}:\n    keys:\n      - name: {}\n        secret: {}\n",
                serde_json::to_string(&name)?,
                secret.as_str()
            ))
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `key-YYYYMMDD` (UTC), so keys made on different days sort and never collide by default.
pub(crate) fn default_name() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    let (y, m, d) = civil(i64::try_from(days).unwrap_or(0));
    format!("key-{y:04}{m:02}{d:02}")
}

/// Days since 1970-01-01 → (year, month, day), Howard Hinnant's algorithm.
fn civil(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_dates() {
        assert_eq!(super::civil(0), (1970, 1, 1));
        assert_eq!(super::civil(20_785), (2026, 11, 28));
        assert_eq!(super::civil(11_016), (2000, 2, 29));
    }
}
