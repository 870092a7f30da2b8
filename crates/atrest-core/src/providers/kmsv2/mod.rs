//! kms apiVersion v2 (WIRE-FORMAT.md §6.2): `"k8s:enc:kms:v2:<name>:" || protobuf(EncryptedObject)`.
//!
//! Reads decode and validate the object, look its DEK/seed up in the decrypted-key cache (keyed as
//! §6.2.5; the provider's own write state is always a hit) and call the plugin's `Decrypt` only on a
//! miss. Writes use the provider's write state ([`state`]): no plugin call per write. Both DEK
//! modes are read; the write mode is `HKDF_SHA256_XNONCE_AES_GCM_SEED` (1.29+) unless
//! [`KmsV2Options::write_type`] asks for the 1.27/1.28 `AES_GCM_KEY` mode.
//!
//! Not reproduced: upstream's 10-minute cache of per-object derived keys (a pure speed-up; HKDF
//! here is one HMAC per read).

mod dek;
pub mod object;
mod state;
mod validate;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

pub use object::EncryptedObject;
pub use state::{Clock, SystemClock};
pub use validate::fqdn_error as annotation_key_error;

use self::dek::{cache_key, DataKey};
use self::state::Tracker;
use self::validate::validate_object;
use super::{BodyRead, KeyRef, Provider};
use crate::kms::{DecryptRequest, KmsV2Service};
use crate::transformer::{KmsOutage, ProviderKind, TransformError};

/// Decrypted DEKs/seeds are kept this long (expired entries are still served until the next insert
/// collects them, as upstream's cache does).
const CACHE_TTL: Duration = Duration::from_secs(24 * 3600);

/// How the plaintext of `encryptedDEKSource` is turned into the data key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DekSourceType {
    /// `AES_GCM_KEY` (0): the DEK itself; written by kube-apiserver 1.27/1.28.
    AesGcmKey,
    /// `HKDF_SHA256_XNONCE_AES_GCM_SEED` (1): a seed; written by 1.29+.
    #[default]
    HkdfSha256XnonceAesGcmSeed,
}

impl DekSourceType {
    pub fn as_i32(self) -> i32 {
        match self {
            DekSourceType::AesGcmKey => object::AES_GCM_KEY,
            DekSourceType::HkdfSha256XnonceAesGcmSeed => object::HKDF_SHA256_XNONCE_AES_GCM_SEED,
        }
    }
}

/// Tunables of KMS v2 providers. The defaults are kube-apiserver 1.36's behaviour.
#[derive(Clone)]
pub struct KmsV2Options {
    /// How often `Status` is re-checked (upstream: every 60 s).
    pub status_interval: Duration,
    /// The DEK mode new writes use.
    pub write_type: DekSourceType,
    /// Wall clock for the write state's 3-minute expiry.
    pub clock: Arc<dyn Clock>,
}

impl Default for KmsV2Options {
    fn default() -> Self {
        Self {
            status_interval: Duration::from_secs(60),
            write_type: DekSourceType::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

impl std::fmt::Debug for KmsV2Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KmsV2Options")
            .field("status_interval", &self.status_interval)
            .field("write_type", &self.write_type)
            .finish_non_exhaustive()
    }
}

/// Decrypted DEKs/seeds by cache key, with their insertion time.
type DekCache = HashMap<[u8; 32], (Arc<DataKey>, SystemTime)>;

pub(crate) struct KmsV2Provider {
    name: String,
    endpoint: String,
    prefix: Vec<u8>,
    service: Arc<dyn KmsV2Service>,
    tracker: Tracker,
    clock: Arc<dyn Clock>,
    cache: Mutex<DekCache>,
}

impl KmsV2Provider {
    pub(crate) fn new(
        name: &str,
        endpoint: &str,
        service: Arc<dyn KmsV2Service>,
        options: &KmsV2Options,
    ) -> Self {
        Self {
            name: name.to_string(),
            endpoint: endpoint.to_string(),
            prefix: format!("{}{name}:", super::KMSV2_PREFIX).into_bytes(),
            tracker: Tracker::new(
                name,
                endpoint,
                Arc::clone(&service),
                options.write_type.as_i32(),
                options.status_interval,
                Arc::clone(&options.clock),
            ),
            service,
            clock: Arc::clone(&options.clock),
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn key_ref(&self, key_id: Option<String>) -> KeyRef {
        KeyRef {
            key_name: Some(self.name.clone()),
            key_index: None,
            key_id,
        }
    }

    fn decode(body: &[u8]) -> Result<EncryptedObject, TransformError> {
        let object = EncryptedObject::decode(body)?;
        validate_object(&object)?;
        Ok(object)
    }

    /// The data key for `object`: the write state's, a cached one, or the plugin's Decrypt.
    fn data_key(&self, object: &EncryptedObject) -> Result<Arc<DataKey>, TransformError> {
        let key = cache_key(object);
        if let Some(write) = self.tracker.peek().filter(|w| w.cache_key == key) {
            return Ok(Arc::clone(&write.key));
        }
        if let Some((cached, _)) = self.cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(cached);
        }
        let data_key = Arc::new(self.unwrap_dek(object)?);
        if let Ok(mut cache) = self.cache.lock() {
            let now = self.clock.now();
            cache.retain(|_, (_, inserted)| {
                now.duration_since(*inserted).unwrap_or(Duration::ZERO) < CACHE_TTL
            });
            cache.insert(key, (Arc::clone(&data_key), now));
        }
        Ok(data_key)
    }

    /// The plugin's Decrypt of the object's `encryptedDEKSource` (same key ID and annotations).
    fn unwrap_dek(&self, object: &EncryptedObject) -> Result<DataKey, TransformError> {
        let request = DecryptRequest {
            ciphertext: object.encrypted_dek_source.clone(),
            uid: super::random::uuid_v4()?,
            key_id: object.key_id.clone(),
            annotations: object.annotations.clone(),
        };
        let plaintext = self.service.decrypt(&request).map_err(|e| {
            super::kms_failure(
                &self.name,
                &self.endpoint,
                &e,
                format!("failed to decrypt DEK, error: {e}"),
            )
        })?;
        DataKey::new(object.encrypted_dek_source_type, &plaintext)
    }
}

impl Provider for KmsV2Provider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::KmsV2
    }
    fn prefix(&self) -> &[u8] {
        &self.prefix
    }
    fn read(&self, body: &[u8], aad: &[u8]) -> Result<BodyRead, TransformError> {
        let object = Self::decode(body)?;
        // Upstream needs a valid state before decrypting (for staleness); see `state`.
        let (current_key_id, current_type) = self.tracker.current()?;
        let data_key = self.data_key(&object)?;
        let stale =
            object.key_id != current_key_id || object.encrypted_dek_source_type != current_type;
        // Decrypts the owned `encryptedData` in place: no copy of the body.
        let plaintext = data_key.open_owned(object.encrypted_data, aad)?;
        Ok(BodyRead {
            plaintext,
            stale,
            key: self.key_ref(Some(object.key_id)),
        })
    }
    fn write(&self, plaintext: &[u8], aad: &[u8], out: &mut Vec<u8>) -> Result<(), TransformError> {
        let state = self.tracker.for_write()?;
        // The object is field 1 (`encryptedData`, never empty) followed by the state's already
        // validated fields 2–5: write the field header, seal in place, append the rest.
        let data_len = state.key.sealed_len(plaintext.len());
        object::encode_data_header(data_len, out);
        let start = out.len();
        state.key.seal_into(out, plaintext, aad)?;
        if out.len() - start != data_len {
            return Err(TransformError::msg(
                "internal error: unexpected encrypted data length",
            ));
        }
        out.extend_from_slice(&state.encoded_tail);
        Ok(())
    }
    fn write_key(&self) -> KeyRef {
        self.key_ref(self.tracker.peek_key_id())
    }
    fn read_uncached(&self, body: &[u8], aad: &[u8]) -> Result<BodyRead, TransformError> {
        let object = Self::decode(body)?;
        let (current_key_id, current_type) = self.tracker.current()?;
        let data_key = self.unwrap_dek(&object)?;
        let stale =
            object.key_id != current_key_id || object.encrypted_dek_source_type != current_type;
        let ours = self
            .tracker
            .peek()
            .is_some_and(|w| w.cache_key == cache_key(&object));
        // Authenticated decryption with the plugin's answer is the comparison with our own
        // seed/DEK: any other key fails the GCM tag.
        let plaintext = data_key
            .open_owned(object.encrypted_data, aad)
            .map_err(|e| match ours {
                true => TransformError::msg(format!(
                    "the plugin's Decrypt returned another DEK/seed than the one it was given to Encrypt ({e})"
                )),
                false => e,
            })?;
        Ok(BodyRead {
            plaintext,
            stale,
            key: self.key_ref(Some(object.key_id)),
        })
    }
    fn endpoint(&self) -> Option<&str> {
        Some(&self.endpoint)
    }
    fn write_state_id(&self, body: &[u8]) -> Vec<u8> {
        Self::decode(body)
            .map(|object| cache_key(&object).to_vec())
            .unwrap_or_default()
    }
    fn identify(&self, body: &[u8]) -> Result<Option<(KeyRef, bool)>, TransformError> {
        // A body that does not even parse is refused before any Decrypt: never "current".
        let Ok(object) = Self::decode(body) else {
            return Ok(None);
        };
        // Staleness needs the plugin's current key ID (a Status call at most); never Decrypt.
        // Without it the answer is unknown: an outage, never "current".
        let (key_id, source_type) = self.tracker.current()?;
        let stale = object.key_id != key_id || object.encrypted_dek_source_type != source_type;
        Ok(Some((self.key_ref(Some(object.key_id)), stale)))
    }
    fn check_kms(&self) -> Result<(), KmsOutage> {
        match self.tracker.current() {
            Ok(_) => Ok(()),
            Err(TransformError::Outage(o)) => Err(o),
            Err(other) => Err(KmsOutage {
                provider: self.name.clone(),
                endpoint: self.endpoint.clone(),
                message: other.to_string(),
            }),
        }
    }
}
