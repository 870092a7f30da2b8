//! `rotate apply --backup FILE`: after retire (and `--compact`), an encrypted etcd snapshot to FILE
//! through `backup snapshot`'s stream (no plaintext on disk; FILE, 0600, appears only complete),
//! then an offline check that every object in it decrypts with the retire config alone: FILE is
//! decrypted again into a sealed spool (an unnamed temporary file next to FILE, every 64 KiB
//! chunk AES-GCM-sealed under a key that lives only in memory) and read with atrest's snapshot reader and the retire
//! config's transformers — no etcd, no escrow file.
//!
//! Resumable through `state.json`'s `backup` record, written (unverified) before the snapshot
//! starts: a rerun after a crash replaces that FILE; a verified record makes the rerun a no-op; a
//! FILE this rotation did not start is never overwritten.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use atrest_backup::{Identity, Recipient};
use atrest_rotate::files::{BackupRecord, StateDoc};
use atrest_rotate::model::KeyLabel;
use atrest_rotate::plan::ConfigStep;
use atrest_store::keymap;
use atrest_store::report::{ReportOptions, StatusReport, StatusReportBuilder};
use atrest_store::snapshot::{IndexOptions, OpenOptions, Snapshot};

use super::sealed_spool::SealedSpool;
use super::session::PlanDir;
use crate::commands::backup::{identities_for, recipients, RecipientArgs};
use crate::commands::etcd_args::EtcdArgs;
use crate::commands::snapshot::Progress;
use crate::commands::terminal_text::escape_control;

/// `--backup FILE` and the `backup` command's recipient flags.
#[derive(clap::Args)]
pub struct BackupArgs {
    /// After the rotation, write an encrypted etcd snapshot to FILE (0600) and verify offline that
    /// every object in it decrypts with the retire config alone.
    #[arg(long, value_name = "FILE")]
    pub backup: Option<PathBuf>,
    #[command(flatten)]
    pub to: RecipientArgs,
    /// An age identity file that opens FILE, to verify a backup made for `--recipient`s only
    /// (passphrase and KMS backups are opened with the same flags); repeatable.
    #[arg(long, value_name = "FILE")]
    pub backup_identity: Vec<PathBuf>,
}

/// A backup to take, with everything read before the rotation changes anything.
pub struct Prepared {
    path: PathBuf,
    recipients: Vec<Recipient>,
    described: Vec<String>,
    identities: Vec<Identity>,
}

/// Whether `state` records a verified backup at `path` that is still there.
fn done_at(state: &StateDoc, path: &Path) -> bool {
    state
        .backup
        .as_ref()
        .is_some_and(|b| b.verified && Path::new(&b.path) == path && path.exists())
}

impl BackupArgs {
    /// Checks the flags and reads the recipients (passphrase, KMS plugin) up front, so that a bad
    /// flag stops the command before any step. `None`: no backup asked for, or already taken and
    /// verified.
    pub fn prepare(&self, state: &StateDoc) -> anyhow::Result<Option<Prepared>> {
        let Some(file) = &self.backup else {
            if self.to.given() || !self.backup_identity.is_empty() {
                bail!(
                    "recipient and --backup-identity flags go with --backup FILE; nothing was done"
                );
            }
            return Ok(None);
        };
        let path =
            std::path::absolute(file).with_context(|| format!("--backup {}", file.display()))?;
        if done_at(state, &path) {
            return Ok(None);
        }
        let ours = state
            .backup
            .as_ref()
            .is_some_and(|b| Path::new(&b.path) == path);
        if path.exists() && !ours {
            bail!(
                "--backup {}: the file exists and this rotation did not write it; it is never overwritten: choose a new path. Nothing was done",
                path.display()
            );
        }
        match path.parent() {
            Some(dir) if dir.is_dir() => {}
            _ => bail!(
                "--backup {}: its directory does not exist; nothing was done",
                path.display()
            ),
        }
        let (recipients, described) = recipients(&self.to)
            .context("--backup needs recipients (the `backup` command's flags)")?;
        let identities = identities_for(&self.to, &recipients, &self.backup_identity)?;
        if identities.is_empty() {
            bail!(
                "--backup {}: the backup could not be verified offline: it is encrypted to age recipients only. Give --backup-identity FILE (the identity of one of them; it is only read) or add --kms-endpoint. Nothing was done",
                path.display()
            );
        }
        Ok(Some(Prepared {
            path,
            recipients,
            described,
            identities,
        }))
    }
}

/// One line about a backup record, for `apply`'s summary and `status`.
pub fn describe(b: &BackupRecord) -> String {
    if b.verified {
        format!(
            "backup {} ({} bytes, {}, to {}): verified offline, the {} objects at etcd revision {} decrypt with the retire config alone",
            b.path,
            b.bytes.unwrap_or(0),
            b.sha256.as_deref().unwrap_or("-"),
            b.recipients.join(", "),
            b.objects.unwrap_or(0),
            b.revision.unwrap_or(0)
        )
    } else {
        format!(
            "backup {}: not verified (a run stopped or the verification failed); rerun `rotate apply … --backup` to take it again",
            b.path
        )
    }
}

/// Takes the backup and verifies it; records the result in `state` (saved). A backup that does not
/// verify is removed and fails the command, naming the keys.
pub fn take(
    prepared: Prepared,
    etcd: &EtcdArgs,
    pd: &PlanDir,
    state: &mut StateDoc,
    note: &dyn Fn(&str),
) -> anyhow::Result<()> {
    let path = prepared.path;
    state.backup = Some(BackupRecord {
        path: path.display().to_string(),
        verified: false,
        recipients: prepared.described.clone(),
        ..Default::default()
    });
    pd.save(state)?;
    // Left by a run killed before verification ended: complete, but never verified.
    match std::fs::remove_file(&path) {
        Ok(()) => note(&format!(
            "removed {} (a backup of an interrupted run, never verified)",
            path.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
    }
    note(&format!(
        "backing up etcd to {} (encrypted to {})",
        path.display(),
        prepared.described.join(", ")
    ));
    let written = crate::commands::backup_snapshot::stream_encrypted(
        etcd,
        &prepared.recipients,
        &path,
        false,
    )?;
    let checked = match verify(&path, &prepared.identities, pd, &etcd.etcd_prefix) {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e.context(format!(
                "{} was removed: it is not a verified backup; rerun the same command to take it again",
                path.display()
            )));
        }
    };
    if checked.report.totals.unreadable > 0 {
        let _ = std::fs::remove_file(&path);
        let listed: Vec<String> = checked
            .report
            .unreadable
            .iter()
            .take(20)
            .map(|u| format!("{}: {}", escape_control(&u.key), escape_control(&u.error)))
            .collect();
        bail!(
            "backup verification failed: {} of {} objects in the snapshot (etcd revision {}) do not decrypt with the retire config alone:\n  {}\n{} was removed. Find what wrote them (a client bypassing the apiservers, a restored key), rewrite or delete them, then rerun the same command",
            checked.report.totals.unreadable,
            checked.objects,
            checked.revision,
            listed.join("\n  "),
            path.display()
        );
    }
    state.backup = Some(BackupRecord {
        path: path.display().to_string(),
        verified: true,
        sha256: Some(written.sha256),
        bytes: Some(written.summary.bytes_out),
        revision: Some(checked.revision),
        objects: Some(checked.objects),
        history_under_retired_keys: checked.history_under_retired_keys,
        recipients: prepared.described,
    });
    pd.save(state)?;
    Ok(())
}

/// What the offline check found.
struct Checked {
    report: StatusReport,
    revision: i64,
    objects: u64,
    history_under_retired_keys: u64,
}

/// Decrypts `path` into a [`SealedSpool`] (bounded memory, no plaintext on disk) and reads every
/// object's newest value with the retire config
/// (decrypting each one); counts older revisions still under a retired key.
fn verify(
    path: &Path,
    identities: &[Identity],
    pd: &PlanDir,
    etcd_prefix: &str,
) -> anyhow::Result<Checked> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut spool = SealedSpool::new_in(dir).with_context(|| {
        format!(
            "verifying {}: creating a temporary file in {}",
            path.display(),
            dir.display()
        )
    })?;
    let mut bar = Progress::bytes("verifying backup", len);
    let decrypted = atrest_backup::decrypt(
        identities,
        &mut BufReader::with_capacity(1 << 20, file),
        &mut spool,
        &mut |done| bar.update(done, len.max(done)),
    );
    bar.finish();
    decrypted.with_context(|| format!("decrypting {} to verify it", path.display()))?;
    let spool = spool
        .finish()
        .with_context(|| format!("verifying {}: writing {}", path.display(), dir.display()))?;
    let plain_len = spool.len();
    let name = path.display().to_string();
    let snap = Snapshot::from_source(Box::new(spool), plain_len, &name, OpenOptions::default())
        .with_context(|| format!("reading the snapshot inside {name}"))?;
    let (_, transformers) = pd.transformers(ConfigStep::Retire)?;
    crate::commands::common::check_kms(&transformers)?;
    let prefix = keymap::normalize_prefix(etcd_prefix);
    let index = snap
        .index(&IndexOptions {
            at_revision: None,
            key_prefix: prefix.clone().into_bytes(),
        })
        .with_context(|| format!("reading the snapshot inside {name}"))?;
    let mut builder = StatusReportBuilder::new(
        transformers,
        ReportOptions {
            etcd_prefix: prefix.clone(),
            verify: true,
            list: false,
        },
    );
    let mut bar = Progress::count("decrypting objects", index.len() as u64);
    for (n, kv) in snap.latest(&index).enumerate() {
        let kv = kv.with_context(|| format!("reading the snapshot inside {name}"))?;
        builder
            .add(&kv.key, &kv.value)
            .map_err(|o| crate::commands::common::kms_outage(&o, "the backup was not verified"))?;
        bar.update(n as u64 + 1, index.len() as u64);
    }
    bar.finish();
    let retired: Vec<&KeyLabel> = pd.plan.entries.iter().flat_map(|e| &e.retired).collect();
    let mut history = 0u64;
    for entry in snap.revisions() {
        let entry = entry.with_context(|| format!("reading the snapshot inside {name}"))?;
        if !entry.tombstone
            && entry.kv.key.starts_with(prefix.as_bytes())
            && retired.contains(&&atrest_rotate::stored::label_of(&entry.kv.value))
        {
            history += 1;
        }
    }
    Ok(Checked {
        report: builder.finish(),
        revision: index.revision,
        objects: index.len() as u64,
        history_under_retired_keys: history,
    })
}
