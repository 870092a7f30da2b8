//! The plan directory: created 0700 (refused when group/world accessible), its files 0600, and two
//! documents written atomically (temp file opened `O_EXCL`, fsync, rename, fsync of the directory):
//! `plan.json` (what the rotation is; no key material) and `state.json` (how far `apply` got).

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::{ConfigStep, EntryPlan};
use crate::RotateError;

pub const PLAN_FILE: &str = "plan.json";
pub const STATE_FILE: &str = "state.json";
/// Written after retire: the retired keys, as a config that reads what they wrote.
pub const ESCROW_FILE: &str = "escrow.yaml";
/// The rewrite's checkpoint (resumed after a crash).
pub const CHECKPOINT_FILE: &str = "rewrite.checkpoint.json";

/// A config file of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Relative to the plan directory for the step files; absolute for CURRENT.
    pub path: String,
    /// kube-apiserver's hash of the bytes: `sha256:<hex>`.
    pub hash: String,
}

/// The flags the configs were checked with (the apiservers' flags).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadFlags {
    pub kms_v1: bool,
    pub automatic_reload: bool,
}

/// `plan.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDoc {
    pub version: u32,
    pub created_unix: u64,
    pub current: FileRef,
    pub stage: FileRef,
    pub promote: FileRef,
    pub retire: FileRef,
    pub entries: Vec<EntryPlan>,
    pub drop_identity: bool,
    pub load: LoadFlags,
    /// Set when the configs were rendered canonically rather than edited in place (and why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered_canonically: Option<String>,
}

impl PlanDoc {
    pub fn file(&self, step: ConfigStep) -> &FileRef {
        match step {
            ConfigStep::Stage => &self.stage,
            ConfigStep::Promote => &self.promote,
            ConfigStep::Retire => &self.retire,
        }
    }

    /// Every resource name of the rotated entries.
    pub fn resources(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for e in &self.entries {
            for r in &e.resources {
                if !out.contains(r) {
                    out.push(r.clone());
                }
            }
        }
        out
    }
}

/// The milestones of `apply`, in order. Each is recorded only after it is true.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Milestone {
    StageInstalled,
    StageLoaded,
    PromoteInstalled,
    PromoteLoaded,
    Rewritten,
    Verified,
    RetireInstalled,
    RetireLoaded,
    Finished,
}

impl Milestone {
    pub const ALL: [Milestone; 9] = [
        Milestone::StageInstalled,
        Milestone::StageLoaded,
        Milestone::PromoteInstalled,
        Milestone::PromoteLoaded,
        Milestone::Rewritten,
        Milestone::Verified,
        Milestone::RetireInstalled,
        Milestone::RetireLoaded,
        Milestone::Finished,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Milestone::StageInstalled => "stage installed",
            Milestone::StageLoaded => "stage loaded by every apiserver",
            Milestone::PromoteInstalled => "promote installed",
            Milestone::PromoteLoaded => "promote loaded by every apiserver",
            Milestone::Rewritten => "objects rewritten",
            Milestone::Verified => "no object under a retired key",
            Milestone::RetireInstalled => "retire installed",
            Milestone::RetireLoaded => "retire loaded by every apiserver",
            Milestone::Finished => "finished",
        }
    }
}

/// `rotate apply --backup FILE`: the encrypted snapshot taken after retire. Recorded (unverified)
/// before the snapshot starts, so that a rerun after a crash knows FILE is its own to replace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupRecord {
    /// Absolute path of FILE.
    pub path: String,
    /// Every object of the snapshot decrypted with the retire config alone. Until then FILE (if
    /// present) is not a valid backup of this rotation and the next run takes it again.
    pub verified: bool,
    /// `sha256:<hex>` of FILE's (encrypted) bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The newest etcd revision in the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Objects (newest value of each key) checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<u64>,
    /// Older revisions in the snapshot whose stored prefix names a retired key (history etcd had
    /// not compacted): reading those needs the escrow file.
    #[serde(default)]
    pub history_under_retired_keys: u64,
    /// Who can decrypt FILE (`age1…`, `passphrase`, `kms unix://…`).
    #[serde(default)]
    pub recipients: Vec<String>,
}

/// `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateDoc {
    pub version: u32,
    /// `plan.json`'s hash: a state belongs to exactly one plan.
    pub plan_hash: String,
    pub done: Vec<Milestone>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite_revision: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_revision: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewritten: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacted_revision: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_unix: Option<u64>,
}

impl StateDoc {
    pub fn new(plan_hash: String) -> StateDoc {
        StateDoc {
            version: 1,
            plan_hash,
            ..Default::default()
        }
    }

    pub fn has(&self, m: Milestone) -> bool {
        self.done.contains(&m)
    }

    pub fn mark(&mut self, m: Milestone) {
        if !self.has(m) {
            self.done.push(m);
        }
    }

    /// The first milestone not reached yet.
    pub fn next(&self) -> Option<Milestone> {
        Milestone::ALL.into_iter().find(|m| !self.has(*m))
    }
}

/// Creates `dir` with mode 0700. An existing directory must be empty: a plan is never overwritten
/// (its keys may already be installed somewhere).
pub fn create_plan_dir(dir: &Path) -> Result<(), RotateError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RotateError::Invalid(format!(
                    "{} exists and is not empty; a plan is never overwritten (its keys may already \
                     be installed): choose a new --out",
                    dir.display()
                )));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| RotateError::io(dir, e))?;
        }
        Err(e) => return Err(RotateError::io(dir, e)),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| RotateError::io(dir, e))
}

/// Refuses a plan directory others can read (it holds keys).
pub fn check_plan_dir(dir: &Path) -> Result<(), RotateError> {
    let meta = std::fs::metadata(dir).map_err(|e| RotateError::io(dir, e))?;
    if !meta.is_dir() {
        return Err(RotateError::Invalid(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(RotateError::Invalid(format!(
            "{} has mode {mode:03o}: it holds keys, make it 0700 (chmod 700)",
            dir.display()
        )));
    }
    Ok(())
}

/// Writes a new file (0600) that must not exist yet.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), RotateError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| RotateError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| RotateError::io(path, e))
}

/// Replaces `path` atomically: a temp file beside it (`O_EXCL`, 0600), fsync, rename, fsync the
/// directory. A crash leaves either the old or the new content, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RotateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp: PathBuf = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    // A temp file left by a killed run of this same process id cannot be ours any more.
    let _ = std::fs::remove_file(&tmp);
    write_new(&tmp, bytes)?;
    std::fs::rename(&tmp, path).map_err(|e| RotateError::io(path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RotateError::io(dir, e))
}

/// Reads and parses a JSON document.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<(T, Vec<u8>), RotateError> {
    let bytes = std::fs::read(path).map_err(|e| RotateError::io(path, e))?;
    let doc = serde_json::from_slice(&bytes)
        .map_err(|e| RotateError::Invalid(format!("{}: {e}", path.display())))?;
    Ok((doc, bytes))
}

/// Serializes a document as pretty JSON with a final newline.
pub fn to_json<T: Serialize>(doc: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(doc).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("plans");
        create_plan_dir(&p).unwrap();
        check_plan_dir(&p).unwrap();
        let f = p.join(STATE_FILE);
        write_atomic(&f, b"one").unwrap();
        write_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_dir(&p).unwrap().count(),
            1,
            "no temp file left"
        );
        assert!(
            create_plan_dir(&p).is_err(),
            "non-empty plan dir is refused"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(check_plan_dir(&p).is_err());
    }

    #[test]
    fn milestones_in_order() {
        let mut s = StateDoc::new("sha256:x".into());
        assert_eq!(s.next(), Some(Milestone::StageInstalled));
        s.mark(Milestone::StageInstalled);
        s.mark(Milestone::StageInstalled);
        assert_eq!(s.done.len(), 1);
        assert_eq!(s.next(), Some(Milestone::StageLoaded));
    }
}
