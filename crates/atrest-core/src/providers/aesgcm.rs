//! aesgcm (WIRE-FORMAT.md §5.2): `nonce(12) || ciphertext || tag(16)`, AAD = etcd key. The same
//! AES-GCM body is used inside kms v1 and kms v2, so [`GcmKey`] is shared with them.

use aws_lc_rs::aead::{
    Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_192_GCM, AES_256_GCM, NONCE_LEN,
};

use super::keys::LocalCipher;
use super::{invalid_aes_key_size, random, too_short};
use crate::transformer::TransformError;

/// Go's `cipher: message authentication failed` (also returned for bodies shorter than a tag).
pub(crate) const AUTH_FAILED: &str = "cipher: message authentication failed";
pub(crate) const TAG_LEN: usize = 16;

/// An AES-GCM key of 16, 24 or 32 bytes with 12-byte nonces and 16-byte tags.
pub(crate) struct GcmKey(LessSafeKey);

impl GcmKey {
    /// Fails with Go's `crypto/aes: invalid key size N` for other sizes.
    pub(crate) fn new(key: &[u8]) -> Result<Self, TransformError> {
        let algorithm = match key.len() {
            16 => &AES_128_GCM,
            24 => &AES_192_GCM,
            32 => &AES_256_GCM,
            n => return Err(invalid_aes_key_size(n)),
        };
        let unbound =
            UnboundKey::new(algorithm, key).map_err(|_| invalid_aes_key_size(key.len()))?;
        Ok(Self(LessSafeKey::new(unbound)))
    }

    /// Appends `nonce || ciphertext || tag` to `out` (callers pass a buffer already holding the
    /// prefix, so the value is assembled without copies).
    pub(crate) fn seal_with_nonce_into(
        &self,
        out: &mut Vec<u8>,
        nonce: [u8; NONCE_LEN],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(), TransformError> {
        out.reserve(NONCE_LEN + plaintext.len() + TAG_LEN);
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                out.get_mut(start..).unwrap_or_default(),
            )
            .map_err(|_| TransformError::msg("AES-GCM encryption failed"))?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// [`seal_with_nonce_into`](Self::seal_with_nonce_into) into a new buffer.
    #[cfg(test)]
    pub(crate) fn seal_with_nonce(
        &self,
        nonce: [u8; NONCE_LEN],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, TransformError> {
        let mut out = Vec::new();
        self.seal_with_nonce_into(&mut out, nonce, plaintext, aad)?;
        Ok(out)
    }

    /// Appends the body under a fresh random nonce.
    pub(crate) fn seal_into(
        &self,
        out: &mut Vec<u8>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(), TransformError> {
        let mut nonce = [0u8; NONCE_LEN];
        random::public(&mut nonce)
            .map_err(|e| TransformError::msg(format!("failed to write nonce for AES-GCM: {e}")))?;
        self.seal_with_nonce_into(out, nonce, plaintext, aad)
    }

    /// Decrypts `nonce || ciphertext || tag` found at `buf[skip..]` in place (one pass, no copy):
    /// the plaintext ends up at the start of `buf`.
    pub(crate) fn open_owned(
        &self,
        mut buf: Vec<u8>,
        skip: usize,
        aad: &[u8],
    ) -> Result<Vec<u8>, TransformError> {
        let data = buf.get(skip..).ok_or_else(too_short)?;
        let (nonce, sealed) = data
            .split_first_chunk::<NONCE_LEN>()
            .ok_or_else(too_short)?;
        if sealed.len() < TAG_LEN {
            return Err(TransformError::msg(AUTH_FAILED));
        }
        let nonce = Nonce::assume_unique_for_key(*nonce);
        let len = self
            .0
            .open_within(nonce, Aad::from(aad), &mut buf, skip + NONCE_LEN..)
            .map_err(|_| TransformError::msg(AUTH_FAILED))?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// Decrypts `nonce || ciphertext || tag`.
    pub(crate) fn open(&self, data: &[u8], aad: &[u8]) -> Result<Vec<u8>, TransformError> {
        let (nonce, sealed) = data
            .split_first_chunk::<NONCE_LEN>()
            .ok_or_else(too_short)?;
        if sealed.len() < TAG_LEN {
            return Err(TransformError::msg(AUTH_FAILED));
        }
        let mut buf = sealed.to_vec();
        let len = self
            .0
            .open_in_place(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| TransformError::msg(AUTH_FAILED))?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

impl LocalCipher for GcmKey {
    fn open(&self, body: &[u8], aad: &[u8]) -> Result<Vec<u8>, TransformError> {
        GcmKey::open(self, body, aad)
    }
    fn seal_into(
        &self,
        out: &mut Vec<u8>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(), TransformError> {
        GcmKey::seal_into(self, out, plaintext, aad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AAD: &[u8] = b"/registry/secrets/default/secret1";

    #[test]
    fn worked_example_8_1() {
        let key = GcmKey::new(b"secret is secure").unwrap();
        let nonce: [u8; 12] = hex::decode("000102030405060708090a0b")
            .unwrap()
            .try_into()
            .unwrap();
        let body = key.seal_with_nonce(nonce, b"k8s\x00hello", AAD).unwrap();
        assert_eq!(
            hex::encode(&body),
            "000102030405060708090a0b89cbdbe4f3cf5adb7ac3011ba3283d9a56cbf8dc0a983c4f6e"
        );
        assert_eq!(key.open(&body, AAD).unwrap(), b"k8s\x00hello");
        assert_eq!(
            key.open(&body, b"/registry/secrets/default/other")
                .unwrap_err()
                .to_string(),
            AUTH_FAILED
        );
    }

    #[test]
    fn short_bodies() {
        let key = GcmKey::new(&[7u8; 32]).unwrap();
        assert_eq!(
            key.open(&[0u8; 11], AAD).unwrap_err().to_string(),
            "the stored data was shorter than the required size"
        );
        assert_eq!(
            key.open(&[0u8; 12], AAD).unwrap_err().to_string(),
            AUTH_FAILED
        );
        assert_eq!(
            key.open(&[0u8; 27], AAD).unwrap_err().to_string(),
            AUTH_FAILED
        );
        assert_eq!(
            GcmKey::new(&[0u8; 31]).err().unwrap().to_string(),
            "crypto/aes: invalid key size 31"
        );
    }
}
