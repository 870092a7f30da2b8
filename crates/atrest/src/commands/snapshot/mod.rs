//! `atrest snapshot`: read etcd snapshot files offline (no etcd, no kube-apiserver): the encryption
//! status report, one object, or every object decrypted and decoded for a restore.

mod export;
mod progress;
mod restore;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use atrest_store::keymap;
use atrest_store::report::{ReportOptions, StatusReportBuilder};
use atrest_store::snapshot::{IndexOptions, LatestIndex, OpenOptions, Snapshot};

use super::etcd_args::ConfigArgs;
use super::report_output::{exit_code, render_status, OutputFormat};
use crate::exit;
pub(crate) use progress::Progress;

#[derive(clap::Subcommand)]
pub enum SnapshotCommand {
    /// Encryption status of every object in the snapshot: the same report as `atrest status`.
    Status(StatusArgs),
    /// Decrypt and decode one object from the snapshot (output as `atrest get`).
    Get(export::GetArgs),
    /// Decrypt and decode objects for a restore: YAML stream, JSON List, or one file per object.
    Export(export::ExportArgs),
    /// Facts about the file: page size, revision range, checksum, key counts.
    Info(InfoArgs),
}

/// Which file, and which state of it.
#[derive(clap::Args, Debug, Clone)]
pub struct SnapshotArgs {
    /// The snapshot: a file from `etcdctl snapshot save` or a member's `member/snap/db`.
    pub file: PathBuf,
    /// kube-apiserver's `--etcd-prefix`.
    #[arg(long, default_value = "/registry")]
    pub etcd_prefix: String,
    /// Read the state as of this etcd revision (default: the newest in the file).
    #[arg(long)]
    pub revision: Option<i64>,
    /// Do not verify the SHA-256 trailer `etcdctl snapshot save` appends (etcd's flag name).
    #[arg(long)]
    pub skip_hash_check: bool,
}

/// Loads the config and builds the transformers (KMS providers connect to their plugin sockets).
pub(crate) fn load_config(config: &ConfigArgs) -> anyhow::Result<atrest_core::Transformers> {
    Ok(super::common::load_transformers(&config.config, &config.load_options()?)?.1)
}

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    snapshot: SnapshotArgs,
    #[command(flatten)]
    config: ConfigArgs,
    /// Decrypt every value instead of classifying by prefix (KMS values call the plugin).
    #[arg(long)]
    verify: bool,
    /// List the etcd key of every object in its row.
    #[arg(long)]
    list: bool,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: OutputFormat,
}

#[derive(clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    snapshot: SnapshotArgs,
    #[arg(long, short = 'o', value_enum, default_value = "table")]
    output: OutputFormat,
}

pub fn run(cmd: SnapshotCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SnapshotCommand::Status(args) => status(args),
        SnapshotCommand::Get(args) => export::get(args),
        SnapshotCommand::Export(args) => export::export(args),
        SnapshotCommand::Info(args) => info(args),
    }
}

/// Opens the file (checksum first, with progress) and builds the index of live keys under `prefix`.
pub(crate) fn open_and_index(
    args: &SnapshotArgs,
    key_prefix: Vec<u8>,
) -> anyhow::Result<(Snapshot, LatestIndex)> {
    let opts = OpenOptions {
        verify_checksum: !args.skip_hash_check,
    };
    let mut bar = Progress::bytes("verifying checksum", 0);
    let snap =
        Snapshot::open_with_progress(&args.file, opts, |done, total| bar.update(done, total))
            .with_context(|| format!("reading snapshot {}", args.file.display()))?;
    bar.finish();
    let mut bar = Progress::count("indexing revisions", snap.db().page_count());
    let index = std::thread::scope(|s| {
        let handle = s.spawn(|| {
            snap.index(&IndexOptions {
                at_revision: args.revision,
                key_prefix,
            })
        });
        while !handle.is_finished() {
            bar.update(snap.db().pages_read(), snap.db().page_count());
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        handle
            .join()
            .map_err(|_| anyhow::anyhow!("indexing thread panicked"))
    })?
    .with_context(|| format!("reading snapshot {}", args.file.display()))?;
    bar.finish();
    Ok((snap, index))
}

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let transformers = load_config(&args.config)?;
    super::common::check_kms(&transformers)?;
    let prefix = keymap::normalize_prefix(&args.snapshot.etcd_prefix);
    let (snap, index) = open_and_index(&args.snapshot, prefix.clone().into_bytes())?;
    let opts = ReportOptions {
        etcd_prefix: prefix,
        verify: args.verify,
        list: args.list,
    };
    let mut builder = StatusReportBuilder::new(transformers, opts);
    let mut bar = Progress::count("reading objects", index.len() as u64);
    for (n, kv) in snap.latest(&index).enumerate() {
        let kv =
            kv.with_context(|| format!("reading snapshot {}", args.snapshot.file.display()))?;
        builder.add(&kv.key, &kv.value).map_err(|o| {
            super::common::kms_outage(&o, "the scan stopped and no report was made")
        })?;
        bar.update(n as u64 + 1, index.len() as u64);
    }
    bar.finish();
    let report = builder.finish();
    super::common::emit(exit_code(report.exit_class()), |out| {
        render_status(&report, args.output, out)
    })
}

/// A value as a table cell: strings without quotes, `null` as `-`.
fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn info(args: InfoArgs) -> anyhow::Result<ExitCode> {
    let (snap, index) = open_and_index(&args.snapshot, Vec::new())?;
    let info = snap.info();
    let value = serde_json::json!({
        "file": info.path,
        "file_size": info.file_size,
        "page_size": info.page_size,
        "pages": info.pages,
        "txid": info.txid,
        "checksum": info.checksum,
        "current_revision": info.current_revision,
        "compact_revision": info.compact_revision,
        "read_at_revision": index.revision,
        "revisions_scanned": index.revisions_scanned,
        "live_keys": index.len(),
        "deleted_keys": index.deleted_keys,
    });
    super::common::emit(ExitCode::from(exit::SUCCESS), |out| match args.output {
        OutputFormat::Table => {
            for (k, v) in value.as_object().into_iter().flatten() {
                writeln!(out, "{k:<20} {}", plain(v))?;
            }
            Ok(())
        }
        document => super::report_output::write_document(document, &value, out),
    })
}
