//! Shared by the `rotate_*` tests: a real etcd, apiserver stand-ins each loading its own copy of
//! the config, an `--install` command that copies a step's file to every node (optionally late),
//! and a client loop reading and writing through every stand-in.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atrest_testkit::{http, ApiserverOptions, ApiserverStandIn, EtcdServer};

pub const KEY1: &str = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=";

/// `secrets` under aescbc `key1`, identity for reads.
pub fn aescbc_config() -> String {
    format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n      - secrets\n    providers:\n      - aescbc:\n          keys:\n            - name: key1\n              secret: {KEY1}\n      - identity: {{}}\n"
    )
}

pub struct ControlPlane {
    pub etcd: EtcdServer,
    pub dir: tempfile::TempDir,
    pub current: PathBuf,
    pub nodes: Vec<PathBuf>,
    pub apiservers: Vec<ApiserverStandIn>,
}

impl ControlPlane {
    /// etcd plus `n` stand-ins, each with its own copy of `current`.
    pub fn start(n: usize, current: &str) -> ControlPlane {
        Self::start_with(n, current, |_| {})
    }

    /// [`start`](Self::start), with each stand-in's options adjusted by `customize` (HTTPS, KMS).
    pub fn start_with(
        n: usize,
        current: &str,
        customize: impl Fn(&mut ApiserverOptions),
    ) -> ControlPlane {
        let etcd = EtcdServer::start();
        let dir = tempfile::tempdir().expect("tempdir");
        let current_path = dir.path().join("current.yaml");
        std::fs::write(&current_path, current).unwrap();
        let mut nodes = Vec::new();
        let mut apiservers = Vec::new();
        for i in 0..n {
            let node = dir.path().join(format!("node{i}"));
            std::fs::create_dir(&node).unwrap();
            let config = node.join("enc.yaml");
            std::fs::write(&config, current).unwrap();
            let mut opts =
                ApiserverOptions::new(config.clone(), etcd.endpoints(), &format!("master-{i}"));
            customize(&mut opts);
            apiservers.push(ApiserverStandIn::start(opts));
            nodes.push(config);
        }
        ControlPlane {
            etcd,
            dir,
            current: current_path,
            nodes,
            apiservers,
        }
    }

    pub fn plan_dir(&self) -> PathBuf {
        self.dir.path().join("plan")
    }

    pub fn install_log(&self) -> PathBuf {
        self.dir.path().join("install.log")
    }

    /// The steps `--install` was run for, in order.
    pub fn installed_steps(&self) -> Vec<String> {
        std::fs::read_to_string(self.install_log())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// An `--install` command: logs the step, then copies the file to node `i` after
    /// `delays[i]` seconds (`None`: never), each copy atomic (temp file + mv).
    pub fn install_cmd(&self, delays: &[Option<u64>]) -> String {
        let mut cmd = format!(
            "echo \"$ATREST_ROTATE_STEP\" >> '{}'",
            self.install_log().display()
        );
        for (node, delay) in self.nodes.iter().zip(delays) {
            let copy = format!(
                "cp \"$ATREST_ROTATE_CONFIG\" '{n}.tmp' && mv '{n}.tmp' '{n}'",
                n = node.display()
            );
            match delay {
                None => {}
                Some(0) => cmd.push_str(&format!(" && {copy}")),
                Some(d) => cmd.push_str(&format!(
                    " && (sleep {d}; {copy}) </dev/null >/dev/null 2>&1 &"
                )),
            }
        }
        cmd
    }

    pub fn urls(&self) -> Vec<String> {
        self.apiservers
            .iter()
            .map(|a| a.url().to_string())
            .collect()
    }

    /// `rotate apply` arguments (without `--install`).
    pub fn apply_args(&self, wait_timeout: &str) -> Vec<String> {
        let mut args = vec![
            "rotate".to_string(),
            "apply".into(),
            format!("--plan={}", self.plan_dir().display()),
            format!("--endpoints={}", self.etcd.endpoint()),
            "--yes".into(),
            format!("--wait-timeout={wait_timeout}"),
            "--poll-interval=300ms".into(),
        ];
        for u in self.urls() {
            args.push(format!("--apiserver={u}"));
        }
        args
    }

    /// `rotate status --plan DIR --endpoints … --apiserver …` plus `extra`.
    pub fn status_args(&self, extra: &[String]) -> Vec<String> {
        let mut args = vec![
            "rotate".to_string(),
            "status".into(),
            format!("--plan={}", self.plan_dir().display()),
            format!("--endpoints={}", self.etcd.endpoint()),
        ];
        for u in self.urls() {
            args.push(format!("--apiserver={u}"));
        }
        args.extend(extra.iter().cloned());
        args
    }

    /// `rotate plan --config CURRENT --out DIR` plus `extra`; panics unless it succeeds.
    pub fn plan(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "rotate".to_string(),
            "plan".into(),
            format!("--config={}", self.current.display()),
            format!("--out={}", self.plan_dir().display()),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = atrest(&args);
        assert_eq!(out.status.code(), Some(0), "plan failed: {}", stderr(&out));
        out
    }

    /// A step's config hash from plan.json.
    pub fn planned_hash(&self, step: &str) -> String {
        let plan: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.plan_dir().join("plan.json")).unwrap())
                .unwrap();
        plan[step]["hash"].as_str().unwrap().to_string()
    }

    /// The milestones recorded in state.json.
    pub fn done(&self) -> Vec<String> {
        let Ok(bytes) = std::fs::read(self.plan_dir().join("state.json")) else {
            return Vec::new();
        };
        let state: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        state["done"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_str().unwrap().to_string())
            .collect()
    }

    /// Stored values under `<prefix>/secrets/`.
    pub fn stored_secrets(&self) -> Vec<(String, Vec<u8>)> {
        let client = atrest_testkit::load::TestClient::connect(&self.etcd);
        client
            .get_prefix("/registry/secrets/")
            .into_iter()
            .map(|(k, v, _)| (k, v))
            .collect()
    }
}

pub fn atrest_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atrest"));
    cmd.env_remove("ETCDCTL_ENDPOINTS")
        .env_remove("ETCDCTL_CACERT")
        .env_remove("ETCDCTL_CERT")
        .env_remove("ETCDCTL_KEY")
        .env_remove("KUBECONFIG");
    cmd
}

pub fn atrest(args: &[String]) -> Output {
    atrest_cmd().args(args).output().expect("run atrest")
}

/// Starts `atrest` with piped output.
pub fn spawn(args: &[String]) -> Child {
    atrest_cmd()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn atrest")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new age identity in `dir` and its recipient: `(identity file, recipient)`. (An X25519
/// recipient: scrypt passphrases would cost seconds per run.)
pub fn age_identity(dir: &Path) -> (PathBuf, String) {
    let identity = dir.join("backup-identity.txt");
    let out = atrest(&[
        "backup".into(),
        "keygen".into(),
        format!("--output={}", identity.display()),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    (identity, stdout(&out).trim().to_string())
}

/// `rotate apply` flags for `--backup DIR/NAME` to a fresh age identity that also opens it for
/// the offline check: `(backup file, flags)`.
pub fn backup_flags(dir: &Path, name: &str) -> (PathBuf, Vec<String>) {
    let (identity, recipient) = age_identity(dir);
    let backup = dir.join(name);
    let flags = vec![
        format!("--backup={}", backup.display()),
        format!("--recipient={recipient}"),
        format!("--backup-identity={}", identity.display()),
    ];
    (backup, flags)
}

pub fn secret_json(ns: &str, name: &str, value: &str) -> Vec<u8> {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": ns},
        "data": {"v": value},
    })
    .to_string()
    .into_bytes()
}

/// The stored bytes of Secret `ns/name` written with `config` (YAML) — as an apiserver running it
/// would write them, but straight to etcd, behind the stand-ins' back.
pub fn stored_with(config: &str, ns: &str, name: &str) -> (String, Vec<u8>) {
    use atrest_core::config::{load_bytes, LoadOptions};
    let cfg = load_bytes(config.as_bytes(), "config.yaml", &LoadOptions::default()).unwrap();
    let t = atrest_core::Transformers::build(&cfg, Arc::new(atrest_core::kms::NoKms)).unwrap();
    let key = format!("/registry/secrets/{ns}/{name}");
    let stored = t
        .for_resource(&atrest_core::GroupResource::new("", "secrets"))
        .write(&secret_json(ns, name, "x"), key.as_bytes())
        .unwrap();
    (key, stored)
}

/// PUTs `n` secrets `ns/s-<i>` through `url`.
pub fn seed(url: &str, ns: &str, n: usize) {
    for i in 0..n {
        let name = format!("s-{i}");
        let (code, body) = http(
            url,
            "PUT",
            &format!("/api/v1/namespaces/{ns}/secrets/{name}"),
            &secret_json(ns, &name, &format!("seed-{i}")),
        )
        .unwrap();
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    }
}

/// A client writing, reading and listing through every stand-in until stopped; every failed
/// request is recorded.
pub struct ClientLoop {
    stop: Arc<AtomicBool>,
    pub failures: Arc<Mutex<Vec<String>>>,
    pub requests: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClientLoop {
    pub fn start(urls: Vec<String>, ns: &str, seeded: usize) -> ClientLoop {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicU64::new(0));
        let (s, f, r, ns) = (
            stop.clone(),
            failures.clone(),
            requests.clone(),
            ns.to_string(),
        );
        let thread = std::thread::spawn(move || {
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                for (n, url) in urls.iter().enumerate() {
                    let name = format!("loop-{n}-{}", i % 20);
                    let path = format!("/api/v1/namespaces/{ns}/secrets/{name}");
                    let seeded_path = format!(
                        "/api/v1/namespaces/{ns}/secrets/s-{}",
                        i as usize % seeded.max(1)
                    );
                    let list = format!("/api/v1/namespaces/{ns}/secrets");
                    let calls: [(&str, &str, Vec<u8>); 4] = [
                        ("PUT", &path, secret_json(&ns, &name, &format!("v{i}"))),
                        ("GET", &path, Vec::new()),
                        ("GET", &seeded_path, Vec::new()),
                        ("GET", &list, Vec::new()),
                    ];
                    for (method, p, body) in calls {
                        r.fetch_add(1, Ordering::Relaxed);
                        match http(url, method, p, &body) {
                            Ok((200, _)) => {}
                            Ok((code, body)) => f.lock().unwrap().push(format!(
                                "{method} {url}{p}: {code} {}",
                                String::from_utf8_lossy(&body)
                            )),
                            Err(e) => f.lock().unwrap().push(format!("{method} {url}{p}: {e}")),
                        }
                    }
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        ClientLoop {
            stop,
            failures,
            requests,
            thread: Some(thread),
        }
    }

    /// Stops the loop and returns the failures.
    pub fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.failures.lock().unwrap().clone()
    }
}

/// Waits (bounded) until `cond` holds.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The mode bits of a path.
pub fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}
