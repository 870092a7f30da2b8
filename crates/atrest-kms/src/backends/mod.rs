//! Key backends, one folder each, all behind [`crate::KeyBackend`].
//!
//! * [`local`]: versioned 256-bit KEKs in a 0700 directory of 0600 files, optionally sealed by a
//!   passphrase (scrypt). The default: no other service needed.
//! * [`pkcs11`]: an AES key inside a PKCS#11 token (HSM, SoftHSM2); wrapping happens in the token.
//! * [`vault`]: Vault / OpenBao Transit over HTTP(S).
//! * [`aws`]: AWS KMS (JSON API, SigV4), alias re-pointing as KEK rotation.

pub mod aws;
pub mod local;
pub mod pkcs11;
pub mod vault;

use std::path::PathBuf;
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::backend::{BackendError, KeyBackend};

/// Whether this process runs as root (the `/var/lib/atrest/…` defaults apply then).
pub(crate) fn running_as_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Which backend to open, with its settings (what `atrest kms serve` flags become).
pub enum BackendSpec {
    Local {
        key_store: PathBuf,
        passphrase: Option<Zeroizing<Vec<u8>>>,
    },
    Pkcs11(pkcs11::Pkcs11Config),
    Vault(vault::VaultConfig),
    AwsKms(aws::AwsKmsConfig),
}

/// Opens the backend `spec` describes; errors say exactly what is wrong (missing store, bad
/// permissions, wrong PIN, Vault unreachable…).
pub async fn open(spec: BackendSpec) -> Result<Arc<dyn KeyBackend>, BackendError> {
    Ok(match spec {
        BackendSpec::Local {
            key_store,
            passphrase,
        } => {
            let backend = Arc::new(local::LocalBackend::open(
                &key_store,
                passphrase.as_ref().map(|p| p.as_slice()),
            )?);
            // Rotations are picked up at once; without inotify the periodic refresh still works.
            if let Err(e) = local::watch::start(&backend) {
                tracing::warn!(error = %e, "key store not watched; rotations are picked up by the periodic refresh");
            }
            backend
        }
        BackendSpec::Pkcs11(cfg) => Arc::new(
            tokio::task::spawn_blocking(move || pkcs11::Pkcs11Backend::open(cfg))
                .await
                .map_err(|e| BackendError::Unavailable(format!("PKCS#11 setup failed: {e}")))??,
        ),
        BackendSpec::Vault(cfg) => Arc::new(vault::VaultBackend::connect(cfg).await?),
        BackendSpec::AwsKms(cfg) => Arc::new(aws::AwsKmsBackend::connect(cfg).await?),
    })
}
