//! `atrest backup` through the binary: keygen, X25519 recipients (flag and file), passphrase (file
//! and environment), stdin/stdout streaming, and refusal of wrong keys, flipped bytes and truncation
//! without leaving plaintext behind.

mod snapshot_common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use snapshot_common::*;

fn pipe(args: &[&str], input: &[u8], env: &[(&str, &str)]) -> (i32, Vec<u8>, String) {
    let mut cmd = atrest();
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait");
    writer.join().unwrap();
    decode(out)
}

#[test]
fn x25519_keygen_recipients_and_streaming() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("backup.key");
    let (code, stdout, stderr) = run(&["backup", "keygen", "-o", key.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let recipient = String::from_utf8(stdout).unwrap().trim().to_string();
    assert!(recipient.starts_with("age1"), "{recipient}");
    let (code, _, _) = run(&["backup", "keygen", "-o", key.to_str().unwrap()]);
    assert_eq!(code, 1, "keygen never overwrites an identity");

    // stdin -> stdout, 3 MiB (many 64 KiB chunks).
    let data = bytes(11, 3 * 1024 * 1024 + 5);
    let (code, cipher, stderr) = pipe(&["backup", "encrypt", "-r", &recipient], &data, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(cipher.starts_with(b"age-encryption.org/v1\n"));
    let (code, plain, stderr) = pipe(
        &["backup", "decrypt", "--identity", key.to_str().unwrap()],
        &cipher,
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(plain, data);

    // Recipients file with two keys: either identity decrypts.
    let key2 = dir.path().join("second.key");
    let (_, r2, _) = run(&["backup", "keygen", "-o", key2.to_str().unwrap()]);
    let rfile = dir.path().join("recipients.txt");
    std::fs::write(
        &rfile,
        format!(
            "# ops team\n{recipient}\n\n{}\n",
            String::from_utf8(r2).unwrap().trim()
        ),
    )
    .unwrap();
    let input = dir.path().join("in.db");
    std::fs::write(&input, &data).unwrap();
    let enc = dir.path().join("in.db.age");
    let (code, _, stderr) = run(&[
        "backup",
        "encrypt",
        "-R",
        rfile.to_str().unwrap(),
        "-i",
        input.to_str().unwrap(),
        "-o",
        enc.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        std::fs::metadata(&enc).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let out = dir.path().join("out.db");
    let (code, _, stderr) = run(&[
        "backup",
        "decrypt",
        "--identity",
        key2.to_str().unwrap(),
        "-i",
        enc.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), data);

    let cipher = std::fs::read(&enc).unwrap();
    let check_refused = |bad: &[u8], what: &str| {
        let f = dir.path().join("bad.age");
        std::fs::write(&f, bad).unwrap();
        let target = dir.path().join(format!("restored-{what}.db"));
        let (code, _, stderr) = run(&[
            "backup",
            "decrypt",
            "--identity",
            key.to_str().unwrap(),
            "-i",
            f.to_str().unwrap(),
            "-o",
            target.to_str().unwrap(),
        ]);
        assert_eq!(code, 1, "{what}: {stderr}");
        assert!(!target.exists(), "{what}: no output file");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".atrest-backup-")),
            "{what}: temp file removed"
        );
        stderr
    };
    // Flipped byte in the middle of the payload.
    let mut flipped = cipher.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    let err = check_refused(&flipped, "flipped");
    assert!(err.contains("damaged or truncated"), "{err}");
    // Truncated: the final-chunk flag is missing.
    let err = check_refused(&cipher[..cipher.len() - 1000], "truncated");
    assert!(err.contains("damaged or truncated"), "{err}");
    // Truncated exactly at a chunk boundary.
    let chunk = 64 * 1024 + 16;
    let err = check_refused(
        &cipher[..cipher.len() - (cipher.len() - 200) % chunk],
        "boundary",
    );
    assert!(
        err.contains("damaged or truncated") || err.contains("not an encrypted backup"),
        "{err}"
    );
    // A hostile header (20,000 recipient stanzas): refused before age parses it, the file named.
    let stanza = cipher
        .split(|b| *b == b'\n')
        .skip(1)
        .take(2)
        .collect::<Vec<_>>()
        .join(&b'\n');
    let mut hostile = b"age-encryption.org/v1\n".to_vec();
    for _ in 0..20_000 {
        hostile.extend_from_slice(&stanza);
        hostile.push(b'\n');
    }
    hostile.extend_from_slice(&cipher[22..]);
    let err = check_refused(&hostile, "stanzas");
    assert!(
        err.contains("bad.age failed") && err.contains("more than 1024 recipient stanzas"),
        "{err}"
    );
    // Wrong identity.
    let third = dir.path().join("third.key");
    run(&["backup", "keygen", "-o", third.to_str().unwrap()]);
    let (code, _, stderr) = run(&[
        "backup",
        "decrypt",
        "--identity",
        third.to_str().unwrap(),
        "-i",
        enc.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no identity given can decrypt"), "{stderr}");
    // Encrypted binary never goes to a terminal; no recipients is an error.
    let (code, _, stderr) = run(&[
        "backup",
        "encrypt",
        "-i",
        input.to_str().unwrap(),
        "-o",
        "/dev/null",
    ]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no recipients"), "{stderr}");
}

#[test]
fn passphrase_from_file_and_environment() {
    let dir = tempfile::tempdir().unwrap();
    let pf = dir.path().join("pass");
    std::fs::write(&pf, "correct horse battery staple\n").unwrap();
    let data = bytes(5, 200_000);
    let (code, cipher, stderr) = pipe(
        &[
            "backup",
            "encrypt",
            "--passphrase-file",
            pf.to_str().unwrap(),
        ],
        &data,
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    // The same passphrase from the environment decrypts (the trailing newline of the file is not part of it).
    let (code, plain, stderr) = pipe(
        &["backup", "decrypt", "--passphrase"],
        &cipher,
        &[("ATREST_BACKUP_PASSPHRASE", "correct horse battery staple")],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(plain, data);
    // Wrong passphrase: a clear error, nothing on stdout.
    let (code, plain, stderr) = pipe(
        &["backup", "decrypt", "--passphrase"],
        &cipher,
        &[("ATREST_BACKUP_PASSPHRASE", "wrong")],
    );
    assert_eq!(code, 1);
    assert!(plain.is_empty());
    assert!(stderr.contains("wrong passphrase"), "{stderr}");
    // Passphrase plus another recipient is refused (age's rule).
    let (code, _, stderr) = pipe(
        &[
            "backup",
            "encrypt",
            "--passphrase-file",
            pf.to_str().unwrap(),
            "-r",
            "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p",
        ],
        b"x",
        &[],
    );
    assert_eq!(code, 1);
    assert!(stderr.contains("only recipient"), "{stderr}");
}

#[test]
fn backup_to_a_plugin_that_cannot_decrypt_is_refused_before_writing() {
    use atrest_testkit::{HostileKms, Misbehaviour};
    for kind in [Misbehaviour::WriteOnly, Misbehaviour::WrongUnwrap] {
        let plugin = HostileKms::start(kind);
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("snap.db");
        std::fs::write(&input, bytes(3, 100_000)).unwrap();
        let output = dir.path().join("snap.db.age");
        let (code, _, stderr) = backup_encrypt_kms(&plugin.endpoint, &input, &output);
        assert_eq!(code, 1, "{kind:?}: {stderr}");
        assert!(stderr.contains(&plugin.endpoint), "{kind:?}: {stderr}");
        assert!(
            stderr.contains("no backup was written"),
            "{kind:?}: {stderr}"
        );
        assert!(!output.exists());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temp file left: {left:?}");
    }
}
