//! `snapshot get` and `snapshot export`: decrypt with the config's providers (KMS through the
//! plugin sockets it names), decode, and write objects for a restore.
//!
//! An export restores into a fresh cluster (`kubectl apply --server-side -f`): objects come out in
//! dependency order (Namespaces, CRDs, cluster configuration, RBAC, … admission webhooks last;
//! see [`super::restore`]), without server-set fields (`metadata.uid`, `resourceVersion`,
//! `managedFields`, `ownerReferences`, …, `status`, a Service's cluster IPs). What a fresh cluster
//! re-creates or must not get back — Events, Leases, Nodes, controller-owned objects, the Endpoints
//! of Services with a selector, service-account token Secrets, IP allocations — is left out and
//! counted in the summary; `--include-recreated` keeps it. `--keep-server-fields` writes objects
//! exactly as served. An object that cannot be decrypted or decoded completely is listed and
//! counted as failed (exit 4): nothing is dropped silently.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use atrest_core::GroupResource;
use atrest_store::decode::decode_object_at;
use atrest_store::keymap::{self, KeyInfo};
use serde_json::Value;

use super::progress::Progress;
use super::restore;
use super::{load_config, open_and_index, ConfigArgs, SnapshotArgs};
use crate::commands::terminal_text::escape_control as esc;
use crate::commands::{object_name, yaml_output};
use crate::exit;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GetFormat {
    Yaml,
    Json,
    /// The decrypted storage bytes (protobuf or JSON), unchanged.
    Raw,
}

#[derive(clap::Args)]
pub struct GetArgs {
    #[command(flatten)]
    snapshot: SnapshotArgs,
    /// Resource as kubectl names it: `secrets`, `deployments` or `deployments.apps`,
    /// `customresourcedefinitions.apiextensions.k8s.io`, `widgets.example.com`.
    resource: String,
    /// `NAMESPACE/NAME`, or `NAME` for cluster-scoped objects.
    name: String,
    #[command(flatten)]
    config: ConfigArgs,
    #[arg(long, short = 'o', value_enum, default_value = "yaml")]
    output: GetFormat,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// A `---` separated YAML stream (`kubectl apply -f`).
    Yaml,
    /// A `v1/List` object.
    Json,
    /// One file per object: `DIR/<resource>/<namespace>/<name>.yaml` (cluster-scoped: `DIR/<resource>/<name>.yaml`).
    Dir,
}

#[derive(clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    snapshot: SnapshotArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// Only these resources (repeatable), e.g. `secrets`, `widgets.example.com`. Default: every object.
    #[arg(long)]
    resource: Vec<String>,
    /// Only objects in this namespace.
    #[arg(long, short = 'n')]
    namespace: Option<String>,
    #[arg(long, short = 'o', value_enum, default_value = "yaml")]
    output: ExportFormat,
    /// Output file (yaml, json; default stdout) or directory (dir; required). Files are created 0600.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep resourceVersion, uid, managedFields, ownerReferences, status, ... as served.
    #[arg(long)]
    keep_server_fields: bool,
    /// Also export what a fresh cluster re-creates by itself or must not get back (Events,
    /// Leases, Nodes, controller-owned Pods/ReplicaSets/Jobs/EndpointSlices, Endpoints of
    /// Services with a selector, service-account tokens, IP allocations).
    #[arg(long)]
    include_recreated: bool,
}

/// Why one object could not be exported.
enum ObjectError {
    /// A KMS provider is not answering: stop, this is not about the object.
    Outage(atrest_core::KmsOutage),
    /// This object cannot be decrypted or decoded: list it, go on.
    Failed(String),
}

/// Decrypts and decodes one value; the object has `metadata.resourceVersion` = `mod_revision`, as
/// kube-apiserver serves it.
fn decrypt_decode(
    transformers: &atrest_core::Transformers,
    info: &KeyInfo,
    key: &[u8],
    value: &[u8],
    mod_revision: i64,
) -> Result<(Vec<u8>, Value), ObjectError> {
    let outcome = transformers
        .for_resource(&info.resource)
        .read(value, key)
        .map_err(|e| match e.outage() {
            Some(o) => ObjectError::Outage(o.clone()),
            None => ObjectError::Failed(format!("decrypt: {e}")),
        })?;
    let object = decode_object_at(&outcome.plaintext, mod_revision)
        .map_err(|e| ObjectError::Failed(format!("decode: {e}")))?;
    Ok((outcome.plaintext, object))
}

pub fn get(args: GetArgs) -> anyhow::Result<ExitCode> {
    let transformers = load_config(&args.config)?;
    let prefix = &args.snapshot.etcd_prefix;
    // An unknown name needs the CRDs for its hint; they are indexed only then.
    let target = object_name::resolve(prefix, &args.resource, &args.name, || {
        open_and_index(&args.snapshot, object_name::crd_prefix(prefix).into_bytes())
            .map(|(_, index)| {
                object_name::crd_names_from_keys(prefix, index.entries().map(|(k, _)| k))
            })
            .unwrap_or_default()
    })?;
    let key = target.key.clone();
    let gr = target.resource.clone();
    crate::commands::common::check_kms_for(&transformers.for_resource(&gr))?;
    let (snap, index) = open_and_index(&args.snapshot, key.clone().into_bytes())?;
    let Some((_, rev)) = index.entries().find(|(k, _)| *k == key.as_bytes()) else {
        anyhow::bail!(
            "{} {:?} not found in the snapshot at revision {} (key {key})",
            gr,
            args.name,
            index.revision
        );
    };
    let kv = snap
        .fetch(key.as_bytes(), rev)
        .with_context(|| format!("reading {key}"))?;
    let info = KeyInfo {
        resource: target.resource,
        namespace: target.namespace,
        name: target.name,
    };
    let (plaintext, object) =
        decrypt_decode(&transformers, &info, &kv.key, &kv.value, kv.mod_revision).map_err(|e| {
            match e {
                ObjectError::Outage(o) => {
                    crate::commands::common::kms_outage(&o, "nothing was printed")
                }
                ObjectError::Failed(e) => anyhow::anyhow!("{}: {}", esc(&key), esc(&e)),
            }
        })?;
    let mut out = io::stdout().lock();
    match args.output {
        GetFormat::Raw => out.write_all(&plaintext)?,
        GetFormat::Json => writeln!(out, "{}", serde_json::to_string_pretty(&object)?)?,
        GetFormat::Yaml => out.write_all(yaml_output::single(&object)?.as_bytes())?,
    }
    Ok(ExitCode::from(exit::SUCCESS))
}

/// A path component from untrusted snapshot data: refuse anything that could escape the directory.
fn safe_component(s: &str) -> Option<&str> {
    let ok = !s.is_empty() && s != "." && s != ".." && !s.contains(['/', '\0']) && s.len() <= 253;
    ok.then_some(s)
}

fn create_private(path: &Path) -> io::Result<fs::File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: tighten it.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

enum Sink {
    Stream {
        out: Box<dyn Write>,
        json: bool,
        first: bool,
    },
    Dir(PathBuf),
}

impl Sink {
    fn new(args: &ExportArgs) -> anyhow::Result<Sink> {
        let open = |p: &Path| -> anyhow::Result<Box<dyn Write>> {
            Ok(Box::new(BufWriter::new(
                create_private(p).with_context(|| format!("creating {}", p.display()))?,
            )))
        };
        Ok(match args.output {
            ExportFormat::Dir => {
                let dir = args.out.clone().context("-o dir needs --out DIR")?;
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                Sink::Dir(dir)
            }
            format => {
                let mut out: Box<dyn Write> = match &args.out {
                    Some(p) => open(p)?,
                    None => Box::new(BufWriter::new(io::stdout())),
                };
                let json = format == ExportFormat::Json;
                if json {
                    out.write_all(b"{\n\"apiVersion\": \"v1\",\n\"kind\": \"List\",\n\"metadata\": {},\n\"items\": [\n")?;
                }
                Sink::Stream {
                    out,
                    json,
                    first: true,
                }
            }
        })
    }

    /// `Err(Ok(reason))`: this object is skipped; `Err(Err(io))`: the output itself failed (closed
    /// pipe, full disk), so the export stops instead of failing once per remaining object.
    fn write(&mut self, info: &KeyInfo, object: &Value) -> Result<(), Result<String, io::Error>> {
        match self {
            Sink::Stream { out, json, first } => {
                let text = if *json {
                    let sep = if *first { "" } else { ",\n" };
                    format!(
                        "{sep}{}",
                        serde_json::to_string_pretty(object).map_err(|e| Ok(e.to_string()))?
                    )
                } else {
                    yaml_output::document(object).map_err(|e| Ok(e.to_string()))?
                };
                *first = false;
                out.write_all(text.as_bytes()).map_err(Err)
            }
            Sink::Dir(root) => {
                let bad = |what: &str| Ok(format!("unsafe {what} for a file name"));
                let mut dir = root.join(
                    safe_component(&info.resource.to_string()).ok_or_else(|| bad("resource"))?,
                );
                if let Some(ns) = &info.namespace {
                    dir = dir.join(safe_component(ns).ok_or_else(|| bad("namespace"))?);
                }
                let file = dir.join(format!(
                    "{}.yaml",
                    safe_component(&info.name).ok_or_else(|| bad("name"))?
                ));
                let in_path = |path: &Path, e: io::Error| {
                    Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())))
                };
                DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(&dir)
                    .map_err(|e| in_path(&dir, e))?;
                let text = yaml_output::document(object).map_err(|e| Ok(e.to_string()))?;
                create_private(&file)
                    .and_then(|mut f| f.write_all(text.as_bytes()))
                    .map_err(|e| in_path(&file, e))
            }
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        if let Sink::Stream { mut out, json, .. } = self {
            if json {
                out.write_all(b"\n]\n}\n")?;
            }
            out.flush().context("writing output")?;
        }
        Ok(())
    }
}

pub fn export(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let transformers = load_config(&args.config)?;
    crate::commands::common::check_kms(&transformers)?;
    let prefix = keymap::normalize_prefix(&args.snapshot.etcd_prefix);
    let resources: Vec<GroupResource> = args
        .resource
        .iter()
        .map(|r| GroupResource::parse(r))
        .collect();
    // One resource: index only its key range.
    let index_prefix = match resources.as_slice() {
        [one] => keymap::resource_range(&prefix, one).0,
        _ => prefix.clone().into_bytes(),
    };
    let (snap, index) = open_and_index(&args.snapshot, index_prefix)?;
    let mut sink = Sink::new(&args)?;
    let mut exported = std::collections::BTreeMap::<String, u64>::new();
    let mut failures: Vec<(String, String)> = Vec::new();
    let mut bar = Progress::count("exporting", index.len() as u64);
    // Restore order (stable: key order within each rank), so a `kubectl apply -f` of the stream
    // creates what later objects need first.
    let mut order: Vec<(&[u8], atrest_store::snapshot::Revision, Option<KeyInfo>)> = index
        .entries()
        .map(|(k, rev)| (k, rev, keymap::parse_key(&prefix, k)))
        .collect();
    order.sort_by_key(|(_, _, info)| info.as_ref().map_or(u8::MAX, restore::rank));
    let mut selector_services = restore::SelectorServices::new();
    let mut left_out = std::collections::BTreeMap::<String, u64>::new();
    for (n, (key, rev, info)) in order.into_iter().enumerate() {
        bar.update(n as u64 + 1, index.len() as u64);
        let kv = snap
            .fetch(key, rev)
            .with_context(|| format!("reading snapshot {}", args.snapshot.file.display()))?;
        // Only printed: escaped so a crafted key cannot forge lines or drive the terminal.
        let key_text = esc(&String::from_utf8_lossy(&kv.key)).into_owned();
        let Some(info) = info else {
            if resources.is_empty() {
                note!("error: {key_text}: key does not map to a resource");
                failures.push((key_text, "key does not map to a resource".into()));
            }
            continue;
        };
        if !resources.is_empty() && !resources.contains(&info.resource) {
            continue;
        }
        if args.namespace.is_some() && info.namespace != args.namespace {
            continue;
        }
        let decoded = decrypt_decode(&transformers, &info, &kv.key, &kv.value, kv.mod_revision);
        let mut object = match decoded {
            Ok((_, object)) => object,
            Err(ObjectError::Outage(o)) => {
                bar.finish();
                let consequence = format!(
                    "the export stopped at {key_text}; what was written before is incomplete"
                );
                return Err(crate::commands::common::kms_outage(&o, &consequence));
            }
            Err(ObjectError::Failed(e)) => {
                note!("error: {key_text}: {}", esc(&e));
                failures.push((key_text, e));
                continue;
            }
        };
        restore::note_service(&info, &object, &mut selector_services);
        if !args.include_recreated {
            if let Some(label) = restore::left_out(&info, &object, &selector_services) {
                *left_out.entry(label).or_default() += 1;
                continue;
            }
        }
        if !args.keep_server_fields {
            restore::strip_server_fields(&mut object);
        }
        match sink.write(&info, &object) {
            Ok(()) => {}
            Err(Ok(e)) => {
                note!("error: {key_text}: {}", esc(&e));
                failures.push((key_text, e));
                continue;
            }
            // The reader is gone (`| head`): stop quietly with the verdict so far.
            Err(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                bar.finish();
                return Ok(export_code(&failures));
            }
            Err(Err(e)) => {
                bar.finish();
                return Err(anyhow::Error::new(e).context(format!("writing {key_text}")));
            }
        }
        *exported.entry(info.resource.to_string()).or_default() += 1;
    }
    bar.finish();
    match sink.finish() {
        Err(e) if crate::commands::common::is_broken_pipe(&e) => return Ok(export_code(&failures)),
        other => other?,
    }
    let total: u64 = exported.values().sum();
    let per: Vec<String> = exported
        .iter()
        .map(|(r, n)| format!("{}: {n}", esc(r)))
        .collect();
    note!(
        "exported {total} objects at revision {} ({}); {} failed",
        index.revision,
        if per.is_empty() {
            "none".to_string()
        } else {
            per.join(", ")
        },
        failures.len()
    );
    if !left_out.is_empty() {
        let per: Vec<String> = left_out.iter().map(|(r, n)| format!("{r}: {n}")).collect();
        eprintln!(
            "left out {} objects a fresh cluster re-creates or must not get back ({}); --include-recreated keeps them",
            left_out.values().sum::<u64>(),
            per.join(", ")
        );
    }
    // Each failure was printed with its key as it happened; the summary groups them by reason.
    let mut reasons = std::collections::BTreeMap::<&str, u64>::new();
    for (_, reason) in &failures {
        *reasons.entry(reason.as_str()).or_default() += 1;
    }
    let mut reasons: Vec<(&str, u64)> = reasons.into_iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    for (reason, n) in reasons.iter().take(10) {
        note!("  {n} x {}", esc(reason));
    }
    if reasons.len() > 10 {
        note!("  ... and {} other reasons", reasons.len() - 10);
    }
    Ok(export_code(&failures))
}

/// 0 when every object was exported, 4 when some could not be (they were listed).
fn export_code(failures: &[(String, String)]) -> ExitCode {
    ExitCode::from(if failures.is_empty() {
        exit::SUCCESS
    } else {
        exit::UNREADABLE
    })
}
