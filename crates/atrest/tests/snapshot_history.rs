//! etcd history in a snapshot: revisions, deletes and re-creates, and compaction (history before
//! the compacted revision is gone, and asking for it is a clear error).

mod snapshot_common;

use atrest_store::snapshot::{IndexOptions, OpenOptions, Snapshot};
use atrest_testkit::load::TestClient;
use atrest_testkit::EtcdServer;
use snapshot_common::*;

#[test]
fn revisions_deletes_recreates_and_compaction() {
    let server = EtcdServer::start();
    let client = TestClient::connect(&server);
    let k = "/registry/configmaps/default/history";
    let r1 = client.put(k, b"v1");
    let r2 = client.put(k, b"v2");
    let r_del = delete(&client, k);
    let r3 = client.put(k, b"v3");
    client.put("/registry/configmaps/default/other", b"o");
    let mut kv = client.client().kv_client();
    client.block_on(kv.compact(r2, None)).expect("compact");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("h.snapshot");
    snapshot_save(&server, &path);
    drop(server);

    let snap = Snapshot::open(&path, OpenOptions::default()).unwrap();
    assert_eq!(snap.info().compact_revision, Some(r2));
    let at = |rev: Option<i64>| {
        snap.get(k.as_bytes(), rev)
            .map(|kv| kv.map(|kv| (kv.value, kv.mod_revision, kv.version)))
    };
    assert_eq!(
        at(None).unwrap(),
        Some((b"v3".to_vec(), r3, 1)),
        "re-created after the delete: version restarts"
    );
    assert_eq!(at(Some(r2)).unwrap(), Some((b"v2".to_vec(), r2, 2)));
    assert_eq!(at(Some(r_del)).unwrap(), None, "deleted at this revision");
    let err = at(Some(r1)).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("revision {r1}: required revision has been compacted (compacted at {r2})")
    );
    let index = snap
        .index(&IndexOptions {
            at_revision: Some(r_del),
            key_prefix: Vec::new(),
        })
        .unwrap();
    assert_eq!((index.len(), index.deleted_keys), (0, 1));

    let (code, _, stderr) = run(&[
        "snapshot",
        "info",
        path.to_str().unwrap(),
        "--revision",
        &r1.to_string(),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("compacted"), "{stderr}");
}
