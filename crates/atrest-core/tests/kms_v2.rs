//! KMS v2 behaviour beyond the vectors: upstream's recorded real values (WIRE-FORMAT.md §8.6), key ID
//! rotation, when the plugin is called, write-state expiry and Encrypt/Status disagreement.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atrest_core::config::{
    EncryptionConfiguration, KmsApiVersion, KmsConfiguration, ProviderConfiguration,
    ResourceConfiguration,
};
use atrest_core::kms::testing::ReferenceKms;
use atrest_core::kms::{
    DecryptRequest, EncryptResponse, KmsConnector, KmsError, KmsV1Service, KmsV2Service,
    StatusResponse,
};
use atrest_core::providers::kmsv2::{Clock, KmsV2Options};
use atrest_core::{BuildOptions, GroupResource, ResourceTransformer, Transformers};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use zeroize::Zeroizing;

fn config(name: &str) -> EncryptionConfiguration {
    EncryptionConfiguration {
        resources: vec![ResourceConfiguration {
            resources: vec!["secrets".into()],
            providers: vec![ProviderConfiguration::Kms(KmsConfiguration {
                api_version: KmsApiVersion::V2,
                name: name.into(),
                endpoint: "unix:///run/kms/test.sock".into(),
                cachesize: None,
                timeout: Duration::from_secs(3),
            })],
        }],
        content_hash: String::new(),
    }
}

/// A plugin wrapper whose Status can fail and whose Encrypt can lie about the key ID.
struct Plugin {
    inner: ReferenceKms,
    status_down: AtomicBool,
    encrypt_key_id: Mutex<Option<String>>,
}

impl Plugin {
    fn new(key_id: &str) -> Arc<Self> {
        Arc::new(Self {
            inner: ReferenceKms::generate(key_id),
            status_down: AtomicBool::new(false),
            encrypt_key_id: Mutex::new(None),
        })
    }
    fn count(&self) -> (usize, usize, usize) {
        let c = &self.inner.calls;
        (
            c.status.load(Ordering::SeqCst),
            c.encrypt.load(Ordering::SeqCst),
            c.decrypt.load(Ordering::SeqCst),
        )
    }
}

impl KmsV2Service for Plugin {
    fn status(&self) -> Result<StatusResponse, KmsError> {
        if self.status_down.load(Ordering::SeqCst) {
            return Err(KmsError::Unavailable {
                endpoint: "test".into(),
                reason: "plugin down".into(),
            });
        }
        KmsV2Service::status(&self.inner)
    }
    fn encrypt(&self, uid: &str, plaintext: &[u8]) -> Result<EncryptResponse, KmsError> {
        let mut response = KmsV2Service::encrypt(&self.inner, uid, plaintext)?;
        if let Some(lie) = self.encrypt_key_id.lock().unwrap().clone() {
            response.key_id = lie;
        }
        Ok(response)
    }
    fn decrypt(&self, request: &DecryptRequest) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        KmsV2Service::decrypt(&self.inner, request)
    }
}

struct Connect(Arc<dyn KmsV2Service>);

impl KmsConnector for Connect {
    fn connect_v2(&self, _: &str, _: &str, _: Duration) -> Result<Arc<dyn KmsV2Service>, KmsError> {
        Ok(Arc::clone(&self.0))
    }
    fn connect_v1(
        &self,
        _: &str,
        endpoint: &str,
        _: Duration,
    ) -> Result<Arc<dyn KmsV1Service>, KmsError> {
        Err(KmsError::Unavailable {
            endpoint: endpoint.into(),
            reason: "v2 only".into(),
        })
    }
}

/// A clock the test moves by hand.
#[derive(Default)]
struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + self.0.load(Ordering::SeqCst))
    }
}

fn secrets(
    service: Arc<dyn KmsV2Service>,
    options: KmsV2Options,
    name: &str,
) -> ResourceTransformer {
    let t = Transformers::build_with(
        &config(name),
        Arc::new(Connect(service)),
        &BuildOptions { kms_v2: options },
    )
    .unwrap();
    t.for_resource(&GroupResource::parse("secrets"))
}

const AAD: &[u8] = b"/registry/secrets/default/s1";

/// The upstream test mock: Decrypt is base64-decoding, Status key ID `1`.
struct Base64Plugin;

impl KmsV2Service for Base64Plugin {
    fn status(&self) -> Result<StatusResponse, KmsError> {
        Ok(StatusResponse {
            version: "v2beta1".into(),
            healthz: "ok".into(),
            key_id: "1".into(),
        })
    }
    fn encrypt(&self, _: &str, plaintext: &[u8]) -> Result<EncryptResponse, KmsError> {
        Ok(EncryptResponse {
            ciphertext: B64.encode(plaintext).into_bytes(),
            key_id: "1".into(),
            annotations: Default::default(),
        })
    }
    fn decrypt(&self, request: &DecryptRequest) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        B64.decode(&request.ciphertext)
            .map(Zeroizing::new)
            .map_err(|e| KmsError::Rejected(e.to_string()))
    }
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
}

#[test]
fn upstream_recorded_values_8_6() {
    let t = secrets(
        Arc::new(Base64Plugin),
        KmsV2Options::default(),
        "kms-provider",
    );
    let aad = |name: &str| {
        format!("/43da1478-5e9c-4ef3-a92a-2b19d540c8a5/registry/secrets/kms-v2-legacy-data/{name}")
    };
    let mode0 = hex::decode(
        include_str!("data/kmsv2-8.6a.hex")
            .split_whitespace()
            .collect::<String>(),
    )
    .unwrap();
    let mode1 = hex::decode(
        include_str!("data/kmsv2-8.6b.hex")
            .split_whitespace()
            .collect::<String>(),
    )
    .unwrap();
    assert_eq!(
        sha256_hex(&mode0),
        "430a7089aa9e7b3100fc02f51532a381da4085b3d6d94377040e643e6ba2e5dd"
    );
    assert_eq!(
        sha256_hex(&mode1),
        "290cfd18cddca79f6d00460776d41932cecfb0881f39cf8f4bafca58de08fd7d"
    );

    let a = t
        .read(&mode0, aad("dek-source-aes-gcm-key").as_bytes())
        .unwrap();
    assert_eq!(a.plaintext.len(), 366);
    assert_eq!(
        sha256_hex(&a.plaintext),
        "15a8eb00c3b297165ca4dbc5a69d4544a6b2578c6f991542be99ded3ea25ecae"
    );
    assert!(
        a.stale,
        "mode-0 data is stale for a 1.29+ (seed) write state"
    );
    assert_eq!(a.provider.key_id.as_deref(), Some("1"));

    let b = t
        .read(
            &mode1,
            aad("dek-source-hkdf-sha256-xnonce-aes-gcm-seed").as_bytes(),
        )
        .unwrap();
    assert_eq!(b.plaintext.len(), 405);
    assert_eq!(
        sha256_hex(&b.plaintext),
        "149b0a839beaf2dc3e0be77f8307ae2f4a5da7970c2795a905374a4d0744841a"
    );
    assert!(!b.stale);

    let err = t.read(&mode1, aad("other").as_bytes()).unwrap_err();
    assert_eq!(err.to_string(), "cipher: message authentication failed");
}

#[test]
fn key_id_rotation_new_writes_carry_new_key_and_old_values_are_stale() {
    let plugin = Plugin::new("key-a");
    let options = KmsV2Options {
        status_interval: Duration::ZERO,
        ..Default::default()
    };
    let t = secrets(plugin.clone(), options, "p");
    let old = t.write(b"v1", AAD).unwrap();
    assert_eq!(t.write_provider().key_id.as_deref(), Some("key-a"));
    let first = t.read(&old, AAD).unwrap();
    assert_eq!(
        (first.plaintext.as_slice(), first.stale),
        (&b"v1"[..], false)
    );

    plugin.inner.add_kek("key-b", [7; 32]);
    plugin.inner.set_current_key_id("key-b");
    let new = t.write(b"v2", AAD).unwrap();
    let read_new = t.read(&new, AAD).unwrap();
    assert_eq!(read_new.provider.key_id.as_deref(), Some("key-b"));
    assert!(!read_new.stale);
    let read_old = t.read(&old, AAD).unwrap();
    assert_eq!(read_old.plaintext, b"v1");
    assert_eq!(read_old.provider.key_id.as_deref(), Some("key-a"));
    assert!(read_old.stale, "a value under the previous key ID is stale");
    assert!(t.identify(&old).unwrap().unwrap().stale);
    assert!(!t.identify(&new).unwrap().unwrap().stale);
    assert!(
        t.identify(b"k8s:enc:kms:v2:p:not an EncryptedObject")
            .unwrap()
            .is_none(),
        "an unparseable value is never counted as current"
    );
    assert_eq!(plugin.count().1, 2, "one Encrypt per key ID");

    // The uncached read-back asks the plugin's Decrypt even for the provider's own write state.
    let decrypts = plugin.count().2;
    t.verify_write(&new, b"v2", AAD).unwrap();
    assert_eq!(
        plugin.count().2,
        decrypts + 1,
        "verify_write called the plugin's Decrypt"
    );
    assert!(t.verify_write(&new, b"other", AAD).is_err());
}

#[test]
fn plugin_calls_only_when_upstream_makes_them() {
    let plugin = Plugin::new("key-a");
    let t = secrets(plugin.clone(), KmsV2Options::default(), "p");
    let values: Vec<Vec<u8>> = (0..20)
        .map(|i| t.write(format!("value {i}").as_bytes(), AAD).unwrap())
        .collect();
    for v in &values {
        t.read(v, AAD).unwrap();
    }
    assert_eq!(
        plugin.count(),
        (1, 1, 0),
        "one Status + one Encrypt; no call per write; own writes never Decrypt"
    );

    // A new "process" reading the same data: Status only, one Decrypt for the one seed, no Encrypt.
    let reader = secrets(plugin.clone(), KmsV2Options::default(), "p");
    for v in &values {
        let out = reader.read(v, AAD).unwrap();
        assert!(!out.stale);
    }
    assert_eq!(plugin.count(), (2, 1, 1));
}

#[test]
fn writes_expire_three_minutes_after_the_last_good_status_reads_continue() {
    let plugin = Plugin::new("key-a");
    let clock = Arc::new(ManualClock::default());
    let options = KmsV2Options {
        clock: clock.clone(),
        ..Default::default()
    };
    let t = secrets(plugin.clone(), options, "p");
    let value = t.write(b"x", AAD).unwrap();
    plugin.status_down.store(true, Ordering::SeqCst);
    clock.0.store(170, Ordering::SeqCst);
    t.write(b"still coasting", AAD).unwrap();
    clock.0.store(181, Ordering::SeqCst);
    let err = t.write(b"too late", AAD).unwrap_err().to_string();
    assert!(
        err.starts_with("encryptedDEKSource with keyID hash \"sha256:"),
        "{err}"
    );
    assert!(
        err.contains("expired at 2027-01-15T08:03:00Z (current time is 2027-01-15T08:03:01Z)"),
        "{err}"
    );
    assert_eq!(t.read(&value, AAD).unwrap().plaintext, b"x");
    plugin.status_down.store(false, Ordering::SeqCst);
    clock.0.store(400, Ordering::SeqCst);
    t.write(b"recovered", AAD).unwrap();
}

#[test]
fn encrypt_must_answer_with_the_status_key_id() {
    let plugin = Plugin::new("key-a");
    *plugin.encrypt_key_id.lock().unwrap() = Some("someone-else".into());
    let options = KmsV2Options {
        status_interval: Duration::ZERO,
        ..Default::default()
    };
    let t = secrets(plugin.clone(), options, "p");
    let err = t.write(b"x", AAD).unwrap_err().to_string();
    assert!(err.contains("failed to rotate DEK"), "{err}");

    // With a state in place, a failed rotation keeps writing under the old key ID ("coasting").
    *plugin.encrypt_key_id.lock().unwrap() = None;
    let old = t.write(b"x", AAD).unwrap();
    plugin.inner.add_kek("key-b", [9; 32]);
    plugin.inner.set_current_key_id("key-b");
    *plugin.encrypt_key_id.lock().unwrap() = Some("key-a".into());
    let coasting = t.write(b"y", AAD).unwrap();
    assert_eq!(
        t.read(&coasting, AAD).unwrap().provider.key_id.as_deref(),
        Some("key-a")
    );
    assert!(
        !t.read(&old, AAD).unwrap().stale,
        "staleness follows the state actually written with"
    );
}

#[test]
fn reads_fail_until_the_plugin_answered_once() {
    let plugin = Plugin::new("key-a");
    let writer = secrets(plugin.clone(), KmsV2Options::default(), "p");
    let value = writer.write(b"x", AAD).unwrap();
    plugin.status_down.store(true, Ordering::SeqCst);
    let reader = secrets(plugin.clone(), KmsV2Options::default(), "p");
    let err = reader.read(&value, AAD).unwrap_err().to_string();
    assert_eq!(err, "failed to perform status section of the healthz check for KMS Provider p, error: KMS plugin test unavailable: plugin down");
    // Decoding errors come first, without any plugin call.
    assert_eq!(
        reader
            .read(b"k8s:enc:kms:v2:p:", AAD)
            .unwrap_err()
            .to_string(),
        "encrypted data is empty"
    );
}

#[test]
fn legacy_write_mode_uses_counter_nonces() {
    let plugin = Plugin::new("key-a");
    let options = KmsV2Options {
        write_type: atrest_core::providers::kmsv2::DekSourceType::AesGcmKey,
        ..Default::default()
    };
    let t = secrets(plugin.clone(), options, "p");
    let value = t.write(b"x", AAD).unwrap();
    let object = atrest_core::providers::kmsv2::EncryptedObject::decode(
        &value[b"k8s:enc:kms:v2:p:".len()..],
    )
    .unwrap();
    assert_eq!(object.encrypted_dek_source_type, 0);
    assert_eq!(
        &object.encrypted_data[4..12],
        &1_000_000_001u64.to_le_bytes()
    );
    assert!(!t.read(&value, AAD).unwrap().stale);
}

#[test]
fn one_provider_instance_per_config_entry() {
    // Like kube-apiserver: the resources of one entry share the provider (one write state, one
    // Encrypt); the same settings in another entry are another instance.
    let plugin = Plugin::new("key-a");
    let mut cfg = config("p");
    cfg.resources[0].resources.push("configmaps".into());
    let mut other = cfg.resources[0].clone();
    other.resources = vec!["pods".into()];
    cfg.resources.push(other);
    let t = Transformers::build(&cfg, Arc::new(Connect(plugin.clone()))).unwrap();
    for resource in ["secrets", "configmaps"] {
        t.for_resource(&GroupResource::parse(resource))
            .write(b"x", AAD)
            .unwrap();
    }
    assert_eq!(plugin.count().1, 1);
    t.for_resource(&GroupResource::parse("pods"))
        .write(b"x", AAD)
        .unwrap();
    assert_eq!(plugin.count().1, 2);
}
