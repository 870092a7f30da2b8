//! # atrest-backup
//!
//! Encrypted backups: streams (etcd snapshots or anything else) encrypted to passphrases, age X25519
//! recipients or a KMS v2 plugin, in the age format, chunked and authenticated so a multi-gigabyte
//! file never sits in memory and tampering or truncation is detected.
#![forbid(unsafe_code)]
