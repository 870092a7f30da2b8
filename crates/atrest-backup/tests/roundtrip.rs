//! Round trips for every recipient kind, and every way a backup can be damaged.

use std::sync::Arc;

use atrest_backup::{
    decrypt, encrypt, keys, write_atomically, BackupError, Identity, KmsIdentity, KmsRecipient,
    Recipient, SecretString,
};
use atrest_core::kms::testing::ReferenceKms;

fn data(len: usize) -> Vec<u8> {
    // Deterministic, incompressible-looking bytes.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn enc(recipients: &[Recipient], plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let s = encrypt(recipients, &mut &plain[..], &mut out, &mut |_| {}).unwrap();
    assert_eq!(s.bytes_in, plain.len() as u64);
    assert_eq!(s.bytes_out, out.len() as u64);
    out
}

fn dec(identities: &[Identity], cipher: &[u8]) -> Result<Vec<u8>, BackupError> {
    let mut out = Vec::new();
    decrypt(identities, &mut &cipher[..], &mut out, &mut |_| {}).map(|_| out)
}

fn x25519_identity() -> (Identity, age::x25519::Recipient) {
    let g = keys::generate();
    (Identity::File(vec![Box::new(g.identity)]), g.recipient)
}

#[test]
fn x25519_round_trip_multi_chunk_and_empty() {
    let (id, r) = x25519_identity();
    for len in [0usize, 1, 64 * 1024, 64 * 1024 + 1, 3 * 1024 * 1024 + 17] {
        let plain = data(len);
        let cipher = enc(&[Recipient::X25519(r.clone())], &plain);
        assert!(cipher.starts_with(b"age-encryption.org/v1\n"));
        assert_eq!(
            dec(std::slice::from_ref(&id), &cipher).unwrap(),
            plain,
            "len {len}"
        );
    }
}

#[test]
fn passphrase_round_trip_and_wrong_passphrase() {
    let plain = data(200_000);
    let cipher = enc(
        &[Recipient::Passphrase(SecretString::from(
            "correct horse".to_string(),
        ))],
        &plain,
    );
    let good = Identity::Passphrase(SecretString::from("correct horse".to_string()));
    assert_eq!(dec(&[good], &cipher).unwrap(), plain);
    let bad = Identity::Passphrase(SecretString::from("wrong horse".to_string()));
    let err = dec(&[bad], &cipher).unwrap_err();
    assert!(matches!(err, BackupError::WrongKey), "{err}");
}

#[test]
fn passphrase_cannot_be_mixed_with_other_recipients() {
    let (_, r) = x25519_identity();
    let mut out = Vec::new();
    let err = encrypt(
        &[
            Recipient::Passphrase(SecretString::from("p".to_string())),
            Recipient::X25519(r),
        ],
        &mut &b"x"[..],
        &mut out,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("only recipient"), "{err}");
}

#[test]
fn kms_envelope_round_trip_and_stanza() {
    let kms = Arc::new(ReferenceKms::generate("kek-1"));
    let plain = data(300_000);
    let cipher = enc(&[Recipient::Kms(KmsRecipient::new(kms.clone()))], &plain);
    let header = String::from_utf8_lossy(&cipher[..200]).to_string();
    assert!(header.contains("-> atrest-kms "), "{header}");
    assert_eq!(
        dec(&[Identity::Kms(KmsIdentity::new(kms.clone()))], &cipher).unwrap(),
        plain
    );
    // Another plugin (different KEK) cannot unwrap: the plugin's error is reported.
    let other = Arc::new(ReferenceKms::generate("kek-1"));
    let err = dec(&[Identity::Kms(KmsIdentity::new(other))], &cipher).unwrap_err();
    assert!(matches!(err, BackupError::Kms(_)), "{err}");
}

#[test]
fn kms_and_x25519_together_either_decrypts() {
    let kms = Arc::new(ReferenceKms::generate("kek-1"));
    let (id, r) = x25519_identity();
    let plain = data(1000);
    let cipher = enc(
        &[
            Recipient::Kms(KmsRecipient::new(kms.clone())),
            Recipient::X25519(r),
        ],
        &plain,
    );
    assert_eq!(dec(&[id], &cipher).unwrap(), plain);
    assert_eq!(
        dec(&[Identity::Kms(KmsIdentity::new(kms))], &cipher).unwrap(),
        plain
    );
}

#[test]
fn flipped_byte_anywhere_is_detected() {
    let (id, r) = x25519_identity();
    let plain = data(150_000);
    let cipher = enc(&[Recipient::X25519(r)], &plain);
    // header, first chunk, last chunk, final tag
    for pos in [30, cipher.len() / 3, cipher.len() - 100, cipher.len() - 1] {
        let mut bad = cipher.clone();
        bad[pos] ^= 0x01;
        let err = dec(std::slice::from_ref(&id), &bad).unwrap_err();
        assert!(
            matches!(
                err,
                BackupError::Tampered { .. }
                    | BackupError::HeaderTampered
                    | BackupError::NotAge(_)
                    | BackupError::WrongKey
                    | BackupError::NoMatchingIdentity(_)
            ),
            "pos {pos}: {err}"
        );
    }
}

#[test]
fn truncation_is_detected_even_at_a_chunk_boundary() {
    let (id, r) = x25519_identity();
    let plain = data(64 * 1024 * 3);
    let cipher = enc(&[Recipient::X25519(r)], &plain);
    let chunk = 64 * 1024 + 16;
    for cut in [
        cipher.len() - 1,
        cipher.len() - 17,
        cipher.len() - chunk,
        cipher.len() / 2,
        40,
    ] {
        let err = dec(std::slice::from_ref(&id), &cipher[..cut]).unwrap_err();
        assert!(
            matches!(err, BackupError::Tampered { .. } | BackupError::NotAge(_)),
            "cut {cut}: {err}"
        );
    }
}

#[test]
fn not_age_input_is_a_clear_error() {
    let (id, _) = x25519_identity();
    let err = dec(&[id], b"this is not an age file\n").unwrap_err();
    assert!(
        err.to_string().starts_with("not an encrypted backup"),
        "{err}"
    );
}

/// Encrypts to `n` X25519 recipients; the identity of the last one decrypts.
fn to_many_recipients(n: usize, plain: &[u8]) -> (Identity, Vec<u8>) {
    let mut recipients: Vec<Recipient> = (1..n)
        .map(|_| Recipient::X25519(keys::generate().recipient))
        .collect();
    let (id, r) = x25519_identity();
    recipients.push(Recipient::X25519(r));
    (id, enc(&recipients, plain))
}

#[test]
fn a_header_with_too_many_stanzas_is_refused_before_age_parses_it() {
    // As many recipients as we accept (age adds one grease stanza): the backup still decrypts.
    let plain = data(100_000);
    let (id, cipher) = to_many_recipients(atrest_backup::MAX_STANZAS - 1, &plain);
    assert_eq!(dec(&[id], &cipher).unwrap(), plain);

    // A hostile header: 20,000 stanzas (took age 71 s to reject). Refused at stanza 1025.
    let (id, _) = x25519_identity();
    let mut hostile = b"age-encryption.org/v1\n".to_vec();
    for _ in 0..20_000 {
        hostile.extend_from_slice(b"-> X25519 TEiF0ypqr+bpvcqXNyCVJpL7OuwPdVwPL7KQEbFDOCc\n");
        hostile.extend_from_slice(b"EmECAEcKN+n/Vs9SbWiV+Hu0r+E8R77DdWYyd83nw7U\n");
    }
    hostile.extend_from_slice(b"--- Vn+54jqiiUCE+WZcEVY3f1sqHjlu/z1LCQ/T7Xm7qI0\n");
    let err = dec(&[id], &hostile).unwrap_err();
    assert!(matches!(err, BackupError::HeaderTooLarge(_)), "{err}");
    assert!(
        err.to_string()
            .contains("header has more than 1024 recipient stanzas"),
        "{err}"
    );
}

#[test]
fn dev_zero_is_not_read_past_the_header_bound() {
    let (id, _) = x25519_identity();
    let mut zero = std::fs::File::open("/dev/zero").unwrap();
    let err = decrypt(&[id], &mut zero, &mut Vec::new(), &mut |_| {}).unwrap_err();
    assert!(
        err.to_string().starts_with("not an encrypted backup"),
        "{err}"
    );
}

#[test]
fn an_oversized_header_is_refused_before_age_parses_it() {
    let (id, _) = x25519_identity();
    // One stanza whose body never ends: 64-character lines, 4 MiB of them.
    let mut hostile =
        b"age-encryption.org/v1\n-> X25519 TEiF0ypqr+bpvcqXNyCVJpL7OuwPdVwPL7KQEbFDOCc\n".to_vec();
    while hostile.len() < 4 << 20 {
        hostile.extend_from_slice(&[b'A'; 64]);
        hostile.push(b'\n');
    }
    let err = dec(&[id], &hostile).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "header is larger than {} bytes",
            atrest_backup::MAX_HEADER_BYTES
        )),
        "{err}"
    );
}

#[test]
fn atomic_write_leaves_nothing_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let (id, r) = x25519_identity();
    let cipher = enc(&[Recipient::X25519(r)], &data(200_000));
    let mut bad = cipher.clone();
    let n = bad.len();
    bad[n - 5] ^= 0xff;
    let target = dir.path().join("restored.db");
    let err = write_atomically(&target, |w| {
        decrypt(std::slice::from_ref(&id), &mut &bad[..], w, &mut |_| {})
    })
    .unwrap_err();
    assert!(matches!(err, BackupError::Tampered { .. }), "{err}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no partial plaintext left behind"
    );
    write_atomically(&target, |w| {
        decrypt(&[id], &mut &cipher[..], w, &mut |_| {})
    })
    .unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), data(200_000));
}

#[test]
fn keygen_writes_0600_and_refuses_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.txt");
    let recipient = keys::write_identity_file(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(keys::write_identity_file(&path).is_err());
    let ids = keys::read_identity_file(&path).unwrap();
    let cipher = enc(
        &[Recipient::X25519(
            keys::parse_recipient(&recipient.to_string()).unwrap(),
        )],
        b"hello",
    );
    assert_eq!(dec(&[Identity::File(ids)], &cipher).unwrap(), b"hello");
    let recips = keys::parse_recipients_file(&format!("# team\n\n{recipient}\n")).unwrap();
    assert_eq!(recips.len(), 1);
    assert!(keys::parse_recipients_file("age1nope\n").is_err());
}
