//! Live etcd: connecting (TLS client certificates as etcdctl takes them), paged range reads at one
//! revision ([`scan`]), single gets, the status scan ([`status`]) and the compare-and-swap re-encryption
//! ([`rewrite`]) with checkpoints ([`checkpoint`]), key listing and snapshot streaming ([`maintenance`]).

pub mod checkpoint;
mod client;
pub mod maintenance;
pub mod rewrite;
pub mod scan;
pub mod space;
pub mod status;
pub mod write_check;

pub use client::{
    cluster_id, connect, describe, get_one, is_transient, EtcdConnection, EtcdSettings,
    MAX_RESPONSE_BYTES,
};

/// Errors talking to etcd or walking it. `Display` names the endpoint, key or file involved.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("reading {path}: {source}")]
    ReadFile {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid etcd connection settings: {0}")]
    Settings(String),
    #[error("etcd unreachable at {endpoints}: {detail}")]
    Unreachable { endpoints: String, detail: String },
    #[error("etcd {op} failed: {detail}")]
    Request { op: String, detail: String },
    #[error("etcd revision {revision} was compacted while reading; run the command again")]
    Compacted { revision: i64 },
    #[error("checkpoint {path}: {message}")]
    Checkpoint { path: String, message: String },
    #[error("{key}: {message}")]
    Value { key: String, message: String },
    /// A KMS provider of the config is not answering (not a property of any value).
    #[error("{0}")]
    Kms(#[from] atrest_core::KmsOutage),
    /// A value just encrypted did not read back (see [`write_check`]): it was not written.
    #[error("{key}: the new value does not read back, so it was not written: {message}")]
    WriteCheck { key: String, message: String },
    /// etcd's backend space (quota, NOSPACE alarm); see [`space`].
    #[error("etcd space: {0}")]
    Space(String),
    /// The run stopped before its first write: etcd is unchanged.
    #[error(transparent)]
    NothingWritten(Box<EtcdError>),
}

impl EtcdError {
    /// Whether the error stopped a writer before its first write.
    pub fn nothing_written(&self) -> bool {
        matches!(self, EtcdError::NothingWritten(_))
    }

    /// Marks an error that happened before the first write.
    pub fn before_any_write(self) -> Self {
        match self {
            e @ EtcdError::NothingWritten(_) => e,
            other => EtcdError::NothingWritten(Box::new(other)),
        }
    }
}
