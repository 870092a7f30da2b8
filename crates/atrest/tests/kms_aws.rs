//! `atrest kms serve --backend aws-kms` through the real binary against a real AWS KMS API server
//! on loopback (`moto_server`), called over its unix socket with atrest's KMS v2 client and
//! through `atrest encrypt`/`decrypt` with a kube-apiserver EncryptionConfiguration.
//!
//! Moto differs from AWS in ways these tests rely on knowingly: it does not check signatures
//! (the plugin signs anyway), it lets `Encrypt`/`Decrypt` use a disabled key (so a disabled key is
//! seen through `DescribeKey`'s `KeyState`, which AWS reports too), and it keeps state in memory
//! (a restarted moto has no keys).

mod cli_common;
use cli_common::atrest_stdin as atrest;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atrest_core::kms::{DecryptRequest, EncryptResponse, KmsConnector, KmsError, KmsV2Service};
use atrest_kms::backends::aws::{key_id_for, KEY_ARN_ANNOTATION};
use atrest_kms::client::GrpcKms;
use atrest_testkit::{free_port, Moto};
use serde_json::json;

const ALIAS: &str = "alias/k8s";

/// A running `atrest kms serve --backend aws-kms`, killed on drop.
struct Plugin {
    child: Child,
    sock: PathBuf,
    metrics: SocketAddr,
    log: PathBuf,
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Plugin {
    fn endpoint(&self) -> String {
        format!("unix://{}", self.sock.display())
    }

    fn client(&self) -> Arc<dyn KmsV2Service> {
        GrpcKms::new()
            .connect_v2("aws", &self.endpoint(), Duration::from_secs(5))
            .expect("connect to the plugin")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment every plugin gets: static test credentials, no real ~/.aws, state in `dir`.
fn aws_env(cmd: &mut Command, dir: &Path) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("HOME", dir)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("ATREST_LOG", "info");
}

fn plugin_cmd(
    dir: &Path,
    name: &str,
    moto: &Moto,
    key: &str,
    extra: &[&str],
) -> (Command, PathBuf, SocketAddr, PathBuf) {
    let sock = dir.join(format!("{name}.sock"));
    let log = dir.join(format!("{name}.log"));
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_atrest"));
    cmd.args(["kms", "serve", "--backend", "aws-kms", "--aws-key-id", key])
        .args(["--aws-endpoint-url", &moto.endpoint])
        .args(["--listen", &format!("unix://{}", sock.display())])
        .args(["--metrics-listen", &metrics.to_string()])
        .args(["--health-interval", "0.5", "--timeout", "2"])
        .arg("--aws-state-dir")
        .arg(dir.join("state"))
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    aws_env(&mut cmd, dir);
    (cmd, sock, metrics, log)
}

fn start(mut cmd: Command, sock: PathBuf, metrics: SocketAddr, log: PathBuf) -> Plugin {
    let _ = std::fs::remove_file(&log);
    let file = std::fs::File::create(&log).unwrap();
    cmd.stderr(file);
    let child = cmd.spawn().expect("spawn atrest kms serve");
    let mut p = Plugin {
        child,
        sock,
        metrics,
        log,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&p.sock).is_err() {
        if let Ok(Some(st)) = p.child.try_wait() {
            panic!("atrest kms serve exited early ({st}):\n{}", p.log());
        }
        assert!(
            Instant::now() < deadline,
            "plugin did not listen:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    p
}

/// Serves `key` with static credentials from the environment.
fn serve(dir: &Path, name: &str, moto: &Moto, key: &str, extra: &[&str]) -> Plugin {
    let (mut cmd, sock, metrics, log) = plugin_cmd(dir, name, moto, key, extra);
    cmd.env("AWS_ACCESS_KEY_ID", "AKIATESTPLUGIN")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-not-real");
    start(cmd, sock, metrics, log)
}

fn decrypt(k: &dyn KmsV2Service, e: &EncryptResponse) -> Result<Vec<u8>, KmsError> {
    k.decrypt(&DecryptRequest {
        ciphertext: e.ciphertext.clone(),
        uid: "test".into(),
        key_id: e.key_id.clone(),
        annotations: e.annotations.clone(),
    })
    .map(|p| p.to_vec())
}

fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

fn healthz(k: &dyn KmsV2Service) -> String {
    k.status()
        .map(|s| s.healthz)
        .unwrap_or_else(|e| e.to_string())
}

fn enc_config(dir: &Path, endpoint: &str) -> PathBuf {
    let path = dir.join("enc.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: aws\n          endpoint: {endpoint}\n      - identity: {{}}\n"
        ),
    )
    .unwrap();
    path
}

fn crypt(op: &str, config: &Path, input: &[u8]) -> Output {
    let cfg = config.to_str().unwrap();
    let args = [
        op,
        "--config",
        cfg,
        "--resource",
        "secrets",
        "--etcd-key",
        "/registry/secrets/default/s1",
    ];
    atrest(&args, input)
}

#[test]
fn round_trip_alias_repoint_and_restart() {
    let moto = Moto::start();
    let k1 = moto.create_key("k1");
    moto.point_alias(ALIAS, &k1);
    let dir = tempfile::tempdir().unwrap();
    let plugin = serve(
        dir.path(),
        "p",
        &moto,
        ALIAS,
        &["--aws-region", "us-east-1"],
    );
    let kms = plugin.client();
    let st = kms.status().unwrap();
    assert_eq!((st.version.as_str(), st.healthz.as_str()), ("v2", "ok"));
    let id1 = key_id_for(&k1);
    assert_eq!(
        st.key_id, id1,
        "key id derived from the ARN the alias resolves to"
    );

    let seed = [7u8; 32];
    let e1 = kms.encrypt("u1", &seed).unwrap();
    assert_eq!(e1.key_id, id1);
    assert_eq!(
        e1.annotations.get(KEY_ARN_ANNOTATION).map(Vec::as_slice),
        Some(k1.as_bytes())
    );
    assert_eq!(decrypt(kms.as_ref(), &e1).unwrap(), seed);

    // The whole envelope path, as kube-apiserver stores it.
    let cfg = enc_config(dir.path(), &plugin.endpoint());
    let stored = crypt("encrypt", &cfg, b"top secret");
    assert!(
        stored.status.success(),
        "{}",
        String::from_utf8_lossy(&stored.stderr)
    );
    assert!(stored.stdout.starts_with(b"k8s:enc:kms:v2:aws:"));

    // Re-point the alias: a KEK rotation seen through Status, no restart.
    let k2 = moto.create_key("k2");
    moto.point_alias(ALIAS, &k2);
    let id2 = key_id_for(&k2);
    assert_ne!(id1, id2);
    assert!(
        eventually(Duration::from_secs(10), || kms
            .status()
            .map(|s| s.key_id == id2)
            .unwrap_or(false)),
        "Status did not report the new key within 10 s"
    );
    let e2 = kms.encrypt("u2", &seed).unwrap();
    assert_eq!(e2.key_id, id2);
    assert_eq!(e2.annotations[KEY_ARN_ANNOTATION], k2.as_bytes());
    assert_eq!(
        decrypt(kms.as_ref(), &e1).unwrap(),
        seed,
        "old value still decrypts"
    );
    assert_eq!(decrypt(kms.as_ref(), &e2).unwrap(), seed);
    let (_, metrics) = http_get(plugin.metrics, "/metrics");
    assert!(metrics.contains(&format!("key_id=\"{id2}\"")), "{metrics}");
    assert!(
        plugin.log().contains("alias re-pointed"),
        "{}",
        plugin.log()
    );

    // A restart (another node would do the same) still decrypts values of the earlier key: the
    // served keys are recorded in the state dir.
    plugin.stop();
    let plugin = serve(dir.path(), "p", &moto, ALIAS, &[]);
    let kms = plugin.client();
    assert_eq!(kms.status().unwrap().key_id, id2);
    assert_eq!(decrypt(kms.as_ref(), &e1).unwrap(), seed);
    let back = crypt("decrypt", &cfg, &stored.stdout);
    assert!(
        back.status.success(),
        "{}",
        String::from_utf8_lossy(&back.stderr)
    );
    assert_eq!(back.stdout, b"top secret");
    let state = dir.path().join("state");
    let files: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    assert!(text.contains(&k1) && text.contains(&k2), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn disabled_pending_deletion_and_denied_key_unhealthy_then_recovers() {
    let moto = Moto::start();
    let k1 = moto.create_key("k1");
    moto.point_alias(ALIAS, &k1);
    let dir = tempfile::tempdir().unwrap();
    let mut plugin = serve(dir.path(), "p", &moto, ALIAS, &[]);
    let kms = plugin.client();
    assert_eq!(healthz(kms.as_ref()), "ok");
    assert!(http_get(plugin.metrics, "/readyz").0.contains("200"));

    moto.kms("DisableKey", json!({ "KeyId": uuid(&k1) }));
    assert!(
        eventually(Duration::from_secs(10), || healthz(kms.as_ref())
            .contains("Disabled")),
        "{}",
        healthz(kms.as_ref())
    );
    let (status, body) = http_get(plugin.metrics, "/readyz");
    assert!(
        status.contains("503") && body.contains("Disabled"),
        "{status} {body}"
    );
    let (_, metrics) = http_get(plugin.metrics, "/metrics");
    assert!(
        metrics.contains("atrest_kms_backend_healthy{backend=\"aws-kms\"} 0"),
        "{metrics}"
    );
    assert!(plugin.log().contains("is Disabled"), "{}", plugin.log());
    assert!(plugin.running(), "a disabled key does not stop the plugin");

    moto.kms("EnableKey", json!({ "KeyId": uuid(&k1) }));
    assert!(eventually(Duration::from_secs(10), || healthz(
        kms.as_ref()
    ) == "ok"));
    assert!(http_get(plugin.metrics, "/readyz").0.contains("200"));

    moto.kms(
        "ScheduleKeyDeletion",
        json!({ "KeyId": uuid(&k1), "PendingWindowInDays": 7 }),
    );
    assert!(
        eventually(Duration::from_secs(10), || healthz(kms.as_ref())
            .contains("PendingDeletion")),
        "{}",
        healthz(kms.as_ref())
    );
    moto.kms("CancelKeyDeletion", json!({ "KeyId": uuid(&k1) }));
    moto.kms("EnableKey", json!({ "KeyId": uuid(&k1) }));
    assert!(eventually(Duration::from_secs(10), || healthz(
        kms.as_ref()
    ) == "ok"));

    // Permission taken away (moto evaluates Deny statements of the key policy for DescribeKey),
    // then given back.
    let policy = |effect: &str| {
        json!({ "Version": "2012-10-17", "Statement": [{
            "Effect": effect, "Principal": { "AWS": "*" }, "Action": ["kms:DescribeKey"], "Resource": "*"
        }] })
        .to_string()
    };
    let put = |effect: &str| {
        moto.kms(
            "PutKeyPolicy",
            json!({ "KeyId": uuid(&k1), "PolicyName": "default", "Policy": policy(effect) }),
        )
    };
    put("Deny");
    assert!(
        eventually(Duration::from_secs(10), || healthz(kms.as_ref())
            .contains("AccessDeniedException")),
        "{}",
        healthz(kms.as_ref())
    );
    assert!(http_get(plugin.metrics, "/readyz").0.contains("503"));
    put("Allow");
    assert!(eventually(Duration::from_secs(10), || healthz(
        kms.as_ref()
    ) == "ok"));
    assert!(plugin.running());
}

#[test]
fn encryption_context_is_bound() {
    let moto = Moto::start();
    let k1 = moto.create_key("k1");
    moto.point_alias(ALIAS, &k1);
    let dir = tempfile::tempdir().unwrap();
    let a = serve(
        dir.path(),
        "a",
        &moto,
        ALIAS,
        &[
            "--aws-encryption-context",
            "cluster=prod",
            "--aws-encryption-context",
            "app=k8s",
        ],
    );
    let b = serve(
        dir.path(),
        "b",
        &moto,
        ALIAS,
        &["--aws-encryption-context", "cluster=staging"],
    );
    let none = serve(dir.path(), "n", &moto, ALIAS, &[]);
    let (ka, kb, kn) = (a.client(), b.client(), none.client());
    let seed = [3u8; 32];
    let e = ka.encrypt("u", &seed).unwrap();
    assert_eq!(decrypt(ka.as_ref(), &e).unwrap(), seed);
    for (k, what) in [(&kb, "another context"), (&kn, "no context")] {
        let err = decrypt(k.as_ref(), &e).unwrap_err().to_string();
        assert!(
            err.contains("InvalidArgument")
                && err.contains("InvalidCiphertextException")
                && err.contains("--aws-encryption-context"),
            "{what}: {err}"
        );
        assert_eq!(
            healthz(k.as_ref()),
            "ok",
            "a wrong context is not an outage"
        );
    }
    // Bad flag values fail at start, naming the flag.
    let out = atrest(
        &[
            "kms",
            "serve",
            "--backend",
            "aws-kms",
            "--aws-key-id",
            ALIAS,
            "--aws-encryption-context",
            "novalue",
        ],
        b"",
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("KEY=VALUE"));
}

#[test]
fn kms_outage_hang_and_restart() {
    let mut moto = Moto::start();
    let k1 = moto.create_key("k1");
    moto.point_alias(ALIAS, &k1);
    let dir = tempfile::tempdir().unwrap();
    let mut plugin = serve(dir.path(), "p", &moto, ALIAS, &[]);
    let kms = plugin.client();
    let seed = [9u8; 32];
    let e1 = kms.encrypt("u", &seed).unwrap();

    // A hanging KMS (process stopped): calls time out, the plugin reports it and recovers.
    moto.pause(true);
    let hung = eventually(Duration::from_secs(15), || healthz(kms.as_ref()) != "ok");
    let reason = healthz(kms.as_ref());
    let readyz = http_get(plugin.metrics, "/readyz");
    moto.pause(false);
    assert!(hung, "{reason}");
    assert!(reason.contains("timed out"), "{reason}");
    assert!(readyz.0.contains("503"), "{readyz:?}");
    assert!(eventually(Duration::from_secs(15), || healthz(
        kms.as_ref()
    ) == "ok"));
    assert_eq!(decrypt(kms.as_ref(), &e1).unwrap(), seed);

    // KMS gone (connection refused), then a new, empty KMS: unreachable, then "alias not found",
    // then healthy again once the alias exists; the plugin never stops.
    moto.kill();
    assert!(
        eventually(Duration::from_secs(10), || healthz(kms.as_ref())
            .contains("cannot connect")),
        "{}",
        healthz(kms.as_ref())
    );
    assert!(http_get(plugin.metrics, "/readyz").0.contains("503"));
    let err = decrypt(kms.as_ref(), &e1).unwrap_err().to_string();
    assert!(
        err.contains("Unavailable"),
        "an outage, not bad data: {err}"
    );
    assert!(plugin.running());
    moto.restart();
    assert!(
        eventually(Duration::from_secs(10), || healthz(kms.as_ref())
            .contains("NotFoundException")),
        "{}",
        healthz(kms.as_ref())
    );
    let k3 = moto.create_key("k3");
    moto.point_alias(ALIAS, &k3);
    assert!(eventually(Duration::from_secs(10), || healthz(
        kms.as_ref()
    ) == "ok"));
    assert_eq!(kms.status().unwrap().key_id, key_id_for(&k3));
    let e3 = kms.encrypt("u", &seed).unwrap();
    assert_eq!(decrypt(kms.as_ref(), &e3).unwrap(), seed);
    assert!(plugin.running());
    let log = plugin.log();
    assert!(
        log.contains("backend unhealthy") && log.contains("backend healthy"),
        "{log}"
    );
}

#[test]
fn blob_of_another_key_is_refused_unless_allowed() {
    let moto = Moto::start();
    let k1 = moto.create_key("k1");
    moto.point_alias(ALIAS, &k1);
    let other = moto.create_key("other");
    let dir = tempfile::tempdir().unwrap();
    let mine = serve(dir.path(), "mine", &moto, ALIAS, &[]);
    let theirs = serve(dir.path(), "theirs", &moto, &other, &[]);
    let (km, kt) = (mine.client(), theirs.client());
    let seed = [5u8; 32];
    let foreign = kt.encrypt("u", &seed).unwrap();
    assert_eq!(
        foreign.key_id,
        key_id_for(&other),
        "a key ARN as --aws-key-id works too"
    );

    let err = decrypt(km.as_ref(), &foreign).unwrap_err().to_string();
    assert!(err.contains("NotFound") && err.contains(&other), "{err}");
    assert!(mine.log().contains("refusing to decrypt"), "{}", mine.log());
    // Someone pairing our key id with their blob: KMS is asked for exactly our key and refuses.
    let mut forged = foreign.clone();
    forged.key_id = key_id_for(&k1);
    forged
        .annotations
        .insert(KEY_ARN_ANNOTATION.into(), k1.clone().into_bytes());
    // (AWS answers IncorrectKeyException, moto AccessDeniedException.)
    assert!(
        decrypt(km.as_ref(), &forged).is_err(),
        "a blob of another key under our key id"
    );
    // An annotation that does not match the key id.
    let mut mismatched = foreign.clone();
    mismatched.key_id = key_id_for(&k1);
    let err = decrypt(km.as_ref(), &mismatched).unwrap_err().to_string();
    assert!(
        err.contains("InvalidArgument") && err.contains("does not belong"),
        "{err}"
    );
    // A raw KMS ciphertext written by another tool/plugin (no annotation).
    let raw = moto.kms(
        "Encrypt",
        json!({ "KeyId": other, "Plaintext": "BQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQU=" }),
    );
    let raw_blob = EncryptResponse {
        ciphertext: base64_decode(raw["CiphertextBlob"].as_str().unwrap()),
        key_id: "arn-as-key-id-from-another-plugin".into(),
        annotations: BTreeMap::new(),
    };
    assert!(decrypt(km.as_ref(), &raw_blob)
        .unwrap_err()
        .to_string()
        .contains("NotFound"));
    drop(mine);

    let any = serve(dir.path(), "any", &moto, ALIAS, &["--aws-allow-any-key"]);
    let ka = any.client();
    assert_eq!(decrypt(ka.as_ref(), &foreign).unwrap(), seed);
    assert_eq!(decrypt(ka.as_ref(), &raw_blob).unwrap(), seed);
    assert_eq!(healthz(ka.as_ref()), "ok");
    assert!(
        decrypt(ka.as_ref(), &forged).is_err(),
        "KMS still checks the named key"
    );
}

#[test]
fn credential_chain_sources_and_bad_configuration() {
    let moto = Moto::start();
    let k1 = moto.create_key("k1");
    moto.point_alias(ALIAS, &k1);
    let dir = tempfile::tempdir().unwrap();
    // Each source alone (no static keys in the environment), against the emulator's STS and
    // its instance-metadata endpoints; the log says which source was used.
    let round_trip = |name: &str, cmd: (Command, PathBuf, SocketAddr, PathBuf), from: &str| {
        let (cmd, sock, metrics, log) = cmd;
        let plugin = start(cmd, sock, metrics, log);
        let kms = plugin.client();
        assert_eq!(healthz(kms.as_ref()), "ok", "{name}: {}", plugin.log());
        let e = kms.encrypt("u", &[1u8; 32]).unwrap();
        assert_eq!(decrypt(kms.as_ref(), &e).unwrap(), [1u8; 32], "{name}");
        let log = plugin.log();
        assert!(
            log.contains("AWS credentials loaded") && log.contains(from),
            "{name}: {log}"
        );
    };

    // IRSA: a projected token file and a role, STS AssumeRoleWithWebIdentity.
    let token = dir.path().join("token");
    std::fs::write(&token, "eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n").unwrap();
    let mut irsa = plugin_cmd(dir.path(), "irsa", &moto, ALIAS, &[]);
    irsa.0
        .env("AWS_WEB_IDENTITY_TOKEN_FILE", &token)
        .env("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/atrest-kms")
        .env("AWS_ENDPOINT_URL_STS", &moto.endpoint);
    round_trip(
        "irsa",
        irsa,
        "web identity (arn:aws:iam::123456789012:role/atrest-kms)",
    );

    // EC2 instance profile over IMDSv2; the region comes from instance metadata too.
    let mut imds = plugin_cmd(dir.path(), "imds", &moto, ALIAS, &[]);
    imds.0
        .env_remove("AWS_EC2_METADATA_DISABLED")
        .env_remove("AWS_REGION")
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", &moto.endpoint);
    round_trip("imds", imds, "EC2 instance metadata (role default-role)");

    // ECS / EKS Pod Identity style full URI with an authorization token file.
    let auth = dir.path().join("auth-token");
    std::fs::write(&auth, "pod-identity-token\n").unwrap();
    let mut ecs = plugin_cmd(dir.path(), "ecs", &moto, ALIAS, &[]);
    ecs.0
        .env(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!(
                "{}/latest/meta-data/iam/security-credentials/default-role",
                moto.endpoint
            ),
        )
        .env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", &auth);
    round_trip("ecs", ecs, "container credentials");

    // A profile assuming a role with keys from its source_profile (signed STS AssumeRole).
    let config = dir.path().join("aws-config");
    std::fs::write(
        &config,
        "[profile base]\naws_access_key_id = AKIABASE\naws_secret_access_key = base-secret\n[profile kms]\nrole_arn = arn:aws:iam::123456789012:role/kms\nsource_profile = base\nregion = us-east-1\n",
    )
    .unwrap();
    let mut prof = plugin_cmd(dir.path(), "profile", &moto, ALIAS, &[]);
    prof.0
        .env_remove("AWS_REGION")
        .env("AWS_CONFIG_FILE", &config)
        .env("AWS_PROFILE", "kms")
        .env("AWS_ENDPOINT_URL_STS", &moto.endpoint);
    round_trip(
        "profile",
        prof,
        "profile \"kms\" (arn:aws:iam::123456789012:role/kms)",
    );

    // No credentials anywhere: exit 1 naming what was tried.
    let (mut cmd, ..) = plugin_cmd(dir.path(), "nocreds", &moto, ALIAS, &[]);
    let out = cmd.stderr(Stdio::piped()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("no AWS credentials") && err.contains("AWS_WEB_IDENTITY_TOKEN_FILE"),
        "{err}"
    );
    // A key that does not exist: exit 1 with KMS's answer.
    let (mut cmd, ..) = plugin_cmd(dir.path(), "nokey", &moto, "alias/missing", &[]);
    cmd.env("AWS_ACCESS_KEY_ID", "AKIATEST")
        .env("AWS_SECRET_ACCESS_KEY", "x");
    let out = cmd.stderr(Stdio::piped()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("NotFoundException") && err.contains("alias/missing"),
        "{err}"
    );
    // --aws-key-id is required.
    let out = atrest(&["kms", "serve", "--backend", "aws-kms"], b"");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--aws-key-id is required"));
}

/// The key id part of a key ARN (moto's key-state calls want it, not the ARN).
fn uuid(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap()
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

#[test]
fn trace_logs_hold_no_secrets() {
    use base64::Engine;
    let moto = Moto::start();
    let k1 = moto.create_key("k1");
    moto.point_alias(ALIAS, &k1);
    let dir = tempfile::tempdir().unwrap();
    let secret = "wJalrXUtnFEMIK7MDENGbPxRfiCYzzSECRETzz";
    let session = "FwoGZXIvYXdzSESSIONTOKENzzDONOTLOGzz";
    let (mut cmd, sock, metrics, log) = plugin_cmd(dir.path(), "trace", &moto, ALIAS, &[]);
    cmd.env("ATREST_LOG", "trace")
        .env("AWS_ACCESS_KEY_ID", "AKIATRACETEST")
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_SESSION_TOKEN", session);
    let plugin = start(cmd, sock, metrics, log);
    let kms = plugin.client();
    let seed: Vec<u8> = (0u8..32)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    let e = kms.encrypt("u", &seed).unwrap();
    assert_eq!(decrypt(kms.as_ref(), &e).unwrap(), seed);
    std::thread::sleep(Duration::from_secs(1)); // a few background probes too
    let log = plugin.log();
    assert!(
        log.contains("TRACE") && log.contains("signing request"),
        "trace logging is on, the signer's included"
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    for (what, needle) in [
        ("secret access key", secret.to_string()),
        ("session token", session.to_string()),
        ("seed (base64)", b64.encode(&seed)),
        (
            "seed (hex)",
            seed.iter().map(|b| format!("{b:02x}")).collect(),
        ),
        (
            "probe value (base64)",
            b64.encode(b"atrest-kms health probe"),
        ),
    ] {
        assert!(!log.contains(&needle), "{what} appears in the TRACE log");
    }
}
