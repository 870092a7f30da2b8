//! An apiserver stand-in for rotation tests: what kube-apiserver does for encryption at rest, over
//! plain HTTP on a loopback port — or HTTPS ([`TlsServing`]: a server certificate, and client
//! certificates signed by a CA and/or a bearer token as kube-apiserver's authenticators; an
//! unauthenticated request gets 401) — against a real etcd.
//!
//! * It loads **its own copy** of the EncryptionConfiguration with atrest-core (kube-apiserver's
//!   rules), at start, on `POST /reload`, and — like `--encryption-provider-config-automatic-reload`
//!   — on a timer. A file that fails to load keeps the previous config (as upstream does).
//! * `GET /metrics` reports the loaded config exactly as kube-apiserver ≥ 1.34 does:
//!   `apiserver_encryption_config_controller_last_config_info{apiserver_id_hash="sha256:…",
//!   hash="sha256:<hex sha256 of the file's bytes>"} 1`.
//! * For every KMS v2 provider of the loaded config, `/metrics` also asks the plugin's Status and
//!   reports `apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{
//!   apiserver_id_hash, key_id_hash="sha256:<hex of the key ID>", provider_name}` (kube-apiserver
//!   polls Status every minute; the stand-in polls on each scrape).
//! * `GET/PUT /api/v1/namespaces/NS/secrets/NAME`, `GET /api/v1/namespaces/NS/secrets` and
//!   `GET /api/v1/secrets` read and write `<prefix>/secrets/NS/NAME` through the loaded
//!   transformers (the etcd key is the AAD). A value the config cannot read fails the request with
//!   500 and the transformer's error, and a list fails as a whole — as kube-apiserver's do.
//! * It publishes an identity lease `<prefix>/leases/kube-system/apiserver-<hash of hostname>`
//!   labelled `apiserver.kubernetes.io/identity=kube-apiserver` (JSON-encoded, through the
//!   transformers of `leases.coordination.k8s.io`), deleted when the stand-in stops.
//!
//! The body of a PUT is stored as the object's plaintext (JSON, as for custom resources).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use atrest_core::config::{content_hash, load_file, LoadOptions};
use atrest_core::kms::{KmsConnector, NoKms};
use atrest_core::{GroupResource, Transformers};
use etcd_client::{Client, GetOptions};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// How to run a stand-in.
pub struct ApiserverOptions {
    /// This apiserver's copy of the config (its `--encryption-provider-config`).
    pub config: PathBuf,
    pub etcd_endpoints: Vec<String>,
    pub etcd_prefix: String,
    /// Names the identity lease (`apiserver-<hash of hostname>`).
    pub hostname: String,
    /// Re-read the file this often (`None`: only on `POST /reload`).
    pub reload_interval: Option<Duration>,
    /// `--encryption-provider-config-automatic-reload` and gates for loading.
    pub load: LoadOptions,
    /// How KMS providers are reached.
    pub kms: Arc<dyn KmsConnector>,
    /// Serve HTTPS instead of plain HTTP.
    pub tls: Option<TlsServing>,
}

/// HTTPS for a stand-in (PEM files, e.g. from [`crate::TlsFiles`]).
#[derive(Clone)]
pub struct TlsServing {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Authenticate clients presenting a certificate signed by this CA (`--client-ca-file`).
    pub client_ca: Option<PathBuf>,
    /// Authenticate `Authorization: Bearer <token>` (a static token).
    pub token: Option<String>,
}

impl TlsServing {
    /// Whether a request must authenticate (any authenticator configured).
    fn requires_auth(&self) -> bool {
        self.client_ca.is_some() || self.token.is_some()
    }

    fn acceptor(&self) -> Result<tokio_rustls::TlsAcceptor, String> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls::{self, server::WebPkiClientVerifier, RootCertStore};
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .and_then(|i| i.collect())
            .map_err(|e| format!("{}: {e}", self.cert.display()))?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| format!("{}: {e}", self.key.display()))?;
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
                    roots
                        .add(c.map_err(|e| e.to_string())?)
                        .map_err(|e| e.to_string())?;
                }
                // Optional, as kube-apiserver's: a request without a certificate may still
                // authenticate with a token.
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| e.to_string())?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| e.to_string())?;
        Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }
}

impl ApiserverOptions {
    pub fn new(config: PathBuf, etcd_endpoints: Vec<String>, hostname: &str) -> Self {
        ApiserverOptions {
            config,
            etcd_endpoints,
            etcd_prefix: "/registry".into(),
            hostname: hostname.into(),
            reload_interval: Some(Duration::from_millis(200)),
            load: LoadOptions::default(),
            kms: Arc::new(NoKms),
            tls: None,
        }
    }
}

struct Loaded {
    hash: String,
    transformers: Transformers,
    config: atrest_core::EncryptionConfiguration,
}

struct Shared {
    opts: ApiserverOptions,
    id: String,
    loaded: Mutex<Loaded>,
    reload_failures: Mutex<u64>,
}

/// A running stand-in. Dropping it stops the server and removes its lease.
pub struct ApiserverStandIn {
    url: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

fn load(opts: &ApiserverOptions) -> Result<Loaded, String> {
    let config = load_file(&opts.config, &opts.load).map_err(|e| e.to_string())?;
    let transformers =
        Transformers::build(&config, Arc::clone(&opts.kms)).map_err(|e| e.to_string())?;
    Ok(Loaded {
        hash: config.content_hash.clone(),
        transformers,
        config,
    })
}

impl ApiserverStandIn {
    /// Loads the config (panics if it does not load: a test set-up error), publishes the lease and
    /// starts serving.
    pub fn start(opts: ApiserverOptions) -> ApiserverStandIn {
        let loaded = load(&opts).unwrap_or_else(|e| panic!("stand-in {}: {e}", opts.hostname));
        let id = format!(
            "apiserver-{}",
            &content_hash(opts.hostname.as_bytes())["sha256:".len()..][..26]
        );
        let shared = Arc::new(Shared {
            opts,
            id,
            loaded: Mutex::new(loaded),
            reload_failures: Mutex::new(0),
        });
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let scheme = if shared.opts.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://{}", std_listener.local_addr().expect("addr"));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(serve(s, std_listener, stop_rx, ready_tx));
        });
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("stand-in did not start")
            .unwrap_or_else(|e| panic!("stand-in: {e}"));
        ApiserverStandIn {
            url,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT` (`https://` with [`TlsServing`]).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The apiserver ID (the identity lease's name).
    pub fn id(&self) -> &str {
        &self.shared.id
    }

    /// The hash of the config it has loaded.
    pub fn loaded_hash(&self) -> String {
        self.shared.loaded.lock().expect("lock").hash.clone()
    }

    /// Stops serving and removes the lease.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ApiserverStandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lease_key(shared: &Shared) -> String {
    format!(
        "{}/leases/kube-system/{}",
        shared.opts.etcd_prefix.trim_end_matches('/'),
        shared.id
    )
}

async fn put_lease(shared: &Shared, client: &mut Client) -> Result<(), String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let renew =
        atrest_store::decode::format_rfc3339_micro(now.as_secs() as i64, now.subsec_nanos() as i32);
    let lease = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": shared.id,
            "namespace": "kube-system",
            "labels": {
                "apiserver.kubernetes.io/identity": "kube-apiserver",
                "kubernetes.io/hostname": shared.opts.hostname,
            },
        },
        "spec": {
            "holderIdentity": format!("{}_stand-in", shared.id),
            "leaseDurationSeconds": 3600,
            "renewTime": renew,
        },
    });
    let key = lease_key(shared);
    let t = shared
        .loaded
        .lock()
        .expect("lock")
        .transformers
        .for_resource(&GroupResource::new("coordination.k8s.io", "leases"));
    let stored = t
        .write(lease.to_string().as_bytes(), key.as_bytes())
        .map_err(|e| e.to_string())?;
    client
        .put(key, stored, None)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

async fn serve(
    shared: Arc<Shared>,
    listener: std::net::TcpListener,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e.to_string()));
            return;
        }
    };
    let mut client = match Client::connect(&shared.opts.etcd_endpoints, None).await {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(format!("etcd: {e}")));
            return;
        }
    };
    if let Err(e) = put_lease(&shared, &mut client).await {
        let _ = ready.send(Err(format!("lease: {e}")));
        return;
    }
    let acceptor = match shared.opts.tls.as_ref().map(TlsServing::acceptor) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(e)) => {
            let _ = ready.send(Err(format!("TLS: {e}")));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let mut ticker = tokio::time::interval(
        shared
            .opts
            .reload_interval
            .unwrap_or(Duration::from_secs(3600)),
    );
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticker.tick(), if shared.opts.reload_interval.is_some() => { let _ = reload(&shared); }
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    let s = Arc::clone(&shared);
                    let c = client.clone();
                    let acceptor = acceptor.clone();
                    tokio::spawn(async move {
                        match acceptor {
                            None => { let _ = handle(s, c, stream, false).await; }
                            Some(a) => {
                                // A failed handshake (untrusted CA on the client side) just closes.
                                if let Ok(tls) = a.accept(stream).await {
                                    let has_cert = tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty());
                                    let _ = handle(s, c, tls, has_cert).await;
                                }
                            }
                        }
                    });
                }
            }
        }
    }
    let _ = client.delete(lease_key(&shared), None).await;
}

/// Re-reads the file when its hash changed; keeps the old config if the new one does not load.
fn reload(shared: &Shared) -> Result<String, String> {
    let bytes = std::fs::read(&shared.opts.config).map_err(|e| e.to_string())?;
    let current = shared.loaded.lock().expect("lock").hash.clone();
    if content_hash(&bytes) == current {
        return Ok(current);
    }
    match load(&shared.opts) {
        Ok(l) => {
            let hash = l.hash.clone();
            *shared.loaded.lock().expect("lock") = l;
            Ok(hash)
        }
        Err(e) => {
            *shared.reload_failures.lock().expect("lock") += 1;
            Err(e)
        }
    }
}

struct Request {
    method: String,
    path: String,
    /// The `Authorization` header.
    authorization: Option<String>,
    body: Vec<u8>,
}

async fn read_request<S: AsyncRead + Unpin>(stream: &mut S) -> Option<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(&str, &str)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_string())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let authorization = header("authorization");
    let mut body = buf[header_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some(Request {
        method,
        path,
        authorization,
        body,
    })
}

async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: u16,
    content_type: &str,
    body: &[u8],
) {
    let reason = match code {
        200 => "OK",
        201 => "Created",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    let head = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body).await;
    let _ = stream.shutdown().await;
}

/// kube-apiserver's `Status` for a failed request.
fn status(code: u16, reason: &str, message: &str) -> Vec<u8> {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    })
    .to_string()
    .into_bytes()
}

async fn handle<S: AsyncRead + AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut client: Client,
    mut stream: S,
    client_cert: bool,
) -> Option<()> {
    let req = read_request(&mut stream).await?;
    if let Some(tls) = shared.opts.tls.as_ref().filter(|t| t.requires_auth()) {
        let token_ok = match (&tls.token, &req.authorization) {
            (Some(want), Some(got)) => got.strip_prefix("Bearer ") == Some(want.as_str()),
            _ => false,
        };
        if !(token_ok || (client_cert && tls.client_ca.is_some())) {
            let body = status(401, "Unauthorized", "Unauthorized");
            respond(&mut stream, 401, "application/json", &body).await;
            return Some(());
        }
    }
    let path = req.path.split('?').next().unwrap_or("").to_string();
    let secrets = GroupResource::new("", "secrets");
    let prefix = shared.opts.etcd_prefix.trim_end_matches('/').to_string();
    let transformer = || {
        shared
            .loaded
            .lock()
            .expect("lock")
            .transformers
            .for_resource(&secrets)
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), parts.as_slice()) {
        ("GET", ["metrics"]) => {
            let hash = shared.loaded.lock().expect("lock").hash.clone();
            let failures = *shared.reload_failures.lock().expect("lock");
            let id_hash = content_hash(shared.id.as_bytes());
            let text = format!(
                "# HELP apiserver_encryption_config_controller_automatic_reloads_total [ALPHA] Total number of reload successes and failures of encryption configuration split by apiserver identity.\n\
                 # TYPE apiserver_encryption_config_controller_automatic_reloads_total counter\n\
                 apiserver_encryption_config_controller_automatic_reloads_total{{apiserver_id_hash=\"{id_hash}\",status=\"failure\"}} {failures}\n\
                 # HELP apiserver_encryption_config_controller_last_config_info [ALPHA] Information about the last applied encryption configuration with hash as label, split by apiserver identity.\n\
                 # TYPE apiserver_encryption_config_controller_last_config_info gauge\n\
                 apiserver_encryption_config_controller_last_config_info{{apiserver_id_hash=\"{id_hash}\",hash=\"{hash}\"}} 1\n"
            );
            let kms_lines = kms_status_lines(&shared, &id_hash).await;
            let text = format!("{text}{kms_lines}");
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4",
                text.as_bytes(),
            )
            .await;
        }
        ("POST", ["reload"]) => match reload(&shared) {
            Ok(hash) => respond(&mut stream, 200, "text/plain", hash.as_bytes()).await,
            Err(e) => respond(&mut stream, 500, "text/plain", e.as_bytes()).await,
        },
        (method, ["api", "v1", "namespaces", ns, "secrets", name]) => {
            let key = format!("{prefix}/secrets/{ns}/{name}");
            if method == "PUT" {
                let stored = match transformer().write(&req.body, key.as_bytes()) {
                    Ok(s) => s,
                    Err(e) => {
                        let body = status(
                            500,
                            "InternalError",
                            &format!("Internal error occurred: {e}"),
                        );
                        respond(&mut stream, 500, "application/json", &body).await;
                        return Some(());
                    }
                };
                match client.put(key, stored, None).await {
                    Ok(_) => respond(&mut stream, 200, "application/json", &req.body).await,
                    Err(e) => {
                        let body = status(500, "InternalError", &format!("etcd: {e}"));
                        respond(&mut stream, 500, "application/json", &body).await
                    }
                }
                return Some(());
            }
            if method != "GET" {
                respond(
                    &mut stream,
                    405,
                    "application/json",
                    &status(405, "MethodNotAllowed", method),
                )
                .await;
                return Some(());
            }
            let got = client.get(key.clone(), None).await;
            match got {
                Err(e) => {
                    let body = status(500, "InternalError", &format!("etcd: {e}"));
                    respond(&mut stream, 500, "application/json", &body).await
                }
                Ok(resp) => match resp.kvs().first() {
                    None => {
                        let msg = format!("secrets \"{name}\" not found");
                        respond(
                            &mut stream,
                            404,
                            "application/json",
                            &status(404, "NotFound", &msg),
                        )
                        .await
                    }
                    Some(kv) => match transformer().read(kv.value(), key.as_bytes()) {
                        Ok(out) => {
                            respond(&mut stream, 200, "application/json", &out.plaintext).await
                        }
                        Err(e) => {
                            let body = status(
                                500,
                                "InternalError",
                                &format!("Internal error occurred: {e}"),
                            );
                            respond(&mut stream, 500, "application/json", &body).await
                        }
                    },
                },
            }
        }
        ("GET", ["api", "v1", "namespaces", ns, "secrets"]) => {
            list(
                &mut stream,
                &mut client,
                &transformer(),
                &format!("{prefix}/secrets/{ns}/"),
            )
            .await
        }
        ("GET", ["api", "v1", "secrets"]) => {
            list(
                &mut stream,
                &mut client,
                &transformer(),
                &format!("{prefix}/secrets/"),
            )
            .await
        }
        _ => {
            respond(
                &mut stream,
                404,
                "application/json",
                &status(404, "NotFound", &path),
            )
            .await
        }
    }
    Some(())
}

/// The KMS v2 Status metric for every kms v2 provider of the loaded config (a provider whose
/// plugin does not answer is left out, as kube-apiserver records only successful Status calls).
async fn kms_status_lines(shared: &Arc<Shared>, id_hash: &str) -> String {
    let providers: Vec<atrest_core::config::KmsConfiguration> = {
        let loaded = shared.loaded.lock().expect("lock");
        loaded
            .config
            .resources
            .iter()
            .flat_map(|e| e.providers.iter())
            .filter_map(|p| match p {
                atrest_core::config::ProviderConfiguration::Kms(k)
                    if k.api_version == atrest_core::config::KmsApiVersion::V2 =>
                {
                    Some(k.clone())
                }
                _ => None,
            })
            .collect()
    };
    let mut out = String::new();
    for k in providers {
        let kms = Arc::clone(&shared.opts.kms);
        let status = tokio::task::spawn_blocking(move || {
            kms.connect_v2(&k.name, &k.endpoint, k.timeout)
                .and_then(|s| s.status())
                .map(|s| (k.name, s.key_id))
        })
        .await;
        if let Ok(Ok((name, key_id))) = status {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            out.push_str(&format!(
                "apiserver_envelope_encryption_key_id_hash_status_last_timestamp_seconds{{apiserver_id_hash=\"{id_hash}\",key_id_hash=\"{}\",provider_name=\"{name}\"}} {now}\n",
                content_hash(key_id.as_bytes())
            ));
        }
    }
    out
}

/// A list decrypts every item; one unreadable item fails the whole list (kube-apiserver's behaviour).
async fn list<S: AsyncWrite + Unpin>(
    stream: &mut S,
    client: &mut Client,
    t: &atrest_core::ResourceTransformer,
    prefix: &str,
) {
    let resp = match client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let body = status(500, "InternalError", &format!("etcd: {e}"));
            return respond(stream, 500, "application/json", &body).await;
        }
    };
    let mut items = BTreeMap::new();
    for kv in resp.kvs() {
        match t.read(kv.value(), kv.key()) {
            Ok(out) => {
                let value: serde_json::Value = serde_json::from_slice(&out.plaintext)
                    .unwrap_or_else(|_| {
                        serde_json::Value::String(
                            String::from_utf8_lossy(&out.plaintext).into_owned(),
                        )
                    });
                items.insert(String::from_utf8_lossy(kv.key()).into_owned(), value);
            }
            Err(e) => {
                let body = status(
                    500,
                    "InternalError",
                    &format!("Internal error occurred: {e}"),
                );
                return respond(stream, 500, "application/json", &body).await;
            }
        }
    }
    let body = serde_json::json!({
        "kind": "SecretList", "apiVersion": "v1", "metadata": {},
        "items": items.into_values().collect::<Vec<_>>(),
    });
    respond(stream, 200, "application/json", body.to_string().as_bytes()).await
}

/// A blocking HTTP/1.1 request to a stand-in (`url` = `http://127.0.0.1:PORT`): status and body.
/// `Err` when the connection fails.
pub fn http(url: &str, method: &str, path: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body))
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut resp = Vec::new();
    stream
        .read_to_end(&mut resp)
        .map_err(|e| format!("{addr}: {e}"))?;
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{addr}: no HTTP response"))?;
    let status_line = String::from_utf8_lossy(&resp[..end]).into_owned();
    let code = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("{addr}: bad status line {status_line:?}"))?;
    Ok((code, resp[end + 4..].to_vec()))
}
