//! The core transformers with a `kms` v2 (and v1) provider, reaching the real plugin over its
//! socket through `atrest_kms::client::GrpcKms` — exactly what `atrest encrypt/decrypt` do.

mod support;

use std::sync::Arc;

use atrest_core::config::{self, LoadOptions};
use atrest_core::{GroupResource, ProviderKind, Transformers};
use atrest_kms::backends::local::{KeyStore, LocalBackend};
use atrest_kms::client::GrpcKms;
use atrest_kms::Endpoint;

fn load(yaml: &str, opts: &LoadOptions) -> atrest_core::EncryptionConfiguration {
    config::parse_bytes(yaml.as_bytes(), "/etc/kubernetes/enc.yaml", opts).expect("config loads")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_v2_provider_writes_and_reads_through_the_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("keys");
    KeyStore::init(&store, None).unwrap();
    let sock = support::socket_in(dir.path());
    let mut cfg = support::config(Endpoint::Path(sock.clone()));
    cfg.v1beta1 = true;
    let server = support::start(cfg, Arc::new(LocalBackend::open(&store, None).unwrap())).await;
    let key_id = LocalBackend::open(&store, None).unwrap().key_ids()[0]
        .1
        .clone();

    let yaml = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: atrest\n          endpoint: unix://{}\n          timeout: 3s\n      - identity: {{}}\n",
        sock.display()
    );
    let cfg = load(&yaml, &LoadOptions::default());
    let secrets = GroupResource::new("", "secrets");
    let aad = b"/registry/secrets/default/s1";
    let plaintext = b"k8s\x00\x0a\x0c\x0a\x02v1\x12\x06Secret".to_vec();

    let stored = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        let plaintext = plaintext.clone();
        move || {
            let t =
                Transformers::build(&cfg, Arc::new(GrpcKms::new())).expect("build with the plugin");
            let tr = t.for_resource(&secrets);
            let stored = tr.write(&plaintext, aad).expect("write through KMS v2");
            let out = tr.read(&stored, aad).expect("read back");
            assert_eq!(out.plaintext, plaintext);
            assert_eq!(out.provider.kind, ProviderKind::KmsV2);
            assert!(!out.stale);
            stored
        }
    })
    .await
    .unwrap();
    assert!(stored.starts_with(b"k8s:enc:kms:v2:atrest:"));
    assert!(
        stored.windows(key_id.len()).any(|w| w == key_id.as_bytes()),
        "the EncryptedObject carries the plugin's key id"
    );

    // A fresh transformer set (think: apiserver restart) must Decrypt the seed via the plugin.
    let cfg2 = cfg.clone();
    let stored2 = stored.clone();
    let pt = tokio::task::spawn_blocking(move || {
        let t = Transformers::build(&cfg2, Arc::new(GrpcKms::new())).unwrap();
        let out = t
            .for_resource(&GroupResource::new("", "secrets"))
            .read(&stored2, aad)
            .expect("read after restart");
        assert_eq!(out.provider.key_id.as_deref(), Some(key_id.as_str()));
        out.plaintext
    })
    .await
    .unwrap();
    assert_eq!(pt, plaintext);

    // KMS v1 (feature gate on) through the same plugin's v1beta1 service.
    let yaml_v1 = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [configmaps]\n    providers:\n      - kms:\n          name: old\n          endpoint: unix://{}\n",
        sock.display()
    );
    let cfg_v1 = load(
        &yaml_v1,
        &LoadOptions {
            kms_v1_enabled: true,
            automatic_reload: false,
        },
    );
    tokio::task::spawn_blocking(move || {
        let t = Transformers::build(&cfg_v1, Arc::new(GrpcKms::new())).unwrap();
        let tr = t.for_resource(&GroupResource::new("", "configmaps"));
        let stored = tr.write(b"hello", b"/registry/configmaps/a/b").unwrap();
        assert!(stored.starts_with(b"k8s:enc:kms:v1:old:"));
        assert_eq!(
            tr.read(&stored, b"/registry/configmaps/a/b")
                .unwrap()
                .plaintext,
            b"hello"
        );
    })
    .await
    .unwrap();
    drop(server);
}
