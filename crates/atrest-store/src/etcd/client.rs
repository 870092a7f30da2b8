//! Connecting to etcd and classifying its errors.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, KvClient, TlsOptions};

use super::EtcdError;

/// Connection settings, named as etcdctl and kube-apiserver name them.
#[derive(Debug, Clone)]
pub struct EtcdSettings {
    /// `host:port` or `http(s)://host:port`.
    pub endpoints: Vec<String>,
    pub cacert: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Time to establish a connection.
    pub dial_timeout: Duration,
    /// Time for one request.
    pub command_timeout: Duration,
}

impl Default for EtcdSettings {
    fn default() -> Self {
        Self {
            endpoints: vec!["127.0.0.1:2379".into()],
            cacert: None,
            cert: None,
            key: None,
            dial_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
        }
    }
}

/// A connected client plus the settings it came from (for retries and messages).
#[derive(Clone)]
pub struct EtcdConnection {
    pub client: Client,
    pub settings: EtcdSettings,
}

/// Largest gRPC response accepted (range pages shrink adaptively when a page would be larger).
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

impl EtcdConnection {
    pub fn kv(&self) -> KvClient {
        self.client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(MAX_RESPONSE_BYTES)
    }

    pub fn endpoints(&self) -> String {
        self.settings.endpoints.join(",")
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|source| EtcdError::ReadFile {
        path: path.display().to_string(),
        source,
    })
}

/// Connects and checks that the cluster answers (a linearizable read of one key), so an unreachable
/// endpoint, a wrong CA or a refused client certificate fail here with a clear message.
pub async fn connect(settings: &EtcdSettings) -> Result<EtcdConnection, EtcdError> {
    if settings.endpoints.is_empty() || settings.endpoints.iter().any(|e| e.trim().is_empty()) {
        return Err(EtcdError::Settings(
            "--endpoints must name at least one endpoint".into(),
        ));
    }
    if settings.cert.is_some() != settings.key.is_some() {
        return Err(EtcdError::Settings(
            "--cert and --key must be given together".into(),
        ));
    }
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(settings.dial_timeout)
        .with_timeout(settings.command_timeout)
        .with_keep_alive(Duration::from_secs(10), settings.command_timeout);
    let tls_wanted = settings.cacert.is_some() || settings.cert.is_some();
    if tls_wanted {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &settings.cacert {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&settings.cert, &settings.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        opts = opts.with_tls(tls);
    }
    let endpoints: Vec<String> = settings
        .endpoints
        .iter()
        .map(|e| {
            let e = e.trim();
            let scheme = if tls_wanted { "https://" } else { "http://" };
            match e.split_once("://") {
                Some(("http", rest)) if tls_wanted => format!("https://{rest}"),
                Some(_) => e.to_string(),
                None => format!("{scheme}{e}"),
            }
        })
        .collect();
    let unreachable = |e: etcd_client::Error| {
        let mut detail = describe(&e);
        if let Some(hint) = tls_hint(settings, &endpoints, &detail) {
            detail.push_str(" — ");
            detail.push_str(&hint);
        }
        EtcdError::Unreachable {
            endpoints: endpoints.join(","),
            detail,
        }
    };
    let client = Client::connect(&endpoints, Some(opts))
        .await
        .map_err(unreachable)?;
    let conn = EtcdConnection {
        client,
        settings: EtcdSettings {
            endpoints: endpoints.clone(),
            ..settings.clone()
        },
    };
    // Probe: retried briefly so one dead member of several does not fail the connect.
    let mut last = None;
    for _ in 0..3 {
        match conn.kv().get("/atrest-connectivity-probe", None).await {
            Ok(_) => return Ok(conn),
            Err(e) if is_transient(&e) => last = Some(e),
            Err(e) => return Err(unreachable(e)),
        }
    }
    Err(unreachable(last.expect("at least one attempt")))
}

/// What to do when the failure looks like a TLS mismatch: the transport errors themselves
/// (`Cancelled: operation was canceled`, `received fatal alert: BadCertificate`) do not say.
fn tls_hint(settings: &EtcdSettings, endpoints: &[String], detail: &str) -> Option<String> {
    let plain: Vec<&str> = endpoints
        .iter()
        .filter(|e| e.starts_with("http://"))
        .map(String::as_str)
        .collect();
    let has = |needles: &[&str]| needles.iter().any(|n| detail.contains(n));
    if !plain.is_empty() {
        // A TLS server drops a plaintext HTTP/2 connection: the client sees it cancelled/reset.
        if has(&[
            "operation was canceled",
            "Cancelled",
            "connection reset",
            "broken pipe",
            "h2 protocol error",
            "frame with invalid size",
        ]) || (detail.ends_with("transport error")
            && !has(&["Connection refused", "tcp connect"]))
        {
            return Some(format!(
                "{} is plain http; if the server uses TLS, use https:// endpoints with --cacert (and --cert/--key when it asks for client certificates)",
                plain.join(",")
            ));
        }
        return None;
    }
    // A refused handshake often surfaces only as a bare transport error or a cancelled call.
    let bare = (detail.ends_with("transport error") || has(&["operation was canceled"]))
        && !has(&["Connection refused", "tcp connect"]);
    if settings.cert.is_none() && bare {
        return Some("if the server asks for client certificates, give --cert and --key (signed by a CA the server trusts)".to_string());
    }
    if has(&[
        "CertificateRequired",
        "certificate required",
        "BadCertificate",
        "bad certificate",
    ]) {
        return Some(match (&settings.cert, &settings.key) {
            (None, _) | (_, None) => "the server asks for a client certificate: give --cert and --key (signed by a CA the server trusts)".to_string(),
            (Some(cert), Some(_)) => format!(
                "the server refused the client certificate --cert {}: is it signed by a CA the server trusts (etcd's --trusted-ca-file)?",
                cert.display()
            ),
        });
    }
    if has(&[
        "UnknownIssuer",
        "unknown issuer",
        "invalid peer certificate",
    ]) {
        return Some(match &settings.cacert {
            None => {
                "the server certificate is not trusted: give --cacert with the CA that signed it"
                    .to_string()
            }
            Some(ca) => format!(
                "the server certificate is not signed by --cacert {}: give the CA that signed it",
                ca.display()
            ),
        });
    }
    if has(&[
        "InvalidContentType",
        "corrupt message",
        "wrong version number",
    ]) {
        return Some(
            "the server does not speak TLS: use http:// endpoints without --cacert/--cert/--key"
                .to_string(),
        );
    }
    None
}

/// The error with its whole source chain (tonic hides the TLS/connect cause in sources).
pub fn describe(e: &etcd_client::Error) -> String {
    let mut text = match e {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Errors worth retrying: no connection, leader changes, timeouts, overload.
pub fn is_transient(e: &etcd_client::Error) -> bool {
    use tonic::Code;
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(s) => match s.code() {
            Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::Cancelled => true,
            Code::ResourceExhausted => !is_too_large(e),
            Code::Unknown => [
                "leader changed",
                "timed out",
                "no leader",
                "connection",
                "transport",
                "stopped",
            ]
            .iter()
            .any(|m| s.message().contains(m)),
            _ => false,
        },
        _ => false,
    }
}

/// Whether a range response was refused for its size (the page must shrink).
pub fn is_too_large(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.message().contains("message length too large")
                || s.message().contains("larger than max")
        }
        _ => false,
    }
}

/// Whether the requested revision has been compacted away.
pub fn is_compacted(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("compacted"))
}

/// Fetches one key: `(value, mod_revision, lease)`.
pub async fn get_one(
    conn: &EtcdConnection,
    key: &[u8],
) -> Result<Option<(Vec<u8>, i64, i64)>, EtcdError> {
    let r = super::scan::with_retry(conn, "get", || {
        let mut kv = conn.kv();
        let key = key.to_vec();
        async move { kv.get(key, None).await }
    })
    .await?;
    Ok(r.kvs()
        .first()
        .map(|kv| (kv.value().to_vec(), kv.mod_revision(), kv.lease())))
}

/// The etcd cluster's ID (from a response header), e.g. to name per-cluster state files.
pub async fn cluster_id(conn: &EtcdConnection) -> Result<u64, EtcdError> {
    let r = super::scan::with_retry(conn, "get", || {
        let mut kv = conn.kv();
        async move { kv.get("/atrest-connectivity-probe", None).await }
    })
    .await?;
    Ok(r.header().map(|h| h.cluster_id()).unwrap_or(0))
}
