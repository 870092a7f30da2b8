//! The FIPS build (`--features fips`): whether the AWS-LC FIPS module is linked and in FIPS mode,
//! and the one thing it changes in behaviour. AES-CBC, AES-GCM, HMAC/HKDF-SHA256 and the RNG run
//! inside the module; secretbox (XSalsa20-Poly1305, libsodium) is not an approved algorithm, so
//! a FIPS build reads secretbox values (to migrate them off it) but refuses to write them.

/// Whether this binary was built with the `fips` feature (against aws-lc-fips-sys).
pub const FIPS_BUILD: bool = cfg!(feature = "fips");

/// The error a FIPS build gives for a secretbox write.
pub const SECRETBOX_WRITE_REFUSED: &str = "secretbox writes are refused in this FIPS build: XSalsa20-Poly1305 is not a FIPS-approved algorithm; secretbox values stay readable, so make aesgcm or kms v2 the first provider and run `atrest rewrite` to migrate them";

/// Whether secretbox writes are refused (in a FIPS build).
pub fn refuses_secretbox_writes() -> bool {
    FIPS_BUILD
}

/// The `resources[]` entries of `config` whose write provider is secretbox (which a FIPS build
/// refuses to write with); empty outside a FIPS build.
pub fn secretbox_write_entries(config: &crate::EncryptionConfiguration) -> Vec<usize> {
    if !FIPS_BUILD {
        return Vec::new();
    }
    config
        .resources
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            matches!(
                e.providers.first(),
                Some(crate::config::ProviderConfiguration::Secretbox(_))
            )
        })
        .map(|(i, _)| i)
        .collect()
}

/// Whether the linked AWS-LC is the FIPS module running in FIPS mode (its power-on self-tests
/// passed). Always false in a regular build.
pub fn module_in_fips_mode() -> bool {
    aws_lc_rs::try_fips_mode().is_ok()
}

/// One line for `atrest version`: which AWS-LC is linked and whether FIPS mode is on.
pub fn describe() -> String {
    let version = aws_lc_rs::awslc_version();
    match (FIPS_BUILD, module_in_fips_mode()) {
        (true, true) => format!("AWS-LC FIPS module {version}, FIPS mode on"),
        (true, false) => {
            format!("AWS-LC FIPS module {version}, FIPS mode OFF (self-tests failed?)")
        }
        (false, _) => format!("AWS-LC {version} (not the FIPS module; build with --features fips)"),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{explain, load_bytes, LoadOptions};

    #[test]
    fn mode_matches_the_build() {
        assert_eq!(super::module_in_fips_mode(), super::FIPS_BUILD);
        assert!(super::describe().contains(aws_lc_rs::awslc_version()));
    }

    /// A FIPS build names the entries that write with secretbox and `explain` warns about every
    /// secretbox provider (write or read-only); a regular build says nothing.
    #[test]
    fn secretbox_entries_are_reported_in_fips_builds_only() {
        let yaml = b"apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - secretbox: {keys: [{name: k1, secret: YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=}]}
  - resources: [configmaps]
    providers:
      - aesgcm: {keys: [{name: k1, secret: YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=}]}
      - secretbox: {keys: [{name: k1, secret: YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXoxMjM0NTY=}]}
";
        let opts = LoadOptions::default();
        let config = load_bytes(yaml, "enc.yaml", &opts).unwrap();
        let writers = super::secretbox_write_entries(&config);
        let warned: Vec<usize> = explain(&config, &opts)
            .entries
            .iter()
            .filter(|e| e.warnings.iter().any(|w| w.code == "fips-secretbox"))
            .map(|e| e.index)
            .collect();
        if super::FIPS_BUILD {
            assert_eq!(writers, [0]);
            assert_eq!(warned, [0, 1]);
        } else {
            assert!(writers.is_empty());
            assert!(warned.is_empty());
        }
    }
}
