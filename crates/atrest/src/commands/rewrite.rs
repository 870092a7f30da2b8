//! `atrest rewrite`: re-encrypt every selected object not written by its current write key, each
//! write guarded by the object's mod_revision, resumable from a checkpoint.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use atrest_core::GroupResource;
use atrest_store::etcd::checkpoint;
use atrest_store::etcd::rewrite::{
    rewrite, CheckpointOptions, RewriteOptions, RewriteSummary, Selection,
    DEFAULT_MAX_REQUEST_BYTES,
};
use atrest_store::etcd::space::DEFAULT_QUOTA_BYTES;

use super::etcd_args::{runtime, ConfigArgs, EtcdArgs};
use super::report_output::{write_document, OutputFormat, Progress};
use super::terminal_text::escape_control as esc;

#[derive(clap::Args)]
pub struct RewriteArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Refuse unless every one of these apiservers (`--apiserver URL`, repeated) reports --config
    /// as its loaded config (`/metrics`), with kubectl's credential flags.
    #[command(flatten)]
    pub apiservers: super::rotate::apiserver::ApiserverArgs,
    /// Only these resources (comma-separated or repeated, as the config names them: `secrets`,
    /// `widgets.example.com`). Default: every resource the config covers.
    #[arg(long = "resource", value_delimiter = ',')]
    pub resources: Vec<String>,
    /// Show the plan (counts per resource and key, time estimate) and write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// At most N objects per second.
    #[arg(long, value_name = "N")]
    pub rate: Option<f64>,
    /// Objects per etcd transaction (1-128; each object keeps its own mod_revision guard).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=128))]
    pub batch: u16,
    /// Transactions in flight.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
    /// Checkpoint file: the last key below which everything is finished. Default: in the state
    /// directory ($XDG_STATE_HOME/atrest, /var/lib/atrest for root, else ~/.local/state/atrest),
    /// named after the etcd cluster ID and the config hash.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Continue after the key recorded in --checkpoint (same config, prefix and resources only).
    #[arg(long)]
    pub resume: bool,
    /// etcd's --max-request-bytes: objects whose re-encrypted write would be larger are skipped and
    /// listed (exit 5) instead of failing the run.
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_REQUEST_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1024..=(1 << 31)))]
    pub max_request_bytes: u64,
    /// etcd's --quota-backend-bytes, used when etcd does not report it (etcd 3.6's status, else
    /// its `etcd_server_quota_backend_bytes` metric on the client URL).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_QUOTA_BYTES,
          value_parser = clap::value_parser!(u64).range((1 << 20)..))]
    pub etcd_quota_bytes: u64,
    /// Output format of the summary.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

pub fn run(args: RewriteArgs) -> anyhow::Result<ExitCode> {
    if let Some(rate) = args.rate {
        if !(rate.is_finite() && rate >= 0.01) {
            bail!("--rate must be a number of objects per second, at least 0.01");
        }
    }
    let (config, transformers) = args.config.load()?;
    super::common::check_kms(&transformers)?;
    let selection = if args.resources.is_empty() {
        Selection::AllCovered
    } else {
        let mut list = Vec::new();
        for name in args
            .resources
            .iter()
            .map(|r| r.trim())
            .filter(|r| !r.is_empty())
        {
            let gr = GroupResource::parse(name);
            if gr.resource == "*" || gr.group == "*" {
                bail!("--resource {name}: name a resource, not a wildcard");
            }
            if !transformers.covers(&gr) {
                bail!(
                    "--resource {name} is not covered by {}; rewrite never touches resources the config does not cover",
                    args.config.config.display()
                );
            }
            if !list.contains(&gr) {
                list.push(gr);
            }
        }
        Selection::Only(list)
    };
    let rt = runtime()?;
    let conn = args.etcd.connect(&rt)?;
    let checkpoint = match &args.checkpoint {
        Some(path) => path.clone(),
        None => {
            let cluster = rt.block_on(atrest_store::etcd::cluster_id(&conn))?;
            checkpoint::default_path(cluster, &config.content_hash)
                .context("choosing the checkpoint file (give --checkpoint FILE)")?
        }
    };
    if args.resume && std::fs::symlink_metadata(&checkpoint).is_err() {
        bail!(
            "--resume refused: there is no checkpoint {} (checkpoints are per etcd cluster and config; \
             a changed config needs a fresh run). Run rewrite without --resume to start from the beginning",
            checkpoint.display()
        );
    }
    if args.resume {
        // Checked before anything is printed or written, so that a refusal is one message.
        checkpoint::Checkpoint::load(&checkpoint)
            .and_then(|saved| {
                saved.check_matches(
                    &checkpoint,
                    &args.etcd.etcd_prefix,
                    &config.content_hash,
                    &selection.names(),
                )
            })
            .context("--resume refused, nothing was written")?;
    }
    if !args.dry_run {
        eprintln!("checkpoint: {}", checkpoint.display());
    }
    let opts = RewriteOptions {
        etcd_prefix: args.etcd.etcd_prefix.clone(),
        selection,
        dry_run: args.dry_run,
        rate: args.rate,
        batch_size: args.batch as usize,
        in_flight: args.concurrency as usize,
        max_request_bytes: usize::try_from(args.max_request_bytes).unwrap_or(usize::MAX),
        quota_bytes: args.etcd_quota_bytes,
        checkpoint: Some(CheckpointOptions {
            path: checkpoint.clone(),
            resume: args.resume,
            config_hash: config.content_hash.clone(),
        }),
        ..Default::default()
    };
    if !args.apiservers.apiservers.is_empty() && !args.dry_run {
        let apis = super::rotate::apiserver::Apiservers::new(&args.apiservers)?;
        rt.block_on(apis.require_loaded(
            &config.content_hash,
            &args.config.config.display().to_string(),
        ))?;
    }
    let progress = Progress::new(if args.dry_run {
        "planning"
    } else {
        "rewriting"
    });
    let result = rt.block_on(rewrite(&conn, transformers, &opts, &progress));
    progress.finish();
    let summary = result.map_err(|e| {
        let (context, consequence) = if args.dry_run {
            let t = "rewrite --dry-run failed; nothing was written".to_string();
            (t.clone(), t)
        } else if e.nothing_written() {
            let t = "rewrite refused before its first write; etcd is unchanged".to_string();
            (t.clone(), t)
        } else {
            let t = format!(
                "rewrite stopped; objects written so far are correct, rerun with --resume --checkpoint {}",
                checkpoint.display()
            );
            (t.clone(), t)
        };
        super::common::etcd_failure(e, context, &consequence)
    })?;
    let code = ExitCode::from(if summary.unreadable > 0 {
        crate::exit::UNREADABLE
    } else if summary.not_written > 0 {
        crate::exit::NOT_WRITTEN
    } else {
        crate::exit::SUCCESS
    });
    super::common::emit(code, |out| match args.output {
        OutputFormat::Table => Ok(render(&summary, out)?),
        document => write_document(document, &summary, out),
    })
}

fn render(s: &RewriteSummary, out: &mut dyn Write) -> std::io::Result<()> {
    let cells: Vec<[String; 4]> = s
        .plan
        .iter()
        .map(|r| {
            let key = super::terminal_text::key_cell(r.key_name.as_deref(), r.key_id.as_deref());
            let action = if s.dry_run && r.action == "rewrite" {
                "would rewrite"
            } else {
                r.action
            };
            [
                esc(&r.resource).into_owned(),
                format!("{} {key}", esc(&r.provider)),
                action.to_string(),
                r.count.to_string(),
            ]
        })
        .collect();
    let header = ["RESOURCE", "WRITTEN BY", "ACTION", "COUNT"];
    let mut w = header.map(str::len);
    for c in &cells {
        for i in 0..4 {
            w[i] = w[i].max(c[i].chars().count());
        }
    }
    let row = |c: [&str; 4], out: &mut dyn Write| {
        writeln!(
            out,
            "{:<a$}  {:<b$}  {:<c$}  {:>d$}",
            c[0],
            c[1],
            c[2],
            c[3],
            a = w[0],
            b = w[1],
            c = w[2],
            d = w[3]
        )
    };
    row(header, out)?;
    for c in &cells {
        row([&c[0], &c[1], &c[2], &c[3]], out)?;
    }
    writeln!(out)?;
    if let Some(note) = &s.resume_note {
        writeln!(out, "{}", esc(note))?;
    }
    if let Some(after) = &s.resumed_after {
        writeln!(out, "resumed after {}", esc(after))?;
    }
    let verb = if s.dry_run {
        "would rewrite"
    } else {
        "rewrote"
    };
    writeln!(
        out,
        "{verb} {} of {} objects read at revision {} in {:.2}s ({:.0} objects/s); {} already current, {} not selected, {} unreadable, {} deleted meanwhile, {} conflicts retried",
        s.rewritten, s.scanned, s.revision, s.elapsed_seconds, s.objects_per_second, s.already_current, s.not_selected, s.unreadable, s.deleted, s.conflicts
    )?;
    if let (Some(secs), Some(basis)) = (s.estimate_seconds, &s.estimate_basis) {
        writeln!(out, "estimated time: {secs:.1}s at {basis}")?;
    }
    if s.not_written > 0 || s.compactions > 0 || s.write_checks > 0 {
        writeln!(
            out,
            "{} not written (refused by etcd), {} values read back through the write provider, {} compactions to stay below etcd's quota",
            s.not_written, s.write_checks, s.compactions
        )?;
    }
    if let Some(space) = &s.space {
        writeln!(out, "{}", space.describe())?;
    }
    if !s.unreadable_objects.is_empty() {
        writeln!(out, "\nUnreadable values (left unchanged):")?;
        for u in &s.unreadable_objects {
            writeln!(out, "  {}: {}", esc(&u.key), esc(&u.error))?;
        }
    }
    if !s.skipped_objects.is_empty() {
        writeln!(
            out,
            "\nSkipped (matched only by a wildcard entry, not that resource):"
        )?;
        for u in &s.skipped_objects {
            writeln!(out, "  {}: {}", esc(&u.key), esc(&u.error))?;
        }
    }
    if !s.not_written_objects.is_empty() {
        writeln!(out, "\nNot written (left unchanged):")?;
        for u in &s.not_written_objects {
            writeln!(out, "  {}: {}", esc(&u.key), esc(&u.error))?;
        }
    }
    Ok(())
}
