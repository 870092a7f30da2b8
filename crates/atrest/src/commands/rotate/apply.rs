//! `atrest rotate apply`: drives a plan to the end, one milestone at a time, each recorded in
//! `state.json` (atomically) only once it is true:
//!
//! 1. stage installed (`--install CMD` with `ATREST_ROTATE_STEP=stage`) → loaded by **every**
//!    apiserver (its `/metrics` reports the file's hash);
//! 2. promote installed → loaded everywhere (no apiserver writes with the new key before all can
//!    read it);
//! 3. every object rewritten (the existing CAS rewrite, resumable from its checkpoint in DIR);
//! 4. a scan at one revision finds no object under a key retire removes, and nothing unreadable;
//! 5. retire installed → loaded everywhere; then the retired keys go to `escrow.yaml`, and
//!    optionally etcd is compacted past the rewrite;
//! 6. with `--backup FILE`, an encrypted snapshot verified offline with the retire config alone
//!    (`backup.rs`; recorded in `state.json` as well, taken again if a run died before it was
//!    verified).
//!
//! After a SIGKILL at any point, the same command continues from what it observes: finished
//! milestones are never redone, an interrupted install is skipped when every apiserver already
//! reports the file, waits and scans simply run again, the rewrite resumes from its checkpoint.
//! A finished rotation reruns as a no-op.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use atrest_core::Transformers;
use atrest_rotate::files::{self, BackupRecord, Milestone, StateDoc, CHECKPOINT_FILE, ESCROW_FILE};
use atrest_rotate::gates;
use atrest_rotate::plan::{escrow_config, ConfigStep};
use atrest_store::etcd::rewrite::{rewrite, CheckpointOptions, RewriteOptions, Selection};
use atrest_store::etcd::EtcdConnection;
use serde::Serialize;

use super::apiserver::{ApiserverArgs, Apiservers, Observation};
use super::backup::{self, BackupArgs};
use super::session::{require_all_watched, PlanDir};
use crate::commands::common::parse_duration;
use crate::commands::etcd_args::{runtime, EtcdArgs};
use crate::commands::report_output::{OutputFormat, Progress};
use crate::commands::terminal_text::escape_control;

#[derive(clap::Args)]
pub struct ApplyArgs {
    /// The plan directory made by `atrest rotate plan`.
    #[arg(long, value_name = "DIR")]
    pub plan: PathBuf,
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub apiservers: ApiserverArgs,
    /// Hands a config to every control-plane node; run with `sh -c`, with `ATREST_ROTATE_CONFIG`
    /// (the file) and `ATREST_ROTATE_STEP` (`stage`, `promote`, `retire`). Must be safe to run twice.
    #[arg(long, value_name = "CMD")]
    pub install: String,
    /// Do not ask before changing the control plane.
    #[arg(long)]
    pub yes: bool,
    /// How long to wait for every apiserver to load a step's config.
    #[arg(long, default_value = "15m", value_parser = parse_duration)]
    pub wait_timeout: Duration,
    /// How often to ask the apiservers while waiting.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// After retire, compact etcd past the rewrite so old-key revisions leave the history.
    #[arg(long)]
    pub compact: bool,
    #[command(flatten)]
    pub backup: BackupArgs,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

/// The summary (`-o json` prints it as one document).
#[derive(Serialize)]
struct Summary {
    plan: String,
    finished: bool,
    /// This run changed nothing (the rotation had already finished).
    no_op: bool,
    done: Vec<Milestone>,
    entries: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rewritten: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rewrite_revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    verified_revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    escrow: Option<String>,
    retired_keys: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backups_needing_escrow: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compacted_revision: Option<i64>,
    /// The `--backup` taken after retire (`verified: false`: a run stopped before it was
    /// verified; the next run takes it again).
    #[serde(skip_serializing_if = "Option::is_none")]
    backup: Option<BackupRecord>,
}

/// Progress lines on stderr.
fn note(msg: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{msg}");
}

pub fn run(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let pd = PlanDir::open(&args.plan)?;
    let mut state = pd.state()?;
    let backup = args.backup.prepare(&state)?;
    if state.has(Milestone::Finished) {
        let Some(backup) = backup else {
            note("rotation already finished; nothing to do");
            return output(&args, &pd, &state, true);
        };
        note("rotation already finished; taking the backup");
        backup::take(backup, &args.etcd, &pd, &mut state, &note)?;
        return output(&args, &pd, &state, false);
    }
    let apis = Apiservers::new(&args.apiservers)?;
    let (promote_config, promote_t) = pd.transformers(ConfigStep::Promote)?;
    let rt = runtime()?;
    let conn = args.etcd.connect(&rt)?;
    let prefix = args.etcd.etcd_prefix.clone();

    // Where every apiserver stands before anything is done in this run.
    let observations = rt.block_on(apis.observe());
    for (url, obs) in apis.urls.iter().zip(&observations) {
        match obs.hash() {
            None => bail!(
                "cannot tell what {url} has loaded: {}; nothing was done",
                obs.describe()
            ),
            Some(h) if pd.step_of(h).is_none() => bail!(
                "{url} runs config {h}, which is neither CURRENT ({}) nor a step of this plan: the control plane is not where the plan expects it; nothing was done",
                pd.plan.current.hash
            ),
            Some(h) if state.done.is_empty() && !matches!(pd.step_of(h), Some("CURRENT" | "stage")) => bail!(
                "{url} already runs {} but this plan has not started: refusing to guess; nothing was done",
                pd.describe(obs)
            ),
            Some(_) => {}
        }
    }
    rt.block_on(require_all_watched(&conn, &promote_t, &prefix, &apis))?;
    confirm(&args, &pd, &state)?;

    while let Some(m) = state.next() {
        match m {
            Milestone::StageInstalled => install(&args, &pd, &apis, &rt, ConfigStep::Stage)?,
            Milestone::StageLoaded => wait_loaded(&args, &pd, &apis, &rt, ConfigStep::Stage)?,
            Milestone::PromoteInstalled => {
                rt.block_on(require_all_watched(&conn, &promote_t, &prefix, &apis))?;
                install(&args, &pd, &apis, &rt, ConfigStep::Promote)?
            }
            Milestone::PromoteLoaded => wait_loaded(&args, &pd, &apis, &rt, ConfigStep::Promote)?,
            Milestone::Rewritten => {
                let (rewritten, revision) =
                    run_rewrite(&pd, &conn, &rt, promote_t.clone(), &prefix)?;
                state.rewritten = Some(state.rewritten.unwrap_or(0) + rewritten);
                state.rewrite_revision = Some(revision);
            }
            Milestone::Verified => {
                state.verified_revision = Some(verify(
                    &pd,
                    &conn,
                    &rt,
                    &promote_config,
                    &promote_t,
                    &prefix,
                    &mut state,
                )?);
            }
            Milestone::RetireInstalled => {
                rt.block_on(require_all_watched(&conn, &promote_t, &prefix, &apis))?;
                install(&args, &pd, &apis, &rt, ConfigStep::Retire)?
            }
            Milestone::RetireLoaded => wait_loaded(&args, &pd, &apis, &rt, ConfigStep::Retire)?,
            Milestone::Finished => {
                write_escrow(&pd, &promote_config)?;
                if args.compact {
                    let revision = rt
                        .block_on(atrest_store::etcd::scan::current_revision(&conn))
                        .context("reading etcd's revision to compact")?;
                    // Physical: the old revisions are gone from the backend (and from a
                    // `--backup` taken next) when this returns, not merely scheduled for removal.
                    rt.block_on(atrest_store::etcd::space::compact(&conn, revision))
                        .with_context(|| format!("compacting etcd at revision {revision}"))?;
                    state.compacted_revision = Some(revision);
                }
                state.finished_unix = Some(now());
            }
        }
        state.mark(m);
        pd.save(&state)?;
        note(&format!("✓ {}", m.name()));
    }
    if let Some(backup) = backup {
        backup::take(backup, &args.etcd, &pd, &mut state, &note)?;
    }
    output(&args, &pd, &state, false)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Asks once per run, unless `--yes`.
fn confirm(args: &ApplyArgs, pd: &PlanDir, state: &StateDoc) -> anyhow::Result<()> {
    if args.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!("refusing to change the control plane without confirmation: pass --yes");
    }
    let next = state.next().map_or("finish", Milestone::name);
    eprint!(
        "rotate {} entr{} of {} via `{}`; next: {next}{}. Proceed? [y/N] ",
        pd.plan.entries.len(),
        if pd.plan.entries.len() == 1 {
            "y"
        } else {
            "ies"
        },
        pd.plan.current.path,
        args.install,
        args.backup
            .backup
            .as_ref()
            .map(|f| format!("; at the end an encrypted backup to {}", f.display()))
            .unwrap_or_default()
    );
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        bail!("not confirmed; nothing was done");
    }
    Ok(())
}

/// Runs `--install` for `step`, unless every apiserver already reports its file.
fn install(
    args: &ApplyArgs,
    pd: &PlanDir,
    apis: &Apiservers,
    rt: &tokio::runtime::Runtime,
    step: ConfigStep,
) -> anyhow::Result<()> {
    let want = &pd.plan.file(step).hash;
    let obs = rt.block_on(apis.observe());
    if obs.iter().all(|o| o.hash() == Some(want.as_str())) {
        note(&format!(
            "{}: every apiserver already runs {want}; not installing again",
            step.name()
        ));
        return Ok(());
    }
    let path = pd.path(step);
    note(&format!(
        "installing {} ({want}) with: {}",
        path.display(),
        args.install
    ));
    // CMD's output goes to our stderr: stdout is reserved for the summary (`-o json`).
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("duplicating stderr")?;
    let status = Command::new("sh")
        .arg("-c")
        .arg(&args.install)
        .env("ATREST_ROTATE_CONFIG", &path)
        .env("ATREST_ROTATE_STEP", step.name())
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .status()
        .context("running --install with sh -c")?;
    if !status.success() {
        bail!(
            "--install failed for step {} ({status}); nothing after it was done. Fix it and rerun the same command",
            step.name()
        );
    }
    Ok(())
}

/// Waits until every apiserver reports `step`'s file, or `--wait-timeout`.
fn wait_loaded(
    args: &ApplyArgs,
    pd: &PlanDir,
    apis: &Apiservers,
    rt: &tokio::runtime::Runtime,
    step: ConfigStep,
) -> anyhow::Result<()> {
    let want = pd.plan.file(step).hash.clone();
    let started = Instant::now();
    let mut last_shown = String::new();
    loop {
        let obs = rt.block_on(apis.observe());
        let lagging: Vec<(String, &Observation)> = apis
            .urls
            .iter()
            .zip(&obs)
            .filter(|(_, o)| o.hash() != Some(want.as_str()))
            .map(|(u, o)| (u.clone(), o))
            .collect();
        if lagging.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = lagging
            .iter()
            .map(|(u, o)| format!("{u} reports {}", pd.describe(o)))
            .collect();
        let shown = escape_control(&shown.join("; ")).into_owned();
        if started.elapsed() >= args.wait_timeout {
            bail!(
                "timed out after {:?} waiting for every apiserver to load {} ({want}): {shown}. Nothing after that was done (the configs installed so far are safe to keep); rerun the same command to continue",
                args.wait_timeout,
                step.name()
            );
        }
        if shown != last_shown {
            note(&format!("waiting for {} ({want}): {shown}", step.name()));
            last_shown = shown;
        }
        std::thread::sleep(args.poll_interval);
    }
}

/// The CAS rewrite of every object of the rotated entries with the promote config.
fn run_rewrite(
    pd: &PlanDir,
    conn: &EtcdConnection,
    rt: &tokio::runtime::Runtime,
    transformers: Transformers,
    prefix: &str,
) -> anyhow::Result<(u64, i64)> {
    let checkpoint = pd.dir.join(CHECKPOINT_FILE);
    let opts = RewriteOptions {
        etcd_prefix: prefix.to_string(),
        selection: match pd.rewrite_resources() {
            Some(list) => Selection::Only(list),
            None => Selection::AllCovered,
        },
        checkpoint: Some(CheckpointOptions {
            resume: checkpoint.exists(),
            path: checkpoint,
            config_hash: pd.plan.promote.hash.clone(),
        }),
        ..Default::default()
    };
    let progress = Progress::new("rewriting");
    let result = rt.block_on(rewrite(conn, transformers, &opts, &progress));
    progress.finish();
    let summary = result.context("rewrite stopped; rerun the same command to resume it")?;
    note(&format!(
        "rewrote {} of {} objects at revision {} ({} already current, {} unreadable)",
        summary.rewritten,
        summary.scanned,
        summary.revision,
        summary.already_current,
        summary.unreadable
    ));
    Ok((summary.rewritten, summary.revision))
}

/// The retire gate: a scan at one revision must find nothing under a retired key and nothing
/// unreadable in the rotated entries. Stale leftovers get another rewrite pass (twice at most).
fn verify(
    pd: &PlanDir,
    conn: &EtcdConnection,
    rt: &tokio::runtime::Runtime,
    config: &atrest_core::EncryptionConfiguration,
    transformers: &Transformers,
    prefix: &str,
    state: &mut StateDoc,
) -> anyhow::Result<i64> {
    for pass in 0..3 {
        let scan = rt.block_on(gates::scan_objects(
            conn,
            config,
            transformers.clone(),
            prefix,
            true,
        ))?;
        let blockers = gates::retire_blockers(&scan, &pd.plan.entries);
        if blockers.is_empty() {
            return Ok(scan.revision);
        }
        let unreadable = scan
            .counts
            .iter()
            .any(|c| !c.readable && pd.plan.entries.iter().any(|e| Some(e.index) == c.entry));
        if unreadable || pass == 2 {
            bail!(
                "retire blocked (scan at etcd revision {}):\n  {}\nretire was not installed. Restore the missing key or delete those objects, then rerun the same command",
                scan.revision,
                escaped(&blockers).join("\n  ")
            );
        }
        note(&format!(
            "objects written meanwhile still use retired keys; rewriting again: {}",
            escaped(&blockers).join("; ")
        ));
        // A fresh pass: the checkpoint of the finished one would skip everything.
        let _ = std::fs::remove_file(pd.dir.join(CHECKPOINT_FILE));
        let (n, revision) = run_rewrite(pd, conn, rt, transformers.clone(), prefix)?;
        state.rewritten = Some(state.rewritten.unwrap_or(0) + n);
        state.rewrite_revision = Some(revision);
    }
    unreachable!("the loop returns or bails")
}

/// Lines that quote etcd keys and stored key names, safe for a terminal.
fn escaped(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| escape_control(l).into_owned())
        .collect()
}

/// Writes the retired keys to `escrow.yaml` (0600) once.
fn write_escrow(
    pd: &PlanDir,
    promote: &atrest_core::EncryptionConfiguration,
) -> anyhow::Result<()> {
    let path = pd.dir.join(ESCROW_FILE);
    if path.exists() {
        return Ok(());
    }
    if let Some(text) = escrow_config(promote, &pd.plan.entries, &pd.load)? {
        files::write_new(&path, text.as_bytes())?;
    }
    Ok(())
}
fn output(
    args: &ApplyArgs,
    pd: &PlanDir,
    state: &StateDoc,
    no_op: bool,
) -> anyhow::Result<ExitCode> {
    let escrow = pd.dir.join(ESCROW_FILE);
    let retired: Vec<String> = pd
        .plan
        .entries
        .iter()
        .flat_map(|e| e.retired.iter().map(|l| l.to_string()))
        .collect();
    let finished = state.has(Milestone::Finished);
    let verified_backup = state.backup.as_ref().filter(|b| b.verified);
    let summary = Summary {
        plan: pd.dir.display().to_string(),
        finished,
        no_op,
        done: state.done.clone(),
        entries: pd
            .plan
            .entries
            .iter()
            .map(|e| format!("{}: {} → {}", e.resources.join(", "), e.from, e.to))
            .collect(),
        rewritten: state.rewritten,
        rewrite_revision: state.rewrite_revision,
        verified_revision: state.verified_revision,
        escrow: escrow.exists().then(|| escrow.display().to_string()),
        backups_needing_escrow: (finished && !retired.is_empty()).then(|| {
            format!(
                "etcd snapshots and backups taken before revision {} may hold values under {}: keep {} (0600) to read them, e.g. `atrest snapshot get FILE … --config {}`{}",
                state.verified_revision.unwrap_or(0),
                retired.join(", "),
                escrow.display(),
                escrow.display(),
                match verified_backup {
                    Some(b) if b.history_under_retired_keys == 0 => format!(
                        "; the backup {} does not need them",
                        b.path
                    ),
                    Some(b) => format!(
                        "; the backup {} needs them only for {} older revisions etcd had not compacted (--compact drops those)",
                        b.path, b.history_under_retired_keys
                    ),
                    None => String::new(),
                }
            )
        }),
        retired_keys: retired,
        compacted_revision: state.compacted_revision,
        backup: state.backup.clone(),
    };
    crate::commands::common::emit(ExitCode::SUCCESS, |out| match args.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            crate::commands::report_output::write_document(args.output, &summary, out)
        }
        OutputFormat::Table => Ok(render(&summary, out)?),
    })
}

fn render(summary: &Summary, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "rotation {}{}",
        if summary.finished {
            "finished"
        } else {
            "stopped"
        },
        if summary.no_op {
            " (already; nothing done)"
        } else {
            ""
        }
    )?;
    for e in &summary.entries {
        writeln!(out, "  {}", escape_control(e))?;
    }
    if let (Some(n), Some(r)) = (summary.rewritten, summary.rewrite_revision) {
        writeln!(out, "  rewritten: {n} objects (etcd revision {r})")?;
    }
    if let Some(r) = summary.verified_revision {
        writeln!(
            out,
            "  verified at revision {r}: no object under a retired key, nothing unreadable"
        )?;
    }
    if let Some(e) = &summary.escrow {
        writeln!(
            out,
            "  retired keys ({}) escrowed in {e}",
            escape_control(&summary.retired_keys.join(", "))
        )?;
    }
    match summary.compacted_revision {
        Some(r) => writeln!(out, "  etcd compacted at revision {r}")?,
        None if summary.finished => writeln!(
            out,
            "  etcd not compacted: old revisions keep old-key values until the next compaction (kube-apiserver compacts every 5m by default)"
        )?,
        None => {}
    }
    if let Some(b) = &summary.backup {
        writeln!(out, "  {}", backup::describe(b))?;
    }
    if let Some(b) = &summary.backups_needing_escrow {
        writeln!(out, "  {}", escape_control(b))?;
    }
    Ok(())
}
