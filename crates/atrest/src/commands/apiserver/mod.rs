//! `atrest apiserver enable / disable`: wire an EncryptionConfiguration (and a KMS plugin socket)
//! into a kubeadm-style kube-apiserver static-pod manifest, or undo it; `--flavor` prints the
//! equivalent for k3s, rke2 and Talos instead. The manifest is edited as text (see [`edit`]),
//! backed up outside the manifests directory and replaced atomically ([`write`]).

mod edit;
mod flavor;
mod write;
pub mod yaml_tree;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::common::print_stdout;
use anyhow::{bail, Context};
use atrest_core::config::{self, LoadOptions, ProviderConfiguration};

pub use edit::CONFIG_FLAG;
use edit::{Coverage, EnableSpec, HostMount, CONFIG_VOLUME, SOCKET_VOLUME};
use flavor::{Flavor, Wiring};

/// kubeadm's path of the manifest.
pub const DEFAULT_MANIFEST: &str = "/etc/kubernetes/manifests/kube-apiserver.yaml";

#[derive(clap::Subcommand)]
pub enum ApiserverCommand {
    /// Point kube-apiserver's static-pod manifest at an EncryptionConfiguration: the flag, a
    /// read-only hostPath mount of the config and (with --kms-socket-dir) of the plugin socket.
    Enable(EnableArgs),
    /// Remove what `enable` added (flags, atrest's volumes and mounts).
    Disable(DisableArgs),
}

#[derive(clap::Args)]
pub struct ManifestArgs {
    /// kube-apiserver's static-pod manifest.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_MANIFEST)]
    pub manifest: PathBuf,
    /// Print the change as a unified diff and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Where the previous manifest is saved [default: /var/lib/atrest/backups as root, else
    /// $XDG_STATE_HOME/atrest/backups]. Never inside the manifests directory.
    #[arg(long, value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Print the equivalent configuration for a distribution that manages kube-apiserver's
    /// manifest itself, instead of editing a manifest.
    #[arg(long, value_enum)]
    pub flavor: Option<Flavor>,
}

#[derive(clap::Args)]
pub struct EnableArgs {
    #[command(flatten)]
    pub common: ManifestArgs,
    /// The EncryptionConfiguration file (absolute path on the node); it must load.
    #[arg(long, value_name = "ENC_PATH")]
    pub config: PathBuf,
    /// Directory of the KMS plugin socket, mounted into the pod (hostPath DirectoryOrCreate).
    #[arg(long, value_name = "DIR")]
    pub kms_socket_dir: Option<PathBuf>,
    /// Also set --encryption-provider-config-automatic-reload=true.
    #[arg(long)]
    pub automatic_reload: bool,
}

#[derive(clap::Args)]
pub struct DisableArgs {
    #[command(flatten)]
    pub common: ManifestArgs,
    /// With --flavor: the config path the snippet names.
    #[arg(long, value_name = "ENC_PATH")]
    pub config: Option<PathBuf>,
    /// With --flavor: the socket directory the snippet names.
    #[arg(long, value_name = "DIR")]
    pub kms_socket_dir: Option<PathBuf>,
}

pub fn run(cmd: ApiserverCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ApiserverCommand::Enable(args) => enable(&args),
        ApiserverCommand::Disable(args) => disable(&args),
    }
}

/// A path as it goes into the manifest: absolute, normalised, and a plain YAML scalar.
fn manifest_path(p: &Path, what: &str) -> anyhow::Result<String> {
    if !p.is_absolute() {
        bail!(
            "{what} {} must be an absolute path (kube-apiserver reads it inside its pod)",
            p.display()
        );
    }
    let s = p
        .to_str()
        .with_context(|| format!("{what} {} is not UTF-8", p.display()))?;
    let clean: PathBuf = p.components().collect();
    let s_clean = clean.to_string_lossy().into_owned();
    if s_clean != s.trim_end_matches('/') && s != "/" || s.contains("/../") || s.ends_with("/..") {
        bail!("{what} {s} is not a normalised path (no `.`, `..` or `//`)");
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || "#'\"{}[],&*!|>%@`".contains(c))
        || s.contains(": ")
    {
        bail!("{what} {s:?} contains characters that need YAML quoting; use a plain path");
    }
    Ok(s_clean)
}

/// Directories too broad to hand to kube-apiserver whole: the config is mounted as a file there.
fn too_broad(dir: &Path, manifests_dir: &Path) -> bool {
    [
        "/",
        "/etc",
        "/etc/kubernetes",
        "/var",
        "/var/lib",
        "/usr",
        "/run",
        "/root",
        "/home",
        "/tmp",
    ]
    .iter()
    .any(|d| Path::new(d) == dir)
        || dir == manifests_dir
        // kubeadm's /etc/kubernetes wherever it is: it holds admin.conf and super-admin.conf.
        || Some(dir) == manifests_dir.parent()
}

fn enable(args: &EnableArgs) -> anyhow::Result<ExitCode> {
    let config_path = manifest_path(&args.config, "--config")?;
    let socket_dir = args
        .kms_socket_dir
        .as_deref()
        .map(|d| manifest_path(d, "--kms-socket-dir"))
        .transpose()?;
    let config_dir = Path::new(&config_path)
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf();

    if let Some(f) = args.common.flavor {
        let mount = config_dir.to_string_lossy();
        print_stdout(&flavor::snippet(
            f,
            &Wiring {
                config: &config_path,
                config_mount: &mount,
                socket_dir: socket_dir.as_deref(),
                automatic_reload: args.automatic_reload,
            },
            false,
        ))?;
        return Ok(ExitCode::SUCCESS);
    }

    let opts = LoadOptions {
        automatic_reload: args.automatic_reload,
        ..Default::default()
    };
    let enc = config::load_file(&args.config, &opts).with_context(|| {
        format!(
            "{} does not load, kube-apiserver would not start with it (check it with `atrest config check`)",
            args.config.display()
        )
    })?;
    if let Ok(meta) = std::fs::metadata(&args.config) {
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: {} is mode {:04o}; it holds keys: chmod 600 it (see `atrest audit`)",
                args.config.display(),
                meta.permissions().mode() & 0o7777
            );
        }
    }

    let (manifest, manifests_dir) = write::resolve(&args.common.manifest)?;
    if Path::new(&config_path).starts_with(&manifests_dir) {
        bail!(
            "{config_path} is inside the manifests directory {}: kubelet reads every file there as a pod; keep the config elsewhere",
            manifests_dir.display()
        );
    }
    let original = read_manifest(&manifest)?;
    let root = yaml_tree::parse(&original).map_err(|e| manifest_error(&manifest, e.into()))?;

    let mut mounts = Vec::new();
    let mut drop = Vec::new();
    let (mount_path, kind) = if too_broad(&config_dir, &manifests_dir) {
        (PathBuf::from(&config_path), "File")
    } else {
        (config_dir.clone(), "DirectoryOrCreate")
    };
    match edit::coverage(&root, Path::new(&config_path), &mount_path, false)
        .map_err(|e| manifest_error(&manifest, e))?
    {
        Coverage::Covered(name) => {
            eprintln!("{config_path} is already visible to kube-apiserver through volume {name:?}; no mount added");
            drop.push(CONFIG_VOLUME);
        }
        Coverage::Conflict(name) => bail!(
            "{}: volume mount {name:?} already uses {} for a different host path; resolve it by hand",
            manifest.display(),
            mount_path.display()
        ),
        Coverage::NotCovered => mounts.push(HostMount {
            name: CONFIG_VOLUME,
            path: mount_path.to_string_lossy().into_owned(),
            kind,
            read_only: true,
        }),
    }
    if let Some(dir) = &socket_dir {
        match edit::coverage(&root, Path::new(dir), Path::new(dir), true)
            .map_err(|e| manifest_error(&manifest, e))?
        {
            Coverage::Covered(name) => {
                eprintln!("{dir} is already mounted writable through volume {name:?}; no mount added");
                drop.push(SOCKET_VOLUME);
            }
            Coverage::Conflict(name) => bail!(
                "{}: volume mount {name:?} already uses {dir} for a different host path; resolve it by hand",
                manifest.display()
            ),
            Coverage::NotCovered => mounts.push(HostMount {
                name: SOCKET_VOLUME,
                path: dir.clone(),
                kind: "DirectoryOrCreate",
                read_only: false,
            }),
        }
    }
    let spec = EnableSpec {
        config: config_path.clone(),
        automatic_reload: args.automatic_reload,
        mounts,
        drop,
    };
    let updated = edit::enable(&original, &spec).map_err(|e| manifest_error(&manifest, e))?;
    check_enabled(&updated, &spec).map_err(|e| manifest_error(&manifest, e))?;
    warn_unmounted_sockets(&enc, &updated);
    finish(&args.common, &manifest, &manifests_dir, &original, &updated)
}

fn disable(args: &DisableArgs) -> anyhow::Result<ExitCode> {
    if let Some(f) = args.common.flavor {
        let config = args
            .config
            .as_deref()
            .map(|p| manifest_path(p, "--config"))
            .transpose()?
            .unwrap_or_else(|| "ENC_PATH".into());
        let socket = args
            .kms_socket_dir
            .as_deref()
            .map(|d| manifest_path(d, "--kms-socket-dir"))
            .transpose()?;
        let mount = Path::new(&config)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        print_stdout(&flavor::snippet(
            f,
            &Wiring {
                config: &config,
                config_mount: &mount,
                socket_dir: socket.as_deref(),
                automatic_reload: true,
            },
            true,
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    let (manifest, manifests_dir) = write::resolve(&args.common.manifest)?;
    let original = read_manifest(&manifest)?;
    let updated = edit::disable(&original).map_err(|e| manifest_error(&manifest, e))?;
    if updated != original && !args.common.dry_run {
        eprintln!(
            "warning: kube-apiserver will run without encryption at rest. Secrets already encrypted can no longer be read \
             unless they were first rewritten with an identity-first config (`atrest rewrite`); `atrest status` shows what is encrypted."
        );
    }
    finish(&args.common, &manifest, &manifests_dir, &original, &updated)
}

/// Dry run: the diff. Otherwise: backup, atomic replace, report.
fn finish(
    common: &ManifestArgs,
    manifest: &Path,
    manifests_dir: &Path,
    original: &str,
    updated: &str,
) -> anyhow::Result<ExitCode> {
    if updated == original {
        print_stdout(&format!(
            "{}: already up to date, nothing changed\n",
            manifest.display()
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    if common.dry_run {
        let name = manifest.display().to_string();
        let diff = similar::TextDiff::from_lines(original, updated);
        print_stdout(
            &diff
                .unified_diff()
                .context_radius(3)
                .header(&name, &name)
                .to_string(),
        )?;
        return Ok(ExitCode::SUCCESS);
    }
    let backup_dir = common
        .backup_dir
        .clone()
        .unwrap_or_else(write::default_backup_dir);
    let backup = write::backup(manifest, manifests_dir, original.as_bytes(), &backup_dir)?;
    write::replace(manifest, manifests_dir, updated.as_bytes())?;
    print_stdout(&format!(
        "backup: {}\nupdated {}; kubelet restarts kube-apiserver with it (restore: cp {} {})\n",
        backup.display(),
        manifest.display(),
        backup.display(),
        manifest.display()
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn read_manifest(manifest: &Path) -> anyhow::Result<String> {
    let bytes =
        std::fs::read(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", manifest.display()))
}

fn manifest_error(manifest: &Path, e: edit::EditError) -> anyhow::Error {
    anyhow::anyhow!("{}: {e}; nothing changed", manifest.display())
}

/// Checks the result independently of how it was made: the flag once with the wanted value, and
/// each wanted volume and mount present once.
fn check_enabled(text: &str, spec: &EnableSpec) -> Result<(), edit::EditError> {
    let root = yaml_tree::parse(text)?;
    let c = edit::container(&root)?;
    let want = format!("{CONFIG_FLAG}={}", spec.config);
    let args: Vec<&str> = ["command", "args"]
        .iter()
        .filter_map(|k| c.get(k).and_then(yaml_tree::Node::items))
        .flatten()
        .filter_map(yaml_tree::Node::as_str)
        .collect();
    let count = args
        .iter()
        .filter(|a| a.starts_with(&format!("{CONFIG_FLAG}=")) || **a == CONFIG_FLAG)
        .count();
    if count != 1 || !args.contains(&want.as_str()) {
        return Err(edit::EditError::Shape(format!(
            "internal check failed: {want} is not set exactly once"
        )));
    }
    let names = |node: Option<&yaml_tree::Node>| -> Vec<String> {
        node.and_then(yaml_tree::Node::items)
            .unwrap_or_default()
            .iter()
            .filter_map(|i| i.get("name").and_then(yaml_tree::Node::as_str))
            .map(str::to_owned)
            .collect()
    };
    let mounts = names(c.get("volumeMounts"));
    let volumes = names(root.get("spec").and_then(|s| s.get("volumes")));
    for m in &spec.mounts {
        let n = m.name.to_owned();
        if mounts.iter().filter(|x| **x == n).count() != 1
            || volumes.iter().filter(|x| **x == n).count() != 1
        {
            return Err(edit::EditError::Shape(format!(
                "internal check failed: volume {} not present exactly once",
                m.name
            )));
        }
    }
    Ok(())
}

/// A KMS provider whose socket kube-apiserver cannot reach from inside its pod: a warning.
fn warn_unmounted_sockets(enc: &config::EncryptionConfiguration, manifest: &str) {
    for r in &enc.resources {
        for p in &r.providers {
            let ProviderConfiguration::Kms(k) = p else {
                continue;
            };
            let Some(path) = k.endpoint.strip_prefix("unix://") else {
                continue;
            };
            if path.starts_with('@') {
                continue; // abstract socket: shared through hostNetwork's network namespace
            }
            let sock = Path::new(path);
            let dir = sock.parent().unwrap_or(Path::new("/"));
            if !visible_in_pod(manifest, sock, true) {
                eprintln!(
                    "warning: KMS provider {:?} listens on {}, which is not mounted into the kube-apiserver pod: add --kms-socket-dir {}",
                    k.name,
                    path,
                    dir.display()
                );
            }
        }
    }
}

/// The kube-apiserver container's command and args of a manifest (for `audit`).
pub fn manifest_args(text: &str) -> Result<Vec<String>, String> {
    let root = yaml_tree::parse(text).map_err(|e| format!("not valid YAML: {e}"))?;
    let c = edit::container(&root).map_err(|e| e.to_string())?;
    Ok(["command", "args"]
        .iter()
        .filter_map(|k| c.get(k).and_then(yaml_tree::Node::items))
        .flatten()
        .filter_map(yaml_tree::Node::as_str)
        .map(str::to_owned)
        .collect())
}

/// Whether `path` is visible inside the manifest's kube-apiserver pod at the same path (writable
/// if `write`), through any hostPath mount.
pub fn visible_in_pod(text: &str, path: &Path, write: bool) -> bool {
    yaml_tree::parse(text)
        .ok()
        .and_then(|root| edit::coverage_any(&root, path, write).ok())
        .unwrap_or(false)
}

/// The path of the kube-apiserver container's liveness probe (for `audit`).
pub fn liveness_path(text: &str) -> Option<String> {
    let root = yaml_tree::parse(text).ok()?;
    let c = edit::container(&root).ok()?;
    c.get("livenessProbe")?
        .get("httpGet")?
        .get("path")?
        .as_str()
        .map(str::to_owned)
}
