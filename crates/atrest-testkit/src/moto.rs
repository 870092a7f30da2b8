//! A real AWS KMS/STS API server for tests: `moto_server` (PyPI `moto[server]`) on a free
//! loopback port, killed on drop, plus a tiny JSON-API caller for setting keys up (moto does not
//! check signatures, so the setup calls go unsigned; the plugin under test signs its own).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A running `moto_server`.
pub struct Moto {
    child: Option<Child>,
    pub port: u16,
    /// `http://127.0.0.1:PORT`, for `--aws-endpoint-url`.
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A free loopback TCP port (someone may take it before it is used: retry on failure).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free loopback port")
        .port()
}

fn require_moto() {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("moto_server").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`moto_server` is not installed: python3 -m pip install 'moto[server]' (scripts/test installs it)"
    );
}

impl Moto {
    /// Starts moto on a free port and waits until it answers KMS calls.
    pub fn start() -> Moto {
        require_moto();
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let mut m = Moto {
                child: None,
                port,
                endpoint: format!("http://127.0.0.1:{port}"),
            };
            match m.spawn() {
                Ok(()) => return m,
                Err(e) => last = e,
            }
        }
        panic!("moto_server did not start (3 attempts): {last}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn moto_server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _)) = self.try_kms("ListKeys", &json!({})) {
                return Ok(());
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                self.child = None;
                return Err(format!("moto_server exited: {status}"));
            }
            if Instant::now() > deadline {
                self.kill();
                return Err("moto_server did not answer within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills the server (all its keys are gone: moto keeps state in memory).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// A fresh server on the same port (empty: no keys).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("moto_server restart: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// SIGSTOP (`pause = true`) or SIGCONT: the server hangs without losing state.
    pub fn pause(&self, pause: bool) {
        let pid = self.child.as_ref().expect("moto running").id().to_string();
        let sig = if pause { "-STOP" } else { "-CONT" };
        let st = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill {sig} {pid}");
    }

    /// One KMS JSON call; (HTTP status, JSON answer).
    pub fn try_kms(&self, op: &str, body: &Value) -> Result<(u16, Value), String> {
        let payload = body.to_string();
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let req = format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/x-amz-json-1.1\r\nX-Amz-Target: TrentService.{op}\r\nAuthorization: AWS4-HMAC-SHA256 Credential=AKIATESTKIT/20260101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            self.port,
            payload.len()
        );
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or("no HTTP status")?;
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        let body = if chunked {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    /// A KMS call that must succeed.
    pub fn kms(&self, op: &str, body: Value) -> Value {
        let (status, v) = self
            .try_kms(op, &body)
            .unwrap_or_else(|e| panic!("moto {op}: {e}"));
        assert!((200..300).contains(&status), "moto {op}: HTTP {status} {v}");
        v
    }

    /// Creates a symmetric key; returns its ARN.
    pub fn create_key(&self, description: &str) -> String {
        let v = self.kms(
            "CreateKey",
            json!({ "Description": description, "KeyUsage": "ENCRYPT_DECRYPT", "KeySpec": "SYMMETRIC_DEFAULT" }),
        );
        v["KeyMetadata"]["Arn"]
            .as_str()
            .expect("CreateKey answer has an Arn")
            .to_string()
    }

    /// Points `alias` (`alias/NAME`) at `arn`, creating it if needed.
    pub fn point_alias(&self, alias: &str, arn: &str) {
        let (status, _) = self
            .try_kms(
                "UpdateAlias",
                &json!({ "AliasName": alias, "TargetKeyId": arn }),
            )
            .expect("moto UpdateAlias");
        if status != 200 {
            self.kms(
                "CreateAlias",
                json!({ "AliasName": alias, "TargetKeyId": arn }),
            );
        }
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}
