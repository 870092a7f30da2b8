//! The round-trip check a writer makes before trusting a write provider: the first value written
//! under each new write state (a KMS v2 seed/DEK, a local key) — and then one value in
//! [`SAMPLE_EVERY`] — is read back with no cache of decrypted keys, so a KMS plugin's own Decrypt
//! must unwrap the new seed (same key ID and annotations) and the value must decrypt to the
//! original plaintext. A plugin that encrypts but cannot decrypt (lost KEK, encrypt-only policy)
//! is caught before anything written with it reaches etcd.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use atrest_core::ResourceTransformer;

use super::EtcdError;

/// After the first value of a write state, every this many values are checked again.
pub const SAMPLE_EVERY: u64 = 1000;

/// Which write states (per resource) passed, and how many values went by.
#[derive(Default)]
pub struct WriteCheck {
    verified: Mutex<HashSet<Vec<u8>>>,
    seen: AtomicU64,
    /// Values read back (the first of each state plus samples).
    pub checked: AtomicU64,
}

impl WriteCheck {
    /// Checks `written` (the new value of `key` in `resource`) when its write state is new or the
    /// sample is due; the error names the write provider and its endpoint.
    pub fn check(
        &self,
        rt: &ResourceTransformer,
        resource: &str,
        key: &[u8],
        plaintext: &[u8],
        written: &[u8],
    ) -> Result<(), EtcdError> {
        let mut id = resource.as_bytes().to_vec();
        id.push(0);
        id.extend(rt.write_state_id(written));
        let seen = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        let known = self
            .verified
            .lock()
            .map(|v| v.contains(&id))
            .unwrap_or(false);
        if known && !seen.is_multiple_of(SAMPLE_EVERY) {
            return Ok(());
        }
        self.checked.fetch_add(1, Ordering::Relaxed);
        rt.verify_write(written, plaintext, key)
            .map_err(|e| EtcdError::WriteCheck {
                key: String::from_utf8_lossy(key).into_owned(),
                message: e.to_string(),
            })?;
        if let Ok(mut v) = self.verified.lock() {
            v.insert(id);
        }
        Ok(())
    }
}
