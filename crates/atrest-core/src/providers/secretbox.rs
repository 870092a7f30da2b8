//! secretbox (WIRE-FORMAT.md §5.3): NaCl XSalsa20-Poly1305, `nonce(24) || tag(16) || ciphertext`,
//! no AAD. Built on the detached API so the tag-before-ciphertext order is explicit.

use crypto_secretbox::aead::{AeadInPlace, KeyInit};
use crypto_secretbox::{Nonce, Tag, XSalsa20Poly1305};
use zeroize::Zeroizing;

use super::keys::LocalCipher;
use super::{random, too_short};
use crate::transformer::TransformError;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Upstream's (misleading) text for an authentication failure.
pub(crate) const OPEN_FAILED: &str = "output array was not large enough for encryption";

/// A 32-byte secretbox key.
pub(crate) struct SecretboxKey(XSalsa20Poly1305);

impl SecretboxKey {
    pub(crate) fn new(key: &[u8]) -> Result<Self, TransformError> {
        let key: Zeroizing<[u8; 32]> = Zeroizing::new(key.try_into().map_err(|_| {
            TransformError::msg(format!(
                "expected key size 32 for secretbox provider, got {}",
                key.len()
            ))
        })?);
        Ok(Self(XSalsa20Poly1305::new(key.as_ref().into())))
    }

    /// Appends `nonce || tag || ciphertext` to `out` (the tag slot is filled after encrypting).
    pub(crate) fn seal_with_nonce_into(
        &self,
        out: &mut Vec<u8>,
        nonce: [u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Result<(), TransformError> {
        out.reserve(NONCE_LEN + TAG_LEN + plaintext.len());
        out.extend_from_slice(&nonce);
        let tag_at = out.len();
        out.extend_from_slice(&[0u8; TAG_LEN]);
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                b"",
                out.get_mut(tag_at + TAG_LEN..).unwrap_or_default(),
            )
            .map_err(|_| TransformError::msg("secretbox encryption failed"))?;
        if let Some(slot) = out.get_mut(tag_at..tag_at + TAG_LEN) {
            slot.copy_from_slice(&tag);
        }
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn seal_with_nonce(
        &self,
        nonce: [u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, TransformError> {
        let mut out = Vec::new();
        self.seal_with_nonce_into(&mut out, nonce, plaintext)?;
        Ok(out)
    }

    pub(crate) fn open(&self, data: &[u8]) -> Result<Vec<u8>, TransformError> {
        let (nonce, rest) = data
            .split_first_chunk::<NONCE_LEN>()
            .ok_or_else(too_short)?;
        let (tag, ciphertext) = rest.split_first_chunk::<TAG_LEN>().ok_or_else(too_short)?;
        let mut buf = ciphertext.to_vec();
        self.0
            .decrypt_in_place_detached(
                Nonce::from_slice(nonce),
                b"",
                &mut buf,
                Tag::from_slice(tag),
            )
            .map_err(|_| TransformError::msg(OPEN_FAILED))?;
        Ok(buf)
    }
}

impl LocalCipher for SecretboxKey {
    fn open(&self, body: &[u8], _aad: &[u8]) -> Result<Vec<u8>, TransformError> {
        SecretboxKey::open(self, body)
    }
    fn seal_into(
        &self,
        out: &mut Vec<u8>,
        plaintext: &[u8],
        _aad: &[u8],
    ) -> Result<(), TransformError> {
        let mut nonce = [0u8; NONCE_LEN];
        random::fill(&mut nonce)?;
        self.seal_with_nonce_into(out, nonce, plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worked_example_8_3() {
        let key = SecretboxKey::new(b"abcdefghijklmnopqrstuvwxyz123456").unwrap();
        let nonce: [u8; 24] = hex::decode("000102030405060708090a0b0c0d0e0f1011121314151617")
            .unwrap()
            .try_into()
            .unwrap();
        let body = key.seal_with_nonce(nonce, b"k8s\x00hello").unwrap();
        assert_eq!(
            hex::encode(&body),
            "000102030405060708090a0b0c0d0e0f1011121314151617d91339b7d465944ccb12f14f037c0c6a7ecdffa1690602b73c"
        );
        assert_eq!(key.open(&body).unwrap(), b"k8s\x00hello");
        let mut tampered = body.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(key.open(&tampered).unwrap_err().to_string(), OPEN_FAILED);
        assert_eq!(
            key.open(&body[..39]).unwrap_err().to_string(),
            "the stored data was shorter than the required size"
        );
        assert_eq!(key.open(&body[..40]).unwrap_err().to_string(), OPEN_FAILED);
    }
}
