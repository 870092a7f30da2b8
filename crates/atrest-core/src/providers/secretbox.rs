//! secretbox (WIRE-FORMAT.md §5.3): NaCl XSalsa20-Poly1305, `nonce(24) || tag(16) || ciphertext`,
//! no AAD. libsodium's combined ("easy") form is exactly `tag || ciphertext`, so a body is the
//! nonce followed by libsodium's output. libsodium (built from the source bundled in
//! `libsodium-sys-stable`, picking SSE2/AVX2 code at run time) is reached through the safe
//! `libsodium-rs` API: no unsafe code here. A FIPS build reads secretbox but refuses to write it
//! ([`crate::fips`]).

use libsodium_rs::crypto_core::hsalsa20;
use libsodium_rs::crypto_onetimeauth as poly1305;
use libsodium_rs::crypto_secretbox as secretbox;
use libsodium_rs::crypto_stream::{self, salsa20};
use zeroize::{Zeroize, Zeroizing};

use super::keys::LocalCipher;
use super::{random, too_short};
use crate::transformer::TransformError;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// NaCl's secretbox uses the first 32 bytes of the XSalsa20 key stream as the Poly1305 key and
/// encrypts the message with the stream that follows.
const POLY_KEY_LEN: usize = 32;
/// Up to this size one Salsa20 pass over the zero-padded value ([`SecretboxKey::one_pass`]);
/// above it libsodium's two-pass secretbox, which is as fast there and copies less.
const ONE_PASS_MAX: usize = 8 * 1024;
/// Upstream's (misleading) text for an authentication failure.
pub(crate) const OPEN_FAILED: &str = "output array was not large enough for encryption";

/// A 32-byte secretbox key (zeroized on drop).
pub(crate) struct SecretboxKey(Zeroizing<[u8; KEY_LEN]>);

/// Runs `sodium_init` once. libsodium requires it before any other call, and it is what picks the
/// SSE2/AVX2/AVX-512 Salsa20 and Poly1305 code for this CPU: without it every call runs the
/// portable reference code.
fn init_libsodium() -> Result<(), TransformError> {
    static INIT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *INIT.get_or_init(|| libsodium_rs::ensure_init().is_ok()) {
        Ok(())
    } else {
        Err(TransformError::msg(
            "secretbox: libsodium failed to initialise",
        ))
    }
}

fn sodium_error(e: libsodium_rs::SodiumError) -> TransformError {
    TransformError::msg(format!("secretbox: {e}"))
}

impl SecretboxKey {
    pub(crate) fn new(key: &[u8]) -> Result<Self, TransformError> {
        init_libsodium()?;
        let key: [u8; KEY_LEN] = key.try_into().map_err(|_| {
            TransformError::msg(format!(
                "expected key size 32 for secretbox provider, got {}",
                key.len()
            ))
        })?;
        Ok(Self(Zeroizing::new(key)))
    }

    /// `input` XORed with the XSalsa20 key stream of `nonce`, in one Salsa20 pass.
    fn xsalsa20_xor(
        &self,
        nonce: &[u8; NONCE_LEN],
        input: &[u8],
    ) -> Result<Vec<u8>, TransformError> {
        let (hnonce, snonce) = nonce.split_at(16);
        let subkey =
            Zeroizing::new(hsalsa20::hsalsa20(hnonce, &self.0[..], None).map_err(sodium_error)?);
        let subkey = crypto_stream::Key::from_slice(&subkey[..]).map_err(sodium_error)?;
        let snonce = salsa20::Nonce::try_from_slice(snonce).map_err(sodium_error)?;
        Ok(salsa20::stream_xor(input, &snonce, &subkey))
    }

    /// `32 zero bytes || data` XORed with the key stream: the Poly1305 key (wiped from the
    /// buffer) and `data` XORed with the stream that follows it.
    ///
    /// libsodium's own secretbox makes two Salsa20 passes (block 0 for the Poly1305 key, then the
    /// message from block 1); for small values that split falls off its 1024-byte SIMD batch and
    /// costs about half the time. One pass over the zero-padded message (NaCl's original
    /// `crypto_secretbox` construction) gives the same bytes.
    fn one_pass(
        &self,
        nonce: &[u8; NONCE_LEN],
        data: &[u8],
    ) -> Result<(poly1305::Key, Vec<u8>), TransformError> {
        let mut padded = vec![0u8; POLY_KEY_LEN + data.len()];
        padded[POLY_KEY_LEN..].copy_from_slice(data);
        let stream = self.xsalsa20_xor(nonce, &padded);
        wipe(&mut padded);
        let mut stream = stream?;
        let poly_key = poly1305::Key::from_bytes(&stream[..POLY_KEY_LEN]);
        stream[..POLY_KEY_LEN].zeroize();
        stream.drain(..POLY_KEY_LEN);
        Ok((poly_key.map_err(sodium_error)?, stream))
    }

    /// Appends `nonce || tag || ciphertext` to `out`.
    pub(crate) fn seal_with_nonce_into(
        &self,
        out: &mut Vec<u8>,
        nonce: [u8; NONCE_LEN],
        plaintext: &[u8],
    ) -> Result<(), TransformError> {
        out.reserve(NONCE_LEN + TAG_LEN + plaintext.len());
        out.extend_from_slice(&nonce);
        if plaintext.len() > ONE_PASS_MAX {
            let key = secretbox::Key::from_bytes(&self.0[..]).map_err(sodium_error)?;
            out.extend_from_slice(&secretbox::seal(
                plaintext,
                &secretbox::Nonce::from_bytes(nonce),
                &key,
            ));
            return Ok(());
        }
        let (poly_key, ciphertext) = self.one_pass(&nonce, plaintext)?;
        out.extend_from_slice(poly1305::onetimeauth(&ciphertext, &poly_key).as_bytes());
        out.extend_from_slice(&ciphertext);
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
        let (tag, ciphertext) = sealed
            .split_first_chunk::<TAG_LEN>()
            .ok_or_else(too_short)?;
        if ciphertext.len() > ONE_PASS_MAX {
            let key = secretbox::Key::from_bytes(&self.0[..]).map_err(sodium_error)?;
            return secretbox::open(sealed, &secretbox::Nonce::from_bytes(*nonce), &key)
                .map_err(|_| TransformError::msg(OPEN_FAILED));
        }
        let (poly_key, mut plaintext) = self.one_pass(nonce, ciphertext)?;
        if !poly1305::verify(
            &poly1305::Tag::from_bytes(tag).map_err(sodium_error)?,
            ciphertext,
            &poly_key,
        ) {
            wipe(&mut plaintext);
            return Err(TransformError::msg(OPEN_FAILED));
        }
        Ok(plaintext)
    }
}

/// Overwrites a plaintext copy before it is freed. A plain `fill` (memset speed, unlike
/// `zeroize`'s byte-wise volatile writes, which would cost as much as the cipher on 1 KiB), kept
/// from being optimised away by `black_box`.
fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(buf);
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
        random::public(&mut nonce)?;
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
    fn tampered_values_are_refused_on_both_paths() {
        let key = SecretboxKey::new(&[9; 32]).unwrap();
        for len in [0, 1000, ONE_PASS_MAX, ONE_PASS_MAX + 1, 70_000] {
            let body = reference_seal(&[9; 32], &[4; 24], &vec![7; len]);
            for at in [0, 24, 39, body.len() - 1] {
                let mut tampered = body.clone();
                tampered[at] ^= 0x80;
                assert_eq!(
                    key.open(&tampered).unwrap_err().to_string(),
                    OPEN_FAILED,
                    "len {len}, byte {at}"
                );
            }
            assert_eq!(key.open(&body).unwrap(), vec![7; len]);
        }
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
            large in prop::collection::vec(any::<u8>(), ONE_PASS_MAX - 64..ONE_PASS_MAX + 64),
        ) {
            let ours = SecretboxKey::new(&key).unwrap();
            let body = ours.seal_with_nonce(nonce, &plaintext).unwrap();
            prop_assert_eq!(&body, &reference_seal(&key, &nonce, &plaintext));
            prop_assert_eq!(ours.open(&body).unwrap(), plaintext);
            // Both sides of the one-pass / two-pass switch.
            let body = ours.seal_with_nonce(nonce, &large).unwrap();
            prop_assert_eq!(&body, &reference_seal(&key, &nonce, &large));
            prop_assert_eq!(ours.open(&body).unwrap(), large);
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
