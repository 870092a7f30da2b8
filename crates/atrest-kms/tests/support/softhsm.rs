//! A SoftHSM2 token created by the test in a temp dir (SOFTHSM2_CONF points at it).

use std::path::PathBuf;
use std::process::Command;

use atrest_kms::backends::pkcs11::Pkcs11Config;
use atrest_kms::Zeroizing;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const PIN: &str = "1234";
pub const SO_PIN: &str = "12345678";

/// SoftHSM2 reads SOFTHSM2_CONF once per C_Initialize and the PKCS#11 library state is
/// process-wide, so tests sharing a process (plain `cargo test`) take turns; under nextest each
/// test is its own process anyway.
static ONE_TOKEN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct SoftHsm {
    _turn: std::sync::MutexGuard<'static, ()>,
    pub dir: tempfile::TempDir,
    pub conf: PathBuf,
    pub token_label: String,
}

impl SoftHsm {
    /// Creates a fresh token. Sets SOFTHSM2_CONF for this process (each nextest test is its own
    /// process), so call it before starting any backend.
    pub fn new(token_label: &str) -> SoftHsm {
        let turn = ONE_TOKEN_AT_A_TIME
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        super::require_tool("softhsm2-util", "apt-get install softhsm2");
        assert!(
            std::path::Path::new(MODULE).exists(),
            "SoftHSM2 module {MODULE} missing: apt-get install softhsm2"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).expect("token dir");
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("write conf");
        // Safe: set before any other thread of this test process exists.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &conf)
            .args([
                "--init-token",
                "--free",
                "--label",
                token_label,
                "--pin",
                PIN,
                "--so-pin",
                SO_PIN,
            ])
            .output()
            .expect("run softhsm2-util");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SoftHsm {
            _turn: turn,
            dir,
            conf,
            token_label: token_label.to_string(),
        }
    }

    pub fn config(&self, labels: &[&str]) -> Pkcs11Config {
        Pkcs11Config {
            module: MODULE.into(),
            slot: None,
            token_label: Some(self.token_label.clone()),
            pin: Zeroizing::new(PIN.to_string()),
            key_labels: labels.iter().map(|s| s.to_string()).collect(),
            sessions: 4,
        }
    }
}
