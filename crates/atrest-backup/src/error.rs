//! What can go wrong with a backup, in words an operator can act on.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("reading input: {0}")]
    Read(#[source] io::Error),
    #[error("writing output: {0}")]
    Write(#[source] io::Error),
    #[error("{path}: {source}")]
    File {
        path: String,
        #[source]
        source: io::Error,
    },
    /// No recipients, or recipients that cannot be combined.
    #[error("{0}")]
    Recipients(String),
    #[error("invalid recipient {recipient:?}: {reason}")]
    InvalidRecipient { recipient: String, reason: String },
    #[error("invalid identity file {path}: {reason}")]
    InvalidIdentity { path: String, reason: String },
    /// The input is not an age file, or its header is damaged.
    #[error("not an encrypted backup (age format) or its header is damaged: {0}")]
    NotAge(String),
    /// The header is larger, or names more recipients, than any backup we would write; refused
    /// before age parses it (its header parser is quadratic in the number of lines).
    #[error("not a backup we can read: its header {0} (refusing before parsing it, possible denial of service)")]
    HeaderTooLarge(String),
    #[error("the header of the backup was modified (header MAC mismatch)")]
    HeaderTampered,
    #[error("no identity given can decrypt this backup (it is encrypted to: {0})")]
    NoMatchingIdentity(String),
    #[error("could not unwrap the backup's file key: wrong passphrase or key")]
    WrongKey,
    #[error("the backup is passphrase-protected with a work factor above our limit (refusing, possible denial of service)")]
    ExcessiveWork,
    /// A chunk failed authentication or the stream ended early.
    #[error("backup damaged or truncated: authentication failed in the 64 KiB chunk at plaintext offset {offset} ({detail})")]
    Tampered { offset: u64, detail: String },
    #[error("KMS plugin: {0}")]
    Kms(String),
    #[error("age: {0}")]
    Age(String),
}

pub type Result<T> = std::result::Result<T, BackupError>;
