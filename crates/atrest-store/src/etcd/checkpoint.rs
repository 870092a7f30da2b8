//! Rewrite checkpoints: the last key below which every selected object is finished, the revision
//! the run read at, and what the run was for (prefix, config hash, resources, each resource's write
//! key), written atomically through an `O_EXCL|O_NOFOLLOW` 0600 temp file and a rename
//! ([`crate::state`]) so a crash leaves the previous checkpoint intact. The default file lives in
//! the state directory, named after the etcd cluster ID and the config hash.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::EtcdError;

/// Checkpoint file contents (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    pub etcd_prefix: String,
    /// `content_hash` of the EncryptionConfiguration the run used.
    pub config_hash: String,
    /// Selected resources, sorted (`secrets`, `widgets.example.com`, ...).
    pub resources: Vec<String>,
    /// The revision the run's scan was pinned to when this checkpoint was written.
    pub revision: i64,
    /// Every selected object with a key `<=` this one is finished (`None`: nothing yet).
    pub last_key: Option<String>,
    /// The whole keyspace was walked.
    pub complete: bool,
    /// Objects rewritten so far by this run (including earlier resumed runs).
    pub rewritten: u64,
    /// Resource → the write key its objects were rewritten with (`kms v2 provider "p" key_id k`).
    /// A resumed run refuses when one changed (a KEK rotation since): the finished part would be
    /// stale again.
    #[serde(default)]
    pub write_keys: BTreeMap<String, String>,
}

/// Largest checkpoint file read.
const MAX_CHECKPOINT_BYTES: u64 = 1 << 20;

/// The default checkpoint: `<state dir>/rewrite-<cluster id>-<config hash>.json`.
pub fn default_path(cluster_id: u64, config_hash: &str) -> std::io::Result<PathBuf> {
    let hash: String = config_hash
        .trim_start_matches("sha256:")
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(16)
        .collect();
    Ok(crate::state::state_dir()?.join(format!("rewrite-{cluster_id:016x}-{hash}.json")))
}

impl Checkpoint {
    pub const VERSION: u32 = 1;

    pub fn load(path: &Path) -> Result<Checkpoint, EtcdError> {
        let err = |message: String| EtcdError::Checkpoint {
            path: path.display().to_string(),
            message,
        };
        let text = crate::state::read_limited(path, MAX_CHECKPOINT_BYTES).map_err(|e| {
            err(match e.raw_os_error() {
                Some(libc::ELOOP) => "is a symlink; refusing to follow it".into(),
                _ => e.to_string(),
            })
        })?;
        let cp: Checkpoint = serde_json::from_slice(&text)
            .map_err(|e| err(format!("not a rewrite checkpoint: {e}")))?;
        if cp.version != Self::VERSION {
            return Err(err(format!(
                "unsupported checkpoint version {}",
                cp.version
            )));
        }
        Ok(cp)
    }

    /// Writes `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), EtcdError> {
        let err = |message: String| EtcdError::Checkpoint {
            path: path.display().to_string(),
            message,
        };
        let text = serde_json::to_vec_pretty(self).map_err(|e| err(e.to_string()))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::state::ensure_dir(dir).map_err(|e| err(e.to_string()))?;
        }
        crate::state::write_atomic(path, &text).map_err(|e| err(e.to_string()))
    }

    /// Whether this checkpoint belongs to a run with these parameters; the error says what differs.
    pub fn check_matches(
        &self,
        path: &Path,
        prefix: &str,
        config_hash: &str,
        resources: &[String],
    ) -> Result<(), EtcdError> {
        let differs = |what: &str, was: &str, now: &str| {
            EtcdError::Checkpoint {
            path: path.display().to_string(),
            message: format!(
                "was written for {what} {was}, this run uses {now}; rerun with the same settings or without --resume"
            ),
        }
        };
        if self.etcd_prefix != prefix {
            return Err(differs("--etcd-prefix", &self.etcd_prefix, prefix));
        }
        if self.config_hash != config_hash {
            return Err(differs(
                "the config with hash",
                &self.config_hash,
                config_hash,
            ));
        }
        if self.resources != resources {
            return Err(differs(
                "resources",
                &self.resources.join(","),
                &resources.join(","),
            ));
        }
        Ok(())
    }
}

/// Tracks which dispatched units of work are finished and yields the highest key below which all are.
#[derive(Debug, Default)]
pub struct Watermark {
    next_seq: u64,
    /// seq → (last key of the unit, done)
    pending: std::collections::BTreeMap<u64, (Vec<u8>, bool)>,
    last_done: Option<Vec<u8>>,
}

impl Watermark {
    /// Registers a unit covering keys up to `last_key`; returns its sequence number.
    pub fn open(&mut self, last_key: Vec<u8>) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(seq, (last_key, false));
        seq
    }

    /// Marks a unit finished and advances the watermark.
    pub fn finish(&mut self, seq: u64) {
        if let Some(entry) = self.pending.get_mut(&seq) {
            entry.1 = true;
        }
        while let Some(entry) = self.pending.first_entry() {
            if !entry.get().1 {
                break;
            }
            let (key, _) = entry.remove();
            self.last_done = Some(key);
        }
    }

    /// Every unit up to and including this key is finished.
    pub fn last_done(&self) -> Option<&[u8]> {
        self.last_done.as_deref()
    }

    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_advances_only_over_contiguous_finished_units() {
        let mut w = Watermark::default();
        let a = w.open(b"a".to_vec());
        let b = w.open(b"b".to_vec());
        let c = w.open(b"c".to_vec());
        w.finish(b);
        assert_eq!(w.last_done(), None);
        w.finish(a);
        assert_eq!(w.last_done(), Some(&b"b"[..]));
        w.finish(c);
        assert_eq!(w.last_done(), Some(&b"c"[..]));
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn save_load_and_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        let cp = Checkpoint {
            version: Checkpoint::VERSION,
            etcd_prefix: "/registry".into(),
            config_hash: "sha256:ab".into(),
            resources: vec!["secrets".into()],
            revision: 7,
            last_key: Some("/registry/secrets/a/b".into()),
            complete: false,
            rewritten: 3,
            write_keys: BTreeMap::from([("secrets".into(), "aesgcm key \"k1\"".into())]),
        };
        cp.save(&path).unwrap();
        assert_eq!(Checkpoint::load(&path).unwrap(), cp);
        cp.check_matches(&path, "/registry", "sha256:ab", &["secrets".into()])
            .unwrap();
        let e = cp
            .check_matches(&path, "/registry", "sha256:cd", &["secrets".into()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256:ab") && e.contains("sha256:cd"), "{e}");
        std::fs::write(&path, "{").unwrap();
        assert!(Checkpoint::load(&path)
            .unwrap_err()
            .to_string()
            .contains("not a rewrite checkpoint"));
    }
}
