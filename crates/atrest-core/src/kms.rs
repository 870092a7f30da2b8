//! The KMS plugin API as seen from the transformers: a small synchronous trait per API version.
//!
//! kube-apiserver talks to KMS plugins over gRPC (see `atrest-kms`); the envelope providers only
//! need these calls. Keeping the trait synchronous keeps this crate free of an async runtime:
//! the gRPC client in `atrest-kms` runs its own runtime thread and blocks the caller, which is
//! safe from any thread (including inside another tokio runtime's worker threads).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

pub mod testing;

/// What went wrong talking to a KMS plugin.
///
/// Every variant but [`Rejected`](KmsError::Rejected) is an *outage* ([`KmsError::is_outage`]): the
/// plugin or its key backend cannot be used right now, which says nothing about the value that was
/// being decrypted. Only `Rejected` means "this plugin will not decrypt this ciphertext".
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// The plugin could not be reached or the call timed out.
    #[error("KMS plugin {endpoint} unavailable: {reason}")]
    Unavailable { endpoint: String, reason: String },
    /// The plugin answered, but with an error that says it or its key backend is not working
    /// (gRPC `Unavailable`, `Internal`, `Unknown`, `PermissionDenied`, ...: a sealed Vault, an
    /// unreachable HSM). `reason` is the error as the plugin sent it.
    #[error("{reason}")]
    Failing { endpoint: String, reason: String },
    /// The plugin refused this request's data (gRPC `InvalidArgument`, `NotFound`, `DataLoss`,
    /// `OutOfRange`: unknown key id, ciphertext that does not authenticate).
    #[error("{0}")]
    Rejected(String),
    /// The plugin's answer broke the API contract (empty key_id, wrong version, too large, ...).
    #[error("invalid KMS plugin response: {0}")]
    InvalidResponse(String),
}

impl KmsError {
    /// Whether the error says the plugin (or its backend) is not usable right now, as opposed to
    /// refusing the data it was given. An outage is never evidence that a value is undecryptable.
    pub fn is_outage(&self) -> bool {
        !matches!(self, KmsError::Rejected(_))
    }
}

/// KMS v2 `StatusResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusResponse {
    pub version: String,
    pub healthz: String,
    pub key_id: String,
}

/// KMS v2 `EncryptResponse`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptResponse {
    pub ciphertext: Vec<u8>,
    pub key_id: String,
    pub annotations: BTreeMap<String, Vec<u8>>,
}

/// KMS v2 `DecryptRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptRequest {
    pub ciphertext: Vec<u8>,
    /// Random UUID v4 per call, for log correlation only.
    pub uid: String,
    pub key_id: String,
    pub annotations: BTreeMap<String, Vec<u8>>,
}

/// The three RPCs of `v2.KeyManagementService`.
pub trait KmsV2Service: Send + Sync {
    fn status(&self) -> Result<StatusResponse, KmsError>;
    fn encrypt(&self, uid: &str, plaintext: &[u8]) -> Result<EncryptResponse, KmsError>;
    fn decrypt(&self, request: &DecryptRequest) -> Result<Zeroizing<Vec<u8>>, KmsError>;
}

/// The data RPCs of the deprecated `v1beta1.KeyManagementService` (Version is the client's business).
pub trait KmsV1Service: Send + Sync {
    fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, KmsError>;
    fn decrypt(&self, cipher: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError>;
}

/// Opens a connection to the plugin a `kms` provider entry names. Implemented by the gRPC client
/// in `atrest-kms`, and by in-process fakes in tests.
pub trait KmsConnector: Send + Sync {
    /// `endpoint` is the config's `unix://` URL, `timeout` its per-call `timeout`.
    fn connect_v2(
        &self,
        name: &str,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<Arc<dyn KmsV2Service>, KmsError>;
    fn connect_v1(
        &self,
        name: &str,
        endpoint: &str,
        timeout: Duration,
    ) -> Result<Arc<dyn KmsV1Service>, KmsError>;
}

/// A connector for configs without KMS providers: any attempt to use one is an error.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoKms;

impl KmsConnector for NoKms {
    fn connect_v2(
        &self,
        name: &str,
        endpoint: &str,
        _: Duration,
    ) -> Result<Arc<dyn KmsV2Service>, KmsError> {
        Err(KmsError::Unavailable {
            endpoint: endpoint.to_string(),
            reason: format!("no KMS client available for provider {name}"),
        })
    }
    fn connect_v1(
        &self,
        name: &str,
        endpoint: &str,
        _: Duration,
    ) -> Result<Arc<dyn KmsV1Service>, KmsError> {
        Err(KmsError::Unavailable {
            endpoint: endpoint.to_string(),
            reason: format!("no KMS client available for provider {name}"),
        })
    }
}
