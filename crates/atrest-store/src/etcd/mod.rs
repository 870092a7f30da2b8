//! Live etcd: connecting (TLS client certificates as etcdctl takes them), paged range reads at one
//! revision ([`scan`]), single gets, the status scan ([`status`]) and the compare-and-swap re-encryption
//! ([`rewrite`]) with checkpoints ([`checkpoint`]), key listing and snapshot streaming ([`maintenance`]).

pub mod checkpoint;
mod client;
pub mod maintenance;
pub mod rewrite;
pub mod scan;
pub mod status;

pub use client::{
    connect, describe, get_one, is_transient, EtcdConnection, EtcdSettings, MAX_RESPONSE_BYTES,
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
}
