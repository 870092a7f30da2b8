//! The checks on the node itself: kube-apiserver's flag and mounts, the config file (loads,
//! permissions, owner), its providers, Secrets coverage, the KMS plugin socket and key store.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use atrest_core::config::{self, EncryptionConfiguration, LoadOptions, ProviderConfiguration};
use atrest_core::GroupResource;

use super::checks::Check;
use super::AuditArgs;
use crate::commands::apiserver::{self, CONFIG_FLAG};

/// What the node checks learned, for the etcd checks.
pub struct NodeFacts {
    /// kube-apiserver's command line from the manifest (empty without one).
    pub apiserver_args: Vec<String>,
    pub config_path: Option<PathBuf>,
    pub config: Option<EncryptionConfiguration>,
    pub load_options: LoadOptions,
    /// When the config file was last modified (bounds the age of its keys).
    pub config_mtime: Option<SystemTime>,
}

/// The value of `--name=value` in kube-apiserver's arguments (the last one wins, as in pflag).
pub fn flag_value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .rev()
        .find_map(|a| a.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

/// Days an aesgcm write key may stay in use (upstream: rotate well before 2^32 random nonces;
/// operators rotate on a schedule).
pub const AESGCM_MAX_AGE_DAYS: u64 = 90;

fn mode(m: &std::fs::Metadata) -> u32 {
    m.permissions().mode() & 0o7777
}

pub fn node_checks(args: &AuditArgs, out: &mut Vec<Check>) -> NodeFacts {
    let manifest_text = std::fs::read_to_string(&args.manifest);
    let mut apiserver_args = Vec::new();
    let manifest = args.manifest.display();
    match &manifest_text {
        Err(e) if args.config.is_some() => out.push(Check::warn(
            "flag",
            format!("cannot read the manifest {manifest} ({e}); checking --config alone"),
            "point --manifest at kube-apiserver's static-pod manifest (k3s/rke2: check kube-apiserver-arg in their config.yaml)",
        )),
        Err(e) => out.push(Check::fail(
            "flag",
            format!("cannot read the manifest {manifest}: {e}"),
            "run on a control-plane node, or give --manifest PATH and/or --config PATH",
        )),
        Ok(text) => match apiserver::manifest_args(text) {
            Err(e) => out.push(Check::fail(
                "flag",
                format!("{manifest}: {e}"),
                "fix the manifest: kubelet cannot run kube-apiserver from it",
            )),
            Ok(a) => apiserver_args = a,
        },
    }
    let from_manifest: Vec<&str> = apiserver_args
        .iter()
        .filter(|a| a.starts_with(&format!("{CONFIG_FLAG}=")))
        .map(|a| &a[CONFIG_FLAG.len() + 1..])
        .collect();
    if manifest_text
        .as_ref()
        .is_ok_and(|_| !apiserver_args.is_empty())
    {
        match from_manifest.len() {
            0 => out.push(Check::fail(
                "flag",
                format!("kube-apiserver in {manifest} runs without {CONFIG_FLAG}: nothing is encrypted at rest"),
                "atrest apiserver enable --config /etc/kubernetes/enc/enc.yaml",
            )),
            1 => out.push(Check::pass(
                "flag",
                format!("{CONFIG_FLAG}={} in {manifest}", from_manifest[0]),
            )),
            n => out.push(Check::fail(
                "flag",
                format!("{CONFIG_FLAG} is set {n} times in {manifest} (the last one wins)"),
                "atrest apiserver enable --config PATH (keeps exactly one)",
            )),
        }
    }
    let config_path = args
        .config
        .clone()
        .or_else(|| from_manifest.last().map(PathBuf::from));
    if let (Some(given), Some(used)) = (&args.config, from_manifest.last()) {
        if given != Path::new(used) {
            out.push(Check::warn(
                "flag",
                format!("--config {} is not the file kube-apiserver uses ({used})", given.display()),
                "audit the file kube-apiserver reads (drop --config), or run `atrest apiserver enable` with this one",
            ));
        }
    }
    let gates = args
        .feature_gates
        .clone()
        .or_else(|| flag_value(&apiserver_args, "--feature-gates").map(str::to_owned));
    let load_options = LoadOptions {
        automatic_reload: flag_value(
            &apiserver_args,
            "--encryption-provider-config-automatic-reload",
        ) == Some("true"),
        kms_v1_enabled: gates
            .as_deref()
            .and_then(|g| {
                let mut parsed = config::FeatureGates::default();
                config::parse_feature_gates(g, &mut parsed).ok()?;
                parsed.kms_v1
            })
            .unwrap_or(false),
    };
    let mut facts = NodeFacts {
        apiserver_args,
        config_path: config_path.clone(),
        config: None,
        load_options,
        config_mtime: None,
    };
    let Some(path) = config_path else {
        return facts;
    };
    if let Ok(text) = &manifest_text {
        if !facts.apiserver_args.is_empty() {
            if apiserver::visible_in_pod(text, &path, false) {
                out.push(Check::pass(
                    "config-mounted",
                    format!("{} is mounted into the kube-apiserver pod", path.display()),
                ));
            } else {
                out.push(Check::fail(
                    "config-mounted",
                    format!("{} is not visible inside the kube-apiserver pod: no hostPath mount covers it", path.display()),
                    format!("atrest apiserver enable --config {}", path.display()),
                ));
            }
        }
    }
    config_file_checks(&path, &mut facts, out);
    if let Some(cfg) = facts.config.clone() {
        provider_checks(args, &cfg, &facts, out);
        kms_socket_checks(&cfg, manifest_text.as_deref().ok(), out);
    }
    key_store_checks(args, out);
    facts
}

fn config_file_checks(path: &Path, facts: &mut NodeFacts, out: &mut Vec<Check>) {
    let shown = path.display();
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            out.push(Check::fail(
                "config-readable",
                format!("cannot read {shown}: {e}"),
                "create the EncryptionConfiguration there (see `atrest keygen -o yaml`, docs/config.md)",
            ));
            return;
        }
    };
    facts.config_mtime = meta.modified().ok();
    match config::load_file(path, &facts.load_options) {
        Ok(cfg) => {
            out.push(Check::pass(
                "config-readable",
                format!("{shown} loads as kube-apiserver would load it"),
            ));
            facts.config = Some(cfg);
        }
        Err(e) => out.push(Check::fail(
            "config-readable",
            format!("{shown} does not load, kube-apiserver will not start: {e}"),
            format!("atrest config check {shown}"),
        )),
    }
    let m = mode(&meta);
    if m & 0o077 != 0 {
        out.push(Check::fail(
            "config-mode",
            format!("{shown} is mode {m:04o}: group/others can read the keys in it"),
            format!("chmod 600 {shown}"),
        ));
    } else if m & 0o100 != 0 {
        out.push(Check::warn(
            "config-mode",
            format!("{shown} is mode {m:04o} (executable)"),
            format!("chmod 600 {shown}"),
        ));
    } else {
        out.push(Check::pass(
            "config-mode",
            format!("{shown} is mode {m:04o}"),
        ));
    }
    if meta.uid() == 0 {
        out.push(Check::pass(
            "config-owner",
            format!("{shown} is owned by root (uid 0, gid {})", meta.gid()),
        ));
    } else {
        out.push(Check::fail(
            "config-owner",
            format!(
                "{shown} is owned by uid {}: that user can change or read the keys",
                meta.uid()
            ),
            format!("chown root:root {shown}"),
        ));
    }
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::metadata(dir) {
            let dm = mode(&d);
            if dm & 0o002 != 0 && dm & 0o1000 == 0 {
                out.push(Check::fail(
                    "config-dir",
                    format!(
                        "{} is world-writable (mode {dm:04o}): anyone can replace the config",
                        dir.display()
                    ),
                    format!("chmod 700 {}", dir.display()),
                ));
            }
        }
    }
}

fn is_fips(args: &AuditArgs) -> bool {
    args.fips
        || std::fs::read_to_string("/proc/sys/crypto/fips_enabled")
            .map(|s| s.trim() == "1")
            .unwrap_or(false)
}

fn provider_checks(
    args: &AuditArgs,
    cfg: &EncryptionConfiguration,
    facts: &NodeFacts,
    out: &mut Vec<Check>,
) {
    let secrets = GroupResource::new("", "secrets");
    match cfg.write_provider_for(&secrets) {
        None => out.push(Check::fail(
            "secrets-covered",
            "no entry covers secrets: Secrets are stored in plaintext",
            "add `- resources: [secrets]` with a kms v2 provider first (see docs/deploy.md)",
        )),
        Some(ProviderConfiguration::Identity) => out.push(Check::fail(
            "secrets-covered",
            "secrets are written with identity (first provider): Secrets are stored in plaintext",
            "put the encrypting provider first and keep `- identity: {}` last, then `atrest rewrite`",
        )),
        Some(p) => out.push(Check::pass(
            "secrets-covered",
            format!("secrets are written with {}", provider_name(p)),
        )),
    }

    // The config reviewer's findings (`atrest config explain`), graded for an audit.
    let explained = config::explain(cfg, &facts.load_options);
    let mut identity_first = Vec::new();
    let mut findings = Vec::new();
    for e in &explained.entries {
        let what = e.resources.join(",");
        for w in &e.warnings {
            match w.code {
                "identity-writes" => identity_first.push(what.clone()),
                "identity-reads" | "no-identity" | "aesgcm-rotation" => {}
                _ => findings.push((w.code, format!("[{what}] {}", w.message))),
            }
        }
    }
    for w in &explained.warnings {
        findings.push((w.code, w.message.clone()));
    }
    if identity_first.is_empty() {
        out.push(Check::pass(
            "identity-first",
            "no entry writes with identity",
        ));
    } else {
        out.push(Check::fail(
            "identity-first",
            format!(
                "identity is the first provider for {}: new writes are plaintext",
                identity_first.join("; ")
            ),
            "move `- identity: {}` last (or remove it) and run `atrest rewrite`",
        ));
    }
    let aescbc: Vec<_> = findings.iter().filter(|(c, _)| *c == "aescbc").collect();
    if aescbc.is_empty() {
        out.push(Check::pass("aescbc", "no aescbc provider"));
    } else {
        for (_, m) in aescbc {
            out.push(Check::warn(
                "aescbc",
                m.clone(),
                "switch the write provider to kms v2 (or aesgcm), `atrest rewrite`, then remove aescbc",
            ));
        }
    }
    for (code, m) in findings.iter().filter(|(c, _)| *c != "aescbc") {
        out.push(Check::warn(
            "config-review",
            format!("{m} ({code})"),
            "see `atrest config explain`",
        ));
    }

    let used: Vec<&ProviderConfiguration> = cfg
        .resources
        .iter()
        .flat_map(|r| r.providers.iter())
        .collect();
    let has = |f: fn(&ProviderConfiguration) -> bool| used.iter().any(|p| f(p));
    let secretbox = has(|p| matches!(p, ProviderConfiguration::Secretbox(_)));
    let cbc = has(|p| matches!(p, ProviderConfiguration::AesCbc(_)));
    if is_fips(args) {
        if secretbox {
            out.push(Check::fail(
                "fips",
                "FIPS mode: secretbox (XSalsa20-Poly1305) is not a FIPS 140-approved algorithm",
                "use kms v2 with a FIPS-validated KMS (or aesgcm), `atrest rewrite`, then remove secretbox",
            ));
        } else if cbc {
            out.push(Check::warn(
                "fips",
                "FIPS mode: aescbc uses an approved cipher but no authentication",
                "prefer kms v2 or aesgcm (AES-GCM) under FIPS",
            ));
        } else {
            out.push(Check::pass(
                "fips",
                "FIPS mode: every provider uses AES-GCM (aesgcm, kms) or none",
            ));
        }
    } else {
        let note = if secretbox {
            " (secretbox would not be allowed under FIPS 140)"
        } else {
            ""
        };
        out.push(Check::pass("fips", format!("FIPS mode not required{note}")));
    }

    let aesgcm_writes = cfg
        .resources
        .iter()
        .any(|r| matches!(r.providers.first(), Some(ProviderConfiguration::AesGcm(_))));
    if aesgcm_writes {
        let age = facts
            .config_mtime
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .map(|d| d.as_secs() / 86_400);
        match age {
            Some(days) if days > AESGCM_MAX_AGE_DAYS => out.push(Check::warn(
                "aesgcm-key-age",
                format!("an aesgcm write key is at least {days} days old (the config is unchanged that long)"),
                "rotate: add a new aesgcm key first, restart kube-apiserver on every node, `atrest rewrite`, drop the old key",
            )),
            Some(days) => out.push(Check::pass(
                "aesgcm-key-age",
                format!("aesgcm write keys are at most {days} days old (config modified {days} days ago)"),
            )),
            None => out.push(Check::warn(
                "aesgcm-key-age",
                "cannot tell the age of the aesgcm write key (no modification time)",
                "rotate aesgcm keys on a schedule (at most every 90 days, or every 200,000 writes)",
            )),
        }
    }
}

fn provider_name(p: &ProviderConfiguration) -> String {
    match p {
        ProviderConfiguration::Identity => "identity".into(),
        ProviderConfiguration::AesCbc(_) => "aescbc".into(),
        ProviderConfiguration::AesGcm(_) => "aesgcm".into(),
        ProviderConfiguration::Secretbox(_) => "secretbox".into(),
        ProviderConfiguration::Kms(k) => format!(
            "kms {} {:?}",
            if k.api_version == config::KmsApiVersion::V2 {
                "v2"
            } else {
                "v1"
            },
            k.name
        ),
    }
}

fn kms_socket_checks(cfg: &EncryptionConfiguration, manifest: Option<&str>, out: &mut Vec<Check>) {
    let uses_kms = cfg
        .resources
        .iter()
        .flat_map(|r| r.providers.iter())
        .any(|p| matches!(p, ProviderConfiguration::Kms(_)));
    if let (true, Some(path)) = (uses_kms, manifest.and_then(apiserver::liveness_path)) {
        if path.contains("exclude=kms-providers") {
            out.push(Check::pass(
                "apiserver-livez",
                format!(
                    "kube-apiserver's liveness probe ({path}) does not depend on the KMS plugin"
                ),
            ));
        } else {
            out.push(Check::warn(
                "apiserver-livez",
                format!("kube-apiserver's liveness probe ({path}) includes the KMS check: a plugin outage makes kubelet restart kube-apiserver over and over"),
                "set the livenessProbe path to /livez?exclude=kms-providers (keep /readyz as it is), see docs/deploy.md",
            ));
        }
    }
    let mut seen = Vec::new();
    for p in cfg.resources.iter().flat_map(|r| r.providers.iter()) {
        let ProviderConfiguration::Kms(k) = p else {
            continue;
        };
        if seen.contains(&k.endpoint) {
            continue;
        }
        seen.push(k.endpoint.clone());
        let Some(path) = k.endpoint.strip_prefix("unix://") else {
            continue;
        };
        if path.starts_with('@') {
            out.push(Check::warn(
                "kms-socket",
                format!("KMS provider {:?} uses abstract socket {path}: it has no file permissions, any process in the host network namespace can connect", k.name),
                "serve on a socket path (unix:///run/atrest/kms.sock), or restrict callers with `kms serve --allowed-uid 0`",
            ));
            continue;
        }
        let sock = Path::new(path);
        match std::fs::symlink_metadata(sock) {
            Err(e) => out.push(Check::fail(
                "kms-socket",
                format!("KMS provider {:?}: {path}: {e} (is the plugin running?)", k.name),
                "start the plugin before kube-apiserver (atrest kms unit / atrest kms manifest, docs/deploy.md)",
            )),
            Ok(m) if !m.file_type().is_socket() => out.push(Check::fail(
                "kms-socket",
                format!("KMS provider {:?}: {path} is not a socket", k.name),
                "remove it and start the plugin",
            )),
            Ok(m) => {
                let sm = mode(&m);
                let dir = sock.parent().unwrap_or(Path::new("/"));
                let dm = std::fs::metadata(dir).map(|d| mode(&d)).unwrap_or(0);
                if sm & 0o007 != 0 {
                    out.push(Check::fail(
                        "kms-socket",
                        format!("{path} is mode {sm:04o}: any local user can ask the plugin to decrypt"),
                        format!("chmod 600 {path} (atrest kms serve creates it 0600; or use --socket-group)"),
                    ));
                } else if dm & 0o002 != 0 && dm & 0o1000 == 0 {
                    out.push(Check::fail(
                        "kms-socket",
                        format!("{} (holding {path}) is world-writable: the socket can be replaced", dir.display()),
                        format!("chmod 700 {}", dir.display()),
                    ));
                } else if sm & 0o070 != 0 {
                    out.push(Check::warn(
                        "kms-socket",
                        format!("{path} is mode {sm:04o}: members of gid {} can use the plugin", m.gid()),
                        "keep the group to kube-apiserver only, or serve with mode 0600",
                    ));
                } else {
                    out.push(Check::pass(
                        "kms-socket",
                        format!("{path} is a socket, mode {sm:04o}, owner uid {}", m.uid()),
                    ));
                }
            }
        }
        if let Some(text) = manifest {
            if !apiserver::visible_in_pod(text, sock, true) {
                out.push(Check::fail(
                    "kms-socket-mounted",
                    format!("{path} is not mounted into the kube-apiserver pod"),
                    format!(
                        "atrest apiserver enable --config ENC_PATH --kms-socket-dir {}",
                        sock.parent().unwrap_or(Path::new("/")).display()
                    ),
                ));
            }
        }
    }
}

fn key_store_checks(args: &AuditArgs, out: &mut Vec<Check>) {
    let default = Path::new("/var/lib/atrest/kms");
    let dir = match &args.key_store {
        Some(d) => d.clone(),
        None if default.exists() => default.to_path_buf(),
        None => return,
    };
    let shown = dir.display();
    let meta = match std::fs::metadata(&dir) {
        Ok(m) => m,
        Err(e) => {
            out.push(Check::fail(
                "key-store",
                format!("cannot read the key store {shown}: {e}"),
                "atrest kms init --key-store DIR",
            ));
            return;
        }
    };
    let mut bad = Vec::new();
    if mode(&meta) & 0o077 != 0 {
        bad.push(format!("{shown} is mode {:04o}", mode(&meta)));
    }
    let mut owners = vec![meta.uid()];
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for e in entries.flatten() {
                if let Ok(m) = e.metadata() {
                    owners.push(m.uid());
                    if mode(&m) & 0o077 != 0 {
                        bad.push(format!("{} is mode {:04o}", e.path().display(), mode(&m)));
                    }
                }
            }
        }
        Err(e) => bad.push(format!("cannot list {shown}: {e}")),
    }
    if !bad.is_empty() {
        out.push(Check::fail(
            "key-store",
            format!("the key store is readable by others: {}", bad.join("; ")),
            format!("chmod -R go-rwx {shown} (the plugin refuses such a store)"),
        ));
    } else if owners.iter().any(|u| *u != owners[0]) {
        out.push(Check::warn(
            "key-store",
            format!("files in {shown} have different owners"),
            format!("chown -R the plugin's user {shown}"),
        ));
    } else {
        out.push(Check::pass(
            "key-store",
            format!("{shown} and its files are private to uid {}", owners[0]),
        ));
    }
}
