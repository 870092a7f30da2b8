//! `atrest version` (and `--version`): the release and whether the AWS-LC FIPS module is in use.

use std::process::ExitCode;
use std::sync::LazyLock;

use serde::Serialize;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VersionFormat {
    #[default]
    Text,
    Json,
    Yaml,
}

#[derive(clap::Args, Debug)]
pub struct VersionArgs {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: VersionFormat,
}

#[derive(Serialize, Debug)]
pub struct VersionInfo {
    pub version: &'static str,
    /// Built with `--features fips` (against the AWS-LC FIPS module).
    pub fips_build: bool,
    /// The FIPS module is linked and in FIPS mode (its self-tests passed).
    pub fips_mode: bool,
    /// Which AWS-LC is linked, and its mode.
    pub crypto_module: String,
    /// Whether secretbox can be written (a FIPS build only reads it).
    pub secretbox_writes: bool,
}

pub fn info() -> VersionInfo {
    VersionInfo {
        version: env!("CARGO_PKG_VERSION"),
        fips_build: atrest_core::fips::FIPS_BUILD,
        fips_mode: atrest_core::fips::module_in_fips_mode(),
        crypto_module: atrest_core::fips::describe(),
        secretbox_writes: !atrest_core::fips::refuses_secretbox_writes(),
    }
}

/// What `--version` prints after `atrest `: e.g. `0.1.0 (FIPS: AWS-LC FIPS module 3.0.0, FIPS mode on)`.
pub fn long_version() -> &'static str {
    static TEXT: LazyLock<String> = LazyLock::new(|| {
        let i = info();
        let fips = if i.fips_mode { "FIPS" } else { "not FIPS" };
        format!("{} ({fips}: {})", i.version, i.crypto_module)
    });
    TEXT.as_str()
}

pub fn run(args: VersionArgs) -> anyhow::Result<ExitCode> {
    let i = info();
    match args.output {
        VersionFormat::Json => println!("{}", serde_json::to_string_pretty(&i)?),
        VersionFormat::Yaml => print!(
            "{}",
            super::yaml_output::single(&serde_json::to_value(&i)?)?
        ),
        VersionFormat::Text => {
            println!("atrest {}", i.version);
            println!("crypto: {}", i.crypto_module);
            println!(
                "fips: {}",
                if i.fips_mode {
                    "yes (AES, HMAC/HKDF and the RNG run in the FIPS module; secretbox is read-only)"
                } else {
                    "no"
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
