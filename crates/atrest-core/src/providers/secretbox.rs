//! secretbox (WIRE-FORMAT.md §5.3): NaCl XSalsa20-Poly1305, `nonce(24) || tag(16) || ciphertext`,
//! no AAD. libsodium's combined ("easy") form is exactly `tag || ciphertext`, so a body is the
//! nonce followed by libsodium's output. libsodium (built from the source bundled in
//! `libsodium-sys-stable`, picking SSE2/AVX2 code at run time) is reached through the safe
//! `libsodium-rs` API: no unsafe code here. A FIPS build reads secretbox but refuses to write it
//! ([`crate::fips`]).

use libsodium_rs::crypto_secretbox::{self as sodium, Key, Nonce};

use super::keys::LocalCipher;
use super::{random, too_short};
use crate::transformer::TransformError;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Upstream's (misleading) text for an authentication failure.
pub(crate) const OPEN_FAILED: &str = "output array was not large enough for encryption";

/// A 32-byte secretbox key (zeroized on drop by libsodium-rs).
pub(crate) struct SecretboxKey(Key);

impl SecretboxKey {
    pub(crate) fn new(key: &[u8]) -> Result<Self, TransformError> {
        if key.len() != sodium::KEYBYTES {
            return Err(TransformError::msg(format!(
                "expected key size 32 for secretbox provider, got {}",
                key.len()
            )));
        }
        Key::from_bytes(key)
            .map(Self)
            .map_err(|e| TransformError::msg(format!("secretbox key: {e}")))
    }

    /// Appends `nonce || tag || ciphertext` to `out`.
    pub(crate) fn seal_with_nonce_into(
        &self,
        out: &mut Vec<u8>,
        nonce: [u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Result<(), TransformError> {
        let sealed = sodium::seal(plaintext, &Nonce::from_bytes(nonce), &self.0);
        out.reserve(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
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
        let (nonce, sealed) = data
            .split_first_chunk::<NONCE_LEN>()
            .ok_or_else(too_short)?;
        if sealed.len() < TAG_LEN {
            return Err(too_short());
        }
        sodium::open(sealed, &Nonce::from_bytes(*nonce), &self.0)
            .map_err(|_| TransformError::msg(OPEN_FAILED))
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
        if crate::fips::refuses_secretbox_writes() {
            return Err(TransformError::msg(crate::fips::SECRETBOX_WRITE_REFUSED));
        }
        let mut nonce = [0u8; NONCE_LEN];
        random::fill(&mut nonce)?;
        self.seal_with_nonce_into(out, nonce, plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        assert_eq!(
            SecretboxKey::new(&[0; 31]).err().unwrap().to_string(),
            "expected key size 32 for secretbox provider, got 31"
        );
    }

    #[test]
    fn fips_builds_refuse_writes_only() {
        let key = SecretboxKey::new(&[3; 32]).unwrap();
        let body = key.seal_with_nonce([5; 24], b"k8s\x00data").unwrap();
        assert_eq!(LocalCipher::open(&key, &body, b"").unwrap(), b"k8s\x00data");
        let written = key.seal_into(&mut Vec::new(), b"k8s\x00data", b"");
        if crate::fips::FIPS_BUILD {
            assert_eq!(
                written.unwrap_err().to_string(),
                crate::fips::SECRETBOX_WRITE_REFUSED
            );
        } else {
            written.unwrap();
        }
    }

    /// The RustCrypto implementation this provider used before, as the reference.
    fn reference_seal(key: &[u8; 32], nonce: &[u8; 24], plaintext: &[u8]) -> Vec<u8> {
        use crypto_secretbox::aead::{AeadInPlace, KeyInit};
        let cipher = crypto_secretbox::XSalsa20Poly1305::new(key.into());
        let mut ciphertext = plaintext.to_vec();
        let tag = cipher
            .encrypt_in_place_detached(nonce.into(), b"", &mut ciphertext)
            .unwrap();
        let mut body = nonce.to_vec();
        body.extend_from_slice(&tag);
        body.extend_from_slice(&ciphertext);
        body
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Byte-identical output to the reference, at lengths around libsodium's internal block
        /// boundaries (64-byte blocks, 256/512-byte SIMD batches) and up to a few KiB.
        #[test]
        fn same_bytes_as_reference(
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; 24]>(),
            plaintext in prop::collection::vec(any::<u8>(), 0..4200),
        ) {
            let ours = SecretboxKey::new(&key).unwrap();
            let body = ours.seal_with_nonce(nonce, &plaintext).unwrap();
            prop_assert_eq!(&body, &reference_seal(&key, &nonce, &plaintext));
            prop_assert_eq!(ours.open(&body).unwrap(), plaintext);
        }

        /// Any corruption of a reference body is refused with upstream's text; never a panic.
        #[test]
        fn corrupted_bodies_are_refused(
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; 24]>(),
            plaintext in prop::collection::vec(any::<u8>(), 0..300),
            flip in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut body = reference_seal(&key, &nonce, &plaintext);
            let at = flip.index(body.len());
            body[at] ^= 1 << bit;
            let err = SecretboxKey::new(&key).unwrap().open(&body).unwrap_err();
            prop_assert_eq!(err.to_string(), OPEN_FAILED);
        }
    }

    #[test]
    fn large_values_match_reference() {
        let key = [0x42u8; 32];
        let nonce = [0x24u8; 24];
        for len in [65_536usize, 65_536 + 17, 1 << 20] {
            let plaintext: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            let body = SecretboxKey::new(&key)
                .unwrap()
                .seal_with_nonce(nonce, &plaintext)
                .unwrap();
            assert_eq!(body, reference_seal(&key, &nonce, &plaintext), "{len}");
        }
    }
}
