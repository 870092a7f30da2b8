//! aescbc (WIRE-FORMAT.md §5.1): `IV(16) || AES-CBC(PKCS#7(plaintext))`, no MAC, no AAD.
//!
//! Padding is added and checked here (not by the cipher library) because upstream distinguishes
//! two padding errors, `invalid PKCS7 data (empty or not padded)` and `invalid padding on input`,
//! and the check order decides which text a corrupted value produces.

use aws_lc_rs::cipher::{
    DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext, UnboundCipherKey, AES_128,
    AES_192, AES_256,
};
use aws_lc_rs::iv::FixedLength;

use super::keys::LocalCipher;
use super::{invalid_aes_key_size, random, too_short};
use crate::transformer::TransformError;

const BLOCK: usize = 16;
pub(crate) const NOT_BLOCK_MULTIPLE: &str = "the stored data is not a multiple of the block size";
pub(crate) const INVALID_PKCS7_DATA: &str = "invalid PKCS7 data (empty or not padded)";
pub(crate) const INVALID_PADDING: &str = "invalid padding on input";

/// An AES-CBC key of 16, 24 or 32 bytes.
pub(crate) struct CbcKey {
    encrypt: EncryptingKey,
    decrypt: DecryptingKey,
}

impl CbcKey {
    pub(crate) fn new(key: &[u8]) -> Result<Self, TransformError> {
        let algorithm = match key.len() {
            16 => &AES_128,
            24 => &AES_192,
            32 => &AES_256,
            n => return Err(invalid_aes_key_size(n)),
        };
        let bad = |_| invalid_aes_key_size(key.len());
        Ok(Self {
            encrypt: EncryptingKey::cbc(UnboundCipherKey::new(algorithm, key).map_err(bad)?)
                .map_err(bad)?,
            decrypt: DecryptingKey::cbc(UnboundCipherKey::new(algorithm, key).map_err(bad)?)
                .map_err(bad)?,
        })
    }

    /// Appends `iv || CBC(padded)` to `out`.
    pub(crate) fn seal_with_iv_into(
        &self,
        out: &mut Vec<u8>,
        iv: [u8; BLOCK],
        plaintext: &[u8],
    ) -> Result<(), TransformError> {
        let pad = BLOCK - plaintext.len() % BLOCK;
        out.reserve(BLOCK + plaintext.len() + pad);
        out.extend_from_slice(&iv);
        let start = out.len();
        out.extend_from_slice(plaintext);
        out.resize(out.len() + pad, pad as u8);
        let context = EncryptionContext::Iv128(FixedLength::from(iv));
        self.encrypt
            .less_safe_encrypt(out.get_mut(start..).unwrap_or_default(), context)
            .map_err(|_| TransformError::msg("AES-CBC encryption failed"))?;
        Ok(())
    }

    /// [`seal_with_iv_into`](Self::seal_with_iv_into) into a new buffer.
    #[cfg(test)]
    pub(crate) fn seal_with_iv(
        &self,
        iv: [u8; BLOCK],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, TransformError> {
        let mut out = Vec::new();
        self.seal_with_iv_into(&mut out, iv, plaintext)?;
        Ok(out)
    }

    /// Decrypts `iv || blocks` with upstream's checks, in upstream's order.
    pub(crate) fn open(&self, data: &[u8]) -> Result<Vec<u8>, TransformError> {
        let (iv, blocks) = data.split_first_chunk::<BLOCK>().ok_or_else(too_short)?;
        if blocks.len() % BLOCK != 0 {
            return Err(TransformError::msg(NOT_BLOCK_MULTIPLE));
        }
        // Upstream indexes result[-1] here and panics; we report the empty-data padding error.
        if blocks.is_empty() {
            return Err(TransformError::msg(INVALID_PKCS7_DATA));
        }
        let mut buf = blocks.to_vec();
        let context = DecryptionContext::Iv128(FixedLength::from(*iv));
        self.decrypt
            .decrypt(&mut buf, context)
            .map_err(|_| TransformError::msg("AES-CBC decryption failed"))?;
        let pad = buf.last().copied().unwrap_or(0);
        let pad_len = usize::from(pad);
        if pad_len == 0 || pad_len > buf.len() {
            return Err(TransformError::msg(INVALID_PKCS7_DATA));
        }
        let size = buf.len() - pad_len;
        if buf
            .get(size..)
            .is_none_or(|tail| tail.iter().any(|&b| b != pad))
        {
            return Err(TransformError::msg(INVALID_PADDING));
        }
        buf.truncate(size);
        Ok(buf)
    }
}

impl LocalCipher for CbcKey {
    fn open(&self, body: &[u8], _aad: &[u8]) -> Result<Vec<u8>, TransformError> {
        CbcKey::open(self, body)
    }
    fn seal_into(
        &self,
        out: &mut Vec<u8>,
        plaintext: &[u8],
        _aad: &[u8],
    ) -> Result<(), TransformError> {
        let mut iv = [0u8; BLOCK];
        random::public(&mut iv)?;
        self.seal_with_iv_into(out, iv, plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CbcKey {
        CbcKey::new(b"abcdefghijklmnopqrstuvwxyz123456").unwrap()
    }

    #[test]
    fn worked_example_8_2() {
        let iv: [u8; 16] = hex::decode("000102030405060708090a0b0c0d0e0f")
            .unwrap()
            .try_into()
            .unwrap();
        let body = key().seal_with_iv(iv, b"k8s\x00hello").unwrap();
        assert_eq!(
            hex::encode(&body),
            "000102030405060708090a0b0c0d0e0f4c118ab29fb0c58381f16d1725748536"
        );
        assert_eq!(key().open(&body).unwrap(), b"k8s\x00hello");
    }

    #[test]
    fn aligned_input_gets_a_full_padding_block() {
        let body = key().seal_with_iv([1; 16], &[9u8; 32]).unwrap();
        assert_eq!(body.len(), 16 + 48);
        assert_eq!(key().open(&body).unwrap(), vec![9u8; 32]);
    }

    /// Builds a body whose decrypted last block is exactly `last_block`.
    fn body_decrypting_to(last_block: [u8; 16]) -> Vec<u8> {
        // CBC: encrypting P with IV gives C with D(C) xor IV = P.
        key().seal_with_iv([3; 16], &last_block).unwrap()[..32].to_vec()
    }

    #[test]
    fn checks_in_upstream_order() {
        let k = key();
        assert_eq!(
            k.open(&[0; 15]).unwrap_err().to_string(),
            "the stored data was shorter than the required size"
        );
        assert_eq!(
            k.open(&[0; 17]).unwrap_err().to_string(),
            NOT_BLOCK_MULTIPLE
        );
        assert_eq!(
            k.open(&[0; 16]).unwrap_err().to_string(),
            INVALID_PKCS7_DATA
        );
        let mut zero_pad = [5u8; 16];
        zero_pad[15] = 0;
        assert_eq!(
            k.open(&body_decrypting_to(zero_pad))
                .unwrap_err()
                .to_string(),
            INVALID_PKCS7_DATA
        );
        let mut too_big = [5u8; 16];
        too_big[15] = 17;
        assert_eq!(
            k.open(&body_decrypting_to(too_big))
                .unwrap_err()
                .to_string(),
            INVALID_PKCS7_DATA
        );
        let mut inconsistent = [5u8; 16];
        inconsistent[15] = 3;
        inconsistent[14] = 3;
        assert_eq!(
            k.open(&body_decrypting_to(inconsistent))
                .unwrap_err()
                .to_string(),
            INVALID_PADDING
        );
        let mut good = [5u8; 16];
        good[13..].copy_from_slice(&[3, 3, 3]);
        assert_eq!(k.open(&body_decrypting_to(good)).unwrap(), vec![5u8; 13]);
    }
}
