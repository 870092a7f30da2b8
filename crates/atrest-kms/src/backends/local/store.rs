//! The on-disk key store: a directory (mode 0700) holding `store.json` and one file per KEK
//! version, `kek-00000001.json`, … (mode 0600). The highest version is the primary (write) key;
//! every present version decrypts. Files are written to a temporary name and renamed, so a running
//! plugin never reads a half-written key.
//!
//! ```text
//! store.json          {"format":"atrest-kms-store/v1","sealing":"none"}
//!                     {"format":"atrest-kms-store/v1","sealing":"scrypt","scrypt":{…},"check":"…"}
//! kek-00000001.json   {"format":"atrest-kms-kek/v1","version":1,"created_unix":…,"key":"<base64>"}
//!                     {"format":"atrest-kms-kek/v1","version":1,"created_unix":…,"sealed":"<base64>"}
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::seal::{ScryptParams, Sealer};

const STORE_FORMAT: &str = "atrest-kms-store/v1";
const KEK_FORMAT: &str = "atrest-kms-kek/v1";
const STORE_FILE: &str = "store.json";

/// Everything that can go wrong with the key store. Each names the path concerned.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key store {0} does not exist (create it with `atrest kms init --key-store {0}`, or start `serve` with --init)")]
    Missing(PathBuf),
    #[error("key store {0} already exists")]
    AlreadyExists(PathBuf),
    #[error("refusing to use {path}: it is {what} (mode {mode:o}); run `chmod {fix} {path}`")]
    Permissions {
        path: PathBuf,
        what: &'static str,
        mode: u32,
        fix: &'static str,
    },
    #[error("refusing to use {path}: it is a symlink; the key store takes no symlinks (another user could redirect it): put the file itself there")]
    Symlink { path: PathBuf },
    #[error("refusing to use {path}: it is owned by uid {owner}, not by uid {user} that serves; `chown {user} {path}` or serve as its owner")]
    Owner {
        path: PathBuf,
        owner: u32,
        user: u32,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid key store file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("key store {0} is sealed with a passphrase: give --passphrase-file or ATREST_KMS_PASSPHRASE")]
    NeedPassphrase(PathBuf),
    #[error("key store {0} is not sealed, but a passphrase was given")]
    NotSealed(PathBuf),
    #[error("wrong passphrase for key store {0}")]
    WrongPassphrase(PathBuf),
    #[error("key store {0} holds no KEK (kek-*.json)")]
    Empty(PathBuf),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Serialize, Deserialize)]
struct StoreMeta {
    format: String,
    sealing: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scrypt: Option<ScryptParams>,
    /// Sealed known value proving the passphrase (sealed stores only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    check: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct KekFile {
    format: String,
    version: u32,
    created_unix: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sealed: Option<String>,
}

/// One KEK version, raw bytes zeroized on drop.
pub struct KekMaterial {
    pub version: u32,
    pub key: Zeroizing<[u8; 32]>,
}

/// An opened key store (permissions checked, passphrase verified).
pub struct KeyStore {
    dir: PathBuf,
    sealer: Option<Sealer>,
}

/// Default location: `/var/lib/atrest/kms` for root, else `$XDG_DATA_HOME/atrest/kms`
/// (`~/.local/share/atrest/kms`).
pub fn default_dir() -> PathBuf {
    if crate::backends::running_as_root() {
        return PathBuf::from("/var/lib/atrest/kms");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("atrest/kms");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/atrest/kms"),
        None => PathBuf::from("atrest-kms"),
    }
}

/// Refuses symlinks, anything owned by another user, and anything group- or world-accessible.
fn check_private(path: &Path, is_dir: bool) -> Result<(), StoreError> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::symlink_metadata(path).map_err(io(path))?;
    if meta.file_type().is_symlink() {
        return Err(StoreError::Symlink {
            path: path.to_path_buf(),
        });
    }
    let user = rustix::process::geteuid().as_raw();
    if meta.uid() != user {
        return Err(StoreError::Owner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            user,
        });
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        let what = if mode & 0o007 != 0 {
            "world-accessible"
        } else {
            "group-accessible"
        };
        return Err(StoreError::Permissions {
            path: path.to_path_buf(),
            what,
            mode,
            fix: if is_dir { "700" } else { "600" },
        });
    }
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(io(&tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(io(path))
}

fn kek_file_name(version: u32) -> String {
    format!("kek-{version:08}.json")
}

/// Whether `name` is a KEK file of the store (what the directory watch reacts to).
pub(crate) fn is_kek_file_name(name: &str) -> bool {
    parse_kek_name(name).is_some()
}

fn parse_kek_name(name: &str) -> Option<u32> {
    name.strip_prefix("kek-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl KeyStore {
    /// Creates a new store with KEK version 1. `passphrase` seals it.
    pub fn init(dir: &Path, passphrase: Option<&[u8]>) -> Result<KeyStore, StoreError> {
        if dir.join(STORE_FILE).exists() {
            return Err(StoreError::AlreadyExists(dir.to_path_buf()));
        }
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::create_dir_all(parent).map_err(io(parent))?;
        }
        match fs::DirBuilder::new().mode(0o700).create(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(dir)(e)),
        }
        check_private(dir, true)?;
        let (meta, sealer) = match passphrase {
            None => (
                StoreMeta {
                    format: STORE_FORMAT.into(),
                    sealing: "none".into(),
                    scrypt: None,
                    check: None,
                },
                None,
            ),
            Some(p) => {
                let params = ScryptParams::generate();
                let sealer = Sealer::derive(p, &params).map_err(|e| StoreError::Format {
                    path: dir.to_path_buf(),
                    reason: e,
                })?;
                let check = sealer.seal_check();
                (
                    StoreMeta {
                        format: STORE_FORMAT.into(),
                        sealing: "scrypt".into(),
                        scrypt: Some(params),
                        check: Some(check),
                    },
                    Some(sealer),
                )
            }
        };
        let store = KeyStore {
            dir: dir.to_path_buf(),
            sealer,
        };
        store.write_kek(1)?;
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| StoreError::Format {
            path: dir.into(),
            reason: e.to_string(),
        })?;
        write_private(&dir.join(STORE_FILE), &json)?;
        Ok(store)
    }

    /// Opens an existing store: checks permissions, and the passphrase for sealed stores.
    pub fn open(dir: &Path, passphrase: Option<&[u8]>) -> Result<KeyStore, StoreError> {
        let meta_path = dir.join(STORE_FILE);
        if !dir.exists() || !meta_path.exists() {
            return Err(StoreError::Missing(dir.to_path_buf()));
        }
        check_private(dir, true)?;
        check_private(&meta_path, false)?;
        let raw = fs::read(&meta_path).map_err(io(&meta_path))?;
        let meta: StoreMeta = serde_json::from_slice(&raw).map_err(|e| StoreError::Format {
            path: meta_path.clone(),
            reason: e.to_string(),
        })?;
        if meta.format != STORE_FORMAT {
            return Err(StoreError::Format {
                path: meta_path,
                reason: format!("unknown format {:?}", meta.format),
            });
        }
        let sealer = match (meta.sealing.as_str(), passphrase) {
            ("none", None) => None,
            ("none", Some(_)) => return Err(StoreError::NotSealed(dir.into())),
            ("scrypt", None) => return Err(StoreError::NeedPassphrase(dir.into())),
            ("scrypt", Some(p)) => {
                let bad = |reason: &str| StoreError::Format {
                    path: meta_path.clone(),
                    reason: reason.into(),
                };
                let params = meta
                    .scrypt
                    .as_ref()
                    .ok_or_else(|| bad("sealed store without scrypt parameters"))?;
                let check = meta
                    .check
                    .as_deref()
                    .ok_or_else(|| bad("sealed store without check value"))?;
                let sealer = Sealer::derive(p, params).map_err(|e| bad(&e))?;
                if !sealer.verify_check(check) {
                    return Err(StoreError::WrongPassphrase(dir.into()));
                }
                Some(sealer)
            }
            (other, _) => {
                return Err(StoreError::Format {
                    path: meta_path,
                    reason: format!("unknown sealing {other:?}"),
                })
            }
        };
        Ok(KeyStore {
            dir: dir.to_path_buf(),
            sealer,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_sealed(&self) -> bool {
        self.sealer.is_some()
    }

    /// Versions present, ascending. Re-checks the directory's permissions every time (this runs in
    /// the background refresh, so a store made group/world-accessible turns the plugin unhealthy).
    pub fn versions(&self) -> Result<Vec<u32>, StoreError> {
        check_private(&self.dir, true)?;
        let mut v = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let entry = entry.map_err(io(&self.dir))?;
            if let Some(ver) = entry.file_name().to_str().and_then(parse_kek_name) {
                v.push(ver);
            }
        }
        v.sort_unstable();
        Ok(v)
    }

    /// Loads one version (permission-checked, unsealed).
    pub fn load(&self, version: u32) -> Result<KekMaterial, StoreError> {
        let path = self.dir.join(kek_file_name(version));
        check_private(&path, false)?;
        let raw = Zeroizing::new(fs::read(&path).map_err(io(&path))?);
        let bad = |reason: String| StoreError::Format {
            path: path.clone(),
            reason,
        };
        let file: KekFile = serde_json::from_slice(&raw).map_err(|e| bad(e.to_string()))?;
        if file.format != KEK_FORMAT || file.version != version {
            return Err(bad(format!(
                "format {:?} version {} does not match the file name",
                file.format, file.version
            )));
        }
        let bytes: Zeroizing<Vec<u8>> = match (&self.sealer, file.key, file.sealed) {
            (None, Some(k), None) => {
                Zeroizing::new(B64.decode(k.as_bytes()).map_err(|e| bad(e.to_string()))?)
            }
            (Some(s), None, Some(sealed)) => {
                let sealed = B64
                    .decode(sealed.as_bytes())
                    .map_err(|e| bad(e.to_string()))?;
                s.open(version, &sealed).ok_or_else(|| {
                    bad("sealed key does not open with this store's passphrase".into())
                })?
            }
            (None, _, Some(_)) => return Err(bad("sealed key in an unsealed store".into())),
            (Some(_), Some(_), _) => return Err(bad("plain key in a sealed store".into())),
            _ => return Err(bad("no key".into())),
        };
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| bad(format!("key is {} bytes, want 32", bytes.len())))?;
        Ok(KekMaterial {
            version,
            key: Zeroizing::new(key),
        })
    }

    /// Adds a new version (the new primary); returns its number.
    pub fn rotate(&self) -> Result<u32, StoreError> {
        let next = self.versions()?.last().copied().unwrap_or(0) + 1;
        self.write_kek(next)?;
        Ok(next)
    }

    fn write_kek(&self, version: u32) -> Result<(), StoreError> {
        let mut key = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(key.as_mut_slice()).map_err(|_| StoreError::Format {
            path: self.dir.clone(),
            reason: "random number generator failed".into(),
        })?;
        let (plain, sealed) = match &self.sealer {
            None => (Some(B64.encode(key.as_slice())), None),
            Some(s) => (None, Some(B64.encode(s.seal(version, key.as_slice())))),
        };
        let file = KekFile {
            format: KEK_FORMAT.into(),
            version,
            created_unix: now_unix(),
            key: plain,
            sealed,
        };
        let json =
            Zeroizing::new(
                serde_json::to_vec_pretty(&file).map_err(|e| StoreError::Format {
                    path: self.dir.clone(),
                    reason: e.to_string(),
                })?,
            );
        let path = self.dir.join(kek_file_name(version));
        if path.exists() {
            return Err(StoreError::AlreadyExists(path));
        }
        write_private(&path, &json)
    }
}

/// Reads a passphrase file (must not be group/world-readable); a trailing newline is dropped.
pub fn read_passphrase_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    check_private(path, false)?;
    let mut raw = Zeroizing::new(fs::read(path).map_err(io(path))?);
    while raw.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        raw.pop();
    }
    if raw.is_empty() {
        return Err(StoreError::Format {
            path: path.into(),
            reason: "empty passphrase".into(),
        });
    }
    Ok(raw)
}
