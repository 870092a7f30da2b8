//! Optional sealing of the local key store by a passphrase.
//!
//! Choice: **scrypt** (memory-hard, RFC 7914; N = 2^15, r = 8, p = 1 → 32 MiB and ~0.1 s per
//! derivation) turns the passphrase into a 256-bit store key once at start; each KEK file is then
//! sealed with AES-256-GCM under that key, with `"atrest-kms kek v<version>"` as AAD so files cannot
//! be swapped between versions. scrypt (not argon2) because it needs no extra C code, is a small
//! pure-Rust crate, and its memory hardness is what matters against offline guessing of a stolen
//! store. A random key file works as a passphrase too (`--passphrase-file`).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

const CHECK_PLAINTEXT: &[u8] = b"atrest-kms passphrase check";
const CHECK_AAD: &[u8] = b"atrest-kms store check";

/// scrypt parameters stored in `store.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScryptParams {
    pub log_n: u8,
    pub r: u32,
    pub p: u32,
    pub salt: String,
}

impl ScryptParams {
    pub fn generate() -> ScryptParams {
        let mut salt = [0u8; 16];
        let _ = aws_lc_rs::rand::fill(&mut salt);
        // Tests may lower the cost; never below 2^10.
        let log_n = std::env::var("ATREST_KMS_SCRYPT_LOG_N")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(15u8)
            .clamp(10, 20);
        ScryptParams {
            log_n,
            r: 8,
            p: 1,
            salt: B64.encode(salt),
        }
    }
}

/// The store key derived from the passphrase.
pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    pub fn derive(passphrase: &[u8], params: &ScryptParams) -> Result<Sealer, String> {
        let salt = B64
            .decode(params.salt.as_bytes())
            .map_err(|e| format!("bad scrypt salt: {e}"))?;
        if params.log_n > 22 || params.r == 0 || params.p == 0 || params.r > 32 || params.p > 16 {
            return Err("scrypt parameters out of range".into());
        }
        let p = scrypt::Params::new(params.log_n, params.r, params.p, 32)
            .map_err(|e| format!("scrypt parameters: {e}"))?;
        let mut out = Zeroizing::new([0u8; 32]);
        scrypt::scrypt(passphrase, &salt, &p, out.as_mut_slice())
            .map_err(|e| format!("scrypt: {e}"))?;
        let key =
            UnboundKey::new(&AES_256_GCM, out.as_slice()).map_err(|_| "store key".to_string())?;
        Ok(Sealer {
            key: LessSafeKey::new(key),
        })
    }

    fn seal_with(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        let _ = aws_lc_rs::rand::fill(&mut nonce);
        let mut buf = plaintext.to_vec();
        // Sealing in place cannot fail for inputs this small.
        let _ = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        );
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        zeroize::Zeroize::zeroize(&mut buf);
        out
    }

    fn open_with(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN + 16 {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[..NONCE_LEN]).ok()?;
        let mut buf = Zeroizing::new(sealed[NONCE_LEN..].to_vec());
        let n = self
            .key
            .open_in_place(nonce, Aad::from(aad), buf.as_mut_slice())
            .ok()?
            .len();
        buf.truncate(n);
        Some(buf)
    }

    pub fn seal(&self, version: u32, key: &[u8]) -> Vec<u8> {
        self.seal_with(format!("atrest-kms kek v{version}").as_bytes(), key)
    }

    pub fn open(&self, version: u32, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        self.open_with(format!("atrest-kms kek v{version}").as_bytes(), sealed)
    }

    pub fn seal_check(&self) -> String {
        B64.encode(self.seal_with(CHECK_AAD, CHECK_PLAINTEXT))
    }

    pub fn verify_check(&self, check: &str) -> bool {
        let Ok(raw) = B64.decode(check.as_bytes()) else {
            return false;
        };
        match self.open_with(CHECK_AAD, &raw) {
            Some(p) => subtle::ConstantTimeEq::ct_eq(p.as_slice(), CHECK_PLAINTEXT).into(),
            None => false,
        }
    }
}
