//! KMS v2 data keys (WIRE-FORMAT.md §6.2.2–§6.2.3): what the plaintext of `encryptedDEKSource`
//! becomes, for reading and (for the provider's own write state) writing.

use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::digest;
use aws_lc_rs::hmac;

use super::object::{EncryptedObject, AES_GCM_KEY};
use crate::providers::aesgcm::GcmKey;
use crate::providers::{random, too_short};
use crate::transformer::TransformError;

const INFO_LEN: usize = 32;
const MIN_SEED_LEN: usize = 32;
/// Mode 0 nonce counter start; the first write uses 1 000 000 001.
const COUNTER_ZERO: u64 = 1_000_000_000;

/// A decrypted DEK (mode 0) or seed (mode 1).
pub(crate) enum DataKey {
    /// `AES_GCM_KEY`: the plaintext is the AES-GCM key. The counter only matters for writing.
    Dek { key: GcmKey, counter: AtomicU64 },
    /// `HKDF_SHA256_XNONCE_AES_GCM_SEED`: per-object keys are HKDF-Expand(seed, info).
    Seed(Box<hmac::Key>),
}

impl DataKey {
    /// Wraps the plugin's Decrypt output (or our own fresh key) as the given type.
    pub(crate) fn new(source_type: i32, plaintext: &[u8]) -> Result<Self, TransformError> {
        if source_type == AES_GCM_KEY {
            return Ok(DataKey::Dek {
                key: GcmKey::new(plaintext)?,
                counter: AtomicU64::new(COUNTER_ZERO),
            });
        }
        if plaintext.len() < MIN_SEED_LEN {
            return Err(TransformError::msg(format!(
                "invalid seed length {} used for key generation",
                plaintext.len()
            )));
        }
        Ok(DataKey::Seed(Box::new(hmac::Key::new(
            hmac::HMAC_SHA256,
            plaintext,
        ))))
    }

    /// HKDF-Expand-SHA256(PRK = seed, info, L = 32) has a single output block, which is exactly
    /// `HMAC-SHA256(seed, info || 0x01)` (upstream uses no Extract step and no salt).
    fn derive(seed: &hmac::Key, info: &[u8]) -> Result<GcmKey, TransformError> {
        let mut ctx = hmac::Context::with_key(seed);
        ctx.update(info);
        ctx.update(&[1]);
        GcmKey::new(ctx.sign().as_ref())
    }

    /// Decrypts an owned `encryptedData` in place.
    pub(crate) fn open_owned(&self, data: Vec<u8>, aad: &[u8]) -> Result<Vec<u8>, TransformError> {
        match self {
            DataKey::Dek { key, .. } => key.open_owned(data, 0, aad),
            DataKey::Seed(seed) => {
                let (info, _) = data.split_first_chunk::<INFO_LEN>().ok_or_else(too_short)?;
                let key = Self::derive(seed, info)?;
                key.open_owned(data, INFO_LEN, aad)
            }
        }
    }

    /// Length of `encryptedData` for `n` plaintext bytes.
    pub(crate) fn sealed_len(&self, n: usize) -> usize {
        let gcm = 12 + n + crate::providers::aesgcm::TAG_LEN;
        match self {
            DataKey::Dek { .. } => gcm,
            DataKey::Seed(_) => INFO_LEN + gcm,
        }
    }

    /// Appends `encryptedData` for `plaintext` to `out`.
    pub(crate) fn seal_into(
        &self,
        out: &mut Vec<u8>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(), TransformError> {
        match self {
            DataKey::Dek { key, counter } => {
                let mut nonce = [0u8; 12];
                random::public(nonce.get_mut(..4).unwrap_or_default())?;
                let n = counter.fetch_add(1, Ordering::SeqCst).wrapping_add(1);
                // Upstream exits the process here; a library returns an error instead.
                if n <= COUNTER_ZERO {
                    return Err(TransformError::msg(
                        "aes-gcm detected nonce overflow - cryptographic wear out has occurred",
                    ));
                }
                nonce
                    .get_mut(4..)
                    .unwrap_or_default()
                    .copy_from_slice(&n.to_le_bytes());
                key.seal_with_nonce_into(out, nonce, plaintext, aad)
            }
            DataKey::Seed(seed) => {
                let mut info = [0u8; INFO_LEN];
                random::public(&mut info).map_err(|e| {
                    TransformError::msg(format!("failed to generate info for KDF: {e}"))
                })?;
                out.extend_from_slice(&info);
                Self::derive(seed, &info)?.seal_into(out, plaintext, aad)
            }
        }
    }

    #[cfg(test)]
    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, TransformError> {
        let mut out = Vec::new();
        self.seal_into(&mut out, plaintext, aad)?;
        assert_eq!(out.len(), self.sealed_len(plaintext.len()));
        Ok(out)
    }
}

/// SHA-256 of upstream's cache key bytes (§6.2.5): type, EDS, key ID and, if any, the annotations
/// in key order, each length-prefixed.
pub(crate) fn cache_key(o: &EncryptedObject) -> [u8; 32] {
    fn u16_prefixed(ctx: &mut digest::Context, bytes: &[u8]) {
        // Validation bounds every length (≤ 1024, annotations ≤ 32 KiB), so this cannot truncate.
        ctx.update(&u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes());
        ctx.update(bytes);
    }
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(
        &u32::try_from(o.encrypted_dek_source_type)
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    u16_prefixed(&mut ctx, &o.encrypted_dek_source);
    u16_prefixed(&mut ctx, o.key_id.as_bytes());
    if !o.annotations.is_empty() {
        ctx.update(
            &u32::try_from(o.annotations.len())
                .unwrap_or(u32::MAX)
                .to_be_bytes(),
        );
        for (k, v) in &o.annotations {
            u16_prefixed(&mut ctx, k.as_bytes());
            u16_prefixed(&mut ctx, v);
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::super::object::HKDF_SHA256_XNONCE_AES_GCM_SEED;
    use super::*;

    const AAD: &[u8] = b"/registry/secrets/default/secret1";

    #[test]
    fn worked_example_8_5_mode1() {
        let seed: Vec<u8> = (0x80..=0x9f).collect();
        let info: Vec<u8> = (0xa0..=0xbf).collect();
        let key = DataKey::new(HKDF_SHA256_XNONCE_AES_GCM_SEED, &seed).unwrap();
        let DataKey::Seed(prk) = &key else {
            panic!("mode 1")
        };
        let derived = DataKey::derive(prk, &info).unwrap();
        let nonce: [u8; 12] = (0xc0..=0xcb).collect::<Vec<u8>>().try_into().unwrap();
        let mut data = info.clone();
        data.extend(
            derived
                .seal_with_nonce(nonce, b"k8s\x00hello", AAD)
                .unwrap(),
        );
        assert_eq!(
            hex::encode(&data),
            "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacb93243dd7dcc71182ac295d095dcb3a5d1a27e85898fbd3e446"
        );
        assert_eq!(key.open_owned(data.to_vec(), AAD).unwrap(), b"k8s\x00hello");
        assert_eq!(
            key.open_owned(data[..31].to_vec(), AAD)
                .unwrap_err()
                .to_string(),
            "the stored data was shorter than the required size"
        );
        assert_eq!(
            DataKey::new(HKDF_SHA256_XNONCE_AES_GCM_SEED, &[0; 31])
                .err()
                .unwrap()
                .to_string(),
            "invalid seed length 31 used for key generation"
        );
    }

    #[test]
    fn worked_example_8_5_mode0_and_counter() {
        let dek: Vec<u8> = (0x10..=0x2f).collect();
        let key = DataKey::new(AES_GCM_KEY, &dek).unwrap();
        let data = hex::decode(
            "deadbeef01ca9a3b000000006cff3c0ef7950f2e03abf6bdcea915bdae70ace521305a4d0e",
        )
        .unwrap();
        assert_eq!(key.open_owned(data.to_vec(), AAD).unwrap(), b"k8s\x00hello");
        let first = key.seal(b"x", AAD).unwrap();
        assert_eq!(&first[4..12], &1_000_000_001u64.to_le_bytes());
        let second = key.seal(b"x", AAD).unwrap();
        assert_eq!(&second[4..12], &1_000_000_002u64.to_le_bytes());
        assert_eq!(key.open_owned(second.to_vec(), AAD).unwrap(), b"x");
    }
}
