//! Shared by the `monitor_*` tests: run `atrest monitor` against a real etcd, scrape it, and
//! compare its gauges with `atrest status -o json`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::etcd_common::{atrest_cmd, code, stderr};

/// A running `atrest monitor`; killed on drop. Its log is in `log`.
pub struct MonitorProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: std::path::PathBuf,
}

impl MonitorProcess {
    /// Starts the monitor with `etcd_args` (from the testkit), `--config config` and fast polls.
    pub fn start(dir: &Path, etcd_args: &[String], config: &Path) -> MonitorProcess {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = dir.join(format!("monitor-{port}.log"));
        let child = atrest_cmd()
            .arg("monitor")
            .args(etcd_args)
            .arg(format!("--config={}", config.display()))
            .arg(format!("--listen={addr}"))
            .args(["--config-poll-interval=1s", "--kms-poll-interval=1s"])
            .env("ATREST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn atrest monitor");
        let mut m = MonitorProcess { child, addr, log };
        let ready = eventually(Duration::from_secs(30), || {
            m.get("/readyz")
                .map(|(s, _)| s.contains(" 200 "))
                .unwrap_or(false)
        });
        assert!(ready, "monitor not ready in 30 s:\n{}", m.log_text());
        assert!(m.child.try_wait().unwrap().is_none(), "{}", m.log_text());
        m
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `(status line, body)`; `None` if the server does not answer.
    pub fn get(&self, path: &str) -> Option<(String, String)> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let (head, body) = buf.split_once("\r\n\r\n")?;
        Some((head.lines().next()?.to_string(), body.to_string()))
    }

    pub fn metrics(&self) -> Metrics {
        let (status, body) = self.get("/metrics").expect("/metrics answers");
        assert!(status.contains(" 200 "), "{status}");
        Metrics(body)
    }

    /// Sends a signal (`STOP`, `CONT`) to the monitor process.
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig}");
    }
}

impl Drop for MonitorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One scrape.
pub struct Metrics(pub String);

impl Metrics {
    /// `atrest_objects` summed by `state` (zero states left out).
    pub fn objects_by_state(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for line in self.0.lines().filter(|l| l.starts_with("atrest_objects{")) {
            let state = label(line, "state").expect("state label");
            let n: u64 = value(line).parse().expect("integer gauge");
            *out.entry(state).or_insert(0) += n;
        }
        out.retain(|_, n| *n > 0);
        out
    }

    /// The value of the first sample whose line starts with `prefix` (name and labels).
    pub fn sample(&self, prefix: &str) -> Option<f64> {
        self.0
            .lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| value(l).parse().ok())
    }

    pub fn has_line(&self, line: &str) -> bool {
        self.0.lines().any(|l| l == line)
    }
}

fn value(line: &str) -> &str {
    line.rsplit(' ').next().unwrap_or("")
}

fn label(line: &str, name: &str) -> Option<String> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &line[start..];
    Some(rest[..rest.find('"')?].to_string())
}

/// What the monitor's states must be for a `status -o json` document.
pub fn expected_states(status: &serde_json::Value) -> BTreeMap<String, u64> {
    let t = &status["totals"];
    let n = |k: &str| t[k].as_u64().unwrap_or_else(|| panic!("totals.{k}"));
    // status counts an unreadable value of an uncovered resource in both `uncovered` and
    // `unreadable`; the monitor gives every object exactly one state.
    let uncovered_unreadable: u64 = status["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["covered"] == false && r["unreadable"] == true)
        .map(|r| r["count"].as_u64().unwrap())
        .sum();
    let mut out = BTreeMap::from([
        ("current".to_string(), n("current")),
        ("stale".to_string(), n("stale_encrypted")),
        ("unencrypted".to_string(), n("unencrypted_covered")),
        ("unreadable".to_string(), n("unreadable")),
        (
            "not_covered".to_string(),
            n("uncovered") - uncovered_unreadable,
        ),
    ]);
    out.retain(|_, n| *n > 0);
    let sum: u64 = out.values().sum();
    assert_eq!(sum, n("objects"), "states must add up to the objects");
    out
}

/// `atrest status -o json` with `etcd_args` and `--config config`.
pub fn status_json(dir: &Path, etcd_args: &[String], config: &Path) -> serde_json::Value {
    let out = atrest_cmd()
        .current_dir(dir)
        .arg("status")
        .args(etcd_args)
        .arg(format!("--config={}", config.display()))
        .args(["-o", "json"])
        .output()
        .expect("run atrest status");
    assert!(
        matches!(code(&out), 0 | 3 | 4),
        "status failed: {}",
        stderr(&out)
    );
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// Polls `f` every 50 ms until it is true or `limit` passed.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the monitor's states equal `status`'s for `config`; panics with both after `limit`.
pub fn assert_matches_status(
    m: &MonitorProcess,
    dir: &Path,
    etcd_args: &[String],
    config: &Path,
    limit: Duration,
) -> BTreeMap<String, u64> {
    let want = expected_states(&status_json(dir, etcd_args, config));
    let mut got = BTreeMap::new();
    let ok = eventually(limit, || {
        got = m.metrics().objects_by_state();
        got == want
    });
    assert!(ok, "monitor {got:?} != status {want:?}\n{}", m.log_text());
    want
}
