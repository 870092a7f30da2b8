//! One module per provider: the stored-byte format of each (WIRE-FORMAT.md §4–§6).
//!
//! Every provider implements [`Provider`]: it reads and writes the *body* that follows its prefix;
//! the resource's provider list ([`crate::prefix`]) matches and strips prefixes. Local-key providers
//! (aescbc, aesgcm, secretbox) add the second prefix level, their key list, in [`keys`].

pub(crate) mod aescbc;
pub(crate) mod aesgcm;
pub(crate) mod identity;
pub(crate) mod keys;
pub(crate) mod kmsv1;
pub mod kmsv2;
pub(crate) mod lru;
pub(crate) mod random;
pub(crate) mod secretbox;

use crate::kms::KmsError;
use crate::transformer::{KmsOutage, ProviderKind, TransformError};

/// The prefix written before aescbc bodies; the key name and `:` follow.
pub const AESCBC_PREFIX: &str = "k8s:enc:aescbc:v1:";
/// The prefix written before aesgcm bodies; the key name and `:` follow.
pub const AESGCM_PREFIX: &str = "k8s:enc:aesgcm:v1:";
/// The prefix written before secretbox bodies; the key name and `:` follow.
pub const SECRETBOX_PREFIX: &str = "k8s:enc:secretbox:v1:";
/// The prefix written before kms v1 bodies; the provider name and `:` follow.
pub const KMSV1_PREFIX: &str = "k8s:enc:kms:v1:";
/// The prefix written before kms v2 bodies; the provider name and `:` follow.
pub const KMSV2_PREFIX: &str = "k8s:enc:kms:v2:";
/// Every encrypted value starts with these bytes; identity refuses to read them.
pub const ENCRYPTED_MARKER: &[u8] = b"k8s:enc:";

/// A successful read of one provider body.
#[derive(Debug)]
pub(crate) struct BodyRead {
    pub plaintext: Vec<u8>,
    /// Provider-internal staleness (key index ≠ 0, kms v1 CBC body, kms v2 key_id/type change).
    pub stale: bool,
    pub key: KeyRef,
}

/// Which key inside a provider read or writes a value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeyRef {
    pub key_name: Option<String>,
    pub key_index: Option<usize>,
    pub key_id: Option<String>,
}

/// One entry of a resource's provider list.
pub(crate) trait Provider: Send + Sync {
    fn kind(&self) -> ProviderKind;
    /// The first-level prefix (`k8s:enc:aescbc:v1:`, `k8s:enc:kms:v2:<name>:`, empty for identity).
    fn prefix(&self) -> &[u8];
    /// Decrypts the bytes after [`prefix`](Self::prefix); `aad` is the etcd key.
    fn read(&self, body: &[u8], aad: &[u8]) -> Result<BodyRead, TransformError>;
    /// Encrypts with the write key, appending the bytes that follow [`prefix`](Self::prefix) to
    /// `out` (which already holds the prefix: values are assembled in one buffer).
    fn write(&self, plaintext: &[u8], aad: &[u8], out: &mut Vec<u8>) -> Result<(), TransformError>;
    /// The key [`write`](Self::write) uses.
    fn write_key(&self) -> KeyRef;
    /// Classifies a body without decrypting: `None` if this provider would certainly refuse it
    /// before decrypting (no key prefix matches, identity on encrypted data); else the key and
    /// the provider-internal staleness as far as it is knowable without decrypting. Errors only
    /// when staleness needs a plugin that does not answer (an outage).
    fn identify(&self, body: &[u8]) -> Result<Option<(KeyRef, bool)>, TransformError>;
    /// KMS v2: makes sure the plugin can say its current key ID. Other providers: always ready.
    fn check_kms(&self) -> Result<(), KmsOutage> {
        Ok(())
    }
    /// [`read`](Self::read) without any cache of decrypted keys: KMS providers always ask the
    /// plugin's Decrypt (for checking that what was just written can really be read back).
    fn read_uncached(&self, body: &[u8], aad: &[u8]) -> Result<BodyRead, TransformError> {
        self.read(body, aad)
    }
    /// KMS providers: the plugin's endpoint (for messages).
    fn endpoint(&self) -> Option<&str> {
        None
    }
    /// Identifies the write state that produced `body` (KMS v2: its seed/DEK); values with the
    /// same id were written with the same key material. Empty: one state per provider and key.
    fn write_state_id(&self, _body: &[u8]) -> Vec<u8> {
        Vec::new()
    }
}

impl crate::prefix::Prefixed for std::sync::Arc<dyn Provider> {
    fn prefix(&self) -> &[u8] {
        Provider::prefix(self.as_ref())
    }
}

/// A plugin error as a [`TransformError`] with upstream's `text`: outages (the plugin or its
/// backend not working) keep the provider and endpoint so that callers stop instead of calling
/// the value undecryptable; refusals of the data stay plain messages.
pub(crate) fn kms_failure(
    provider: &str,
    endpoint: &str,
    err: &KmsError,
    text: String,
) -> TransformError {
    if err.is_outage() {
        TransformError::Outage(KmsOutage {
            provider: provider.to_string(),
            endpoint: endpoint.to_string(),
            message: text,
        })
    } else {
        TransformError::msg(text)
    }
}

/// Go's `aes.NewCipher` error for a DEK of the wrong size (from a KMS plugin).
pub(crate) fn invalid_aes_key_size(len: usize) -> TransformError {
    TransformError::msg(format!("crypto/aes: invalid key size {len}"))
}

/// The error every provider gives for a body too short to hold its nonce/IV/header.
pub(crate) fn too_short() -> TransformError {
    TransformError::msg("the stored data was shorter than the required size")
}

/// A fresh key of `len` bytes from the OS CSPRNG, for `secret:` in aescbc/aesgcm/secretbox keys.
pub fn generate_key(len: usize) -> Result<zeroize::Zeroizing<Vec<u8>>, TransformError> {
    let mut key = zeroize::Zeroizing::new(vec![0u8; len]);
    random::fill(&mut key)?;
    Ok(key)
}
