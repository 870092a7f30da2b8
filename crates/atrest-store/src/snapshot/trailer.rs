//! The SHA-256 trailer of `etcdctl snapshot save`: etcd's Snapshot RPC streams the bbolt file and
//! then `sha256(file)`; etcdctl stores both. etcd recognises it by size (`size % 512 == 32`, as in
//! etcd's `snapshot restore`), since a bbolt file is always a whole number of pages.

use std::path::Path;

use sha2::{Digest, Sha256};

use super::bbolt::Source;

use crate::snapshot::error::{Result, SnapshotError};

pub const TRAILER_LEN: u64 = 32;

/// Whether a file of `len` bytes carries the trailer.
pub fn has_trailer(len: u64) -> bool {
    len % 512 == TRAILER_LEN
}

/// Hashes the first `len - 32` bytes in 1 MiB reads and compares with the last 32.
pub fn verify(
    file: &dyn Source,
    path: &Path,
    len: u64,
    mut progress: impl FnMut(u64),
) -> Result<()> {
    let io = |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    };
    let data_len = len - TRAILER_LEN;
    let mut expected = [0u8; 32];
    file.read_exact_at(&mut expected, data_len).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < data_len {
        let n = (data_len - off).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], off).map_err(io)?;
        hasher.update(&buf[..n]);
        off += n as u64;
        progress(off);
    }
    let actual: [u8; 32] = hasher.finalize().into();
    if actual != expected {
        return Err(SnapshotError::ChecksumMismatch {
            expected: hex::encode(expected),
            actual: hex::encode(actual),
        });
    }
    Ok(())
}
