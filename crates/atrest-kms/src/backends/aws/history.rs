//! The KMS keys this plugin has served for its configured key id: what "a key it served before"
//! means when a blob names an older key after the alias moved on.
//!
//! Kept in memory and in a small JSON file so it survives restarts:
//! `<state dir>/served-keys-<hash>.json` (`<hash>` of the configured key id and region, so
//! plugins for different keys keep apart), directory 0700, file 0600, written atomically
//! (temporary file + rename). The state dir (`--aws-state-dir`) defaults to
//! `/var/lib/atrest/aws-kms` as root, else `$XDG_STATE_HOME/atrest/aws-kms`
//! (`~/.local/state/atrest/aws-kms`). The file holds only key ARNs (not secret);
//! it is refused if others could write it, since adding an ARN to it widens what decrypts.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::backend::{derive_key_id, BackendError};

/// The default state directory.
pub fn default_state_dir() -> PathBuf {
    if crate::backends::running_as_root() {
        return PathBuf::from("/var/lib/atrest/aws-kms");
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(x).join("atrest/aws-kms");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/state/atrest/aws-kms"),
        None => PathBuf::from("/var/lib/atrest/aws-kms"),
    }
}

/// Served key ARNs, in memory and on disk.
pub struct History {
    path: PathBuf,
    configured: String,
    region: String,
    arns: Mutex<BTreeSet<String>>,
}

impl History {
    /// Opens (or starts) the record for `configured` (the `--aws-key-id` value) in `region`.
    pub fn open(state_dir: &Path, configured: &str, region: &str) -> Result<History, BackendError> {
        let name = derive_key_id("served-keys-", &[configured.as_bytes(), region.as_bytes()]);
        let path = state_dir.join(format!("{name}.json"));
        let mut arns = BTreeSet::new();
        match std::fs::symlink_metadata(&path) {
            Ok(meta) => {
                if !meta.is_file() || meta.permissions().mode() & 0o022 != 0 {
                    return Err(BackendError::Config(format!(
                        "{}: must be a regular file not writable by group or others",
                        path.display()
                    )));
                }
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| BackendError::Config(format!("{}: {e}", path.display())))?;
                let v: Value = serde_json::from_str(&text).map_err(|e| {
                    BackendError::Config(format!("{}: not valid JSON: {e}", path.display()))
                })?;
                let list = v["arns"].as_array().ok_or_else(|| {
                    BackendError::Config(format!("{}: no \"arns\" list", path.display()))
                })?;
                for a in list {
                    match a.as_str() {
                        Some(s) if s.starts_with("arn:") => {
                            arns.insert(s.to_string());
                        }
                        _ => {
                            return Err(BackendError::Config(format!(
                                "{}: \"arns\" holds something that is not a key ARN",
                                path.display()
                            )))
                        }
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BackendError::Config(format!("{}: {e}", path.display())));
            }
        }
        Ok(History {
            path,
            configured: configured.to_string(),
            region: region.to_string(),
            arns: Mutex::new(arns),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn contains(&self, arn: &str) -> bool {
        self.lock().contains(arn)
    }

    /// The served ARN whose key id is `key_id`, if any.
    pub fn find_key_id(&self, key_id: &str, derive: impl Fn(&str) -> String) -> Option<String> {
        self.lock().iter().find(|a| derive(a) == key_id).cloned()
    }

    /// Records `arn`; writes the file when it is new. A write failure is returned (the ARN stays
    /// recorded in memory for this process).
    pub fn record(&self, arn: &str) -> Result<bool, String> {
        let snapshot = {
            let mut g = self.lock();
            if !g.insert(arn.to_string()) {
                return Ok(false);
            }
            g.iter().cloned().collect::<Vec<_>>()
        };
        self.write(&snapshot).map(|()| true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        self.arns.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, arns: &[String]) -> Result<(), String> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let doc = json!({
            "comment": "KMS keys atrest kms serve --backend aws-kms has encrypted with; blobs under these keys decrypt",
            "aws_key_id": self.configured,
            "region": self.region,
            "arns": arns,
        });
        let tmp = self
            .path
            .with_extension(format!("json.tmp.{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| format!("{}: {e}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_refuses_loose_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(dir.path(), "alias/k8s", "eu-west-1").unwrap();
        assert!(h.record("arn:aws:kms:eu-west-1:1:key/a").unwrap());
        assert!(!h.record("arn:aws:kms:eu-west-1:1:key/a").unwrap());
        h.record("arn:aws:kms:eu-west-1:1:key/b").unwrap();
        let mode = std::fs::metadata(h.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = History::open(dir.path(), "alias/k8s", "eu-west-1").unwrap();
        assert!(again.contains("arn:aws:kms:eu-west-1:1:key/a"));
        assert!(again.contains("arn:aws:kms:eu-west-1:1:key/b"));
        let other = History::open(dir.path(), "alias/other", "eu-west-1").unwrap();
        assert!(!other.contains("arn:aws:kms:eu-west-1:1:key/a"));
        std::fs::set_permissions(h.path(), std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = History::open(dir.path(), "alias/k8s", "eu-west-1")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not writable by group or others"), "{e}");
        std::fs::set_permissions(h.path(), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(h.path(), "{").unwrap();
        assert!(History::open(dir.path(), "alias/k8s", "eu-west-1").is_err());
    }
}
