//! KMS v2 plugins that look healthy but misbehave, for testing that writers check the whole round
//! trip. Each is atrest-kms's real gRPC server on a unix socket in a temporary directory, with a
//! test backend behind it whose health probe always passes:
//!
//! * [`Misbehaviour::WriteOnly`]: Status `ok`, Encrypt works, every Decrypt fails (a lost KEK, an
//!   encrypt-only Vault policy).
//! * [`Misbehaviour::KeyIdMismatch`]: Status reports one key ID, Encrypt answers with another.
//! * [`Misbehaviour::WrongUnwrap`]: Decrypt succeeds but returns other bytes than were wrapped.
//! * [`Misbehaviour::ControlCharacters`]: works, but its key ID ([`CONTROL_KEY_ID`]) holds a
//!   newline and a terminal escape sequence, for checking that tables and logs escape them.
//!
//! The "wrapping" is an XOR: test-only, not cryptography. Dropping the plugin stops its server.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use atrest_kms::server::{self, ServeConfig, ServerHandle};
use atrest_kms::{BackendError, Endpoint, KeyBackend, Wrapped, Zeroizing};

/// How the plugin misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    WriteOnly,
    KeyIdMismatch,
    WrongUnwrap,
    ControlCharacters,
}

/// The key ID of [`Misbehaviour::ControlCharacters`] (Status and Encrypt alike).
pub const CONTROL_KEY_ID: &str = "hostile\n  forged row\x1b[2Jkey";

/// The key ID every hostile plugin reports in Status.
pub const STATUS_KEY_ID: &str = "hostile-status-key";

struct HostileBackend(Misbehaviour);

fn xor(bytes: &[u8]) -> Vec<u8> {
    bytes.iter().map(|b| b ^ 0x5a).collect()
}

#[async_trait::async_trait]
impl KeyBackend for HostileBackend {
    fn kind(&self) -> &'static str {
        "hostile"
    }
    fn current_key_id(&self) -> Result<String, BackendError> {
        Ok(match self.0 {
            Misbehaviour::ControlCharacters => CONTROL_KEY_ID,
            _ => STATUS_KEY_ID,
        }
        .into())
    }
    async fn wrap(&self, plaintext: &[u8]) -> Result<Wrapped, BackendError> {
        let key_id = match self.0 {
            Misbehaviour::KeyIdMismatch => "hostile-other-key",
            Misbehaviour::ControlCharacters => CONTROL_KEY_ID,
            _ => STATUS_KEY_ID,
        };
        Ok(Wrapped {
            key_id: key_id.into(),
            ciphertext: xor(plaintext),
            annotations: BTreeMap::new(),
        })
    }
    async fn unwrap(
        &self,
        _key_id: &str,
        ciphertext: &[u8],
        _: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        match self.0 {
            Misbehaviour::WriteOnly => Err(BackendError::Unavailable(
                "permission denied: this policy may encrypt only".into(),
            )),
            Misbehaviour::WrongUnwrap => Ok(Zeroizing::new(vec![7; ciphertext.len()])),
            Misbehaviour::KeyIdMismatch | Misbehaviour::ControlCharacters => {
                Ok(Zeroizing::new(xor(ciphertext)))
            }
        }
    }
    /// Always healthy: the point is a plugin whose own checks miss the fault.
    async fn probe(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// A running hostile plugin.
pub struct HostileKms {
    /// `unix:///…/kms.sock`, as a config's `endpoint`.
    pub endpoint: String,
    handle: Option<ServerHandle>,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl HostileKms {
    pub fn start(kind: Misbehaviour) -> HostileKms {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("kms.sock");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let mut config = ServeConfig::new(Endpoint::Path(sock.clone()));
        config.health_interval = Duration::from_secs(3600);
        let handle = rt
            .block_on(server::start(config, Arc::new(HostileBackend(kind))))
            .expect("hostile KMS plugin starts");
        HostileKms {
            endpoint: format!("unix://{}", sock.display()),
            handle: Some(handle),
            rt,
            _dir: dir,
        }
    }
}

impl Drop for HostileKms {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = self.rt.block_on(handle.shutdown());
        }
    }
}
