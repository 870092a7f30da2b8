//! `aws-kms`: AWS KMS over its JSON API, SigV4-signed ([`sign`], AWS's `aws-sigv4` crate) with
//! credentials from the standard chain ([`credentials`], [`profile`]). The KEK is a symmetric KMS
//! key; the seed is sent to `Encrypt` and back from `Decrypt`.
//!
//! * Configured key (`--aws-key-id`): a key id, key ARN, alias name or alias ARN. Every
//!   background refresh calls `DescribeKey` on it, so re-pointing an alias to a new key is a KEK
//!   rotation: the new key's ARN becomes current (new key id in Status) without a restart.
//! * Key id: `aws-kms-<hex>`, `<hex>` = first 16 bytes of SHA-256 over the key ARN the configured
//!   id resolves to. Equal on every node (whatever form of the key they were given), different for
//!   every key, never reused (ARNs are not).
//! * Encrypt uses the resolved ARN (not the alias), so the key id always names the key that
//!   really encrypted, even while the alias moves; the encryption context
//!   (`--aws-encryption-context`) is bound into the ciphertext. Each ciphertext carries the ARN in
//!   the KMS v2 annotation [`KEY_ARN_ANNOTATION`] (the ARN is not secret; kube-apiserver stores
//!   annotations with the object).
//! * Decrypt accepts a blob only if its key is the current key or one this plugin served before
//!   ([`history`], kept in a state file across restarts), unless `--aws-allow-any-key`: the
//!   plugin's IAM identity may be allowed to decrypt with other keys, and an etcd writer must not
//!   be able to make kube-apiserver accept a seed wrapped under a key the operator never chose.
//!   The annotation's ARN must match the key id, and KMS is asked to decrypt with exactly that key
//!   (`KeyId`), so a blob of another key fails in KMS too.
//! * Health: `DescribeKey` (key state: `Disabled`, `PendingDeletion`… are unhealthy with the
//!   state as reason) plus the server's wrap/unwrap probe; throttling, denied permissions and an
//!   unreachable endpoint surface as the error KMS or the transport gave.

pub mod api;
pub mod credentials;
pub mod history;
pub mod profile;
mod sign;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use self::api::{Failure, KmsApi, KmsError};
use self::credentials::CredentialChain;
use self::history::History;
use self::profile::{Env, ProfileSet};
use crate::backend::{derive_key_id, BackendError, KeyBackend, Wrapped};

/// KMS v2 annotation carrying the ARN of the key that encrypted the seed.
pub const KEY_ARN_ANNOTATION: &str = "key-arn.aws-kms.atrest.io";

/// What `atrest kms serve --backend aws-kms` flags become.
#[derive(Debug, Clone)]
pub struct AwsKmsConfig {
    /// `--aws-key-id`: key id, key ARN, `alias/NAME` or alias ARN.
    pub key_id: String,
    /// `--aws-region`; else the chain (`AWS_REGION`, `AWS_DEFAULT_REGION`, profile, IMDS).
    pub region: Option<String>,
    /// `--aws-endpoint-url`; else `AWS_ENDPOINT_URL_KMS`, `AWS_ENDPOINT_URL`, the regional one.
    pub endpoint_url: Option<String>,
    /// `--aws-encryption-context k=v`, bound into every ciphertext.
    pub encryption_context: BTreeMap<String, String>,
    /// `--aws-allow-any-key`: decrypt blobs of any key KMS lets this identity use.
    pub allow_any_key: bool,
    /// Per HTTP request.
    pub timeout: Duration,
    /// `--aws-state-dir`: where the served-keys record lives; `None`:
    /// [`history::default_state_dir`].
    pub state_dir: Option<PathBuf>,
}

impl AwsKmsConfig {
    /// Defaults for `key_id` (tests, callers that set fields one by one).
    pub fn new(key_id: impl Into<String>) -> AwsKmsConfig {
        AwsKmsConfig {
            key_id: key_id.into(),
            region: None,
            endpoint_url: None,
            encryption_context: BTreeMap::new(),
            allow_any_key: false,
            timeout: Duration::from_secs(3),
            state_dir: None,
        }
    }
}

/// The key id of a KMS key ARN.
pub fn key_id_for(arn: &str) -> String {
    derive_key_id("aws-kms-", &[arn.as_bytes()])
}

#[derive(Clone)]
struct Current {
    arn: String,
    key_id: String,
}

/// The AWS KMS backend.
pub struct AwsKmsBackend {
    api: KmsApi,
    config: AwsKmsConfig,
    current: RwLock<Option<Current>>,
    history: History,
}

impl AwsKmsBackend {
    /// Resolves region, endpoint and credentials from `config` and this process's environment,
    /// then resolves the key. Fails for what a restart will not fix (no region or credentials,
    /// unknown key, wrong key type, access denied); starts anyway, unhealthy, when KMS is
    /// unreachable or throttling or the key is disabled (the background refresh recovers).
    pub async fn connect(config: AwsKmsConfig) -> Result<AwsKmsBackend, BackendError> {
        Self::connect_with_env(config, Env::from_process()).await
    }

    /// [`connect`](Self::connect) with an explicit environment.
    pub async fn connect_with_env(
        config: AwsKmsConfig,
        env: Env,
    ) -> Result<AwsKmsBackend, BackendError> {
        if config.key_id.trim().is_empty() {
            return Err(BackendError::Config("--aws-key-id is empty".into()));
        }
        if let Some(k) = config.encryption_context.keys().find(|k| k.is_empty()) {
            return Err(BackendError::Config(format!(
                "--aws-encryption-context: empty key {k:?}"
            )));
        }
        let profiles = ProfileSet::load(&env).map_err(|e| BackendError::Config(e.to_string()))?;
        let region = match config
            .region
            .clone()
            .filter(|r| !r.is_empty())
            .or_else(|| profile::region(&env, &profiles))
        {
            Some(r) => r,
            None => credentials::imds_region(&env).await.map_err(|e| {
                BackendError::Config(format!(
                    "no AWS region: give --aws-region or set AWS_REGION (instance metadata: {e})"
                ))
            })?,
        };
        let endpoint = endpoint_url(&config, &env, &region)?;
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| BackendError::Config(format!("HTTP client: {e}")))?;
        let creds = CredentialChain::new(env, profiles, region.clone(), http.clone());
        let state_dir = config
            .state_dir
            .clone()
            .unwrap_or_else(history::default_state_dir);
        let history = History::open(&state_dir, &config.key_id, &region)?;
        let backend = AwsKmsBackend {
            api: KmsApi::new(http, endpoint, region, creds),
            config,
            current: RwLock::new(None),
            history,
        };
        if let Err(e) = backend.resolve().await {
            match e.failure {
                Failure::Invalid | Failure::Denied | Failure::Ciphertext => {
                    return Err(BackendError::Config(e.message))
                }
                Failure::Outage | Failure::Throttled | Failure::KeyState => {
                    tracing::warn!(error = %e, "AWS KMS not usable at start; serving unhealthy until it is");
                }
            }
        }
        tracing::info!(
            aws_key_id = %backend.config.key_id,
            key_arn = %backend.current().map(|c| c.arn).unwrap_or_default(),
            key_id = %backend.current_key_id().unwrap_or_default(),
            region = %backend.api.region(),
            endpoint = %backend.api.endpoint(),
            encryption_context_keys = ?backend.config.encryption_context.keys().collect::<Vec<_>>(),
            allow_any_key = backend.config.allow_any_key,
            served_keys = %backend.history.path().display(),
            "aws-kms backend ready"
        );
        Ok(backend)
    }

    fn current(&self) -> Option<Current> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_current(&self, c: Current) {
        match self.current.write() {
            Ok(mut g) => *g = Some(c),
            Err(p) => *p.into_inner() = Some(c),
        }
    }

    /// `DescribeKey` on the configured key: follows the alias, records the ARN, checks the state.
    async fn resolve(&self) -> Result<(), KmsError> {
        let v = self
            .api
            .call("DescribeKey", &json!({ "KeyId": self.config.key_id }))
            .await?;
        let meta = &v["KeyMetadata"];
        let invalid = |message: String| KmsError {
            failure: Failure::Invalid,
            message,
        };
        let arn = meta["Arn"]
            .as_str()
            .filter(|a| a.starts_with("arn:"))
            .ok_or_else(|| invalid("KMS DescribeKey: answer has no key ARN".into()))?
            .to_string();
        // AWS always names both; moto leaves KeyUsage null for the default (ENCRYPT_DECRYPT).
        let usage = meta["KeyUsage"].as_str().unwrap_or("ENCRYPT_DECRYPT");
        let spec = meta["KeySpec"]
            .as_str()
            .or_else(|| meta["CustomerMasterKeySpec"].as_str())
            .unwrap_or("SYMMETRIC_DEFAULT");
        if usage != "ENCRYPT_DECRYPT" || spec != "SYMMETRIC_DEFAULT" {
            return Err(invalid(format!(
                "KMS key {arn} ({}) is {spec}/{usage}; atrest needs a symmetric encryption key (SYMMETRIC_DEFAULT, ENCRYPT_DECRYPT)",
                self.config.key_id
            )));
        }
        let key_id = key_id_for(&arn);
        let old = self.current();
        if old.as_ref().map(|c| &c.arn) != Some(&arn) {
            if let Some(o) = &old {
                tracing::info!(aws_key_id = %self.config.key_id, old_key_arn = %o.arn, new_key_arn = %arn, %key_id, "KMS key changed (alias re-pointed): new writes use the new key");
            }
            if let Err(e) = self.history.record(&arn) {
                tracing::warn!(error = %e, key_arn = %arn, "cannot record the served KMS key; after a restart its values need --aws-allow-any-key");
            }
            self.set_current(Current {
                arn: arn.clone(),
                key_id,
            });
        }
        match meta["KeyState"].as_str().unwrap_or("Enabled") {
            "Enabled" => Ok(()),
            state => {
                let when = match (state, meta["DeletionDate"].as_f64()) {
                    ("PendingDeletion", Some(t)) => format!(
                        " (deletion at unix time {t:.0}; cancel with aws kms cancel-key-deletion)"
                    ),
                    _ => String::new(),
                };
                Err(KmsError {
                    failure: Failure::KeyState,
                    message: format!(
                        "KMS key {arn} ({}) is {state}{when}: Encrypt and Decrypt fail until it is enabled",
                        self.config.key_id
                    ),
                })
            }
        }
    }

    fn known(&self, arn: &str) -> bool {
        self.current().is_some_and(|c| c.arn == arn) || self.history.contains(arn)
    }

    fn with_context(&self, mut body: Value) -> Value {
        if !self.config.encryption_context.is_empty() {
            body["EncryptionContext"] = json!(self.config.encryption_context);
        }
        body
    }
}

/// Zeroizes a JSON string that held (base64) key material. (The HTTP layer's own buffers are
/// reqwest's; as in the vault backend, they are freed, not wiped.)
fn wipe(v: &mut Value) {
    if let Value::String(s) = v {
        zeroize::Zeroize::zeroize(s);
    }
}

fn unavailable(e: KmsError) -> BackendError {
    BackendError::Unavailable(e.message)
}

/// `--aws-endpoint-url`, `AWS_ENDPOINT_URL_KMS`, `AWS_ENDPOINT_URL`, else the regional (FIPS
/// with `AWS_USE_FIPS_ENDPOINT=true`) endpoint; must be an http(s) URL with a host.
fn endpoint_url(config: &AwsKmsConfig, env: &Env, region: &str) -> Result<String, BackendError> {
    let (given, what) = match (
        &config.endpoint_url,
        env.get("AWS_ENDPOINT_URL_KMS"),
        env.get("AWS_ENDPOINT_URL"),
    ) {
        (Some(u), _, _) => (u.clone(), "--aws-endpoint-url"),
        (None, Some(u), _) => (u.to_string(), "AWS_ENDPOINT_URL_KMS"),
        (None, None, Some(u)) => (u.to_string(), "AWS_ENDPOINT_URL"),
        (None, None, None) => {
            let fips = env
                .get("AWS_USE_FIPS_ENDPOINT")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"));
            let host = if fips { "kms-fips" } else { "kms" };
            return Ok(format!(
                "https://{host}.{region}.{}",
                credentials::dns_suffix(region)
            ));
        }
    };
    let url = reqwest::Url::parse(&given)
        .map_err(|e| BackendError::Config(format!("{what} {given:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none_or(str::is_empty)
        || url.query().is_some()
    {
        return Err(BackendError::Config(format!(
            "{what} {given:?}: need http(s)://host[:port]"
        )));
    }
    Ok(given.trim_end_matches('/').to_string())
}

#[async_trait::async_trait]
impl KeyBackend for AwsKmsBackend {
    fn kind(&self) -> &'static str {
        "aws-kms"
    }

    fn current_key_id(&self) -> Result<String, BackendError> {
        self.current().map(|c| c.key_id).ok_or_else(|| {
            BackendError::Unavailable(format!(
                "KMS key {} not resolved yet (DescribeKey has not succeeded)",
                self.config.key_id
            ))
        })
    }

    async fn wrap(&self, plaintext: &[u8]) -> Result<Wrapped, BackendError> {
        let cur = self.current().ok_or_else(|| {
            BackendError::Unavailable(format!("KMS key {} not resolved yet", self.config.key_id))
        })?;
        let b64 = Zeroizing::new(B64.encode(plaintext));
        let mut body = self.with_context(json!({ "KeyId": cur.arn, "Plaintext": b64.as_str() }));
        let result = self.api.call("Encrypt", &body).await;
        wipe(&mut body["Plaintext"]);
        let v = result.map_err(unavailable)?;
        let answered = v["KeyId"].as_str().unwrap_or("");
        if answered != cur.arn {
            return Err(BackendError::Unavailable(format!(
                "KMS Encrypt answered with key {answered:?}, asked for {}",
                cur.arn
            )));
        }
        let ciphertext = v["CiphertextBlob"]
            .as_str()
            .and_then(|s| B64.decode(s).ok())
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                BackendError::Unavailable("KMS Encrypt: answer has no CiphertextBlob".into())
            })?;
        Ok(Wrapped {
            key_id: cur.key_id,
            ciphertext,
            annotations: BTreeMap::from([(KEY_ARN_ANNOTATION.to_string(), cur.arn.into_bytes())]),
        })
    }

    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        // Which key the blob says it is under: the annotation (bound to the key id), else a
        // served key with this key id.
        let arn = match annotations.get(KEY_ARN_ANNOTATION) {
            Some(raw) => {
                let a = std::str::from_utf8(raw)
                    .ok()
                    .filter(|a| a.starts_with("arn:"))
                    .ok_or_else(|| {
                        BackendError::BadCiphertext(format!(
                            "annotation {KEY_ARN_ANNOTATION} is not a key ARN"
                        ))
                    })?;
                if key_id_for(a) != key_id {
                    return Err(BackendError::BadCiphertext(format!(
                        "key id {key_id} does not belong to KMS key {a} named in {KEY_ARN_ANNOTATION}"
                    )));
                }
                Some(a.to_string())
            }
            None => self
                .current()
                .filter(|c| c.key_id == key_id)
                .map(|c| c.arn)
                .or_else(|| self.history.find_key_id(key_id, key_id_for)),
        };
        let known = arn.as_deref().is_some_and(|a| self.known(a));
        if !known && !self.config.allow_any_key {
            let what = match &arn {
                Some(a) => format!("KMS key {a}"),
                None => format!("no {KEY_ARN_ANNOTATION} annotation"),
            };
            tracing::warn!(
                %key_id,
                blob_key = %what,
                aws_key_id = %self.config.key_id,
                current_key_arn = %self.current().map(|c| c.arn).unwrap_or_default(),
                served_keys = %self.history.path().display(),
                "refusing to decrypt: the blob's key is not the configured key nor one this plugin served (--aws-allow-any-key accepts any key KMS lets this identity use)"
            );
            return Err(BackendError::UnknownKeyId(format!(
                "{key_id} ({what}: not the configured key nor one this plugin served)"
            )));
        }
        let mut body = self.with_context(json!({ "CiphertextBlob": B64.encode(ciphertext) }));
        if let Some(a) = &arn {
            body["KeyId"] = json!(a);
        }
        let v = self
            .api
            .call("Decrypt", &body)
            .await
            .map_err(|e| match e.failure {
                Failure::Ciphertext => BackendError::BadCiphertext(format!(
                "{} (corrupt, another key, or another --aws-encryption-context than at encryption)",
                e.message
            )),
                Failure::Invalid => BackendError::BadCiphertext(e.message),
                _ => BackendError::Unavailable(e.message),
            })?;
        if let Some(a) = &arn {
            if v["KeyId"].as_str() != Some(a.as_str()) {
                return Err(BackendError::BadCiphertext(format!(
                    "KMS Decrypt used key {:?}, the blob names {a}",
                    v["KeyId"].as_str().unwrap_or("")
                )));
            }
        }
        let mut v = v;
        let pt = v["Plaintext"]
            .as_str()
            .ok_or_else(|| BackendError::Unavailable("KMS Decrypt: answer has no Plaintext".into()))
            .and_then(|pt| {
                B64.decode(pt.as_bytes()).map(Zeroizing::new).map_err(|_| {
                    BackendError::Unavailable("KMS Decrypt: Plaintext is not base64".into())
                })
            });
        wipe(&mut v["Plaintext"]);
        pt
    }

    async fn refresh(&self) -> Result<(), BackendError> {
        self.resolve().await.map_err(unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_from_arns() {
        let a = key_id_for("arn:aws:kms:eu-west-1:111122223333:key/1234");
        assert!(
            a.starts_with("aws-kms-") && a.len() == "aws-kms-".len() + 32,
            "{a}"
        );
        assert_eq!(a, key_id_for("arn:aws:kms:eu-west-1:111122223333:key/1234"));
        assert_ne!(a, key_id_for("arn:aws:kms:eu-west-1:111122223333:key/1235"));
    }

    #[test]
    fn endpoints() {
        let env = Env::from_pairs([]);
        let mut c = AwsKmsConfig::new("alias/x");
        assert_eq!(
            endpoint_url(&c, &env, "eu-west-1").unwrap(),
            "https://kms.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            endpoint_url(&c, &env, "cn-north-1").unwrap(),
            "https://kms.cn-north-1.amazonaws.com.cn"
        );
        let fips = Env::from_pairs([("AWS_USE_FIPS_ENDPOINT", "true")]);
        assert_eq!(
            endpoint_url(&c, &fips, "us-east-1").unwrap(),
            "https://kms-fips.us-east-1.amazonaws.com"
        );
        let env_url = Env::from_pairs([("AWS_ENDPOINT_URL", "http://127.0.0.1:4566/")]);
        assert_eq!(
            endpoint_url(&c, &env_url, "us-east-1").unwrap(),
            "http://127.0.0.1:4566"
        );
        c.endpoint_url = Some("ftp://x".into());
        let e = endpoint_url(&c, &env, "us-east-1").unwrap_err().to_string();
        assert!(e.contains("--aws-endpoint-url"), "{e}");
        c.endpoint_url = Some("not a url".into());
        assert!(endpoint_url(&c, &env, "us-east-1").is_err());
    }
}
