//! `atrest kms unit` and `atrest kms manifest`: the plugin as a systemd unit or a static pod.
//!
//! Both take exactly `kms serve`'s flags (the same [`ServeArgs`], so they cannot drift from what
//! `serve` accepts): clap validates them, and the unit's `ExecStart` / the pod's `command` repeat
//! the tokens as given, in order. What the flags point at decides the writable paths and mounts.

mod pod;
mod unit;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::common::print_stdout;
use super::kms::{BackendKind, ServeArgs};

#[derive(clap::Args)]
pub struct UnitArgs {
    /// The atrest binary ExecStart runs [default: this binary's path].
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(clap::Args)]
pub struct ManifestArgs {
    /// Container image with the atrest binary on its PATH.
    #[arg(long, value_name = "IMAGE")]
    pub image: String,
    #[command(flatten)]
    pub serve: ServeArgs,
}

pub fn run_unit(args: &UnitArgs) -> anyhow::Result<ExitCode> {
    let binary = match &args.binary {
        Some(b) => b.clone(),
        None => std::env::current_exe()
            .and_then(std::fs::canonicalize)
            .unwrap_or_else(|_| PathBuf::from("/usr/local/bin/atrest")),
    };
    let tokens = serve_tokens(&["--binary"])?;
    let plan = Plan::new(&args.serve)?;
    print_stdout(&unit::render(&binary, &tokens, &plan)?)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_manifest(args: &ManifestArgs) -> anyhow::Result<ExitCode> {
    let tokens = serve_tokens(&["--image"])?;
    let plan = Plan::new(&args.serve)?;
    print_stdout(&pod::render(&args.image, &tokens, &plan)?)?;
    Ok(ExitCode::SUCCESS)
}

/// The serve flags exactly as given: the command line after `atrest kms unit|manifest`, without
/// the flags of unit/manifest itself.
fn serve_tokens(own: &[&str]) -> anyhow::Result<Vec<String>> {
    let args: Vec<OsString> = std::env::args_os().collect();
    let start = args
        .iter()
        .position(|a| a == "unit" || a == "manifest")
        .map(|i| i + 1)
        .unwrap_or(args.len());
    let mut out = Vec::new();
    let mut rest = args[start..].iter();
    while let Some(a) = rest.next() {
        let a = a
            .to_str()
            .ok_or_else(|| anyhow::anyhow!("argument {a:?} is not UTF-8"))?;
        if own.contains(&a) {
            rest.next();
            continue;
        }
        if own.iter().any(|o| a.starts_with(&format!("{o}="))) {
            continue;
        }
        out.push(a.to_owned());
    }
    Ok(out)
}

/// Where the plugin reads and writes, derived from the serve flags with root's defaults (both
/// the unit and the pod run as root, as kube-apiserver does).
#[derive(Debug)]
pub struct Plan {
    /// The socket path (`None`: abstract socket).
    pub socket: Option<PathBuf>,
    /// The local key store (`None`: another backend).
    pub key_store: Option<PathBuf>,
    /// The store is written (`--init` creates it).
    pub key_store_written: bool,
    /// Files read (passphrase, PIN, token, CA, module): the pod mounts them.
    pub read_files: Vec<PathBuf>,
    pub metrics: Option<std::net::SocketAddr>,
    pub network: bool,
    pub socket_group: Option<String>,
    pub pkcs11: bool,
}

/// Paths the plugin uses by default as root.
pub const DEFAULT_SOCKET: &str = "/run/atrest/kms.sock";
pub const DEFAULT_KEY_STORE: &str = "/var/lib/atrest/kms";

impl Plan {
    fn new(serve: &ServeArgs) -> anyhow::Result<Plan> {
        let listen = serve
            .listen
            .clone()
            .unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET}"));
        atrest_kms::Endpoint::parse(&listen)
            .map_err(|e| anyhow::anyhow!("--listen {listen}: {e}"))?;
        let socket = match listen.strip_prefix("unix://") {
            Some(p) if p.starts_with('@') => None,
            Some(p) => Some(PathBuf::from(p)),
            None => anyhow::bail!("--listen {listen}: expected unix:///path or unix:///@name"),
        };
        if let Some(s) = &socket {
            if !s.is_absolute() {
                anyhow::bail!("--listen {listen}: the socket path must be absolute");
            }
        }
        let local = matches!(serve.backend, BackendKind::Local);
        let key_store = local.then(|| {
            serve
                .store
                .key_store
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_KEY_STORE))
        });
        let mut read_files = Vec::new();
        let files = [
            serve.store.passphrase_file.as_ref().filter(|_| local),
            serve.pkcs11.pkcs11_pin_file.as_ref(),
            serve.vault.vault_token_file.as_ref(),
            serve.vault.vault_secret_id_file.as_ref(),
            serve.vault.vault_ca_file.as_ref(),
        ];
        for f in files.into_iter().flatten() {
            read_files.push(f.clone());
        }
        for p in read_files.iter().chain(key_store.iter()) {
            if !p.is_absolute() {
                anyhow::bail!(
                    "{} must be an absolute path (the service does not run in this directory)",
                    p.display()
                );
            }
        }
        Ok(Plan {
            socket,
            key_store,
            key_store_written: serve.init,
            read_files,
            metrics: serve.metrics_listen,
            network: matches!(serve.backend, BackendKind::Vault),
            socket_group: serve.socket_group.clone(),
            pkcs11: matches!(serve.backend, BackendKind::Pkcs11),
        })
    }

    /// The socket's directory.
    pub fn socket_dir(&self) -> Option<&Path> {
        self.socket.as_deref().and_then(Path::parent)
    }
}
