//! `vault`: HashiCorp Vault / OpenBao **Transit** over HTTP(S). The KEK lives in Vault; this
//! backend sends the 32-byte seed to `POST /v1/<mount>/encrypt/<key>` and back.
//!
//! * Auth: a token (`--vault-token-file` / `VAULT_TOKEN`), or AppRole (`--vault-role-id`,
//!   `--vault-secret-id-file`); renewable tokens are renewed from the background refresh when
//!   half their TTL has passed, and AppRole logs in again if renewal fails.
//! * TLS: rustls with the platform roots, or only `--vault-ca-file`. Namespaces via
//!   `X-Vault-Namespace`. Transit mount path configurable (`--vault-mount`, default `transit`).
//! * Key id: `vault-v<N>-<hex>`, `<hex>` = first 16 bytes of SHA-256 over (namespace, mount, key
//!   name, version N, creation time of version N). It follows the key's `latest_version`, re-read
//!   in the background, so a server-side `rotate` is picked up without restart; a deleted and
//!   re-created key gets new ids (different creation time), so ids are never reused.
//! * Unwrap checks that the `vault:vN:` prefix of the ciphertext belongs to the key id given, then
//!   lets Vault decrypt.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::backend::{derive_key_id, BackendError, KeyBackend, Wrapped};

/// How to authenticate.
#[derive(Clone)]
pub enum VaultAuth {
    Token(Zeroizing<String>),
    AppRole {
        mount: String,
        role_id: String,
        secret_id: Zeroizing<String>,
    },
}

/// Where the Transit key is.
#[derive(Clone)]
pub struct VaultConfig {
    /// `http(s)://host:port`.
    pub addr: String,
    pub mount: String,
    pub key: String,
    pub namespace: Option<String>,
    pub auth: VaultAuth,
    pub ca_file: Option<PathBuf>,
    /// Per HTTP request.
    pub timeout: Duration,
}

struct TokenState {
    token: Zeroizing<String>,
    renewable: bool,
    ttl: Duration,
    obtained: Instant,
}

#[derive(Clone)]
struct KeyState {
    latest: u64,
    /// version → key id
    ids: BTreeMap<u64, String>,
}

/// The Vault/OpenBao Transit backend.
pub struct VaultBackend {
    config: VaultConfig,
    http: reqwest::Client,
    token: Mutex<TokenState>,
    keys: RwLock<Option<KeyState>>,
}

fn unavailable(what: &str) -> impl FnOnce(reqwest::Error) -> BackendError + '_ {
    move |e| BackendError::Unavailable(format!("vault {what}: {}", e.without_url()))
}

impl VaultBackend {
    /// Builds the HTTP client, logs in (AppRole) and reads the key. Fails clearly if Vault is
    /// unreachable, the token is refused or the key does not exist.
    pub async fn connect(config: VaultConfig) -> Result<VaultBackend, BackendError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .no_proxy();
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca)
                .map_err(|e| BackendError::Config(format!("{}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                BackendError::Config(format!("{}: not a PEM CA bundle: {e}", ca.display()))
            })?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|e| BackendError::Config(format!("HTTP client: {e}")))?;
        let token = TokenState {
            token: Zeroizing::new(String::new()),
            renewable: false,
            ttl: Duration::ZERO,
            obtained: Instant::now(),
        };
        let backend = VaultBackend {
            config,
            http,
            token: Mutex::new(token),
            keys: RwLock::new(None),
        };
        backend.authenticate().await?;
        backend.read_key().await?;
        let id = backend.current_key_id()?;
        tracing::info!(addr = %backend.config.addr, mount = %backend.config.mount, key = %backend.config.key, key_id = %id, "vault transit backend ready");
        Ok(backend)
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}/v1/{}",
            self.config.addr.trim_end_matches('/'),
            path.trim_start_matches('/')
        )
    }

    fn token(&self) -> Zeroizing<String> {
        match self.token.lock() {
            Ok(g) => g.token.clone(),
            Err(p) => p.into_inner().token.clone(),
        }
    }

    fn set_token(&self, state: TokenState) {
        match self.token.lock() {
            Ok(mut g) => *g = state,
            Err(p) => *p.into_inner() = state,
        }
    }

    /// One request; non-2xx answers become errors carrying Vault's `errors` text.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
    ) -> Result<Value, BackendError> {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t);
        }
        if let Some(ns) = &self.config.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(unavailable(path))?;
        let status = resp.status();
        let value: Value = if status == reqwest::StatusCode::NO_CONTENT {
            Value::Null
        } else {
            resp.json().await.unwrap_or(Value::Null)
        };
        if !status.is_success() {
            let errors = value
                .get("errors")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            let msg = format!("vault {path}: HTTP {status}: {errors}");
            return Err(if status == reqwest::StatusCode::BAD_REQUEST {
                BackendError::BadCiphertext(msg)
            } else {
                BackendError::Unavailable(msg)
            });
        }
        Ok(value)
    }

    async fn authenticated(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, BackendError> {
        let token = self.token();
        self.call(method, path, body, Some(&token)).await
    }

    async fn authenticate(&self) -> Result<(), BackendError> {
        match &self.config.auth {
            VaultAuth::Token(t) => {
                let v = self
                    .call(
                        reqwest::Method::GET,
                        "auth/token/lookup-self",
                        None,
                        Some(t),
                    )
                    .await?;
                let data = &v["data"];
                self.set_token(TokenState {
                    token: t.clone(),
                    renewable: data["renewable"].as_bool().unwrap_or(false),
                    ttl: Duration::from_secs(data["ttl"].as_u64().unwrap_or(0)),
                    obtained: Instant::now(),
                });
            }
            VaultAuth::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                let body = json!({ "role_id": role_id, "secret_id": secret_id.as_str() });
                let v = self
                    .call(
                        reqwest::Method::POST,
                        &format!("auth/{mount}/login"),
                        Some(body),
                        None,
                    )
                    .await?;
                let auth = &v["auth"];
                let token = auth["client_token"].as_str().ok_or_else(|| {
                    BackendError::Unavailable("vault AppRole login: no client_token".into())
                })?;
                self.set_token(TokenState {
                    token: Zeroizing::new(token.to_string()),
                    renewable: auth["renewable"].as_bool().unwrap_or(false),
                    ttl: Duration::from_secs(auth["lease_duration"].as_u64().unwrap_or(0)),
                    obtained: Instant::now(),
                });
            }
        }
        Ok(())
    }

    /// Renews the token when half its TTL has passed; AppRole logs in again if that fails.
    async fn maintain_token(&self) -> Result<(), BackendError> {
        let (renewable, due) = match self.token.lock() {
            Ok(g) => (
                g.renewable,
                !g.ttl.is_zero() && g.obtained.elapsed() >= g.ttl / 2,
            ),
            Err(_) => (false, false),
        };
        if !due {
            return Ok(());
        }
        let renewed = if renewable {
            match self
                .authenticated(
                    reqwest::Method::POST,
                    "auth/token/renew-self",
                    Some(json!({})),
                )
                .await
            {
                Ok(v) => {
                    let ttl =
                        Duration::from_secs(v["auth"]["lease_duration"].as_u64().unwrap_or(0));
                    if let Ok(mut g) = self.token.lock() {
                        g.ttl = ttl;
                        g.obtained = Instant::now();
                    }
                    tracing::debug!(ttl_s = ttl.as_secs(), "vault token renewed");
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "vault token renewal failed");
                    false
                }
            }
        } else {
            false
        };
        if !renewed && matches!(self.config.auth, VaultAuth::AppRole { .. }) {
            self.authenticate().await?;
        }
        Ok(())
    }

    /// Reads the Transit key: latest version and creation time of each version.
    async fn read_key(&self) -> Result<(), BackendError> {
        let path = format!("{}/keys/{}", self.config.mount, self.config.key);
        let v = self
            .authenticated(reqwest::Method::GET, &path, None)
            .await?;
        let data = &v["data"];
        let latest = data["latest_version"]
            .as_u64()
            .ok_or_else(|| BackendError::Unavailable(format!("vault {path}: no latest_version")))?;
        let versions = data["keys"]
            .as_object()
            .ok_or_else(|| BackendError::Unavailable(format!("vault {path}: no keys")))?;
        let ns = self.config.namespace.clone().unwrap_or_default();
        let mut ids = BTreeMap::new();
        for (ver, created) in versions {
            let Ok(n) = ver.parse::<u64>() else { continue };
            let created = created.to_string();
            let hash = derive_key_id(
                "",
                &[
                    ns.as_bytes(),
                    self.config.mount.as_bytes(),
                    self.config.key.as_bytes(),
                    ver.as_bytes(),
                    created.as_bytes(),
                ],
            );
            ids.insert(n, format!("vault-v{n}-{hash}"));
        }
        if !ids.contains_key(&latest) {
            return Err(BackendError::Unavailable(format!(
                "vault {path}: latest version {latest} not listed"
            )));
        }
        let changed = {
            let old = self
                .keys
                .read()
                .ok()
                .and_then(|g| g.as_ref().map(|k| k.ids.get(&k.latest).cloned()));
            old.flatten() != ids.get(&latest).cloned()
        };
        if changed {
            tracing::info!(key_id = %ids[&latest], version = latest, "vault transit key version changed");
        }
        let state = KeyState { latest, ids };
        match self.keys.write() {
            Ok(mut g) => *g = Some(state),
            Err(p) => *p.into_inner() = Some(state),
        }
        Ok(())
    }

    fn key_state(&self) -> Result<KeyState, BackendError> {
        let g = self
            .keys
            .read()
            .map_err(|_| BackendError::Unavailable("vault key state poisoned".into()))?;
        g.clone()
            .ok_or_else(|| BackendError::Unavailable("vault key not read yet".into()))
    }

    fn version_of(&self, key_id: &str) -> Option<u64> {
        self.key_state()
            .ok()?
            .ids
            .iter()
            .find(|(_, id)| id.as_str() == key_id)
            .map(|(v, _)| *v)
    }
}

#[async_trait::async_trait]
impl KeyBackend for VaultBackend {
    fn kind(&self) -> &'static str {
        "vault"
    }

    fn current_key_id(&self) -> Result<String, BackendError> {
        let s = self.key_state()?;
        s.ids
            .get(&s.latest)
            .cloned()
            .ok_or_else(|| BackendError::Unavailable("vault key has no latest version".into()))
    }

    async fn wrap(&self, plaintext: &[u8]) -> Result<Wrapped, BackendError> {
        let state = self.key_state()?;
        let key_id = state.ids.get(&state.latest).cloned().unwrap_or_default();
        let b64 = Zeroizing::new(B64.encode(plaintext));
        let body = json!({ "plaintext": b64.as_str(), "key_version": state.latest });
        let path = format!("{}/encrypt/{}", self.config.mount, self.config.key);
        let v = self
            .authenticated(reqwest::Method::POST, &path, Some(body))
            .await?;
        let ct = v["data"]["ciphertext"].as_str().ok_or_else(|| {
            BackendError::Unavailable(format!("vault {path}: no ciphertext in answer"))
        })?;
        let want = format!("vault:v{}:", state.latest);
        if !ct.starts_with(&want) {
            return Err(BackendError::Unavailable(format!(
                "vault {path}: answered with another key version"
            )));
        }
        Ok(Wrapped {
            key_id,
            ciphertext: ct.as_bytes().to_vec(),
            annotations: BTreeMap::new(),
        })
    }

    async fn unwrap(
        &self,
        key_id: &str,
        ciphertext: &[u8],
        _annotations: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, BackendError> {
        let version = match self.version_of(key_id) {
            Some(v) => v,
            None => {
                // Maybe rotated on the server since our last read: re-read once.
                self.read_key().await?;
                self.version_of(key_id)
                    .ok_or_else(|| BackendError::UnknownKeyId(key_id.to_string()))?
            }
        };
        let ct = std::str::from_utf8(ciphertext)
            .map_err(|_| BackendError::BadCiphertext("not a vault ciphertext".into()))?;
        if !ct.starts_with(&format!("vault:v{version}:")) {
            return Err(BackendError::BadCiphertext(
                "ciphertext was not made with this key id".into(),
            ));
        }
        let path = format!("{}/decrypt/{}", self.config.mount, self.config.key);
        let v = self
            .authenticated(
                reqwest::Method::POST,
                &path,
                Some(json!({ "ciphertext": ct })),
            )
            .await?;
        let pt = v["data"]["plaintext"].as_str().ok_or_else(|| {
            BackendError::Unavailable(format!("vault {path}: no plaintext in answer"))
        })?;
        B64.decode(pt.as_bytes())
            .map(Zeroizing::new)
            .map_err(|_| BackendError::Unavailable(format!("vault {path}: bad base64")))
    }

    async fn refresh(&self) -> Result<(), BackendError> {
        self.maintain_token().await?;
        self.read_key().await
    }
}
