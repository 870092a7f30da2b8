//! Damaged snapshot files: truncated, flipped bytes, broken meta pages, page-id cycles, random
//! mutations. Every case ends in a clear error (naming the page for structural damage), never a
//! panic or a hang.

mod snapshot_common;

use atrest_store::snapshot::{IndexOptions, OpenOptions, Snapshot, SnapshotError};
use snapshot_common::*;

const PAGE: usize = 4096;

fn read_all(bytes: Vec<u8>, verify: bool) -> Result<usize, SnapshotError> {
    let snap = Snapshot::from_bytes(
        bytes,
        "mutated",
        OpenOptions {
            verify_checksum: verify,
        },
    )?;
    let index = snap.index(&IndexOptions::default())?;
    let mut n = 0;
    for kv in snap.latest(&index) {
        kv?;
        n += 1;
    }
    Ok(n)
}

fn page_flags(bytes: &[u8], id: usize) -> u16 {
    u16::from_le_bytes([bytes[id * PAGE + 8], bytes[id * PAGE + 9]])
}

#[test]
fn damaged_snapshots_give_clear_errors() {
    let big = bytes(7, 300 * 1024); // overflow pages
    let (_dir, path) = make_snapshot(
        3000,
        400,
        &[("/registry/configmaps/ns-0/big".to_string(), big)],
    );
    let good = std::fs::read(&path).unwrap();
    let n_good = read_all(good.clone(), true).expect("intact snapshot reads");
    assert_eq!(n_good, 3001);
    let data_len = good.len() - 32;

    // Truncated files, through the CLI: exit 1 with a message naming the problem.
    for cut in [
        0usize,
        100,
        PAGE,
        2 * PAGE + 7,
        data_len / 2,
        data_len - PAGE,
        good.len() - 1,
    ] {
        let t = path.with_extension(format!("cut{cut}"));
        std::fs::write(&t, &good[..cut]).unwrap();
        let (code, _, stderr) = run(&["snapshot", "info", t.to_str().unwrap()]);
        assert_eq!(code, 1, "cut at {cut}: {stderr}");
        assert!(
            stderr.contains("truncated")
                || stderr.contains("not a valid bbolt")
                || stderr.contains("checksum"),
            "cut at {cut}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Without the trailer the file is a plain bbolt database (like a member's db): still readable.
    let (code, stdout, stderr) = {
        let t = path.with_extension("notrailer");
        std::fs::write(&t, &good[..data_len]).unwrap();
        run(&["snapshot", "info", t.to_str().unwrap(), "-o", "json"])
    };
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json(&stdout)["checksum"], "absent");
    // A member db truncated at a page boundary (no trailer): the meta high-water mark catches it.
    let err = read_all(good[..data_len - 3 * PAGE].to_vec(), true)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("page ") && err.contains("truncated"),
        "{err}"
    );

    // A flipped byte anywhere: the SHA-256 trailer catches it...
    let mut flipped = good.clone();
    flipped[data_len / 3] ^= 0x40;
    let t = path.with_extension("flipped");
    std::fs::write(&t, &flipped).unwrap();
    let (code, _, stderr) = run(&["snapshot", "info", t.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("checksum mismatch"), "{stderr}");
    // ... and without the check, structural damage names the page.
    // bbolt leaves freed pages with their old content, so a page flagged "leaf" need not be part of
    // the live tree: damage to such a page changes nothing. Every leaf-flagged page must either be
    // unreachable (the read succeeds) or be named in the error; at least one must be live.
    let corrupt_leaf = |id: usize| {
        let mut bad = good.clone();
        bad[id * PAGE + 16 + 4..id * PAGE + 16 + 8].copy_from_slice(&u32::MAX.to_le_bytes()); // element 0 pos
        bad
    };
    let mut live_leaf = None;
    for id in (2..data_len / PAGE).filter(|&id| page_flags(&good, id) == 0x02) {
        if let Err(err) = read_all(corrupt_leaf(id), false) {
            let err = err.to_string();
            assert!(
                err.starts_with(&format!("page {id}: element 0 points outside the page")),
                "{err}"
            );
            live_leaf.get_or_insert(id);
        }
    }
    let leaf = live_leaf.expect("a leaf page of the live tree");
    let bad = corrupt_leaf(leaf);
    let t = path.with_extension("badleaf");
    std::fs::write(&t, &bad).unwrap();
    let (code, _, stderr) = run(&["snapshot", "info", "--skip-hash-check", t.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&format!("page {leaf}:")), "{stderr}");

    // Meta pages: one broken → the other is used; both broken → a clear error.
    let mut meta0 = good.clone();
    meta0[16 + 20] ^= 0xff; // inside meta 0's checksummed fields
    assert_eq!(
        read_all(meta0.clone(), false).expect("falls back to meta page 1"),
        n_good
    );
    let mut both = meta0;
    both[PAGE + 16 + 20] ^= 0xff;
    let err = read_all(both, false).unwrap_err().to_string();
    assert!(
        err.starts_with(
            "not a valid bbolt database: meta page 0: checksum mismatch; meta page 1: "
        ),
        "{err}"
    );

    // A branch page pointing at itself: a cycle is reported, not followed.
    // (As for leaves above, a freed branch page is not reachable; at least one must be live.)
    let mut live_branches = 0;
    for branch in (2..data_len / PAGE).filter(|&id| page_flags(&good, id) == 0x01) {
        let mut cyc = good.clone();
        cyc[branch * PAGE + 16 + 8..branch * PAGE + 16 + 16]
            .copy_from_slice(&(branch as u64).to_le_bytes());
        if let Err(err) = read_all(cyc, false) {
            let err = err.to_string();
            assert!(err.starts_with(&format!("page {branch}:")), "{err}");
            assert!(
                err.contains("cycle") || err.contains("twice") || err.contains("out of order"),
                "{err}"
            );
            live_branches += 1;
        }
    }
    assert!(live_branches > 0, "no branch page of the live tree found");

    // Random mutations (header fields, element tables, bytes): never a panic or a hang.
    let mut x: u64 = 0x1234_5678;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let pages = data_len / PAGE;
    let (mut errors, mut oks) = (0, 0);
    for _ in 0..400 {
        let mut m = good.clone();
        for _ in 0..1 + next() % 4 {
            let page = (next() as usize) % pages;
            let off = page * PAGE
                + match next() % 3 {
                    0 => (next() % 16) as usize,       // page header
                    1 => 16 + (next() % 256) as usize, // element table / meta fields
                    _ => (next() as usize) % PAGE,     // anywhere
                };
            m[off] = next() as u8;
        }
        match read_all(m, false) {
            Ok(_) => oks += 1,
            Err(e) => {
                assert!(!e.to_string().is_empty());
                errors += 1;
            }
        }
    }
    assert!(
        errors > 50,
        "mutations should mostly be detected: {errors} errors, {oks} ok"
    );
}
