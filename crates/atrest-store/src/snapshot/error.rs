//! Errors of the snapshot reader. Every structural problem names the page it was found on.

use std::path::PathBuf;

/// Why a snapshot file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Neither meta page is valid: not a bbolt file, or both headers are damaged.
    #[error("not a valid bbolt database: meta page 0: {meta0}; meta page 1: {meta1}")]
    NoValidMeta { meta0: String, meta1: String },
    /// A page is damaged or points outside the file.
    #[error("page {page}: {problem}")]
    CorruptPage { page: u64, problem: String },
    /// The file ends before a page that the tree references.
    #[error("page {page}: truncated file (page ends at byte {needed}, data is {len} bytes)")]
    Truncated { page: u64, needed: u64, len: u64 },
    /// The SHA-256 trailer `etcdctl snapshot save` appends does not match the contents.
    #[error("snapshot checksum mismatch: trailer says {expected}, contents hash to {actual} (file damaged or truncated)")]
    ChecksumMismatch { expected: String, actual: String },
    /// The size fits neither a bbolt file nor a bbolt file plus the 32-byte trailer.
    #[error("file size {len} is neither whole {page_size}-byte pages nor pages plus etcdctl's 32-byte checksum trailer: truncated or damaged")]
    OddSize { len: u64, page_size: u32 },
    /// A bucket etcd always creates is missing.
    #[error("not an etcd database: bucket {0:?} not found")]
    MissingBucket(String),
    /// A key in the `key` bucket is not an etcd revision.
    #[error("page {page}: key {key} is not an etcd revision ({problem})")]
    BadRevisionKey {
        page: u64,
        key: String,
        problem: String,
    },
    /// A value in the `key` bucket is not an `mvccpb.KeyValue`.
    #[error("revision {revision}: value is not an etcd KeyValue: {problem}")]
    BadKeyValue { revision: String, problem: String },
    /// `--revision` asks for history that compaction removed, or a revision beyond the newest.
    #[error("revision {requested}: {problem}")]
    Revision { requested: i64, problem: String },
}

impl SnapshotError {
    pub(crate) fn corrupt(page: u64, problem: impl Into<String>) -> Self {
        SnapshotError::CorruptPage {
            page,
            problem: problem.into(),
        }
    }
}

pub type Result<T> = std::result::Result<T, SnapshotError>;
