//! `atrest kms …`: the KMS v2 plugin (serve), its local key store (init, rotate, list), PKCS#11
//! key creation, and tools that work against any plugin (status, bench).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use atrest_kms::backends::aws::AwsKmsConfig;
use atrest_kms::backends::local::{self, KeyStore, LocalBackend};
use atrest_kms::backends::pkcs11::{self as p11, Pkcs11Config};
use atrest_kms::backends::vault::{VaultAuth, VaultConfig};
use atrest_kms::backends::BackendSpec;
use atrest_kms::bench::{BenchOp, BenchOptions};
use atrest_kms::server::{self, ServeConfig};
use atrest_kms::Endpoint;
use atrest_kms::Zeroizing;

use super::common::{emit, parse_duration};
use super::report_output::{write_document, OutputFormat};

#[derive(clap::Subcommand)]
pub enum KmsCommand {
    /// Run the KMS v2 plugin kube-apiserver calls (default backend: local key store).
    Serve(Box<ServeArgs>),
    /// Create a local key store with its first KEK.
    Init(StoreArgs),
    /// Add a new KEK version to a local key store; a running plugin switches to it within
    /// --health-interval, older versions keep decrypting.
    Rotate(StoreArgs),
    /// List the KEK versions and key ids of a local key store.
    List(ListArgs),
    /// Create a non-extractable AES-256 key in a PKCS#11 token for the pkcs11 backend.
    #[command(name = "pkcs11-keygen")]
    Pkcs11Keygen(Pkcs11Args),
    /// Ask any KMS v2 plugin for its Status.
    Status(StatusArgs),
    /// Measure calls/s and latency of any KMS v2 plugin.
    Bench(BenchArgs),
    /// Print a systemd unit that runs `kms serve` with these flags (sandboxed, before kubelet).
    Unit(Box<super::kms_deploy::UnitArgs>),
    /// Print a static-pod manifest that runs `kms serve` with these flags in kube-system.
    Manifest(Box<super::kms_deploy::ManifestArgs>),
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum BackendKind {
    Local,
    Pkcs11,
    Vault,
    /// AWS KMS (--aws-key-id …).
    #[value(name = "aws-kms")]
    AwsKms,
}

#[derive(Clone, Copy, clap::ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(clap::Args)]
pub struct StoreArgs {
    /// Key store directory [default: /var/lib/atrest/kms as root, else $XDG_DATA_HOME/atrest/kms].
    #[arg(long, env = "ATREST_KMS_KEY_STORE")]
    pub key_store: Option<PathBuf>,
    /// Seal the store with the passphrase in this file (scrypt + AES-256-GCM); the file must be
    /// 0600. Or set ATREST_KMS_PASSPHRASE.
    #[arg(long)]
    pub passphrase_file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct Pkcs11Args {
    /// PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.
    #[arg(long, env = "ATREST_PKCS11_MODULE")]
    pub pkcs11_module: Option<PathBuf>,
    /// Slot id of the token.
    #[arg(long, conflicts_with = "pkcs11_token_label")]
    pub pkcs11_slot: Option<u64>,
    /// Label of the token (alternative to --pkcs11-slot).
    #[arg(long)]
    pub pkcs11_token_label: Option<String>,
    /// File holding the user PIN (or set ATREST_PKCS11_PIN).
    #[arg(long)]
    pub pkcs11_pin_file: Option<PathBuf>,
    /// Key label; repeat to keep older keys for decryption (the first one encrypts).
    #[arg(long = "pkcs11-key-label")]
    pub pkcs11_key_labels: Vec<String>,
    /// Parallel sessions with the token.
    #[arg(long, default_value_t = 4)]
    pub pkcs11_sessions: usize,
}

#[derive(clap::Args)]
pub struct VaultArgs {
    /// Vault/OpenBao address, e.g. https://vault.example:8200.
    #[arg(long, env = "VAULT_ADDR")]
    pub vault_addr: Option<String>,
    /// Transit secrets engine mount path.
    #[arg(long, default_value = "transit")]
    pub vault_mount: String,
    /// Transit key name.
    #[arg(long)]
    pub vault_key: Option<String>,
    /// Vault Enterprise / OpenBao namespace (X-Vault-Namespace).
    #[arg(long, env = "VAULT_NAMESPACE")]
    pub vault_namespace: Option<String>,
    /// File holding a Vault token (or set VAULT_TOKEN).
    #[arg(long)]
    pub vault_token_file: Option<PathBuf>,
    /// AppRole role_id (use with --vault-secret-id-file or VAULT_SECRET_ID).
    #[arg(long)]
    pub vault_role_id: Option<String>,
    /// File holding the AppRole secret_id.
    #[arg(long)]
    pub vault_secret_id_file: Option<PathBuf>,
    /// AppRole auth mount path.
    #[arg(long, default_value = "approle")]
    pub vault_approle_mount: String,
    /// Trust only this CA bundle (PEM) for Vault's TLS certificate.
    #[arg(long, env = "VAULT_CACERT")]
    pub vault_ca_file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct AwsArgs {
    /// KMS key: key id, key ARN, alias/NAME or alias ARN. Re-resolved every --health-interval:
    /// re-pointing the alias to another key is a KEK rotation, no restart needed.
    #[arg(long, value_name = "KEY_ID|ARN|alias/NAME")]
    pub aws_key_id: Option<String>,
    /// AWS region [default: AWS_REGION, AWS_DEFAULT_REGION, the profile's region, instance
    /// metadata].
    #[arg(long)]
    pub aws_region: Option<String>,
    /// KMS endpoint (VPC endpoint, emulator) [default: AWS_ENDPOINT_URL_KMS, AWS_ENDPOINT_URL,
    /// https://kms.REGION.amazonaws.com].
    #[arg(long)]
    pub aws_endpoint_url: Option<String>,
    /// Encryption context bound into every ciphertext; repeatable. Decrypt needs the same set.
    #[arg(long = "aws-encryption-context", value_name = "KEY=VALUE", value_parser = parse_context)]
    pub aws_encryption_context: Vec<(String, String)>,
    /// Decrypt blobs of any KMS key this identity may use, not only the configured key and the
    /// keys this plugin served before (e.g. values written by another plugin).
    #[arg(long)]
    pub aws_allow_any_key: bool,
    /// Where the plugin records the KMS keys it served, so their values still decrypt after the
    /// alias moved and a restart [default: /var/lib/atrest/aws-kms as root, else
    /// $XDG_STATE_HOME/atrest/aws-kms].
    #[arg(long, env = "ATREST_KMS_AWS_STATE_DIR")]
    pub aws_state_dir: Option<PathBuf>,
}

fn parse_context(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Socket to listen on: unix:///path/to.sock, or unix:///@name for an abstract socket
    /// [default: unix:///run/atrest/kms.sock as root, else $XDG_RUNTIME_DIR/atrest-kms.sock].
    #[arg(long)]
    pub listen: Option<String>,
    /// Where the key-encrypting keys live.
    #[arg(long, value_enum, default_value = "local")]
    pub backend: BackendKind,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Create the local key store if it does not exist (on a terminal you are asked instead).
    #[arg(long)]
    pub init: bool,
    #[command(flatten)]
    pub pkcs11: Pkcs11Args,
    #[command(flatten)]
    pub vault: VaultArgs,
    #[command(flatten)]
    pub aws: AwsArgs,
    /// Also serve the deprecated v1beta1 API on the same socket.
    #[arg(long)]
    pub v1beta1: bool,
    /// Group (name or gid) owning the socket; the socket becomes 0660 instead of 0600.
    #[arg(long)]
    pub socket_group: Option<String>,
    /// Only accept connections from these uids (checked with SO_PEERCRED); repeatable. An abstract
    /// socket (`unix:///@name`) without it only accepts the server's own uid.
    #[arg(long = "allowed-uid")]
    pub allowed_uids: Vec<u32>,
    /// Open connections at most (lowered to fit the open-files limit); more wait in the backlog.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Threads serving gRPC calls. One thread serves the most calls per CPU second (a call is a
    /// few microseconds of work); more only help a CPU-bound backend under heavy parallel load.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub worker_threads: u32,
    /// Serve Prometheus /metrics, /healthz and /readyz on this address, e.g. 127.0.0.1:9464.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Timeout of each backend call (e.g. 3s, 500ms; a bare number is seconds).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Time between background key refreshes + health probes (e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub health_interval: Duration,
    /// Log format on stderr (level from ATREST_LOG, default info).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(clap::Args)]
pub struct StatusArgs {
    /// Plugin socket, unix:///path or unix:///@name.
    #[arg(long)]
    pub endpoint: String,
    /// Per-call timeout (e.g. 3s).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum BenchOpArg {
    Encrypt,
    Decrypt,
    Both,
}

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Plugin socket, unix:///path or unix:///@name.
    #[arg(long)]
    pub endpoint: String,
    /// Concurrent callers.
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// Time per operation (e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Which RPC to measure.
    #[arg(long, value_enum, default_value = "both")]
    pub op: BenchOpArg,
    /// gRPC connections the callers share (kube-apiserver uses one).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// The plugin's process id (same host): also report its CPU time per call (/proc/PID/stat).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Output: a table, or one JSON/YAML document (`{"endpoint": …, "results": [...]}`).
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

/// Whether `cmd` sets up logging itself (serve has --log-format and logs at info by default).
pub fn inits_logging(cmd: &KmsCommand) -> bool {
    matches!(cmd, KmsCommand::Serve(_))
}

pub fn run(cmd: KmsCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KmsCommand::Serve(args) => serve(*args),
        KmsCommand::Init(args) => init(&args),
        KmsCommand::Rotate(args) => rotate(&args),
        KmsCommand::List(args) => list(&args),
        KmsCommand::Pkcs11Keygen(args) => pkcs11_keygen(&args),
        KmsCommand::Status(args) => status(&args),
        KmsCommand::Bench(args) => bench(&args),
        KmsCommand::Unit(args) => super::kms_deploy::run_unit(&args),
        KmsCommand::Manifest(args) => super::kms_deploy::run_manifest(&args),
    }
}

/// The KMS client every command uses for `kms` providers in a config: gRPC over the plugin socket
/// the config names (any vendor's plugin).
pub fn connector() -> Arc<dyn atrest_core::kms::KmsConnector> {
    Arc::new(atrest_kms::client::GrpcKms::new())
}

pub(crate) fn init_serve_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATREST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .fmt_fields(super::terminal_text::log_fields())
            .try_init(),
    };
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

fn default_listen() -> String {
    if is_root() {
        return "unix:///run/atrest/kms.sock".into();
    }
    match std::env::var("XDG_RUNTIME_DIR") {
        Ok(d) if !d.is_empty() => format!("unix://{d}/atrest-kms.sock"),
        _ => {
            let uid = std::fs::metadata("/proc/self")
                .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
                .unwrap_or(0);
            format!("unix:///tmp/atrest-kms-{uid}.sock")
        }
    }
}

fn store_dir(args: &StoreArgs) -> PathBuf {
    args.key_store.clone().unwrap_or_else(local::default_dir)
}

fn passphrase(args: &StoreArgs) -> anyhow::Result<Option<Zeroizing<Vec<u8>>>> {
    if let Some(f) = &args.passphrase_file {
        return Ok(Some(local::read_passphrase_file(f)?));
    }
    match std::env::var("ATREST_KMS_PASSPHRASE") {
        Ok(p) if !p.is_empty() => Ok(Some(Zeroizing::new(p.into_bytes()))),
        _ => Ok(None),
    }
}

/// Reads a secret file (PIN, token): must not be group/world-readable; trailing newline dropped.
fn read_secret(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let raw = local::read_passphrase_file(path)?;
    let s =
        std::str::from_utf8(&raw).with_context(|| format!("{} is not UTF-8", path.display()))?;
    Ok(Zeroizing::new(s.to_string()))
}

fn init(args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let dir = store_dir(args);
    let pass = passphrase(args)?;
    let store = KeyStore::init(&dir, pass.as_ref().map(|p| p.as_slice()))?;
    let backend = LocalBackend::from_store(store)?;
    let id = atrest_kms::KeyBackend::current_key_id(&backend)?;
    say!(
        "created key store {} ({}), key id {id}",
        dir.display(),
        if pass.is_some() {
            "sealed"
        } else {
            "not sealed"
        }
    );
    Ok(ExitCode::SUCCESS)
}

fn rotate(args: &StoreArgs) -> anyhow::Result<ExitCode> {
    let dir = store_dir(args);
    let pass = passphrase(args)?;
    let store = KeyStore::open(&dir, pass.as_ref().map(|p| p.as_slice()))?;
    let version = store.rotate()?;
    let backend = LocalBackend::from_store(store)?;
    let id = atrest_kms::KeyBackend::current_key_id(&backend)?;
    say!(
        "added KEK version {version} to {}, new key id {id}",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// One KEK version of `kms list -o json|yaml`.
#[derive(serde::Serialize)]
struct KekOut<'a> {
    version: u32,
    /// `primary` (wraps new seeds) or `decrypt` (kept to unwrap older ones).
    role: &'static str,
    key_id: &'a str,
}

fn list(args: &ListArgs) -> anyhow::Result<ExitCode> {
    let dir = store_dir(&args.store);
    let pass = passphrase(&args.store)?;
    let backend = LocalBackend::open(&dir, pass.as_ref().map(|p| p.as_slice()))?;
    let ids = backend.key_ids();
    let primary = ids.last().map(|(v, _)| *v);
    let keys: Vec<KekOut<'_>> = ids
        .iter()
        .map(|(v, id)| KekOut {
            version: *v,
            role: if Some(*v) == primary {
                "primary"
            } else {
                "decrypt"
            },
            key_id: id,
        })
        .collect();
    emit(ExitCode::SUCCESS, |out| {
        if args.output.is_document() {
            let doc = serde_json::json!({ "key_store": dir.display().to_string(), "keys": keys });
            return write_document(args.output, &doc, out);
        }
        writeln!(out, "{:<8} {:<8} KEY ID", "VERSION", "ROLE")?;
        for k in &keys {
            writeln!(out, "{:<8} {:<8} {}", k.version, k.role, k.key_id)?;
        }
        Ok(())
    })
}

fn pkcs11_config(args: &Pkcs11Args) -> anyhow::Result<Pkcs11Config> {
    let module = args
        .pkcs11_module
        .clone()
        .context("--pkcs11-module is required")?;
    let pin = match (&args.pkcs11_pin_file, std::env::var("ATREST_PKCS11_PIN")) {
        (Some(f), _) => read_secret(f)?,
        (None, Ok(p)) if !p.is_empty() => Zeroizing::new(p),
        _ => bail!("give the token user PIN with --pkcs11-pin-file or ATREST_PKCS11_PIN"),
    };
    if args.pkcs11_slot.is_none() && args.pkcs11_token_label.is_none() {
        bail!("give --pkcs11-slot or --pkcs11-token-label");
    }
    if args.pkcs11_key_labels.is_empty() {
        bail!("give --pkcs11-key-label");
    }
    Ok(Pkcs11Config {
        module,
        slot: args.pkcs11_slot,
        token_label: args.pkcs11_token_label.clone(),
        pin,
        key_labels: args.pkcs11_key_labels.clone(),
        sessions: args.pkcs11_sessions.max(1),
    })
}

fn vault_config(args: &VaultArgs, timeout: Duration) -> anyhow::Result<VaultConfig> {
    let addr = args
        .vault_addr
        .clone()
        .context("--vault-addr (or VAULT_ADDR) is required")?;
    let key = args.vault_key.clone().context("--vault-key is required")?;
    let auth = if let Some(role_id) = &args.vault_role_id {
        let secret_id = match (&args.vault_secret_id_file, std::env::var("VAULT_SECRET_ID")) {
            (Some(f), _) => read_secret(f)?,
            (None, Ok(s)) if !s.is_empty() => Zeroizing::new(s),
            _ => bail!("AppRole needs --vault-secret-id-file or VAULT_SECRET_ID"),
        };
        VaultAuth::AppRole {
            mount: args.vault_approle_mount.clone(),
            role_id: role_id.clone(),
            secret_id,
        }
    } else {
        let token = match (&args.vault_token_file, std::env::var("VAULT_TOKEN")) {
            (Some(f), _) => read_secret(f)?,
            (None, Ok(t)) if !t.is_empty() => Zeroizing::new(t),
            _ => bail!("give --vault-token-file, VAULT_TOKEN, or AppRole (--vault-role-id)"),
        };
        VaultAuth::Token(token)
    };
    Ok(VaultConfig {
        addr,
        mount: args.vault_mount.trim_matches('/').to_string(),
        key,
        namespace: args.vault_namespace.clone().filter(|n| !n.is_empty()),
        auth,
        ca_file: args.vault_ca_file.clone(),
        timeout,
    })
}

fn aws_config(args: &AwsArgs, timeout: Duration) -> anyhow::Result<AwsKmsConfig> {
    let key_id = args
        .aws_key_id
        .clone()
        .context("--aws-key-id is required with --backend aws-kms")?;
    let mut config = AwsKmsConfig::new(key_id);
    for (k, v) in &args.aws_encryption_context {
        if config
            .encryption_context
            .insert(k.clone(), v.clone())
            .is_some()
        {
            bail!("--aws-encryption-context: key {k:?} given twice");
        }
    }
    config.region = args.aws_region.clone();
    config.endpoint_url = args.aws_endpoint_url.clone();
    config.allow_any_key = args.aws_allow_any_key;
    config.state_dir = args.aws_state_dir.clone();
    config.timeout = timeout;
    Ok(config)
}

/// Makes sure the local store exists: `--init` creates it, a terminal asks, otherwise the
/// "does not exist" error explains what to run.
fn ensure_store(args: &ServeArgs, pass: Option<&[u8]>) -> anyhow::Result<()> {
    let dir = store_dir(&args.store);
    if dir.join("store.json").exists() {
        return Ok(());
    }
    let create = if args.init {
        true
    } else if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        eprint!(
            "Key store {} does not exist. Create it now with a new KEK? [y/N] ",
            dir.display()
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        matches!(answer.trim(), "y" | "Y" | "yes")
    } else {
        false
    };
    if create {
        KeyStore::init(&dir, pass)?;
        tracing::info!(key_store = %dir.display(), sealed = pass.is_some(), "created key store");
    }
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_serve_logging(args.log_format);
    let timeout = args.timeout;
    let listen = args.listen.clone().unwrap_or_else(default_listen);
    let endpoint = Endpoint::parse(&listen)?;
    let spec = match args.backend {
        BackendKind::Local => {
            let pass = passphrase(&args.store)?;
            ensure_store(&args, pass.as_ref().map(|p| p.as_slice()))?;
            BackendSpec::Local {
                key_store: store_dir(&args.store),
                passphrase: pass,
            }
        }
        BackendKind::Pkcs11 => BackendSpec::Pkcs11(pkcs11_config(&args.pkcs11)?),
        BackendKind::Vault => BackendSpec::Vault(vault_config(&args.vault, timeout)?),
        BackendKind::AwsKms => BackendSpec::AwsKms(aws_config(&args.aws, timeout)?),
    };
    let config = ServeConfig {
        endpoint,
        socket_group: args
            .socket_group
            .as_deref()
            .map(server::listener::resolve_group)
            .transpose()?,
        allowed_uids: args.allowed_uids.clone(),
        v1beta1: args.v1beta1,
        call_timeout: timeout,
        health_interval: args.health_interval,
        metrics_listen: args.metrics_listen,
        limits: server::guard::ConnLimits {
            max_connections: args.max_connections as usize,
            ..Default::default()
        },
        worker_threads: args.worker_threads as usize,
    };
    server::run_blocking(config, spec)?;
    Ok(ExitCode::SUCCESS)
}

fn pkcs11_keygen(args: &Pkcs11Args) -> anyhow::Result<ExitCode> {
    let config = pkcs11_config(args)?;
    let label = config.key_labels[0].clone();
    let k = p11::generate_key(&config, &label)?;
    say!(
        "created AES-256 key {:?} in the token, key id {}",
        k.label,
        k.key_id
    );
    Ok(ExitCode::SUCCESS)
}

fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    use super::terminal_text::escape_control as esc;
    let kms = connector();
    let client = kms.connect_v2("status", &args.endpoint, args.timeout)?;
    let s = client.status()?;
    let code = if s.healthz == "ok" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::exit::FAILURE)
    };
    emit(code, |out| {
        if args.output.is_document() {
            let doc = serde_json::json!({
                "endpoint": args.endpoint,
                "version": s.version,
                "healthz": s.healthz,
                "key_id": s.key_id,
            });
            return write_document(args.output, &doc, out);
        }
        writeln!(
            out,
            "version: {}\nhealthz: {}\nkey_id:  {}",
            esc(&s.version),
            esc(&s.healthz),
            esc(&s.key_id)
        )?;
        Ok(())
    })
}

fn bench(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let opts = BenchOptions {
        endpoint: Endpoint::parse(&args.endpoint)?,
        concurrency: args.concurrency.max(1),
        duration: args.duration,
        op: match args.op {
            BenchOpArg::Encrypt => BenchOp::Encrypt,
            BenchOpArg::Decrypt => BenchOp::Decrypt,
            BenchOpArg::Both => BenchOp::Both,
        },
        connections: args.connections.max(1),
        server_pid: args.server_pid,
    };
    let results = atrest_kms::bench::run_blocking(&opts)?;
    emit(ExitCode::SUCCESS, |out| {
        if args.output.is_document() {
            let doc = serde_json::json!({ "endpoint": args.endpoint, "results": results });
            return write_document(args.output, &doc, out);
        }
        let cpu_header = if args.server_pid.is_some() {
            format!(" {:>15}", "SERVER CPU µs")
        } else {
            String::new()
        };
        writeln!(
            out,
            "{:<8} {:>11} {:>11} {:>12} {:>9} {:>9} {:>7}{cpu_header}",
            "OP", "CONCURRENCY", "CALLS", "CALLS/S", "P50 µs", "P99 µs", "ERRORS"
        )?;
        for r in &results {
            let cpu = r
                .server_cpu_us_per_call
                .map(|us| format!(" {us:>15.1}"))
                .unwrap_or_default();
            writeln!(
                out,
                "{:<8} {:>11} {:>11} {:>12.0} {:>9} {:>9} {:>7}{cpu}",
                r.op, r.concurrency, r.calls, r.calls_per_s, r.p50_us, r.p99_us, r.errors
            )?;
        }
        Ok(())
    })
}
