//! Outage versus undecryptable: a KMS v2 plugin that does not answer, says it is unhealthy, or
//! fails Decrypt because its backend is down must surface as [`TransformError::Outage`] naming the
//! provider and endpoint (from reads, writes, `identify` and `check_kms`); a plugin refusing the
//! ciphertext is an ordinary, undecryptable error.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use atrest_core::config::{
    EncryptionConfiguration, KmsApiVersion, KmsConfiguration, ProviderConfiguration,
    ResourceConfiguration,
};
use atrest_core::kms::testing::ReferenceKms;
use atrest_core::kms::{
    DecryptRequest, EncryptResponse, KmsConnector, KmsError, KmsV1Service, KmsV2Service,
    StatusResponse,
};
use atrest_core::{FailureKind, GroupResource, ResourceTransformer, TransformError, Transformers};
use zeroize::Zeroizing;

const ENDPOINT: &str = "unix:///run/kms/outage.sock";
const AAD: &[u8] = b"/registry/secrets/default/s1";

/// What the fake plugin does.
const UP: u8 = 0;
const STATUS_DOWN: u8 = 1;
const UNHEALTHY: u8 = 2;
/// Status fine, Decrypt fails like a sealed Vault behind atrest's plugin (gRPC Unavailable).
const BACKEND_DOWN: u8 = 3;
/// Status fine, Decrypt refuses the ciphertext (gRPC InvalidArgument).
const REFUSES: u8 = 4;

struct Plugin {
    inner: ReferenceKms,
    mode: AtomicU8,
}

impl Plugin {
    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

impl KmsV2Service for Plugin {
    fn status(&self) -> Result<StatusResponse, KmsError> {
        let mut status = KmsV2Service::status(&self.inner)?;
        match self.mode.load(Ordering::SeqCst) {
            STATUS_DOWN => Err(KmsError::Unavailable {
                endpoint: ENDPOINT.into(),
                reason: "rpc error: code = Unavailable desc = connection refused".into(),
            }),
            UNHEALTHY => {
                status.healthz = "vault backend unhealthy: sealed".into();
                Ok(status)
            }
            _ => Ok(status),
        }
    }
    fn encrypt(&self, uid: &str, plaintext: &[u8]) -> Result<EncryptResponse, KmsError> {
        KmsV2Service::encrypt(&self.inner, uid, plaintext)
    }
    fn decrypt(&self, request: &DecryptRequest) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        match self.mode.load(Ordering::SeqCst) {
            BACKEND_DOWN => Err(KmsError::Failing {
                endpoint: ENDPOINT.into(),
                reason: "rpc error: code = Unavailable desc = vault transit/decrypt/k: HTTP 503 Service Unavailable: Vault is sealed".into(),
            }),
            REFUSES => Err(KmsError::Rejected(
                "rpc error: code = InvalidArgument desc = ciphertext rejected".into(),
            )),
            _ => KmsV2Service::decrypt(&self.inner, request),
        }
    }
}

struct Connect(Arc<Plugin>);

impl KmsConnector for Connect {
    fn connect_v2(&self, _: &str, _: &str, _: Duration) -> Result<Arc<dyn KmsV2Service>, KmsError> {
        Ok(Arc::clone(&self.0) as Arc<dyn KmsV2Service>)
    }
    fn connect_v1(&self, _: &str, e: &str, _: Duration) -> Result<Arc<dyn KmsV1Service>, KmsError> {
        Err(KmsError::Unavailable {
            endpoint: e.into(),
            reason: "v2 only".into(),
        })
    }
}

fn transformers(plugin: &Arc<Plugin>) -> Transformers {
    let config = EncryptionConfiguration {
        resources: vec![ResourceConfiguration {
            resources: vec!["secrets".into()],
            providers: vec![ProviderConfiguration::Kms(KmsConfiguration {
                api_version: KmsApiVersion::V2,
                name: "vault".into(),
                endpoint: ENDPOINT.into(),
                cachesize: None,
                timeout: Duration::from_secs(3),
            })],
        }],
        content_hash: String::new(),
    };
    Transformers::build(&config, Arc::new(Connect(Arc::clone(plugin)))).unwrap()
}

fn secrets(t: &Transformers) -> ResourceTransformer {
    t.for_resource(&GroupResource::parse("secrets"))
}

fn plugin() -> Arc<Plugin> {
    Arc::new(Plugin {
        inner: ReferenceKms::generate("key-1"),
        mode: AtomicU8::new(UP),
    })
}

fn assert_outage(err: &TransformError, text: &str) {
    assert_eq!(err.kind(), FailureKind::Outage, "{err}");
    let o = err.outage().unwrap();
    assert_eq!(
        (o.provider.as_str(), o.endpoint.as_str()),
        ("vault", ENDPOINT)
    );
    assert!(err.to_string().contains(text), "{err}");
    assert!(
        o.to_string().starts_with(&format!(
            "KMS provider \"vault\" at {ENDPOINT} is not available: "
        )),
        "{o}"
    );
}

#[test]
fn a_plugin_that_cannot_say_its_key_id_is_an_outage_everywhere() {
    let p = plugin();
    let value = secrets(&transformers(&p)).write(b"x", AAD).unwrap();
    for (mode, text) in [
        (STATUS_DOWN, "failed to perform status section of the healthz check for KMS Provider vault"),
        (UNHEALTHY, "kmsv2 Provider vault is not healthy, error: got unexpected healthz status: vault backend unhealthy: sealed"),
    ] {
        p.set(mode);
        // A fresh process: no state yet.
        let t = transformers(&p);
        let rt = secrets(&t);
        let outage = t.check_kms().unwrap_err();
        assert!(outage.message.contains(text), "{outage}");
        assert_eq!(rt.check_kms().unwrap_err(), outage);
        // identify never guesses "current" without the key ID.
        assert_outage(&rt.identify(&value).unwrap_err(), text);
        assert_outage(&rt.read(&value, AAD).unwrap_err(), text);
        assert_outage(&rt.write(b"y", AAD).unwrap_err(), text);
    }
    p.set(UP);
    let t = transformers(&p);
    t.check_kms().unwrap();
    assert!(!secrets(&t).identify(&value).unwrap().unwrap().stale);
}

#[test]
fn decrypt_failing_in_the_backend_is_an_outage_a_refusal_is_not() {
    let p = plugin();
    let value = secrets(&transformers(&p)).write(b"x", AAD).unwrap();

    p.set(BACKEND_DOWN);
    let t = transformers(&p);
    t.check_kms().unwrap(); // Status answers
    let err = secrets(&t).read(&value, AAD).unwrap_err();
    assert_outage(&err, "failed to decrypt DEK, error: rpc error: code = Unavailable desc = vault transit/decrypt/k: HTTP 503");

    p.set(REFUSES);
    let t = transformers(&p);
    let err = secrets(&t).read(&value, AAD).unwrap_err();
    assert_eq!(err.kind(), FailureKind::Undecryptable);
    assert!(err.outage().is_none());
    assert_eq!(
        err.to_string(),
        "failed to decrypt DEK, error: rpc error: code = InvalidArgument desc = ciphertext rejected"
    );
}

#[test]
fn an_aggregate_with_one_outage_is_an_outage() {
    let outage = TransformError::Outage(atrest_core::KmsOutage {
        provider: "vault".into(),
        endpoint: ENDPOINT.into(),
        message: "failed to decrypt DEK, error: down".into(),
    });
    let agg = TransformError::Aggregate(vec![
        TransformError::msg("cipher: message authentication failed"),
        outage,
    ]);
    assert_eq!(agg.kind(), FailureKind::Outage);
    assert_eq!(
        agg.to_string(),
        "[cipher: message authentication failed, failed to decrypt DEK, error: down]"
    );
    assert_eq!(
        TransformError::msg("no matching prefix found").kind(),
        FailureKind::Undecryptable
    );
}

#[test]
fn kms_error_classification() {
    let failing = KmsError::Failing {
        endpoint: ENDPOINT.into(),
        reason: "rpc error: code = Internal desc = x".into(),
    };
    assert!(failing.is_outage());
    assert_eq!(failing.to_string(), "rpc error: code = Internal desc = x");
    assert!(KmsError::InvalidResponse("empty key_id".into()).is_outage());
    assert!(
        !KmsError::Rejected("rpc error: code = NotFound desc = unknown key id".into()).is_outage()
    );
}
