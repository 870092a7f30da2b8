//! The provider-list algorithm (WIRE-FORMAT.md §3): order, staleness at both levels, identity's
//! dropped errors, error reduction, concatenated entries, resource lookup and `identify`.

mod common;

use atrest_core::config::ProviderConfiguration;
use atrest_core::{GroupResource, ProviderKind, Transformers};
use common::*;

const AAD: &[u8] = b"/registry/secrets/default/s1";
const OLD: &[u8] = &[1; 32];
const NEW: &[u8] = &[2; 32];

fn secrets(t: &Transformers) -> atrest_core::ResourceTransformer {
    t.for_resource(&GroupResource::parse("secrets"))
}

fn one(providers: Vec<ProviderConfiguration>) -> Transformers {
    build(&config(vec![(vec!["secrets"], providers)]))
}

#[test]
fn key_rotation_old_key_is_stale() {
    let old = secrets(&one(vec![aescbc(&[("old", OLD)])]))
        .write(b"v", AAD)
        .unwrap();
    let t = secrets(&one(vec![aescbc(&[("new", NEW), ("old", OLD)])]));
    let out = t.read(&old, AAD).unwrap();
    assert!(out.stale);
    assert_eq!(
        (
            out.provider.key_index,
            out.provider.key_name.as_deref(),
            out.provider.provider_index
        ),
        (Some(1), Some("old"), 0)
    );
    assert!(t.identify(&old).unwrap().unwrap().stale);
    let fresh = t.write(b"v", AAD).unwrap();
    assert!(!t.read(&fresh, AAD).unwrap().stale);
    assert!(fresh.starts_with(b"k8s:enc:aescbc:v1:new:"));
}

#[test]
fn identity_first_decrypts_everything_and_writes_plaintext() {
    let encrypted = secrets(&one(vec![aesgcm(&[("k", OLD)])]))
        .write(b"secret", AAD)
        .unwrap();
    let t = secrets(&one(vec![
        ProviderConfiguration::Identity,
        aesgcm(&[("k", OLD)]),
    ]));
    let out = t.read(&encrypted, AAD).unwrap();
    assert_eq!(
        (out.plaintext.as_slice(), out.stale, out.provider.kind),
        (&b"secret"[..], true, ProviderKind::AesGcm)
    );
    let plain = t.read(b"{\"kind\":\"Secret\"}", AAD).unwrap();
    assert_eq!(
        (plain.stale, plain.provider.kind),
        (false, ProviderKind::Identity)
    );
    assert_eq!(t.write(b"x", AAD).unwrap(), b"x");
    // identity's error is dropped: the aesgcm error is what remains
    let mut tampered = encrypted.clone();
    *tampered.last_mut().unwrap() ^= 1;
    assert_eq!(
        t.read(&tampered, AAD).unwrap_err().to_string(),
        "cipher: message authentication failed"
    );
    // only identity matched and failed: the list's own error
    assert_eq!(
        t.read(b"k8s:enc:secretbox:v1:k:xx", AAD)
            .unwrap_err()
            .to_string(),
        "no matching prefix found"
    );
}

#[test]
fn plaintext_in_an_encrypting_config() {
    let t = secrets(&one(vec![
        aescbc(&[("k", OLD)]),
        ProviderConfiguration::Identity,
    ]));
    let out = t.read(b"k8s\x00proto", AAD).unwrap();
    assert_eq!((out.stale, out.provider.provider_index), (true, 1));
    let strict = secrets(&one(vec![aescbc(&[("k", OLD)])]));
    assert_eq!(
        strict.read(b"k8s\x00proto", AAD).unwrap_err().to_string(),
        "no matching prefix found"
    );
    assert_eq!(
        strict
            .read(b"k8s:enc:aescbc:v1:zz:abc", AAD)
            .unwrap_err()
            .to_string(),
        "no matching key was found for the provided AES transformer"
    );
    let sb = secrets(&one(vec![secretbox(&[("k", OLD)])]));
    assert_eq!(
        sb.read(b"k8s:enc:secretbox:v1:zz:abc", AAD)
            .unwrap_err()
            .to_string(),
        "no matching key was found for the provided Secretbox transformer"
    );
}

#[test]
fn every_matching_entry_is_tried_and_errors_aggregate() {
    let value = secrets(&one(vec![aesgcm(&[("k", NEW)])]))
        .write(b"v", AAD)
        .unwrap();
    // Same prefix twice, wrong key first: the second decrypts, stale by position.
    let t = secrets(&one(vec![aesgcm(&[("k", OLD)]), aesgcm(&[("k", NEW)])]));
    let out = t.read(&value, AAD).unwrap();
    assert_eq!((out.stale, out.provider.provider_index), (true, 1));
    // Both fail with the same text: one message. Different texts: an aggregate.
    let both_wrong = secrets(&one(vec![aesgcm(&[("k", OLD)]), aesgcm(&[("k", OLD)])]));
    assert_eq!(
        both_wrong.read(&value, AAD).unwrap_err().to_string(),
        "cipher: message authentication failed"
    );
    let mixed = secrets(&one(vec![
        aesgcm(&[("k", OLD)]),
        aesgcm(&[("k", OLD), ("k", NEW)]),
    ]));
    let out = mixed.read(&value, AAD).unwrap();
    assert_eq!(
        (
            out.stale,
            out.provider.provider_index,
            out.provider.key_index
        ),
        (true, 1, Some(1))
    );
    let short = b"k8s:enc:aesgcm:v1:k:abc";
    let two_kinds = secrets(&one(vec![aesgcm(&[("k", OLD)]), aesgcm(&[("k:", OLD)])]));
    assert_eq!(two_kinds.read(short, AAD).unwrap_err().to_string(), "[the stored data was shorter than the required size, no matching key was found for the provided AES transformer]");
}

#[test]
fn duplicate_entries_concatenate_and_wildcards_select() {
    let cfg = config(vec![
        (vec!["secrets"], vec![aesgcm(&[("first", OLD)])]),
        (
            vec!["secrets", "configmaps"],
            vec![secretbox(&[("second", NEW)])],
        ),
        (vec!["*.apps"], vec![aescbc(&[("apps", OLD)])]),
        (vec!["*.*"], vec![ProviderConfiguration::Identity]),
    ]);
    let t = build(&cfg);
    let s = secrets(&t);
    assert_eq!(s.write_provider().key_name.as_deref(), Some("first"));
    let by_second = t
        .for_resource(&GroupResource::parse("configmaps"))
        .write(b"v", AAD)
        .unwrap();
    let out = s.read(&by_second, AAD).unwrap();
    assert_eq!(
        (out.stale, out.provider.provider_index, out.provider.kind),
        (true, 1, ProviderKind::Secretbox)
    );
    assert_eq!(
        t.for_resource(&GroupResource::parse("deployments.apps"))
            .write_provider()
            .kind,
        ProviderKind::AesCbc
    );
    assert_eq!(
        t.for_resource(&GroupResource::parse("pods"))
            .write_provider()
            .kind,
        ProviderKind::Identity
    );
    assert!(t.covers(&GroupResource::parse("anything.example.com")));
}

#[test]
fn uncovered_resources_use_standalone_identity() {
    let t = one(vec![aesgcm(&[("k", OLD)])]);
    let pods = t.for_resource(&GroupResource::parse("pods"));
    assert!(!t.covers(&GroupResource::parse("pods")));
    assert_eq!(pods.read(b"plain", AAD).unwrap().plaintext, b"plain");
    let encrypted = secrets(&t).write(b"v", AAD).unwrap();
    // Not `no matching prefix found`: upstream uses identity without a prefix list here.
    assert_eq!(
        pods.read(&encrypted, AAD).unwrap_err().to_string(),
        "identity transformer tried to read encrypted data"
    );
    assert_eq!(
        Transformers::identity()
            .for_resource(&GroupResource::parse("secrets"))
            .write(b"x", AAD)
            .unwrap(),
        b"x"
    );
}

#[test]
fn identify_classifies_without_decrypting() {
    let t = secrets(&one(vec![
        aescbc(&[("new", NEW), ("old", OLD)]),
        ProviderConfiguration::Identity,
    ]));
    let garbage_under_old = b"k8s:enc:aescbc:v1:old:not really ciphertext";
    let id = t.identify(garbage_under_old).unwrap().unwrap();
    assert_eq!(
        (id.provider.kind, id.provider.key_name.as_deref(), id.stale),
        (ProviderKind::AesCbc, Some("old"), true)
    );
    let plain = t.identify(b"{}").unwrap().unwrap();
    assert_eq!(
        (plain.provider.kind, plain.stale),
        (ProviderKind::Identity, true)
    );
    assert!(t
        .identify(b"k8s:enc:aescbc:v1:unknown:xx")
        .unwrap()
        .is_none());
    assert!(t.identify(b"k8s:enc:aesgcm:v1:new:xx").unwrap().is_none());
}
