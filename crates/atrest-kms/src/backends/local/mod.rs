//! `local`: KEKs in a key store directory on this host (see [`store`] for the layout and
//! [`seal`] for optional passphrase sealing).
//!
//! * Wrap: AES-256-GCM (aws-lc-rs) under the primary (highest) version, random 96-bit nonce, the
//!   key id as AAD. Ciphertext = `nonce(12) ‖ ciphertext ‖ tag(16)` (60 bytes for a 32-byte seed).
//! * Key id: `local-v<version>-<hex>` where `<hex>` is the first 12 bytes of
//!   HMAC-SHA256(KEK, "atrest-kms local key id"). The same KEK file gives the same id on every node;
//!   a new KEK (rotation, or a different store) gives a new id; ids are never reused because KEKs
//!   are random. The HMAC reveals nothing about the key.
//! * Rotation: `atrest kms rotate` writes a new version; `kms serve` watches the store directory
//!   ([`watch`], inotify) and loads it at once, making it primary; [`LocalBackend::refresh`]
//!   (background, every `--health-interval`) does the same as a fallback. Older versions keep
//!   decrypting until their file is removed.

pub mod seal;
pub mod store;
pub mod watch;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use zeroize::Zeroizing;

pub use store::{default_dir, read_passphrase_file, KeyStore, StoreError};

use crate::backend::{BackendError, KeyBackend, Wrapped};

struct Kek {
    version: u32,
    key_id: String,
    key: LessSafeKey,
}

struct KeySet {
    primary: Arc<Kek>,
    by_id: HashMap<String, Arc<Kek>>,
}

/// The local backend: an opened [`KeyStore`] and its keys in memory.
pub struct LocalBackend {
    store: KeyStore,
    keys: RwLock<Arc<KeySet>>,
    /// The directory watch, once [`watch::start`] ran (dropped with the backend).
    watcher: std::sync::Mutex<Option<watch::StoreWatch>>,
}

fn make_kek(version: u32, raw: &[u8; 32]) -> Result<Kek, BackendError> {
    let tag = aws_lc_rs::hmac::sign(
        &aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, raw),
        b"atrest-kms local key id",
    );
    let key_id = format!("local-v{version}-{}", hex::encode(&tag.as_ref()[..12]));
    let key = UnboundKey::new(&AES_256_GCM, raw)
        .map_err(|_| BackendError::Config("invalid AES-256 key".into()))?;
    Ok(Kek {
        version,
        key_id,
        key: LessSafeKey::new(key),
    })
}

fn store_err(e: StoreError) -> BackendError {
    BackendError::Config(e.to_string())
}

impl LocalBackend {
    /// Opens the store at `dir` (see [`KeyStore::open`]) and loads every version.
    pub fn open(dir: &Path, passphrase: Option<&[u8]>) -> Result<LocalBackend, BackendError> {
        let store = KeyStore::open(dir, passphrase).map_err(store_err)?;
        Self::from_store(store)
    }

    pub fn from_store(store: KeyStore) -> Result<LocalBackend, BackendError> {
        let set = Self::load_all(&store, None)?;
        Ok(LocalBackend {
            store,
            keys: RwLock::new(Arc::new(set)),
            watcher: std::sync::Mutex::new(None),
        })
    }

    /// Loads every version; keys already in `previous` are reused (no re-read of unchanged files).
    fn load_all(store: &KeyStore, previous: Option<&KeySet>) -> Result<KeySet, BackendError> {
        let versions = store.versions().map_err(store_err)?;
        let mut by_version: BTreeMap<u32, Arc<Kek>> = BTreeMap::new();
        if let Some(prev) = previous {
            for k in prev.by_id.values() {
                if versions.contains(&k.version) {
                    by_version.insert(k.version, Arc::clone(k));
                }
            }
        }
        for v in versions {
            if let std::collections::btree_map::Entry::Vacant(e) = by_version.entry(v) {
                let m = store.load(v).map_err(store_err)?;
                e.insert(Arc::new(make_kek(v, &m.key)?));
            }
        }
        let primary = by_version
            .values()
            .next_back()
            .cloned()
            .ok_or_else(|| store_err(StoreError::Empty(store.dir().to_path_buf())))?;
        let by_id = by_version
            .values()
            .map(|k| (k.key_id.clone(), Arc::clone(k)))
            .collect();
        Ok(KeySet { primary, by_id })
    }

    fn snapshot(&self) -> Arc<KeySet> {
        match self.keys.read() {
            Ok(g) => Arc::clone(&g),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    /// Every key id this store can decrypt, oldest first (for `atrest kms list`).
    pub fn key_ids(&self) -> Vec<(u32, String)> {
        let set = self.snapshot();
        let mut v: Vec<_> = set
            .by_id
            .values()
            .map(|k| (k.version, k.key_id.clone()))
            .collect();
        v.sort();
        v
    }

    fn wrap_sync(&self, plaintext: &[u8]) -> Result<Wrapped, BackendError> {
        let kek = Arc::clone(&self.snapshot().primary);
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| BackendError::Unavailable("random number generator failed".into()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        let tag = kek
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kek.key_id.as_bytes()),
                &mut out[NONCE_LEN..],
            )
            .map_err(|_| BackendError::Unavailable("AES-GCM seal failed".into()))?;
        out.extend_from_slice(tag.as_ref());
        Ok(Wrapped {
            key_id: kek.key_id.clone(),
            ciphertext: out,
            annotations: BTreeMap::new(),
        })
    }

    fn unwrap_sync(
        &self,
        key_id: &str,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let set = self.snapshot();
        let kek = set
            .by_id
            .get(key_id)
            .ok_or_else(|| BackendError::UnknownKeyId(key_id.to_string()))?;
        if ciphertext.len() < NONCE_LEN + 16 {
            return Err(BackendError::BadCiphertext(format!(
                "{} bytes is too short",
                ciphertext.len()
            )));
        }
        let nonce = Nonce::try_assume_unique_for_key(&ciphertext[..NONCE_LEN])
            .map_err(|_| BackendError::BadCiphertext("bad nonce".into()))?;
        let mut buf = Zeroizing::new(ciphertext[NONCE_LEN..].to_vec());
        let n = kek
            .key
            .open_in_place(nonce, Aad::from(kek.key_id.as_bytes()), buf.as_mut_slice())
            .map_err(|_| BackendError::BadCiphertext("message authentication failed".into()))?
            .len();
        buf.truncate(n);
        Ok(buf)
    }
}

#[async_trait::async_trait]
impl KeyBackend for LocalBackend {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn current_key_id(&self) -> Result<String, BackendError> {
        Ok(self.snapshot().primary.key_id.clone())
    }

    async fn wrap(&self, plaintext: &[u8]) -> Result<Wrapped, BackendError> {
        self.wrap_sync(plaintext)
    }

    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        _annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        self.unwrap_sync(key_id, ciphertext)
    }

    async fn refresh(&self) -> Result<(), BackendError> {
        self.reload()
    }
}

impl LocalBackend {
    /// Re-reads the store's versions (new files loaded, removed ones dropped, unchanged ones
    /// kept) and swaps the key set in; on error the previous set stays.
    pub(crate) fn reload(&self) -> Result<(), BackendError> {
        let prev = self.snapshot();
        let next = Self::load_all(&self.store, Some(&prev))?;
        if next.primary.key_id != prev.primary.key_id || next.by_id.len() != prev.by_id.len() {
            tracing::info!(key_id = %next.primary.key_id, versions = next.by_id.len(), "local key store changed");
        }
        match self.keys.write() {
            Ok(mut g) => *g = Arc::new(next),
            Err(p) => *p.into_inner() = Arc::new(next),
        }
        Ok(())
    }
}
