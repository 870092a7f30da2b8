//! Read-only access to etcd snapshot files: the bbolt database `etcdctl snapshot save` writes (with
//! its SHA-256 trailer) or a member's `member/snap/db`, without a running etcd.
//!
//! Our own reader ([`bbolt`]): the maintained Rust bbolt ports are write-capable databases built on
//! `mmap` (unsafe, and memory use tied to the file), and none decodes etcd's MVCC layer. Reading
//! the format is small: meta pages, branch/leaf/overflow pages and inline buckets.
//!
//! ## Selecting the newest value of each key
//! The `key` bucket is sorted by revision, not by etcd key. [`Snapshot::index`] makes one pass over
//! it (stopping at `--revision`) and keeps, per etcd key, the newest revision (tombstones remove the
//! key): memory grows with the number of *keys* (key bytes + 16 bytes each), not with the file size
//! or the history. [`Snapshot::latest`] then visits the keys in key order and fetches each value by
//! revision (a B-tree lookup; branch pages are cached), so values are read one at a time.

pub mod bbolt;
mod error;
pub mod mvcc;
pub mod trailer;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

pub use error::{Result, SnapshotError};
pub use mvcc::{KeyValue, KeyValueRef, Revision};

use bbolt::{Bucket, Db};
use mvcc::hex_lossy;

/// How to open a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Verify the SHA-256 trailer when the file has one (etcd's `--skip-hash-check` turns it off).
    pub verify_checksum: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            verify_checksum: true,
        }
    }
}

/// What the trailer check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChecksumState {
    /// The trailer matched.
    Verified,
    /// A trailer is present but was not checked.
    NotChecked,
    /// No trailer (a member's `db` file, or a copy made without etcdctl).
    Absent,
}

/// Facts about the file, for summaries.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    pub file_size: u64,
    pub page_size: u32,
    pub pages: u64,
    pub txid: u64,
    pub checksum: ChecksumState,
    /// The newest revision in the file.
    pub current_revision: i64,
    /// `finishedCompactRev`: history before it is gone.
    pub compact_revision: Option<i64>,
}

/// An open snapshot.
pub struct Snapshot {
    db: Db,
    keys: Bucket,
    info: SnapshotInfo,
}

/// What [`Snapshot::index`] selects.
#[derive(Debug, Clone, Default)]
pub struct IndexOptions {
    /// Read the state as of this revision (default: the newest).
    pub at_revision: Option<i64>,
    /// Only keys starting with these bytes (e.g. `/registry/`).
    pub key_prefix: Vec<u8>,
}

/// The newest revision of each live key, sorted by key.
#[derive(Debug, Clone, Default)]
pub struct LatestIndex {
    entries: Vec<(Vec<u8>, Revision)>,
    /// The revision the state is read at.
    pub revision: i64,
    /// Entries (revisions, including tombstones) scanned.
    pub revisions_scanned: u64,
    /// Keys whose newest revision is a delete.
    pub deleted_keys: u64,
}

impl LatestIndex {
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Live keys and their newest revision, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&[u8], Revision)> {
        self.entries.iter().map(|(k, r)| (k.as_slice(), *r))
    }
}

/// One entry of the `key` bucket, in revision order.
#[derive(Debug, Clone)]
pub struct RevisionEntry {
    pub revision: Revision,
    pub tombstone: bool,
    pub kv: KeyValue,
}

impl Snapshot {
    /// Opens `path`, verifies the trailer (if present and asked for), reads the meta pages and finds
    /// etcd's buckets.
    pub fn open(path: &Path, opts: OpenOptions) -> Result<Snapshot> {
        Self::open_with_progress(path, opts, |_, _| {})
    }

    /// Like [`open`](Self::open), reporting checksum progress as `(bytes hashed, total)`.
    pub fn open_with_progress(
        path: &Path,
        opts: OpenOptions,
        progress: impl FnMut(u64, u64),
    ) -> Result<Snapshot> {
        let io = |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let file_size = file.metadata().map_err(io)?.len();
        Self::open_source(Box::new(file), file_size, path, opts, progress)
    }

    /// Reads a snapshot held in memory (tests, fuzzing); `name` is used in messages.
    pub fn from_bytes(bytes: Vec<u8>, name: &str, opts: OpenOptions) -> Result<Snapshot> {
        let len = bytes.len() as u64;
        Self::open_source(Box::new(bytes), len, Path::new(name), opts, |_, _| {})
    }

    /// Reads a snapshot of `len` bytes from any [`bbolt::Source`] (e.g. a decrypted backup held in
    /// a buffer that is zeroized when dropped); `name` is used in messages.
    pub fn from_source(
        source: Box<dyn bbolt::Source>,
        len: u64,
        name: &str,
        opts: OpenOptions,
    ) -> Result<Snapshot> {
        Self::open_source(source, len, Path::new(name), opts, |_, _| {})
    }

    fn open_source(
        file: Box<dyn bbolt::Source>,
        file_size: u64,
        path: &Path,
        opts: OpenOptions,
        mut progress: impl FnMut(u64, u64),
    ) -> Result<Snapshot> {
        let (data_len, checksum) = if trailer::has_trailer(file_size) {
            if opts.verify_checksum {
                trailer::verify(file.as_ref(), path, file_size, |done| {
                    progress(done, file_size - trailer::TRAILER_LEN)
                })?;
                (file_size - trailer::TRAILER_LEN, ChecksumState::Verified)
            } else {
                (file_size - trailer::TRAILER_LEN, ChecksumState::NotChecked)
            }
        } else {
            (file_size, ChecksumState::Absent)
        };
        let db = Db::open(file, path, data_len)?;
        let page_size = db.meta().page_size;
        if checksum == ChecksumState::Absent && !file_size.is_multiple_of(u64::from(page_size)) {
            return Err(SnapshotError::OddSize {
                len: file_size,
                page_size,
            });
        }
        let root = db.root_bucket();
        let keys = root
            .bucket(&db, b"key")?
            .ok_or_else(|| SnapshotError::MissingBucket("key".into()))?;
        let compact_revision = match root.bucket(&db, b"meta")? {
            Some(meta) => match meta.get(&db, b"finishedCompactRev")? {
                Some(e) => Some(mvcc::parse_meta_revision(e.value(), e.page_id())?),
                None => None,
            },
            None => return Err(SnapshotError::MissingBucket("meta".into())),
        };
        let current_revision = match keys.last(&db)? {
            Some(e) => {
                Revision::parse_key(e.key())
                    .map_err(|problem| SnapshotError::BadRevisionKey {
                        page: e.page_id(),
                        key: hex_lossy(e.key()),
                        problem,
                    })?
                    .0
                    .main
            }
            None => compact_revision.unwrap_or(0),
        };
        let meta = *db.meta();
        let info = SnapshotInfo {
            path: path.to_path_buf(),
            file_size,
            page_size: meta.page_size,
            pages: meta.pgid,
            txid: meta.txid,
            checksum,
            current_revision,
            compact_revision,
        };
        Ok(Snapshot { db, keys, info })
    }

    pub fn info(&self) -> &SnapshotInfo {
        &self.info
    }

    /// The underlying bbolt file (for progress: [`Db::pages_read`] of [`Db::page_count`]).
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Every entry of the `key` bucket, oldest revision first.
    pub fn revisions(&self) -> impl Iterator<Item = Result<RevisionEntry>> + '_ {
        self.keys.cursor(&self.db).map(|entry| {
            let entry = entry?;
            let (revision, tombstone) = parse_rev(&entry)?;
            let kv = decode(&entry, revision)?.to_owned();
            Ok(RevisionEntry {
                revision,
                tombstone,
                kv,
            })
        })
    }

    fn check_revision(&self, at: Option<i64>) -> Result<i64> {
        let Some(at) = at else {
            return Ok(self.info.current_revision);
        };
        if let Some(compact) = self.info.compact_revision {
            if at < compact {
                return Err(SnapshotError::Revision {
                    requested: at,
                    problem: format!(
                        "required revision has been compacted (compacted at {compact})"
                    ),
                });
            }
        }
        if at > self.info.current_revision || at <= 0 {
            return Err(SnapshotError::Revision {
                requested: at,
                problem: format!(
                    "not in the snapshot (revisions up to {})",
                    self.info.current_revision
                ),
            });
        }
        Ok(at)
    }

    /// Pass 1: the newest revision of every key (see the module docs for the memory bound).
    pub fn index(&self, opts: &IndexOptions) -> Result<LatestIndex> {
        let at = self.check_revision(opts.at_revision)?;
        let mut newest: HashMap<Vec<u8>, (Revision, bool)> = HashMap::new();
        let mut scanned = 0u64;
        for entry in self.keys.cursor(&self.db) {
            let entry = entry?;
            let (revision, tombstone) = parse_rev(&entry)?;
            if revision.main > at {
                break; // sorted by revision: nothing newer is wanted
            }
            scanned += 1;
            let kv = decode(&entry, revision)?;
            if !kv.key.starts_with(&opts.key_prefix) {
                continue;
            }
            match newest.get_mut(kv.key) {
                Some(slot) => *slot = (revision, tombstone),
                None => {
                    newest.insert(kv.key.to_vec(), (revision, tombstone));
                }
            }
        }
        let mut deleted = 0u64;
        let mut entries: Vec<(Vec<u8>, Revision)> = newest
            .into_iter()
            .filter_map(|(k, (r, tomb))| {
                if tomb {
                    deleted += 1;
                    None
                } else {
                    Some((k, r))
                }
            })
            .collect();
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(LatestIndex {
            entries,
            revision: at,
            revisions_scanned: scanned,
            deleted_keys: deleted,
        })
    }

    /// Pass 2: the value of every indexed key, in key order.
    pub fn latest<'a>(
        &'a self,
        index: &'a LatestIndex,
    ) -> impl Iterator<Item = Result<KeyValue>> + 'a {
        index
            .entries
            .iter()
            .map(move |(key, rev)| self.fetch(key, *rev))
    }

    /// The value written at `rev`, which must belong to `key`.
    pub fn fetch(&self, key: &[u8], rev: Revision) -> Result<KeyValue> {
        let entry = self.keys.get(&self.db, &rev.to_bytes())?.ok_or_else(|| {
            SnapshotError::BadKeyValue {
                revision: rev.to_string(),
                problem: "revision vanished between passes".into(),
            }
        })?;
        let kv = decode(&entry, rev)?;
        if kv.key != key {
            return Err(SnapshotError::BadKeyValue {
                revision: rev.to_string(),
                problem: "belongs to another key".into(),
            });
        }
        Ok(kv.to_owned())
    }

    /// The newest value of one key at `at` (a full scan of the history; use [`index`](Self::index)
    /// for many keys).
    pub fn get(&self, key: &[u8], at: Option<i64>) -> Result<Option<KeyValue>> {
        let index = self.index(&IndexOptions {
            at_revision: at,
            key_prefix: key.to_vec(),
        })?;
        match index.entries.iter().find(|(k, _)| k == key) {
            Some((k, rev)) => self.fetch(k, *rev).map(Some),
            None => Ok(None),
        }
    }
}

fn parse_rev(entry: &bbolt::Entry) -> Result<(Revision, bool)> {
    if entry.is_bucket() {
        return Err(SnapshotError::BadRevisionKey {
            page: entry.page_id(),
            key: hex_lossy(entry.key()),
            problem: "a nested bucket".into(),
        });
    }
    Revision::parse_key(entry.key()).map_err(|problem| SnapshotError::BadRevisionKey {
        page: entry.page_id(),
        key: hex_lossy(entry.key()),
        problem,
    })
}

fn decode(entry: &bbolt::Entry, revision: Revision) -> Result<KeyValueRef<'_>> {
    mvcc::decode_key_value(entry.value()).map_err(|problem| SnapshotError::BadKeyValue {
        revision: format!("{revision} (page {})", entry.page_id()),
        problem,
    })
}

#[cfg(test)]
mod tests;
