//! # atrest-backup
//!
//! Encrypted backups: streams (etcd snapshots or anything else) encrypted to passphrases, age X25519
//! recipients or a KMS v2 plugin, in the age format, chunked and authenticated so a multi-gigabyte
//! file never sits in memory and tampering or truncation is detected.
//!
//! Why age: a small, specified (age-encryption.org/v1), widely reviewed format with interoperable
//! tools (`age`, `rage`), STREAM chunking (64 KiB ChaCha20-Poly1305 chunks, final-chunk flag),
//! scrypt passphrases and X25519 recipients, and a documented extension point (custom stanzas) that
//! carries our KMS envelope. Files encrypted to X25519 or a passphrase decrypt with stock `age`.
#![forbid(unsafe_code)]

mod error;
mod header;
pub mod keys;
pub mod kms;
mod stream;

pub use age::secrecy::SecretString;
pub use error::{BackupError, Result};
pub use header::{MAX_HEADER_BYTES, MAX_STANZAS};
pub use kms::{KmsIdentity, KmsRecipient, KMS_STANZA_TAG};
pub use stream::{decrypt, encrypt, write_atomically, Identity, Recipient, Summary};
