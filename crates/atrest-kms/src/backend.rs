//! The one trait every key backend implements, and what it returns.
//!
//! A backend owns key-encrypting keys (KEKs) and wraps/unwraps small secrets (the apiserver's
//! 32-byte seeds, or v1beta1 DEKs) with the current one. The gRPC layer ([`crate::server`]) adds
//! everything protocol-related (size limits, v1beta1 framing, health caching, metrics), so a
//! backend only has to answer four questions:
//!
//! * which KEK writes now ([`KeyBackend::current_key_id`], cheap, in memory),
//! * wrap a secret with it ([`KeyBackend::wrap`]),
//! * unwrap a secret wrapped under a key id it issued ([`KeyBackend::unwrap`]),
//! * re-read its keys (rotation pick-up) and prove it really works ([`KeyBackend::refresh`],
//!   [`KeyBackend::probe`]), both called from the background health loop, never per request.
//!
//! ## Key ids
//! A key id is public (the apiserver logs it and stores it next to every object). Each backend
//! derives it from the KEK's identity so that it is the same on every node using the same KEK,
//! changes when the KEK changes and is never reused for another KEK; see each backend's docs.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

/// A wrapped secret and the KEK that wrapped it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wrapped {
    pub key_id: String,
    pub ciphertext: Vec<u8>,
    /// Plugin annotations (KMS v2 only; keys must be FQDNs). Most backends return none.
    pub annotations: BTreeMap<String, Vec<u8>>,
}

/// What went wrong inside a backend. Messages name the failing step and object, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The caller named a key id this backend never issued (or no longer has).
    #[error("unknown key id {0:?}")]
    UnknownKeyId(String),
    /// The ciphertext is malformed or failed authentication.
    #[error("ciphertext rejected: {0}")]
    BadCiphertext(String),
    /// The backend (HSM, Vault, key store) cannot be used right now.
    #[error("{0}")]
    Unavailable(String),
    /// Configuration or key store problem found at start or reload.
    #[error("{0}")]
    Config(String),
}

/// One KEK provider. Implementations are cheap to share (`Arc<dyn KeyBackend>`), safe to call
/// concurrently, and never log secrets.
#[async_trait::async_trait]
pub trait KeyBackend: Send + Sync + 'static {
    /// Short backend name for logs and metrics: `local`, `pkcs11`, `vault`, `aws-kms`.
    fn kind(&self) -> &'static str;

    /// The key id new wraps use. Cheap (in memory); changes only in [`refresh`](Self::refresh).
    fn current_key_id(&self) -> Result<String, BackendError>;

    /// Wraps `plaintext` with the current KEK.
    async fn wrap(&self, plaintext: &[u8]) -> Result<Wrapped, BackendError>;

    /// Unwraps `ciphertext` that [`wrap`](Self::wrap) returned with `key_id`. Must refuse key ids it
    /// did not issue.
    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, BackendError>;

    /// Re-reads the key set (new KEK versions, server-side rotation). Called in the background.
    async fn refresh(&self) -> Result<(), BackendError> {
        Ok(())
    }

    /// Proves the backend works end to end. Default: wrap then unwrap a fixed test value.
    async fn probe(&self) -> Result<(), BackendError> {
        const PROBE: &[u8] = b"atrest-kms health probe";
        let wrapped = self.wrap(PROBE).await?;
        let back = self
            .unwrap(&wrapped.key_id, &wrapped.ciphertext, &wrapped.annotations)
            .await?;
        if subtle::ConstantTimeEq::ct_eq(back.as_slice(), PROBE).into() {
            Ok(())
        } else {
            Err(BackendError::Unavailable(
                "health probe: unwrap returned a different value".into(),
            ))
        }
    }
}

/// `prefix` + first 16 bytes of SHA-256 over length-prefixed `parts`, hex: a stable, public,
/// collision-resistant key id from a KEK's identity.
pub(crate) fn derive_key_id(prefix: &str, parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"atrest-kms key id v1\0");
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let d = h.finalize();
    format!("{prefix}{}", hex::encode(&d[..16]))
}
