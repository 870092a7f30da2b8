//! Talking to the apiservers a rotation watches: kubectl's credential flags (and a kubeconfig's
//! current context), one HTTPS client, and what each apiserver's `/metrics` says it has loaded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use atrest_rotate::metrics::{self, KeyIdSeen, LoadedConfig};
use yaml_rust2::{Yaml, YamlLoader};
use zeroize::Zeroizing;

use crate::commands::common::parse_duration;

/// `--apiserver` and kubectl's credential flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ApiserverArgs {
    /// An apiserver to watch, e.g. `https://10.0.0.1:6443` (repeat for every control-plane node).
    #[arg(long = "apiserver", value_name = "URL")]
    pub apiservers: Vec<String>,
    /// kubeconfig whose current context supplies the credentials (and CA) for the apiservers.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// CA bundle to verify the apiservers' certificates.
    #[arg(long, value_name = "FILE")]
    pub certificate_authority: Option<PathBuf>,
    /// Client certificate (PEM).
    #[arg(long, value_name = "FILE")]
    pub client_certificate: Option<PathBuf>,
    /// Client key (PEM).
    #[arg(long, value_name = "FILE")]
    pub client_key: Option<PathBuf>,
    /// Bearer token.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Do not verify the apiservers' certificates (insecure).
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
    /// Time for one request to an apiserver.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

/// What one apiserver answered.
#[derive(Debug, Clone)]
pub enum Observation {
    Loaded(Vec<LoadedConfig>),
    Failed(String),
}

impl Observation {
    /// The one hash it reports (`None` when it failed or reports none or several).
    pub fn hash(&self) -> Option<&str> {
        match self {
            Observation::Loaded(l) if l.len() == 1 => Some(&l[0].hash),
            _ => None,
        }
    }

    pub fn id_hashes(&self) -> Vec<String> {
        match self {
            Observation::Loaded(l) => l
                .iter()
                .filter_map(|c| c.apiserver_id_hash.clone())
                .collect(),
            Observation::Failed(_) => Vec::new(),
        }
    }

    /// For messages: the hash, or why there is none.
    pub fn describe(&self) -> String {
        match self {
            Observation::Loaded(l) if l.is_empty() => format!(
                "no {} sample (kube-apiserver ≥ 1.34 with --encryption-provider-config exports it)",
                metrics::LAST_CONFIG_INFO
            ),
            Observation::Loaded(l) if l.len() == 1 => l[0].hash.clone(),
            Observation::Loaded(l) => format!(
                "several configs at once: {}",
                l.iter()
                    .map(|c| c.hash.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Observation::Failed(e) => e.clone(),
        }
    }
}

/// An HTTP client for the watched apiservers.
pub struct Apiservers {
    pub urls: Vec<String>,
    http: reqwest::Client,
    token: Option<Zeroizing<String>>,
}

/// The credentials of a kubeconfig's current context.
#[derive(Default)]
struct KubeCreds {
    ca: Option<Vec<u8>>,
    insecure: bool,
    cert: Option<Vec<u8>>,
    key: Option<Zeroizing<Vec<u8>>>,
    token: Option<Zeroizing<String>>,
}

fn read(path: &Path, what: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))
}

/// Reads `path`'s current context: cluster CA / insecure flag, user cert/key/token (file or data).
fn kubeconfig(path: &Path) -> anyhow::Result<KubeCreds> {
    let text = String::from_utf8(read(path, "kubeconfig")?)
        .with_context(|| format!("{}: not UTF-8", path.display()))?;
    let docs = YamlLoader::load_from_str(&text)
        .with_context(|| format!("{}: not YAML", path.display()))?;
    let doc = docs.first().cloned().unwrap_or(Yaml::Null);
    let base = path.parent().unwrap_or(Path::new("."));
    let current = doc["current-context"]
        .as_str()
        .with_context(|| format!("{}: no current-context", path.display()))?;
    let named = |list: &str, name: &str, field: &str| -> Yaml {
        doc[list]
            .as_vec()
            .and_then(|v| v.iter().find(|e| e["name"].as_str() == Some(name)))
            .map(|e| e[field].clone())
            .unwrap_or(Yaml::BadValue)
    };
    let context = named("contexts", current, "context");
    let cluster = named(
        "clusters",
        context["cluster"].as_str().unwrap_or(""),
        "cluster",
    );
    let user = named("users", context["user"].as_str().unwrap_or(""), "user");
    let file_or_data = |y: &Yaml, file: &str, data: &str| -> anyhow::Result<Option<Vec<u8>>> {
        use base64::Engine;
        if let Some(d) = y[data].as_str() {
            return base64::engine::general_purpose::STANDARD
                .decode(d.trim())
                .map(Some)
                .with_context(|| format!("{}: {data} is not base64", path.display()));
        }
        match y[file].as_str() {
            Some(f) => read(&base.join(f), file).map(Some),
            None => Ok(None),
        }
    };
    let token = match (user["token"].as_str(), user["tokenFile"].as_str()) {
        (Some(t), _) => Some(Zeroizing::new(t.to_string())),
        (None, Some(f)) => Some(Zeroizing::new(
            String::from_utf8_lossy(&read(&base.join(f), "tokenFile")?)
                .trim()
                .to_string(),
        )),
        _ => None,
    };
    Ok(KubeCreds {
        ca: file_or_data(
            &cluster,
            "certificate-authority",
            "certificate-authority-data",
        )?,
        insecure: cluster["insecure-skip-tls-verify"]
            .as_bool()
            .unwrap_or(false),
        cert: file_or_data(&user, "client-certificate", "client-certificate-data")?,
        key: file_or_data(&user, "client-key", "client-key-data")?.map(Zeroizing::new),
        token,
    })
}

/// Why a request to `url` failed, with the flag that fixes a TLS problem: reqwest's own message
/// stops at "error sending request", the cause (an untrusted certificate, a missing client
/// certificate) is further down the source chain.
fn request_error(url: &str, err: &reqwest::Error) -> String {
    let mut causes = Vec::new();
    let mut source: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        if !causes.iter().any(|c: &String| c.contains(&text)) {
            causes.push(text);
        }
        source = e.source();
    }
    let chain = causes.join(": ");
    let lower = chain.to_lowercase();
    // The innermost cause says it all for TLS ("invalid peer certificate: UnknownIssuer").
    let cause = causes.last().cloned().unwrap_or_default();
    if lower.contains("certificate")
        && (lower.contains("invalid peer")
            || lower.contains("unknownissuer")
            || lower.contains("not valid for name")
            || lower.contains("expired"))
    {
        format!(
            "TLS: the certificate {url} presents is not trusted ({cause}): pass the CA that signed it with --certificate-authority (or the kubeconfig's certificate-authority), or --insecure-skip-tls-verify"
        )
    } else if lower.contains("certificaterequired")
        || lower.contains("certificate required")
        || lower.contains("bad certificate")
        || lower.contains("badcertificate")
    {
        format!(
            "TLS: {url} refused the client certificate ({cause}): pass one it trusts with --client-certificate/--client-key (or the kubeconfig's), or use --token"
        )
    } else {
        format!("unreachable: {chain}")
    }
}

impl Apiservers {
    /// Builds the client; flags win over the kubeconfig.
    pub fn new(args: &ApiserverArgs) -> anyhow::Result<Apiservers> {
        let mut creds = match &args.kubeconfig {
            Some(p) => kubeconfig(p)?,
            None => KubeCreds::default(),
        };
        if let Some(p) = &args.certificate_authority {
            creds.ca = Some(read(p, "--certificate-authority")?);
        }
        if let Some(p) = &args.client_certificate {
            creds.cert = Some(read(p, "--client-certificate")?);
        }
        if let Some(p) = &args.client_key {
            creds.key = Some(Zeroizing::new(read(p, "--client-key")?));
        }
        if let Some(t) = &args.token {
            creds.token = Some(Zeroizing::new(t.clone()));
        }
        let mut builder = reqwest::Client::builder()
            .timeout(args.request_timeout)
            .connect_timeout(args.request_timeout)
            .no_proxy();
        if let Some(ca) = &creds.ca {
            let certs = reqwest::Certificate::from_pem_bundle(ca)
                .context("the apiserver CA is not a PEM bundle")?;
            builder = builder.tls_certs_only(certs);
        }
        match (&creds.cert, &creds.key) {
            (Some(cert), Some(key)) => {
                let mut pem = Zeroizing::new(cert.clone());
                pem.push(b'\n');
                pem.extend_from_slice(key);
                let identity = reqwest::Identity::from_pem(&pem)
                    .context("the client certificate/key for the apiservers is not PEM")?;
                builder = builder.identity(identity);
            }
            (None, None) => {}
            _ => bail!("--client-certificate and --client-key go together"),
        }
        if args.insecure_skip_tls_verify || creds.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder.build().context("building the HTTPS client")?;
        if args.apiservers.is_empty() {
            bail!(
                "name every control-plane apiserver with --apiserver https://HOST:PORT (repeat it)"
            );
        }
        let mut urls = Vec::new();
        for u in &args.apiservers {
            let u = u.trim().trim_end_matches('/').to_string();
            if !(u.starts_with("https://") || u.starts_with("http://")) {
                bail!("--apiserver {u}: use https://HOST:PORT");
            }
            if !urls.contains(&u) {
                urls.push(u);
            }
        }
        Ok(Apiservers {
            urls,
            http,
            token: creds.token,
        })
    }

    async fn get_metrics(&self, url: &str) -> Result<String, String> {
        let mut req = self.http.get(format!("{url}/metrics"));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.as_str());
        }
        let resp = req.send().await.map_err(|e| request_error(url, &e))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| format!("reading /metrics: {e}"))?;
        if !status.is_success() {
            let snippet: String = body.chars().take(200).collect();
            return Err(format!(
                "/metrics answered {status}{}: {snippet}",
                match status.as_u16() {
                    401 => " (not authenticated: pass --token, --client-certificate/--client-key or --kubeconfig)",
                    403 => " (the identity needs `get` on the non-resource URL /metrics)",
                    _ => "",
                }
            ));
        }
        Ok(body)
    }

    /// What every apiserver reports as loaded, in `urls` order (one after the other: a control
    /// plane has a handful, each bounded by --request-timeout).
    pub async fn observe(&self) -> Vec<Observation> {
        let mut out = Vec::with_capacity(self.urls.len());
        for u in &self.urls {
            out.push(match self.get_metrics(u).await {
                Ok(text) => Observation::Loaded(metrics::loaded_configs(&text)),
                Err(e) => Observation::Failed(e),
            });
        }
        out
    }

    /// Every apiserver's KMS v2 Status key-ID samples.
    pub async fn key_ids(&self) -> Vec<Result<Vec<KeyIdSeen>, String>> {
        let mut out = Vec::with_capacity(self.urls.len());
        for u in &self.urls {
            out.push(self.get_metrics(u).await.map(|t| metrics::key_ids_seen(&t)));
        }
        out
    }

    /// Refuses (naming the apiserver) unless every one reports `hash` as its loaded config.
    pub async fn require_loaded(&self, hash: &str, what: &str) -> anyhow::Result<()> {
        let mut bad = Vec::new();
        for (url, obs) in self.urls.iter().zip(self.observe().await) {
            if obs.hash() != Some(hash) {
                bad.push(format!("{url} reports {}", obs.describe()));
            }
        }
        if !bad.is_empty() {
            bail!(
                "not every apiserver has loaded {what} ({hash}): {}. Writing with it now would break reads through them; install it everywhere first",
                bad.join("; ")
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_current_context_credentials() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), b"CA PEM").unwrap();
        std::fs::write(dir.path().join("token"), b"file-token\n").unwrap();
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\ncurrent-context: b\nclusters:\n- name: one\n  cluster:\n    server: https://x:6443\n    certificate-authority-data: Q0EgREFUQQ==\n- name: two\n  cluster:\n    certificate-authority: ca.crt\n    insecure-skip-tls-verify: true\ncontexts:\n- name: a\n  context: {cluster: one, user: u1}\n- name: b\n  context: {cluster: two, user: u2}\nusers:\n- name: u1\n  user: {token: inline}\n- name: u2\n  user:\n    tokenFile: token\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n",
        )
        .unwrap();
        let c = kubeconfig(&path).unwrap();
        assert_eq!(
            c.ca.as_deref(),
            Some(&b"CA PEM"[..]),
            "relative to the kubeconfig"
        );
        assert!(c.insecure);
        assert_eq!(c.cert.as_deref(), Some(&b"CERT"[..]));
        assert_eq!(c.key.as_deref().map(|k| k.as_slice()), Some(&b"KEY"[..]));
        assert_eq!(c.token.as_deref().map(|t| t.as_str()), Some("file-token"));
        std::fs::write(&path, "current-context: nope\n").unwrap();
        assert!(
            kubeconfig(&path).is_ok(),
            "missing entries give no credentials"
        );
        std::fs::write(&path, "clusters: []\n").unwrap();
        let err = kubeconfig(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("current-context"), "{err}");
    }
}
