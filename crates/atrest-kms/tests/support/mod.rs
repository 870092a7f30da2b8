//! Test support: real SoftHSM2 tokens and real OpenBao dev servers, in temp dirs, on loopback.
//! A missing tool makes the test FAIL with a message saying what to install (never skip).
#![allow(dead_code)]

pub mod openbao;
pub mod softhsm;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atrest_kms::server::{self, ServeConfig, ServerHandle};
use atrest_kms::{Endpoint, KeyBackend};

/// A socket path in `dir`.
pub fn socket_in(dir: &Path) -> PathBuf {
    dir.join("kms.sock")
}

/// Test server config: fast health loop.
pub fn config(endpoint: Endpoint) -> ServeConfig {
    let mut c = ServeConfig::new(endpoint);
    c.health_interval = Duration::from_millis(200);
    c.call_timeout = Duration::from_secs(3);
    c
}

pub async fn start(config: ServeConfig, backend: Arc<dyn KeyBackend>) -> ServerHandle {
    server::start(config, backend).await.expect("server starts")
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind loopback")
        .local_addr()
        .expect("addr")
        .port()
}

/// Requires `tool` on PATH, else panics with an install hint (the test fails loudly).
pub fn require_tool(tool: &str, hint: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{tool}` is not installed: {hint} (scripts/test installs it)");
}

/// One HTTP GET on loopback (metrics tests); returns (status line, body).
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect metrics");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read");
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}
