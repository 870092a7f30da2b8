//! Real etcd processes on loopback.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

use crate::tls::TlsFiles;

/// The etcd binary: `$ETCD_BIN`, else `etcd` on `PATH`. Panics (failing the test) when missing.
fn etcd_binary() -> PathBuf {
    find_etcd(std::env::var_os("ETCD_BIN"), std::env::var_os("PATH"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `ETCD_BIN` if set (must exist), else `etcd` in one of the `PATH` directories.
pub fn find_etcd(
    etcd_bin: Option<std::ffi::OsString>,
    path: Option<std::ffi::OsString>,
) -> Result<PathBuf, String> {
    if let Some(p) = etcd_bin {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("ETCD_BIN={} does not exist", p.display()))
        };
    }
    path.and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("etcd")).find(|p| p.is_file())).ok_or_else(|| {
        "etcd binary not found: these tests need a real etcd. Install it (Debian: `apt-get install etcd-server`) \
         or set ETCD_BIN=/path/to/etcd"
            .to_string()
    })
}

pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// One etcd process (member of a cluster or a single server).
pub struct EtcdMember {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    scheme: &'static str,
}

impl EtcdMember {
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("etcd log file");
        let err = log.try_clone().expect("clone log");
        let child = Command::new(etcd_binary())
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting etcd: {e}"));
        self.child = Some(child);
    }

    /// `http(s)://127.0.0.1:<client port>`.
    pub fn endpoint(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.client_port)
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The last lines of the member's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Graceful stop (SIGTERM), waits for exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Hard stop (SIGKILL), waits for exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped member again on the same ports and data dir.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "member {} is still running",
            self.name
        );
        self.spawn();
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill();
    }
}

fn member_args(
    name: &str,
    dir: &Path,
    client: u16,
    peer: u16,
    cluster: &str,
    token: &str,
    // The certificates, and whether clients must present one.
    tls: Option<(&TlsFiles, bool)>,
) -> Vec<String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut args = vec![
        format!("--name={name}"),
        format!("--data-dir={}", dir.join(name).display()),
        format!("--listen-client-urls={scheme}://127.0.0.1:{client}"),
        format!("--advertise-client-urls={scheme}://127.0.0.1:{client}"),
        format!("--listen-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"),
        format!("--initial-cluster={cluster}"),
        format!("--initial-cluster-token={token}"),
        "--initial-cluster-state=new".into(),
        "--log-level=warn".into(),
        "--logger=zap".into(),
        "--quota-backend-bytes=8589934592".into(),
        "--heartbeat-interval=50".into(),
        "--election-timeout=500".into(),
    ];
    if let Some((t, client_auth)) = tls {
        args.push(format!("--cert-file={}", t.server_cert.display()));
        args.push(format!("--key-file={}", t.server_key.display()));
        // etcd requires client certificates as soon as it has a trusted CA, whatever
        // --client-cert-auth says: without client auth it gets no CA at all.
        if client_auth {
            args.push(format!("--trusted-ca-file={}", t.ca.display()));
            args.push("--client-cert-auth=true".into());
        }
    }
    args
}

fn start_members(
    dir: &Path,
    n: usize,
    tls: Option<&TlsFiles>,
    client_auth: bool,
    extra: &[&str],
) -> Vec<EtcdMember> {
    let ports = free_ports(2 * n);
    let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    let cluster = names
        .iter()
        .enumerate()
        .map(|(i, name)| format!("{name}=http://127.0.0.1:{}", ports[2 * i + 1]))
        .collect::<Vec<_>>()
        .join(",");
    let token = format!("atrest-{}-{}", std::process::id(), ports[0]);
    let mut members: Vec<EtcdMember> = names
        .iter()
        .enumerate()
        .map(|(i, name)| EtcdMember {
            name: name.clone(),
            client_port: ports[2 * i],
            peer_port: ports[2 * i + 1],
            data_dir: dir.join(name),
            log: dir.join(format!("{name}.log")),
            args: member_args(
                name,
                dir,
                ports[2 * i],
                ports[2 * i + 1],
                &cluster,
                &token,
                tls.map(|t| (t, client_auth)),
            )
            .into_iter()
            // Later flags win in etcd's flag parsing, so extras override the defaults above.
            .chain(extra.iter().map(|a| a.to_string()))
            .collect(),
            child: None,
            scheme: if tls.is_some() { "https" } else { "http" },
        })
        .collect();
    for m in &mut members {
        m.spawn();
    }
    members
}

fn connect_options(tls: Option<&TlsFiles>) -> ConnectOptions {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    if let Some(t) = tls {
        let ca = std::fs::read(&t.ca).expect("ca");
        let cert = std::fs::read(&t.client_cert).expect("client cert");
        let key = std::fs::read(&t.client_key).expect("client key");
        opts = opts.with_tls(
            TlsOptions::new()
                .ca_certificate(Certificate::from_pem(ca))
                .identity(Identity::from_pem(cert, key)),
        );
    }
    opts
}

/// Waits until every member answers a linearizable read (i.e. the cluster has a leader).
fn wait_ready(members: &mut [EtcdMember], tls: Option<&TlsFiles>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let deadline = Instant::now() + Duration::from_secs(30);
    for member in members.iter_mut() {
        loop {
            if !member.is_running() {
                panic!(
                    "etcd member {} exited during start-up:\n{}",
                    member.name,
                    member.log_tail()
                );
            }
            let endpoint = member.endpoint();
            let ok = rt.block_on(async {
                let client = Client::connect([endpoint], Some(connect_options(tls))).await;
                match client {
                    Ok(c) => c
                        .kv_client()
                        .get("atrest-testkit-health", None)
                        .await
                        .is_ok(),
                    Err(_) => false,
                }
            });
            if ok {
                break;
            }
            if Instant::now() > deadline {
                panic!(
                    "etcd member {} not ready after 30s:\n{}",
                    member.name,
                    member.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A single-member etcd.
pub struct EtcdServer {
    member: EtcdMember,
    tls: Option<TlsFiles>,
    _dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Plain HTTP on a free loopback port.
    pub fn start() -> EtcdServer {
        Self::start_with(None, false)
    }

    /// HTTPS with client-certificate authentication; certificates are generated fresh.
    pub fn start_tls() -> EtcdServer {
        Self::start_with(Some(TlsFiles::generate()), true)
    }

    /// HTTPS that accepts clients without a certificate (a misconfiguration `atrest audit` must
    /// report); the client certificate is still accepted when presented.
    pub fn start_tls_without_client_auth() -> EtcdServer {
        Self::start_with(Some(TlsFiles::generate()), false)
    }

    /// Plain HTTP with extra etcd flags (e.g. `--quota-backend-bytes=16777216`), which override
    /// the defaults.
    pub fn start_with_flags(extra: &[&str]) -> EtcdServer {
        Self::start_with_all(None, false, extra)
    }

    fn start_with(tls: Option<TlsFiles>, client_auth: bool) -> EtcdServer {
        Self::start_with_all(tls, client_auth, &[])
    }

    fn start_with_all(tls: Option<TlsFiles>, client_auth: bool, extra: &[&str]) -> EtcdServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut members = start_members(dir.path(), 1, tls.as_ref(), client_auth, extra);
        wait_ready(&mut members, tls.as_ref());
        EtcdServer {
            member: members.pop().expect("one member"),
            tls,
            _dir: dir,
        }
    }

    pub fn endpoint(&self) -> String {
        self.member.endpoint()
    }

    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Options that reach this server (client certificate included for TLS).
    pub fn connect_options(&self) -> ConnectOptions {
        connect_options(self.tls.as_ref())
    }

    /// etcd connection flags for the `atrest` CLI (`--endpoints`, and `--cacert/--cert/--key` for TLS).
    pub fn cli_args(&self) -> Vec<String> {
        let mut args = vec![format!("--endpoints={}", self.endpoint())];
        if let Some(t) = &self.tls {
            args.push(format!("--cacert={}", t.ca.display()));
            args.push(format!("--cert={}", t.client_cert.display()));
            args.push(format!("--key={}", t.client_key.display()));
        }
        args
    }

    pub fn member(&mut self) -> &mut EtcdMember {
        &mut self.member
    }
}

/// A three-member (or n-member) etcd cluster.
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    pub fn start(n: usize) -> EtcdCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut members = start_members(dir.path(), n, None, false, &[]);
        wait_ready(&mut members, None);
        EtcdCluster { members, _dir: dir }
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdMember::endpoint).collect()
    }

    pub fn connect_options(&self) -> ConnectOptions {
        connect_options(None)
    }

    /// `--endpoints=a,b,c`.
    pub fn cli_args(&self) -> Vec<String> {
        vec![format!("--endpoints={}", self.endpoints().join(","))]
    }
}
