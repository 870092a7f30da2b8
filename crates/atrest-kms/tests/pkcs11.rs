//! End to end with the `pkcs11` backend on a real SoftHSM2 token created by the test.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use atrest_core::kms::{DecryptRequest, KmsConnector};
use atrest_kms::backends::pkcs11::{generate_key, Pkcs11Backend};
use atrest_kms::client::GrpcKms;
use atrest_kms::{BackendError, Endpoint, KeyBackend, Zeroizing};
use support::softhsm::SoftHsm;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn softhsm_round_trip_over_the_socket() {
    let hsm = SoftHsm::new("atrest-kms");
    let made = generate_key(&hsm.config(&["kek-1"]), "kek-1").unwrap();
    assert!(made.key_id.starts_with("pkcs11-"), "{}", made.key_id);
    assert!(
        generate_key(&hsm.config(&["kek-1"]), "kek-1").is_err(),
        "duplicate label refused"
    );

    let backend = Pkcs11Backend::open(hsm.config(&["kek-1"])).unwrap();
    assert_eq!(
        backend.current_key_id().unwrap(),
        made.key_id,
        "key id is stable across opens"
    );

    let dir = tempfile::tempdir().unwrap();
    let sock = support::socket_in(dir.path());
    let server = support::start(
        support::config(Endpoint::Path(sock.clone())),
        Arc::new(backend),
    )
    .await;
    let kms = GrpcKms::new()
        .connect_v2(
            "hsm",
            &format!("unix://{}", sock.display()),
            Duration::from_secs(3),
        )
        .unwrap();
    let st = kms.status().unwrap();
    assert_eq!((st.version.as_str(), st.healthz.as_str()), ("v2", "ok"));
    assert_eq!(st.key_id, made.key_id);

    let seed = [42u8; 32];
    let enc = kms.encrypt("u", &seed).unwrap();
    assert_eq!(enc.key_id, st.key_id);
    assert_eq!(enc.ciphertext.len(), 12 + 32 + 16);
    let dec = |ct: &[u8], id: &str| {
        kms.decrypt(&DecryptRequest {
            ciphertext: ct.to_vec(),
            uid: "u".into(),
            key_id: id.into(),
            annotations: BTreeMap::new(),
        })
    };
    assert_eq!(dec(&enc.ciphertext, &enc.key_id).unwrap().as_slice(), &seed);
    // Tampered ciphertext and unknown key id are refused, the server keeps going.
    let mut bad = enc.ciphertext.clone();
    bad[20] ^= 0x80;
    assert!(dec(&bad, &enc.key_id).is_err());
    assert!(dec(&enc.ciphertext, "pkcs11-unknown")
        .unwrap_err()
        .to_string()
        .contains("NotFound"));
    assert_eq!(dec(&enc.ciphertext, &enc.key_id).unwrap().as_slice(), &seed);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pointing_at_a_new_key_rotates_and_old_key_still_decrypts() {
    let hsm = SoftHsm::new("atrest-kms");
    let k1 = generate_key(&hsm.config(&["kek-1"]), "kek-1").unwrap();
    let k2 = generate_key(&hsm.config(&["kek-2"]), "kek-2").unwrap();
    assert_ne!(k1.key_id, k2.key_id, "another key, another id");

    let old = Pkcs11Backend::open(hsm.config(&["kek-1"])).unwrap();
    let w = old.wrap(b"seed-seed-seed-seed-seed-seed-32").await.unwrap();
    drop(old);

    let both = Pkcs11Backend::open(hsm.config(&["kek-2", "kek-1"])).unwrap();
    assert_eq!(both.current_key_id().unwrap(), k2.key_id);
    let back = both
        .unwrap(&w.key_id, &w.ciphertext, &BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(back.as_slice(), b"seed-seed-seed-seed-seed-seed-32");
    let w2 = both.wrap(b"x").await.unwrap();
    assert_eq!(w2.key_id, k2.key_id);
    both.probe().await.unwrap();
}

#[test]
fn wrong_pin_is_a_clear_error() {
    let hsm = SoftHsm::new("atrest-kms");
    generate_key(&hsm.config(&["kek-1"]), "kek-1").unwrap();
    let mut cfg = hsm.config(&["kek-1"]);
    cfg.pin = Zeroizing::new("0000".into());
    match Pkcs11Backend::open(cfg) {
        Err(BackendError::Config(m)) => assert!(m.contains("wrong PIN"), "{m}"),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("wrong PIN accepted"),
    }
    let cfg = hsm.config(&["missing"]);
    let e = Pkcs11Backend::open(cfg).err().unwrap().to_string();
    assert!(e.contains("no AES key labelled \"missing\""), "{e}");
    let mut cfg = hsm.config(&["kek-1"]);
    cfg.token_label = Some("nope".into());
    let e = Pkcs11Backend::open(cfg).err().unwrap().to_string();
    assert!(e.contains("no PKCS#11 token labelled \"nope\""), "{e}");
}
