//! `atrest kms …` through the real binary: init → serve → `atrest encrypt`/`decrypt` with a
//! config whose kms v2 provider points at the plugin; kill -9 and restart; refusals.

mod cli_common;
use cli_common::atrest_stdin as atrest;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "/registry/secrets/default/s1";

/// A running `atrest kms serve`, SIGKILLed on drop if still running.
struct Plugin(Child);

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(args: &[&str], sock: &Path) -> Plugin {
    let child = Command::new(env!("CARGO_BIN_EXE_atrest"))
        .arg("kms")
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut plugin = Plugin(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return plugin;
        }
        if let Ok(Some(status)) = plugin.0.try_wait() {
            panic!("atrest kms serve exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "plugin did not start listening on {}",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A fresh local key store `dir/ks` (`atrest kms init`).
fn init_key_store(dir: &Path) -> PathBuf {
    let ks = dir.join("ks");
    let out = atrest(&["kms", "init", "--key-store", ks.to_str().unwrap()], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ks
}

fn config(dir: &Path, sock: &Path) -> PathBuf {
    let path = dir.join("enc.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - kms:\n          apiVersion: v2\n          name: atrest\n          endpoint: unix://{}\n      - identity: {{}}\n",
            sock.display()
        ),
    )
    .unwrap();
    path
}

fn crypt(op: &str, config: &Path, input: &[u8]) -> Output {
    atrest(
        &[
            op,
            "--config",
            config.to_str().unwrap(),
            "--resource",
            "secrets",
            "--etcd-key",
            KEY,
        ],
        input,
    )
}

#[test]
fn serve_encrypt_decrypt_kill9_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("ks");
    let sock = dir.path().join("kms.sock");
    let ks_s = ks.to_str().unwrap();
    let out = atrest(&["kms", "init", "--key-store", ks_s], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listen = format!("unix://{}", sock.display());
    let args = ["--listen", listen.as_str(), "--key-store", ks_s];

    let mut plugin = serve(&args, &sock);
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let st = atrest(&["kms", "status", "--endpoint", &listen], b"");
    let st_text = String::from_utf8_lossy(&st.stdout).to_string();
    assert!(
        st.status.success()
            && st_text.contains("healthz: ok")
            && st_text.contains("key_id:  local-v1-"),
        "{st_text}"
    );

    let cfg = config(dir.path(), &sock);
    let enc = crypt("encrypt", &cfg, b"top secret");
    assert!(
        enc.status.success(),
        "{}",
        String::from_utf8_lossy(&enc.stderr)
    );
    assert!(enc.stdout.starts_with(b"k8s:enc:kms:v2:atrest:"));
    let dec = crypt("decrypt", &cfg, &enc.stdout);
    assert!(
        dec.status.success(),
        "{}",
        String::from_utf8_lossy(&dec.stderr)
    );
    assert_eq!(dec.stdout, b"top secret");

    // kill -9: the socket file stays behind; a restart replaces it and old values decrypt.
    plugin.0.kill().unwrap();
    plugin.0.wait().unwrap();
    assert!(sock.exists(), "SIGKILL leaves the socket file");
    let mut plugin = serve(&args, &sock);
    let dec = crypt("decrypt", &cfg, &enc.stdout);
    assert!(
        dec.status.success(),
        "{}",
        String::from_utf8_lossy(&dec.stderr)
    );
    assert_eq!(dec.stdout, b"top secret");

    // A second plugin on the live socket is refused.
    let second = atrest(
        &["kms", "serve", "--listen", &listen, "--key-store", ks_s],
        b"",
    );
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already serving"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    // SIGTERM: graceful stop, socket removed.
    let pid = plugin.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = plugin.0.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!sock.exists(), "socket removed on SIGTERM");
}

#[test]
fn serve_refuses_unsafe_or_missing_key_store_and_init_creates_it() {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("ks");
    let ks_s = ks.to_str().unwrap();
    let listen = format!("unix://{}", dir.path().join("k.sock").display());

    let out = atrest(
        &["kms", "serve", "--listen", &listen, "--key-store", ks_s],
        b"",
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("does not exist") && err.contains("atrest kms init"),
        "{err}"
    );

    assert!(atrest(&["kms", "init", "--key-store", ks_s], b"")
        .status
        .success());
    std::fs::set_permissions(&ks, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = atrest(
        &["kms", "serve", "--listen", &listen, "--key-store", ks_s],
        b"",
    );
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains(ks_s) && err.contains("world-accessible"),
        "{err}"
    );

    // --init creates a missing store on first run.
    let ks2 = dir.path().join("fresh");
    let sock = dir.path().join("k2.sock");
    let listen2 = format!("unix://{}", sock.display());
    let plugin = serve(
        &[
            "--listen",
            &listen2,
            "--key-store",
            ks2.to_str().unwrap(),
            "--init",
        ],
        &sock,
    );
    assert!(ks2.join("store.json").exists());
    let st = atrest(&["kms", "status", "--endpoint", &listen2], b"");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    drop(plugin);

    let out = atrest(
        &["kms", "rotate", "--key-store", ks2.to_str().unwrap()],
        b"",
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("version 2"));
    let out = atrest(&["kms", "list", "--key-store", ks2.to_str().unwrap()], b"");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("primary") && text.contains("local-v2-") && text.contains("local-v1-"),
        "{text}"
    );
}

#[test]
fn pkcs11_keygen_serve_and_wrong_pin() {
    let dir = tempfile::tempdir().unwrap();
    assert!(
        Path::new("/usr/lib/softhsm/libsofthsm2.so").exists(),
        "SoftHSM2 missing: apt-get install softhsm2"
    );
    let tokens = dir.path().join("tokens");
    std::fs::create_dir(&tokens).unwrap();
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            tokens.display()
        ),
    )
    .unwrap();
    let init = Command::new("softhsm2-util")
        .env("SOFTHSM2_CONF", &conf)
        .args([
            "--init-token",
            "--free",
            "--label",
            "cli",
            "--pin",
            "1234",
            "--so-pin",
            "12345678",
        ])
        .output()
        .expect("softhsm2-util is installed (apt-get install softhsm2)");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "1234\n").unwrap();
    std::fs::set_permissions(&pin, std::fs::Permissions::from_mode(0o600)).unwrap();
    let common = |pin: &Path| -> Vec<String> {
        [
            "--pkcs11-module",
            "/usr/lib/softhsm/libsofthsm2.so",
            "--pkcs11-token-label",
            "cli",
            "--pkcs11-pin-file",
            pin.to_str().unwrap(),
            "--pkcs11-key-label",
            "kek",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |args: Vec<String>| {
        Command::new(env!("CARGO_BIN_EXE_atrest"))
            .env("SOFTHSM2_CONF", &conf)
            .args(args)
            .output()
            .unwrap()
    };
    let mut a = vec!["kms".to_string(), "pkcs11-keygen".into()];
    a.extend(common(&pin));
    let out = run(a);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("key id pkcs11-"));

    let bad = dir.path().join("badpin");
    std::fs::write(&bad, "9999").unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sock = dir.path().join("p.sock");
    let listen = format!("unix://{}", sock.display());
    let mut a = vec![
        "kms".to_string(),
        "serve".into(),
        "--backend".into(),
        "pkcs11".into(),
        "--listen".into(),
        listen.clone(),
    ];
    a.extend(common(&bad));
    let out = run(a);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && err.contains("wrong PIN"), "{err}");

    let mut child = Command::new(env!("CARGO_BIN_EXE_atrest"))
        .env("SOFTHSM2_CONF", &conf)
        // A multi-threaded runtime here (the default is one thread): HSM calls on the blocking pool.
        .args(["kms", "serve", "--backend", "pkcs11", "--listen", &listen])
        .args(["--worker-threads", "4"])
        .args(common(&pin))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "pkcs11 plugin did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _guard = Plugin(child);
    let cfg = config(dir.path(), &sock);
    let enc = crypt("encrypt", &cfg, b"hsm protected");
    assert!(
        enc.status.success(),
        "{}",
        String::from_utf8_lossy(&enc.stderr)
    );
    let dec = crypt("decrypt", &cfg, &enc.stdout);
    assert_eq!(
        dec.stdout,
        b"hsm protected",
        "{}",
        String::from_utf8_lossy(&dec.stderr)
    );
}

/// On a terminal, `serve` offers to create a missing key store (driven through util-linux `script`,
/// which gives the plugin a pseudo-terminal).
#[test]
fn serve_offers_to_create_the_store_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("ks");
    let sock = dir.path().join("tty.sock");
    let cmd = format!(
        "{} kms serve --listen unix://{} --key-store {}",
        env!("CARGO_BIN_EXE_atrest"),
        sock.display(),
        ks.display()
    );
    let spawn = || {
        Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("`script` (util-linux) is installed")
    };

    // "n": nothing is created, serve explains what to run.
    let mut no = spawn();
    no.stdin.as_mut().unwrap().write_all(b"n\n").unwrap();
    let out = no.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("Create it now") && text.contains("atrest kms init"),
        "{text}"
    );
    assert!(!ks.exists());

    // "y": the store is created and the plugin serves.
    let mut yes = spawn();
    let mut stdin = yes.stdin.take().unwrap();
    stdin.write_all(b"y\n").unwrap();
    let mut plugin = Plugin(yes);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            Instant::now() < deadline && plugin.0.try_wait().unwrap().is_none(),
            "plugin did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ks.join("store.json").exists());
    let pid = plugin.0.id().to_string();
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    drop(stdin);
    let _ = plugin.0.wait();
}

/// The `key_id:` line of `atrest kms status`.
fn status_key_id(endpoint: &str) -> String {
    let out = atrest(&["kms", "status", "--endpoint", endpoint], b"");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kms status: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| l.strip_prefix("key_id:"))
        .map(|id| id.trim().to_string())
        .unwrap_or_else(|| panic!("no key_id in {text}"))
}

/// `atrest kms rotate` under a running `kms serve`: the plugin watches its key store, so Status
/// reports the new key id at once — here the periodic refresh runs only every hour, so nothing
/// else can explain the pick-up. The poll is bounded by a generous deadline, not timed.
#[test]
fn rotation_under_a_running_plugin_is_picked_up_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("ks");
    let sock = dir.path().join("kms.sock");
    let listen = format!("unix://{}", sock.display());
    let init = atrest(&["kms", "init", "--key-store", ks.to_str().unwrap()], b"");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let _plugin = serve(
        &[
            "--backend",
            "local",
            "--listen",
            &listen,
            "--key-store",
            ks.to_str().unwrap(),
            "--health-interval",
            "3600",
        ],
        &sock,
    );
    let before = status_key_id(&listen);
    assert!(before.starts_with("local-v1-"), "{before}");

    let out = atrest(&["kms", "rotate", "--key-store", ks.to_str().unwrap()], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        let now = status_key_id(&listen);
        if now != before {
            break now;
        }
        assert!(
            Instant::now() < deadline,
            "Status still reports {before} after the rotation"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(after.starts_with("local-v2-"), "{after}");

    // A value written now uses the new KEK and decrypts; the old version still decrypts too.
    let config = config(dir.path(), &sock);
    let enc = crypt("encrypt", &config, b"k8s\x00after rotation");
    assert!(
        enc.status.success(),
        "{}",
        String::from_utf8_lossy(&enc.stderr)
    );
    let dec = crypt("decrypt", &config, &enc.stdout);
    assert_eq!(dec.stdout, b"k8s\x00after rotation");
}

/// Under `ulimit -n 256`, a flood of idle connections neither makes the plugin spin on EMFILE nor
/// locks out a real client: silent connections are dropped after the handshake timeout.
#[test]
fn idle_connection_flood_under_a_low_open_files_limit() {
    let dir = tempfile::tempdir().unwrap();
    let ks = init_key_store(dir.path());
    let sock = dir.path().join("kms.sock");
    let listen = format!("unix://{}", sock.display());
    let log = dir.path().join("serve.log");
    let script = format!(
        "ulimit -n 256; exec '{}' kms serve --backend local --listen '{}' --key-store '{}' 2>'{}'",
        env!("CARGO_BIN_EXE_atrest"),
        listen,
        ks.display(),
        log.display()
    );
    let child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut plugin = Plugin(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(plugin.0.try_wait().unwrap().is_none(), "plugin exited");
        assert!(Instant::now() < deadline, "plugin did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    // 300 idle connections: more than the plugin's 256 file descriptors; bounded so that every
    // connect completes (accepted or queued in the listen backlog).
    let flood: Vec<_> = (0..300)
        .filter_map(|_| std::os::unix::net::UnixStream::connect(&sock).ok())
        .collect();
    assert!(flood.len() >= 250, "only {} connects", flood.len());
    let started = Instant::now();
    let st = atrest(
        &["kms", "status", "--endpoint", &listen, "--timeout", "20"],
        b"",
    );
    assert!(
        st.status.success(),
        "status during the flood: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(plugin.0.try_wait().unwrap().is_none(), "plugin survived");
    drop(flood);
    let logged = std::fs::metadata(&log).unwrap().len();
    assert!(logged < 64 * 1024, "log stays small, was {logged} bytes");
}

/// An abstract socket has no file permissions: without --allowed-uid only the server's own uid may
/// connect, so another local user (`nobody`) cannot use the plugin to decrypt.
#[test]
fn abstract_socket_refuses_other_users_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let ks = init_key_store(dir.path());
    let name = format!("atrest-test-{}", std::process::id());
    let listen = format!("unix:///@{name}");
    let child = Command::new(env!("CARGO_BIN_EXE_atrest"))
        .args(["kms", "serve", "--backend", "local", "--listen", &listen])
        .args(["--key-store", ks.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _plugin = Plugin(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = atrest(
            &["kms", "status", "--endpoint", &listen, "--timeout", "2"],
            b"",
        );
        if st.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "plugin did not answer its own uid"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let other = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_atrest"))
        .args(["kms", "status", "--endpoint", &listen, "--timeout", "2"])
        .output()
        .expect("setpriv (util-linux) runs a command as another user");
    assert!(
        !other.status.success(),
        "nobody must not reach the plugin: {}",
        String::from_utf8_lossy(&other.stdout)
    );
}

#[test]
fn a_non_loopback_metrics_listen_is_warned_about_in_plain_logs() {
    let dir = tempfile::tempdir().unwrap();
    let ks = init_key_store(dir.path());
    let sock = dir.path().join("kms.sock");
    let log = dir.path().join("serve.log");
    let metrics = format!("0.0.0.0:{}", atrest_testkit::free_port());
    let listen = format!("unix://{}", sock.display());
    // Logs to a file, as under systemd or `2>file`: no colour codes.
    let child = Command::new(env!("CARGO_BIN_EXE_atrest"))
        .args([
            "kms",
            "serve",
            "--listen",
            &listen,
            "--metrics-listen",
            &metrics,
        ])
        .args(["--key-store", ks.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let plugin = Plugin(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(Instant::now() < deadline, "plugin did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(plugin);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("WARN") && text.contains("--metrics-listen is not a loopback address"),
        "{text}"
    );
    assert!(text.contains(&metrics), "names the address: {text}");
    assert!(
        !text.contains('\x1b'),
        "no colour codes in a log file: {text:?}"
    );
}
