//! Whole-keyspace operations: listing keys under a prefix, and streaming a consistent snapshot
//! of the member's database through the Maintenance Snapshot RPC (what `etcdctl snapshot save`
//! does), without writing it anywhere: every chunk goes to the caller's sink.

use sha2::{Digest, Sha256};

use super::{describe, EtcdConnection, EtcdError};

/// Keys (not values) under `prefix`.
pub async fn list_keys(conn: &EtcdConnection, prefix: &[u8]) -> Result<Vec<Vec<u8>>, EtcdError> {
    let opts = etcd_client::GetOptions::new()
        .with_prefix()
        .with_keys_only();
    let resp = super::scan::with_retry(conn, "list keys", || {
        let mut kv = conn.kv();
        let opts = opts.clone();
        let prefix = prefix.to_vec();
        async move { kv.get(prefix, Some(opts)).await }
    })
    .await?;
    Ok(resp.kvs().iter().map(|kv| kv.key().to_vec()).collect())
}

/// What a finished snapshot stream was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// Bytes received, the 32-byte sha256 trailer included (the size of `etcdctl snapshot save`'s file).
    pub bytes: u64,
    /// The trailer, which matched the sha256 of everything before it.
    pub sha256: [u8; 32],
}

/// Streams a snapshot into `sink` chunk by chunk; `progress(received, remaining)` after each.
/// The stream ends with the sha256 of the database; it is checked here, and a mismatch or a short
/// stream is an error (the caller must then discard what it wrote).
pub async fn snapshot(
    conn: &EtcdConnection,
    mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    mut progress: impl FnMut(u64, u64),
) -> Result<SnapshotSummary, EtcdError> {
    let failed = |e: etcd_client::Error| EtcdError::Request {
        op: format!("snapshot from {}", conn.endpoints()),
        detail: describe(&e),
    };
    let mut client = conn.client.maintenance_client();
    let mut stream = client.snapshot().await.map_err(failed)?;
    let mut hasher = Sha256::new();
    // The last 32 bytes seen so far are held back: they may be the trailer.
    let mut tail: Vec<u8> = Vec::with_capacity(64);
    let mut received = 0u64;
    let mut remaining = u64::MAX;
    while let Some(msg) = stream.message().await.map_err(failed)? {
        let blob = msg.blob();
        received += blob.len() as u64;
        remaining = msg.remaining_bytes();
        tail.extend_from_slice(blob);
        if tail.len() > 32 {
            let cut = tail.len() - 32;
            hasher.update(&tail[..cut]);
            sink(&tail[..cut]).map_err(|e| EtcdError::Request {
                op: "snapshot".into(),
                detail: format!("writing the snapshot: {e}"),
            })?;
            tail.drain(..cut);
        }
        progress(received, remaining);
    }
    let short = |detail: String| EtcdError::Request {
        op: format!("snapshot from {}", conn.endpoints()),
        detail,
    };
    if remaining != 0 {
        return Err(short(format!(
            "the stream ended after {received} bytes with {remaining} bytes still to come"
        )));
    }
    if tail.len() < 32 {
        return Err(short(format!("only {received} bytes, no sha256 trailer")));
    }
    let want: [u8; 32] = hasher.finalize().into();
    if tail[..] != want[..] {
        return Err(short(
            "the snapshot's sha256 trailer does not match its content (corrupted in transit)"
                .into(),
        ));
    }
    sink(&tail).map_err(|e| EtcdError::Request {
        op: "snapshot".into(),
        detail: format!("writing the snapshot: {e}"),
    })?;
    Ok(SnapshotSummary {
        bytes: received,
        sha256: want,
    })
}
