//! Synthetic bbolt files: hand-built pages exercise inline buckets, branch pages and cycles, and
//! property tests feed arbitrary page contents behind valid meta pages (the reader must return
//! `Ok` or an error, never panic or loop).

use proptest::prelude::*;

use super::bbolt::fnv64a;
use super::{IndexOptions, OpenOptions, Revision, Snapshot};

const PS: usize = 4096;

fn meta(buf: &mut [u8], id: u64, root: u64, pgid: u64, txid: u64) {
    buf[..8].copy_from_slice(&id.to_le_bytes());
    buf[8..10].copy_from_slice(&0x04u16.to_le_bytes());
    let m = 16;
    buf[m..m + 4].copy_from_slice(&0xED0C_DAEDu32.to_le_bytes());
    buf[m + 4..m + 8].copy_from_slice(&2u32.to_le_bytes());
    buf[m + 8..m + 12].copy_from_slice(&(PS as u32).to_le_bytes());
    buf[m + 16..m + 24].copy_from_slice(&root.to_le_bytes());
    buf[m + 40..m + 48].copy_from_slice(&pgid.to_le_bytes());
    buf[m + 48..m + 56].copy_from_slice(&txid.to_le_bytes());
    let sum = fnv64a(&buf[m..m + 56]);
    buf[m + 56..m + 64].copy_from_slice(&sum.to_le_bytes());
}

/// A leaf page image (header + elements + data) for `id` with `(flags, key, value)` entries.
fn leaf(id: u64, entries: &[(u32, Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut buf = vec![0u8; 16 + entries.len() * 16];
    buf[..8].copy_from_slice(&id.to_le_bytes());
    buf[8..10].copy_from_slice(&0x02u16.to_le_bytes());
    buf[10..12].copy_from_slice(&(entries.len() as u16).to_le_bytes());
    for (i, (flags, k, v)) in entries.iter().enumerate() {
        let e = 16 + i * 16;
        let pos = (buf.len() - e) as u32;
        buf[e..e + 4].copy_from_slice(&flags.to_le_bytes());
        buf[e + 4..e + 8].copy_from_slice(&pos.to_le_bytes());
        buf[e + 8..e + 12].copy_from_slice(&(k.len() as u32).to_le_bytes());
        buf[e + 12..e + 16].copy_from_slice(&(v.len() as u32).to_le_bytes());
        buf.extend_from_slice(k);
        buf.extend_from_slice(v);
    }
    buf
}

fn branch(id: u64, children: &[(Vec<u8>, u64)]) -> Vec<u8> {
    let mut buf = vec![0u8; 16 + children.len() * 16];
    buf[..8].copy_from_slice(&id.to_le_bytes());
    buf[8..10].copy_from_slice(&0x01u16.to_le_bytes());
    buf[10..12].copy_from_slice(&(children.len() as u16).to_le_bytes());
    for (i, (k, child)) in children.iter().enumerate() {
        let e = 16 + i * 16;
        let pos = (buf.len() - e) as u32;
        buf[e..e + 4].copy_from_slice(&pos.to_le_bytes());
        buf[e + 4..e + 8].copy_from_slice(&(k.len() as u32).to_le_bytes());
        buf[e + 8..e + 16].copy_from_slice(&child.to_le_bytes());
        buf.extend_from_slice(k);
    }
    buf
}

fn kv(key: &[u8], value: &[u8], mod_rev: i64) -> Vec<u8> {
    let mut out = vec![0x0a, key.len() as u8];
    out.extend_from_slice(key);
    out.extend_from_slice(&[0x18, mod_rev as u8, 0x2a, value.len() as u8]);
    out.extend_from_slice(value);
    out
}

fn bucket_value(root: u64, inline: Option<Vec<u8>>) -> Vec<u8> {
    let mut v = root.to_le_bytes().to_vec();
    v.extend_from_slice(&0u64.to_le_bytes());
    if let Some(page) = inline {
        v.extend_from_slice(&page);
    }
    v
}

/// pages: [meta0, meta1, root leaf (page 2), key bucket pages...]
fn file(pages: Vec<Vec<u8>>) -> Vec<u8> {
    let n = pages.len() as u64 + 2;
    let mut out = vec![0u8; PS * 2];
    meta(&mut out[..PS], 0, 2, n, 2);
    meta(&mut out[PS..2 * PS], 1, 2, n, 1);
    for p in pages {
        let mut page = p;
        page.resize(PS, 0);
        out.extend_from_slice(&page[..PS]);
    }
    out
}

fn rev(main: i64, tomb: bool) -> Vec<u8> {
    let mut k = Revision { main, sub: 0 }.to_bytes().to_vec();
    if tomb {
        k.push(b't');
    }
    k
}

fn meta_bucket() -> (u32, Vec<u8>, Vec<u8>) {
    (1, b"meta".to_vec(), bucket_value(0, Some(leaf(0, &[]))))
}

fn three_page_tree() -> Vec<Vec<u8>> {
    let l1 = leaf(4, &[(0, rev(2, false), kv(b"/k/1", b"a", 2))]);
    let l2 = leaf(5, &[(0, rev(3, false), kv(b"/k/2", b"b", 3))]);
    let br = branch(3, &[(rev(2, false), 4), (rev(3, false), 5)]);
    let root = leaf(
        2,
        &[(1, b"key".to_vec(), bucket_value(3, None)), meta_bucket()],
    );
    vec![root, br, l1, l2]
}

#[test]
fn inline_key_bucket_with_tombstone() {
    let entries = vec![
        (0, rev(2, false), kv(b"/registry/a", b"one", 2)),
        (0, rev(3, false), kv(b"/registry/b", b"two", 3)),
        (0, rev(4, true), kv(b"/registry/a", b"", 4)),
    ];
    let root = leaf(
        2,
        &[
            (1, b"key".to_vec(), bucket_value(0, Some(leaf(0, &entries)))),
            meta_bucket(),
        ],
    );
    let snap = Snapshot::from_bytes(file(vec![root]), "inline", OpenOptions::default()).unwrap();
    assert_eq!(snap.info().current_revision, 4);
    let index = snap.index(&IndexOptions::default()).unwrap();
    let keys: Vec<_> = snap.latest(&index).map(|kv| kv.unwrap().key).collect();
    assert_eq!(keys, vec![b"/registry/b".to_vec()]);
    assert_eq!(index.deleted_keys, 1);
    assert_eq!(
        snap.get(b"/registry/a", Some(3)).unwrap().unwrap().value,
        b"one"
    );
    let err = snap
        .index(&IndexOptions {
            at_revision: Some(9),
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("revision 9: not in the snapshot"),
        "{err}"
    );
}

#[test]
fn branch_pages_and_cycles() {
    let pages = three_page_tree();
    let snap = Snapshot::from_bytes(file(pages.clone()), "ok", OpenOptions::default()).unwrap();
    let index = snap.index(&IndexOptions::default()).unwrap();
    assert_eq!(index.len(), 2);
    assert_eq!(snap.get(b"/k/2", None).unwrap().unwrap().value, b"b");

    let with_branch = |br: Vec<u8>| {
        let mut p = pages.clone();
        p[1] = br;
        Snapshot::from_bytes(file(p), "bad", OpenOptions::default())
            .and_then(|s| s.index(&IndexOptions::default()).map(|_| ()))
    };
    // Branch pointing at itself.
    let err = with_branch(branch(3, &[(rev(2, false), 4), (rev(3, false), 3)]))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("page 3:"), "{err}");
    // Two branch elements sharing one leaf (not a cycle, but a revisit).
    let err = with_branch(branch(3, &[(rev(2, false), 4), (rev(3, false), 4)]))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("page 4:"), "{err}");
    // Child id beyond the high-water mark.
    let err = with_branch(branch(3, &[(rev(2, false), 4), (rev(3, false), 999)]))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("page 999: page id out of range"), "{err}");
}

#[test]
fn missing_key_bucket() {
    let root = leaf(2, &[meta_bucket()]);
    let err = Snapshot::from_bytes(file(vec![root]), "nokey", OpenOptions::default())
        .err()
        .unwrap();
    assert_eq!(
        err.to_string(),
        "not an etcd database: bucket \"key\" not found"
    );
}

fn read_everything(bytes: Vec<u8>) {
    if let Ok(snap) = Snapshot::from_bytes(
        bytes,
        "prop",
        OpenOptions {
            verify_checksum: false,
        },
    ) {
        if let Ok(index) = snap.index(&IndexOptions::default()) {
            for kv in snap.latest(&index) {
                if kv.is_err() {
                    break;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..20_000)) {
        read_everything(data);
    }

    #[test]
    fn arbitrary_pages_behind_valid_metas_never_panic(
        pages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..PS), 1..6),
        root in 0u64..10,
        pokes in proptest::collection::vec((0usize..6, 0usize..64, any::<u8>()), 0..20),
    ) {
        let mut f = file(pages);
        let n = f.len() / PS;
        // Plausible header values: page ids, flags, counts.
        for (page, off, v) in pokes {
            let at = (2 + page % (n - 2)) * PS + off;
            f[at] = v;
        }
        meta(&mut f[..PS], 0, root.max(2), n as u64, 2);
        read_everything(f);
    }

    #[test]
    fn mutated_valid_files_never_panic(pos in 0usize..6 * PS, v in any::<u8>(), pos2 in 0usize..6 * PS, v2 in any::<u8>()) {
        let mut f = file(three_page_tree());
        f[pos] = v;
        f[pos2] = v2;
        read_everything(f);
    }
}
