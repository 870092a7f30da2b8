//! The read/write algorithm over one resource's ordered provider list (WIRE-FORMAT.md §2–§3).
//!
//! OWNER: core-providers helper. The public types below are the contract the rest of the
//! workspace builds on (etcd status/rewrite, snapshots, CLI); extend them, do not rename them.

use std::fmt;
use std::sync::Arc;

use crate::resource::GroupResource;

/// Which kind of provider wrote (or would write) a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProviderKind {
    Identity,
    AesCbc,
    AesGcm,
    Secretbox,
    KmsV1,
    KmsV2,
}

impl ProviderKind {
    /// The name used in configs and reports: `identity`, `aescbc`, `aesgcm`, `secretbox`, `kms`.
    pub fn config_name(self) -> &'static str {
        match self {
            ProviderKind::Identity => "identity",
            ProviderKind::AesCbc => "aescbc",
            ProviderKind::AesGcm => "aesgcm",
            ProviderKind::Secretbox => "secretbox",
            ProviderKind::KmsV1 | ProviderKind::KmsV2 => "kms",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProviderKind::KmsV1 => "kms v1",
            ProviderKind::KmsV2 => "kms v2",
            other => other.config_name(),
        })
    }
}

/// Which provider and key read or wrote a value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProviderInfo {
    pub kind: ProviderKind,
    /// Position of the provider in the resource's (concatenated) provider list.
    pub provider_index: usize,
    /// Local providers: the key name. KMS: the provider `name`. Identity: `None`.
    pub key_name: Option<String>,
    /// Local providers: position of the key in `keys`. Otherwise `None`.
    pub key_index: Option<usize>,
    /// KMS v2: the `keyID` stored in the EncryptedObject (reads) or of the write state (writes).
    pub key_id: Option<String>,
}

/// A successful read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOutcome {
    pub plaintext: Vec<u8>,
    /// kube-apiserver's stale flag (WIRE-FORMAT.md §3.2).
    pub stale: bool,
    pub provider: ProviderInfo,
}

/// What a stored value looks like without decrypting it: the first provider/key whose prefix
/// matches (KMS v2: with the key_id parsed from the EncryptedObject) and whether that would be stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub provider: ProviderInfo,
    pub stale: bool,
}

/// A KMS provider of the config that cannot be used right now: its plugin is not answering, says it
/// is unhealthy, cannot say its current key ID, or its key backend fails. This is a property of the
/// plugin, never of a stored value: callers stop (exit 1) instead of reporting values as unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsOutage {
    /// The provider's `name` in the config.
    pub provider: String,
    /// The provider's `endpoint` in the config (`unix:///…`).
    pub endpoint: String,
    /// kube-apiserver's text for the failure (e.g. `failed to decrypt DEK, error: rpc error: …`).
    pub message: String,
}

impl fmt::Display for KmsOutage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KMS provider {:?} at {} is not available: {}",
            self.provider, self.endpoint, self.message
        )
    }
}

impl std::error::Error for KmsOutage {}

/// What a failed read means for the value: the distinction every report and exit code rests on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The value cannot be decrypted with this config (wrong key, corrupt, no matching prefix).
    Undecryptable,
    /// A KMS plugin or its backend is not answering; the value may be perfectly fine.
    Outage,
}

/// Why a read or write failed. `Display` gives kube-apiserver's exact error text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransformError {
    /// A single error with upstream's text, e.g. `no matching prefix found`,
    /// `cipher: message authentication failed`.
    #[error("{0}")]
    Message(String),
    /// Several prefix-matching entries failed: upstream's aggregate (`[e1, e2]`). Printed like
    /// apimachinery's `utilerrors.Aggregate`: nested aggregates are flattened, identical messages
    /// collapse into one, and a single remaining message is printed without brackets.
    #[error("{}", aggregate_text(.0))]
    Aggregate(Vec<TransformError>),
    /// A KMS provider could not be used (see [`KmsOutage`]); `Display` is upstream's text only.
    #[error("{}", .0.message)]
    Outage(KmsOutage),
}

impl TransformError {
    /// A single error with the given text.
    pub fn msg(text: impl Into<String>) -> Self {
        TransformError::Message(text.into())
    }

    /// The KMS outage behind this error, if any. An aggregate counts as an outage as soon as one
    /// of the providers that tried failed for lack of its plugin: with the plugin back, the value
    /// may read fine.
    pub fn outage(&self) -> Option<&KmsOutage> {
        match self {
            TransformError::Outage(o) => Some(o),
            TransformError::Aggregate(inner) => inner.iter().find_map(TransformError::outage),
            TransformError::Message(_) => None,
        }
    }

    /// Outage or undecryptable: callers stop on the first and list the second.
    pub fn kind(&self) -> FailureKind {
        if self.outage().is_some() {
            FailureKind::Outage
        } else {
            FailureKind::Undecryptable
        }
    }

    /// apimachinery's `Reduce(NewAggregate(errs))`: no error for an empty list, the error itself
    /// for a list of one, an aggregate otherwise.
    pub fn reduce(mut errors: Vec<TransformError>) -> Option<TransformError> {
        match errors.len() {
            0 => None,
            1 => errors.pop(),
            _ => Some(TransformError::Aggregate(errors)),
        }
    }

    fn collect_messages(&self, out: &mut Vec<String>) {
        match self {
            TransformError::Message(text) => {
                if !out.contains(text) {
                    out.push(text.clone());
                }
            }
            TransformError::Outage(o) => {
                if !out.contains(&o.message) {
                    out.push(o.message.clone());
                }
            }
            TransformError::Aggregate(inner) => inner.iter().for_each(|e| e.collect_messages(out)),
        }
    }
}

fn aggregate_text(errors: &[TransformError]) -> String {
    let mut messages = Vec::new();
    errors
        .iter()
        .for_each(|e| e.collect_messages(&mut messages));
    match messages.as_slice() {
        [] => String::new(),
        [single] => single.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// The provider list for one resource, ready to read and write values.
pub struct ResourceTransformer {
    pub(crate) inner: Arc<dyn ResourceTransform>,
}

impl ResourceTransformer {
    /// Decrypts `stored` (the etcd value) for the etcd key `aad` (full key with prefix).
    pub fn read(&self, stored: &[u8], aad: &[u8]) -> Result<ReadOutcome, TransformError> {
        self.inner.read(stored, aad)
    }
    /// Encrypts with the write provider (first provider, first key).
    pub fn write(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, TransformError> {
        self.inner.write(plaintext, aad)
    }
    /// The provider and key that [`write`](Self::write) uses.
    pub fn write_provider(&self) -> ProviderInfo {
        self.inner.write_provider()
    }
    /// Classifies `stored` by prefix without decrypting; `Ok(None)` when no prefix matches. KMS v2
    /// staleness needs the plugin's current key ID: when the plugin cannot say it, the error is a
    /// [`TransformError::Outage`] (never a guess).
    pub fn identify(&self, stored: &[u8]) -> Result<Option<Identified>, TransformError> {
        self.inner.identify(stored)
    }
    /// Makes sure every KMS v2 provider of this resource can say its current key ID now (one
    /// `Status` call each at most): the check a command makes before it reports or writes anything.
    pub fn check_kms(&self) -> Result<(), KmsOutage> {
        self.inner.check_kms()
    }
    /// Reads `written` (a value [`write`](Self::write) just returned) back with the write provider
    /// and no cache of decrypted keys — for KMS providers the plugin's own Decrypt unwraps the
    /// DEK/seed — and checks it yields `plaintext` and is not stale. The error names the write
    /// provider (and a KMS plugin's endpoint).
    pub fn verify_write(
        &self,
        written: &[u8],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(), TransformError> {
        self.inner.verify_write(written, plaintext, aad)
    }
    /// Identifies the key material `written` was encrypted with (KMS v2: the write state's seed):
    /// values with equal ids need [`verify_write`](Self::verify_write) only once.
    pub fn write_state_id(&self, written: &[u8]) -> Vec<u8> {
        self.inner.write_state_id(written)
    }
    /// The write provider for messages: `kms v2 provider "name" at unix:///…`, `aesgcm key "k1"`.
    pub fn describe_write_provider(&self) -> String {
        self.inner.describe_write_provider()
    }
}

impl Clone for ResourceTransformer {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

/// Object-safe behaviour behind [`ResourceTransformer`].
pub(crate) trait ResourceTransform: Send + Sync {
    fn read(&self, stored: &[u8], aad: &[u8]) -> Result<ReadOutcome, TransformError>;
    fn write(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, TransformError>;
    fn write_provider(&self) -> ProviderInfo;
    fn identify(&self, stored: &[u8]) -> Result<Option<Identified>, TransformError>;
    fn check_kms(&self) -> Result<(), KmsOutage>;
    fn verify_write(
        &self,
        written: &[u8],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(), TransformError> {
        match self.read(written, aad) {
            Ok(r) if r.plaintext == plaintext && !r.stale => Ok(()),
            Ok(_) => Err(TransformError::msg(
                "the value just written does not read back to the same plaintext",
            )),
            Err(e) => Err(e),
        }
    }
    fn write_state_id(&self, _written: &[u8]) -> Vec<u8> {
        Vec::new()
    }
    fn describe_write_provider(&self) -> String {
        self.write_provider().kind.to_string()
    }
}

/// Every resource's transformer, built from a loaded config (resources the config does not cover get
/// the stand-alone identity transformer).
#[derive(Clone)]
pub struct Transformers {
    pub(crate) inner: Arc<dyn TransformerLookup>,
}

impl Transformers {
    /// The transformer kube-apiserver uses for the storage group/resource `gr`
    /// (exact entry, else `*.<group>`, else `*.*`, else identity).
    pub fn for_resource(&self, gr: &GroupResource) -> ResourceTransformer {
        self.inner.for_resource(gr)
    }
    /// Whether any config entry (exact or wildcard) covers `gr`.
    pub fn covers(&self, gr: &GroupResource) -> bool {
        self.inner.covers(gr)
    }
    /// [`ResourceTransformer::check_kms`] for every KMS v2 provider of the config.
    pub fn check_kms(&self) -> Result<(), KmsOutage> {
        self.inner.check_kms()
    }
    /// Whether `gr` is covered only through a `*.<group>` or `*.*` entry.
    pub fn covered_by_wildcard_only(&self, gr: &GroupResource) -> bool {
        self.inner.covers(gr) && !self.inner.names_exactly(gr)
    }
}

pub(crate) trait TransformerLookup: Send + Sync {
    fn for_resource(&self, gr: &GroupResource) -> ResourceTransformer;
    fn covers(&self, gr: &GroupResource) -> bool;
    fn check_kms(&self) -> Result<(), KmsOutage>;
    fn names_exactly(&self, gr: &GroupResource) -> bool;
}
