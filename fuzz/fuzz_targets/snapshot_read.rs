//! Arbitrary bytes as an etcd snapshot file: opening, indexing and reading every value must return
//! `Ok` or a `SnapshotError`, never panic, hang or allocate beyond the input's size.
#![no_main]

use atrest_store::snapshot::{IndexOptions, OpenOptions, Snapshot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small page sizes keep interesting files small; the reader accepts 512..=1 MiB.
    for verify_checksum in [false, true] {
        let Ok(snap) = Snapshot::from_bytes(data.to_vec(), "fuzz", OpenOptions { verify_checksum })
        else {
            continue;
        };
        let Ok(index) = snap.index(&IndexOptions::default()) else {
            continue;
        };
        for kv in snap.latest(&index) {
            if kv.is_err() {
                break;
            }
        }
    }
});
