//! An in-process KMS plugin for tests, benchmarks and fuzzing: the reference plugin the test
//! vectors were made with (`testdata/vectors/README.md`). One KEK per key ID;
//! `encrypted = nonce(12) || AES-256-GCM(KEK, nonce, plaintext, AAD = key_id)` with
//! `nonce = HMAC-SHA256(KEK, plaintext)[..12]`; Encrypt returns the annotation
//! `version.encryption.remote.io: "1"` and Decrypt insists on it and on a known key ID.
//!
//! Errors carry the text a Go gRPC client would show (`rpc error: code = Unknown desc = …`), so
//! the transformers' messages match kube-apiserver's with a real plugin behind gRPC.
//! Not for production: KEKs live in process memory.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hmac;
use zeroize::Zeroizing;

use super::{
    DecryptRequest, EncryptResponse, KmsConnector, KmsError, KmsV1Service, KmsV2Service,
    StatusResponse,
};

/// The annotation the reference plugin adds and requires.
pub const ANNOTATION_KEY: &str = "version.encryption.remote.io";

fn rpc_error(desc: impl std::fmt::Display) -> KmsError {
    KmsError::Rejected(format!("rpc error: code = Unknown desc = {desc}"))
}

/// How often each RPC was called.
#[derive(Debug, Default)]
pub struct CallCounts {
    pub status: AtomicUsize,
    pub encrypt: AtomicUsize,
    pub decrypt: AtomicUsize,
}

#[derive(Default)]
struct Keks {
    by_id: BTreeMap<String, Zeroizing<[u8; 32]>>,
    current: String,
}

/// The reference plugin (speaks both KMS v2 and v1).
#[derive(Default)]
pub struct ReferenceKms {
    keks: Mutex<Keks>,
    pub calls: CallCounts,
}

impl ReferenceKms {
    /// A plugin whose current key is `key_id` with `kek`.
    pub fn new(key_id: &str, kek: [u8; 32]) -> Self {
        let kms = Self::default();
        kms.add_kek(key_id, kek);
        kms.set_current_key_id(key_id);
        kms
    }

    /// A plugin with a fresh random KEK under `key_id`.
    pub fn generate(key_id: &str) -> Self {
        let mut kek = [0u8; 32];
        // The RNG only fails on broken systems; a zero KEK is still a valid test KEK then.
        let _ = crate::providers::random::fill(&mut kek);
        Self::new(key_id, kek)
    }

    /// Makes `kek` known under `key_id` (for Decrypt, and for Encrypt once current).
    pub fn add_kek(&self, key_id: &str, kek: [u8; 32]) {
        if let Ok(mut keks) = self.keks.lock() {
            keks.by_id.insert(key_id.to_string(), Zeroizing::new(kek));
        }
    }

    /// What Status reports and Encrypt uses from now on (a KEK rotation).
    pub fn set_current_key_id(&self, key_id: &str) {
        if let Ok(mut keks) = self.keks.lock() {
            keks.current = key_id.to_string();
        }
    }

    pub fn current_key_id(&self) -> String {
        self.keks
            .lock()
            .map(|k| k.current.clone())
            .unwrap_or_default()
    }

    fn kek(&self, key_id: &str) -> Option<Zeroizing<[u8; 32]>> {
        self.keks.lock().ok()?.by_id.get(key_id).cloned()
    }

    /// The reference wrapping.
    pub fn wrap(kek: &[u8; 32], key_id: &str, plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, kek), plaintext);
        let mut nonce = [0u8; 12];
        nonce.copy_from_slice(tag.as_ref().get(..12).unwrap_or(&[0; 12]));
        let key =
            LessSafeKey::new(UnboundKey::new(&AES_256_GCM, kek).map_err(|_| rpc_error("bad KEK"))?);
        let mut out = nonce.to_vec();
        let mut sealed = plaintext.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(key_id.as_bytes()),
            &mut sealed,
        )
        .map_err(|_| rpc_error("encryption failed"))?;
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The reference unwrapping, with Go's error texts.
    pub fn unwrap(
        kek: &[u8; 32],
        key_id: &str,
        encrypted: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, String> {
        let (nonce, sealed) = encrypted
            .split_first_chunk::<12>()
            .ok_or_else(|| "the stored data was shorter than the required size".to_string())?;
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, kek).map_err(|_| "bad KEK".to_string())?,
        );
        let mut buf = Zeroizing::new(sealed.to_vec());
        let len = key
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(key_id.as_bytes()),
                &mut buf,
            )
            .map_err(|_| "cipher: message authentication failed".to_string())?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

impl KmsV2Service for ReferenceKms {
    fn status(&self) -> Result<StatusResponse, KmsError> {
        self.calls.status.fetch_add(1, Ordering::Relaxed);
        Ok(StatusResponse {
            version: "v2".into(),
            healthz: "ok".into(),
            key_id: self.current_key_id(),
        })
    }

    fn encrypt(&self, _uid: &str, plaintext: &[u8]) -> Result<EncryptResponse, KmsError> {
        self.calls.encrypt.fetch_add(1, Ordering::Relaxed);
        let key_id = self.current_key_id();
        let kek = self
            .kek(&key_id)
            .ok_or_else(|| rpc_error("no KEK for the current keyID"))?;
        Ok(EncryptResponse {
            ciphertext: Self::wrap(&kek, &key_id, plaintext)?,
            key_id,
            annotations: [(ANNOTATION_KEY.to_string(), b"1".to_vec())].into(),
        })
    }

    fn decrypt(&self, request: &DecryptRequest) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        self.calls.decrypt.fetch_add(1, Ordering::Relaxed);
        let kek = self
            .kek(&request.key_id)
            .ok_or_else(|| rpc_error("invalid keyID"))?;
        let expected: BTreeMap<String, Vec<u8>> =
            [(ANNOTATION_KEY.to_string(), b"1".to_vec())].into();
        if request.annotations != expected {
            return Err(rpc_error("invalid annotations"));
        }
        Self::unwrap(&kek, &request.key_id, &request.ciphertext).map_err(rpc_error)
    }
}

impl KmsV1Service for ReferenceKms {
    fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, KmsError> {
        self.calls.encrypt.fetch_add(1, Ordering::Relaxed);
        let key_id = self.current_key_id();
        let kek = self
            .kek(&key_id)
            .ok_or_else(|| rpc_error("no KEK for the current keyID"))?;
        Self::wrap(&kek, &key_id, plain)
    }

    /// v1 carries no key ID: every KEK is tried.
    fn decrypt(&self, cipher: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        self.calls.decrypt.fetch_add(1, Ordering::Relaxed);
        let keks: Vec<(String, Zeroizing<[u8; 32]>)> = self
            .keks
            .lock()
            .map(|k| {
                k.by_id
                    .iter()
                    .map(|(id, kek)| (id.clone(), kek.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut last = String::from("no KEK configured");
        for (key_id, kek) in keks {
            match Self::unwrap(&kek, &key_id, cipher) {
                Ok(plain) => return Ok(plain),
                Err(err) => last = err,
            }
        }
        Err(rpc_error(format!("unable to decrypt with any KEK: {last}")))
    }
}

/// A [`KmsConnector`] handing out in-process plugins by endpoint (falling back to a default).
#[derive(Default, Clone)]
pub struct InProcessConnector {
    by_endpoint: HashMap<String, Arc<ReferenceKms>>,
    default: Option<Arc<ReferenceKms>>,
}

impl InProcessConnector {
    /// Every endpoint reaches `kms`.
    pub fn new(kms: Arc<ReferenceKms>) -> Self {
        Self {
            by_endpoint: HashMap::new(),
            default: Some(kms),
        }
    }

    /// `endpoint` (as written in the config) reaches `kms`.
    pub fn with_endpoint(mut self, endpoint: &str, kms: Arc<ReferenceKms>) -> Self {
        self.by_endpoint.insert(endpoint.to_string(), kms);
        self
    }

    fn find(&self, endpoint: &str) -> Result<Arc<ReferenceKms>, KmsError> {
        self.by_endpoint
            .get(endpoint)
            .or(self.default.as_ref())
            .cloned()
            .ok_or_else(|| KmsError::Unavailable {
                endpoint: endpoint.to_string(),
                reason: "no in-process plugin".into(),
            })
    }
}

impl KmsConnector for InProcessConnector {
    fn connect_v2(
        &self,
        _name: &str,
        endpoint: &str,
        _timeout: Duration,
    ) -> Result<Arc<dyn KmsV2Service>, KmsError> {
        Ok(self.find(endpoint)?)
    }
    fn connect_v1(
        &self,
        _name: &str,
        endpoint: &str,
        _timeout: Duration,
    ) -> Result<Arc<dyn KmsV1Service>, KmsError> {
        Ok(self.find(endpoint)?)
    }
}
