//! kms apiVersion v1 (WIRE-FORMAT.md §6.1): `uint16_be(len(EDEK)) || EDEK || AES-GCM body`.
//! A fresh DEK and one plugin Encrypt per write; reads look the DEK up in an LRU cache keyed by the
//! EDEK (size `cachesize`, negative disables) and fall back from AES-GCM to the legacy AES-CBC body
//! (pre-1.25 writes), which marks the value stale.

use std::sync::{Arc, Mutex};

use zeroize::Zeroizing;

use super::aescbc::CbcKey;
use super::aesgcm::GcmKey;
use super::lru::Lru;
use super::{random, BodyRead, KeyRef, Provider};
use crate::kms::KmsV1Service;
use crate::transformer::{ProviderKind, TransformError};

const LENGTH_PREFIX_ERROR: &str =
    "invalid data encountered by envelope transformer: failed to read uint16 length prefixed data";

/// What a decrypted DEK is used as: GCM first, CBC as a fallback.
struct DekCiphers {
    gcm: GcmKey,
    cbc: CbcKey,
}

impl DekCiphers {
    fn new(dek: &[u8]) -> Result<Self, TransformError> {
        Ok(Self {
            gcm: GcmKey::new(dek)?,
            cbc: CbcKey::new(dek)?,
        })
    }
}

pub(crate) struct KmsV1Provider {
    name: String,
    endpoint: String,
    prefix: Vec<u8>,
    service: Arc<dyn KmsV1Service>,
    /// `None` when `cachesize` is negative (cache disabled).
    cache: Option<Mutex<Lru<Vec<u8>, Arc<DekCiphers>>>>,
}

impl KmsV1Provider {
    pub(crate) fn new(
        name: &str,
        endpoint: &str,
        cache_size: Option<i32>,
        service: Arc<dyn KmsV1Service>,
    ) -> Self {
        let size = cache_size.unwrap_or(1000);
        Self {
            name: name.to_string(),
            endpoint: endpoint.to_string(),
            prefix: format!("{}{name}:", super::KMSV1_PREFIX).into_bytes(),
            service,
            cache: usize::try_from(size)
                .ok()
                .filter(|&n| n > 0)
                .map(|n| Mutex::new(Lru::new(n))),
        }
    }

    fn cached(&self, edek: &[u8]) -> Option<Arc<DekCiphers>> {
        self.cache.as_ref()?.lock().ok()?.get(&edek.to_vec())
    }

    fn remember(&self, edek: &[u8], ciphers: Arc<DekCiphers>) {
        if let Some(mut cache) = self.cache.as_ref().and_then(|c| c.lock().ok()) {
            cache.insert(edek.to_vec(), ciphers);
        }
    }

    /// A read through the DEK cache, or (`use_cache` false) always through the plugin's Decrypt.
    fn read_with(
        &self,
        body: &[u8],
        aad: &[u8],
        use_cache: bool,
    ) -> Result<BodyRead, TransformError> {
        let (edek, data) =
            split_length_prefixed(body).ok_or_else(|| TransformError::msg(LENGTH_PREFIX_ERROR))?;
        let cached = if use_cache { self.cached(edek) } else { None };
        let ciphers = match cached {
            Some(ciphers) => ciphers,
            None => {
                // Upstream returns the plugin's (gRPC status) error unwrapped.
                let dek = self.service.decrypt(edek).map_err(|e| {
                    super::kms_failure(&self.name, &self.endpoint, &e, e.to_string())
                })?;
                let ciphers = Arc::new(DekCiphers::new(&dek)?);
                if use_cache {
                    self.remember(edek, Arc::clone(&ciphers));
                }
                ciphers
            }
        };
        let (plaintext, stale) = match ciphers.gcm.open(data, aad) {
            Ok(plaintext) => (plaintext, false),
            Err(gcm_err) => match ciphers.cbc.open(data) {
                Ok(plaintext) => (plaintext, true),
                Err(cbc_err) => return Err(TransformError::Aggregate(vec![gcm_err, cbc_err])),
            },
        };
        Ok(BodyRead {
            plaintext,
            stale,
            key: self.key_ref(),
        })
    }

    fn key_ref(&self) -> KeyRef {
        KeyRef {
            key_name: Some(self.name.clone()),
            key_index: None,
            key_id: None,
        }
    }
}

/// Splits `uint16_be(len) || bytes[len] || rest`.
fn split_length_prefixed(body: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = body.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    (rest.len() >= len).then(|| rest.split_at(len))
}

impl Provider for KmsV1Provider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::KmsV1
    }
    fn prefix(&self) -> &[u8] {
        &self.prefix
    }
    fn read(&self, body: &[u8], aad: &[u8]) -> Result<BodyRead, TransformError> {
        self.read_with(body, aad, true)
    }
    fn read_uncached(&self, body: &[u8], aad: &[u8]) -> Result<BodyRead, TransformError> {
        self.read_with(body, aad, false)
    }
    fn endpoint(&self) -> Option<&str> {
        Some(&self.endpoint)
    }

    fn write(&self, plaintext: &[u8], aad: &[u8], out: &mut Vec<u8>) -> Result<(), TransformError> {
        let mut dek = Zeroizing::new([0u8; 32]);
        random::fill(dek.as_mut())?;
        let edek = self
            .service
            .encrypt(dek.as_ref())
            .map_err(|e| super::kms_failure(&self.name, &self.endpoint, &e, e.to_string()))?;
        let len = u16::try_from(edek.len()).map_err(|_| {
            TransformError::msg(format!(
                "cryptobyte: pending child length {} exceeds 2-byte length prefix",
                edek.len()
            ))
        })?;
        let ciphers = Arc::new(DekCiphers::new(dek.as_ref())?);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&edek);
        ciphers.gcm.seal_into(out, plaintext, aad)?;
        self.remember(&edek, ciphers);
        Ok(())
    }
    fn write_key(&self) -> KeyRef {
        self.key_ref()
    }
    fn identify(&self, _body: &[u8]) -> Result<Option<(KeyRef, bool)>, TransformError> {
        // Whether the body is the legacy CBC format is only known after decrypting.
        Ok(Some((self.key_ref(), false)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::KmsError;
    use base64::Engine;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The upstream test mock: "encryption" is base64.
    #[derive(Default)]
    struct Base64Kms {
        decrypts: AtomicUsize,
    }
    impl KmsV1Service for Base64Kms {
        fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, KmsError> {
            Ok(base64::engine::general_purpose::STANDARD
                .encode(plain)
                .into_bytes())
        }
        fn decrypt(&self, cipher: &[u8]) -> Result<Zeroizing<Vec<u8>>, KmsError> {
            self.decrypts.fetch_add(1, Ordering::SeqCst);
            base64::engine::general_purpose::STANDARD
                .decode(cipher)
                .map(Zeroizing::new)
                .map_err(|e| KmsError::Rejected(e.to_string()))
        }
    }

    const AAD: &[u8] = b"/registry/secrets/default/secret1";

    #[test]
    fn worked_example_8_4() {
        let stored = hex::decode("6b38733a656e633a6b6d733a76313a6d79706c7567696e3a002c494345694979516c4a69636f4b536f724c4330754c7a41784d6a4d304e5459334f446b364f7a7739506a383d404142434445464748494a4ba96cce813813a9673d9b734041d116ac539d947d6d04e6a455").unwrap();
        let kms = Arc::new(Base64Kms::default());
        let p = KmsV1Provider::new("myplugin", "unix:///test", Some(1000), kms.clone());
        let body = stored.strip_prefix(Provider::prefix(&p)).unwrap();
        let read = p.read(body, AAD).unwrap();
        assert_eq!(read.plaintext, b"k8s\x00hello");
        assert!(!read.stale);
        p.read(body, AAD).unwrap();
        assert_eq!(
            kms.decrypts.load(Ordering::SeqCst),
            1,
            "second read must hit the DEK cache"
        );
        let err = p
            .read(body, b"/registry/secrets/default/other")
            .unwrap_err()
            .to_string();
        // GCM fails on the wrong AAD, then the CBC fallback fails on the padding: an aggregate.
        assert!(
            err.starts_with("[cipher: message authentication failed, ") && err.ends_with(']'),
            "{err}"
        );
    }

    #[test]
    fn legacy_cbc_body_is_stale_and_cache_can_be_disabled() {
        let kms = Arc::new(Base64Kms::default());
        let p = KmsV1Provider::new("p", "unix:///test", Some(-1), kms.clone());
        let dek = [0x42u8; 32];
        let edek = kms.encrypt(&dek).unwrap();
        let mut body = (edek.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(&edek);
        body.extend_from_slice(
            &CbcKey::new(&dek)
                .unwrap()
                .seal_with_iv([9; 16], b"old value")
                .unwrap(),
        );
        let read = p.read(&body, AAD).unwrap();
        assert_eq!(read.plaintext, b"old value");
        assert!(read.stale);
        p.read(&body, AAD).unwrap();
        assert_eq!(kms.decrypts.load(Ordering::SeqCst), 2);
        let mut written = Vec::new();
        p.write(b"new", AAD, &mut written).unwrap();
        let again = p.read(&written, AAD).unwrap();
        assert_eq!(again.plaintext, b"new");
        assert!(!again.stale);
        assert_eq!(
            p.read(&[0, 5, 1], AAD).unwrap_err().to_string(),
            LENGTH_PREFIX_ERROR
        );
        assert_eq!(
            p.read(&[0], AAD).unwrap_err().to_string(),
            LENGTH_PREFIX_ERROR
        );
    }
}
