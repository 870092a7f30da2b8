//! Large values (overflow pages), 100,000 objects with history (overwrites, deletes) in a real etcd,
//! read from the `etcdctl snapshot save` file and from the member's own `member/snap/db`.

mod snapshot_common;

use std::collections::HashMap;

use atrest_store::snapshot::{ChecksumState, IndexOptions, OpenOptions, Snapshot};
use atrest_testkit::load::TestClient;
use atrest_testkit::EtcdServer;
use snapshot_common::*;

#[test]
fn hundred_thousand_objects_large_values_and_history() {
    let n = 100_000usize;
    let mut server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let key = |i: usize| format!("/registry/secrets/ns-{:03}/s-{i:06}", i % 500);
    let kvs: Vec<(String, Vec<u8>)> = (0..n)
        .map(|i| (key(i), bytes(i as u64, 64 + i % 200)))
        .collect();
    client.put_all(&kvs);
    // Values of 1 MiB and ~1.4 MiB span hundreds of overflow pages.
    let large: Vec<(String, Vec<u8>)> = [(1usize << 20), 1_400_000]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            (
                format!("/registry/configmaps/big/v{i}"),
                bytes(1000 + i as u64, len),
            )
        })
        .collect();
    for (k, v) in &large {
        client.put(k, v);
    }
    let rev_before = client.revision();
    // History: overwrite every 100th key, delete every 97th.
    let mut newest: HashMap<String, Vec<u8>> = kvs.iter().cloned().collect();
    let overwrites: Vec<(String, Vec<u8>)> = (0..n)
        .step_by(100)
        .map(|i| (key(i), bytes(7_000_000 + i as u64, 100)))
        .collect();
    client.put_all(&overwrites);
    for (k, v) in &overwrites {
        newest.insert(k.clone(), v.clone());
    }
    for i in (0..n).step_by(97).take(300) {
        delete(&client, &key(i));
        newest.remove(&key(i));
    }
    for (k, v) in &large {
        newest.insert(k.clone(), v.clone());
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.snapshot");
    snapshot_save(&server, &path);

    let snap = Snapshot::open(&path, OpenOptions::default()).expect("open");
    assert_eq!(snap.info().checksum, ChecksumState::Verified);
    let index = snap.index(&IndexOptions::default()).unwrap();
    assert_eq!(index.len(), newest.len());
    assert_eq!(index.deleted_keys, 300);
    let mut last: Option<Vec<u8>> = None;
    let mut seen = 0;
    for kv in snap.latest(&index) {
        let kv = kv.unwrap();
        let k = String::from_utf8(kv.key.clone()).unwrap();
        assert_eq!(Some(&kv.value), newest.get(&k), "{k}");
        assert!(last.as_ref().is_none_or(|l| *l < kv.key), "key order");
        last = Some(kv.key);
        seen += 1;
    }
    assert_eq!(seen, newest.len());

    // --revision: the state before the overwrites and deletes.
    let old = snap
        .index(&IndexOptions {
            at_revision: Some(rev_before),
            key_prefix: b"/registry/secrets/".to_vec(),
        })
        .unwrap();
    assert_eq!(old.len(), n);
    let k100 = key(100); // overwritten, not deleted
    let (_, rev) = old.entries().find(|(k, _)| *k == k100.as_bytes()).unwrap();
    assert_eq!(snap.fetch(k100.as_bytes(), rev).unwrap().value, kvs[100].1);
    assert_eq!(
        snap.get(k100.as_bytes(), None).unwrap().unwrap().value,
        overwrites[1].1
    );
    assert!(
        snap.get(key(97).as_bytes(), None).unwrap().is_none(),
        "deleted"
    );
    assert!(
        snap.get(key(97).as_bytes(), Some(rev_before))
            .unwrap()
            .is_some(),
        "exists before the delete"
    );
    let err = snap
        .index(&IndexOptions {
            at_revision: Some(snap.info().current_revision + 1),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.to_string().contains("not in the snapshot"), "{err}");

    // CLI summary agrees.
    let (code, stdout, stderr) = run(&["snapshot", "info", path.to_str().unwrap(), "-o", "json"]);
    assert_eq!(code, 0, "{stderr}");
    let info = json(&stdout);
    assert_eq!(info["live_keys"], newest.len());
    assert_eq!(info["deleted_keys"], 300);

    // The member's own database file (no trailer) holds the same state once etcd is stopped.
    let data_dir = server.member().data_dir().to_path_buf();
    server.member().stop();
    let member_db = data_dir.join("member/snap/db");
    let member = Snapshot::open(&member_db, OpenOptions::default()).expect("member db opens");
    assert_eq!(member.info().checksum, ChecksumState::Absent);
    let mindex = member.index(&IndexOptions::default()).unwrap();
    assert_eq!(mindex.len(), newest.len());
    assert_eq!(
        mindex
            .entries()
            .map(|(k, r)| (k.to_vec(), r))
            .collect::<Vec<_>>(),
        index
            .entries()
            .map(|(k, r)| (k.to_vec(), r))
            .collect::<Vec<_>>()
    );
}
