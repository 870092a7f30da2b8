//! `atrest rewrite`: re-encrypt every selected object not written by its current write key, each
//! write guarded by the object's mod_revision, resumable from a checkpoint.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use atrest_core::GroupResource;
use atrest_store::etcd::checkpoint::Checkpoint;
use atrest_store::etcd::rewrite::{
    rewrite, CheckpointOptions, RewriteOptions, RewriteSummary, Selection,
};

use super::etcd_args::{runtime, ConfigArgs, EtcdArgs};
use super::report_output::{write_document, OutputFormat, Progress};

/// Where the checkpoint goes unless --checkpoint says otherwise.
pub const DEFAULT_CHECKPOINT: &str = "atrest-rewrite.checkpoint.json";

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
    /// Checkpoint file: the last key below which everything is finished.
    #[arg(long, value_name = "FILE", default_value = DEFAULT_CHECKPOINT)]
    pub checkpoint: PathBuf,
    /// Continue after the key recorded in --checkpoint (same config, prefix and resources only).
    #[arg(long)]
    pub resume: bool,
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
    if args.resume && !args.checkpoint.exists() {
        bail!(
            "--resume refused, nothing was written: checkpoint {} does not exist",
            args.checkpoint.display()
        );
    }
    if args.resume {
        // Checked here too so that a refusal is one message, not "rewrite stopped … rerun with
        // --resume" around "… rerun without --resume".
        Checkpoint::load(&args.checkpoint)
            .and_then(|saved| {
                saved.check_matches(
                    &args.checkpoint,
                    &args.etcd.etcd_prefix,
                    &config.content_hash,
                    &selection.names(),
                )
            })
            .context("--resume refused, nothing was written")?;
    }
    let opts = RewriteOptions {
        etcd_prefix: args.etcd.etcd_prefix.clone(),
        selection,
        dry_run: args.dry_run,
        rate: args.rate,
        batch_size: args.batch as usize,
        in_flight: args.concurrency as usize,
        checkpoint: Some(CheckpointOptions {
            path: args.checkpoint.clone(),
            resume: args.resume,
            config_hash: config.content_hash.clone(),
        }),
        ..Default::default()
    };
    let rt = runtime()?;
    if !args.apiservers.apiservers.is_empty() && !args.dry_run {
        let apis = super::rotate::apiserver::Apiservers::new(&args.apiservers)?;
        rt.block_on(apis.require_loaded(
            &config.content_hash,
            &args.config.config.display().to_string(),
        ))?;
    }
    let conn = args.etcd.connect(&rt)?;
    let progress = Progress::new(if args.dry_run {
        "planning"
    } else {
        "rewriting"
    });
    let result = rt.block_on(rewrite(&conn, transformers, &opts, &progress));
    progress.finish();
    let stopped = if args.dry_run {
        "rewrite --dry-run failed; nothing was written".to_string()
    } else {
        format!(
            "rewrite stopped; objects written so far are correct, rerun with --resume --checkpoint {}",
            args.checkpoint.display()
        )
    };
    let summary = result.map_err(|e| super::common::etcd_failure(e, stopped.clone(), &stopped))?;
    let code = ExitCode::from(if summary.unreadable > 0 {
        crate::exit::UNREADABLE
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
            let key = match (&r.key_name, &r.key_id) {
                (Some(n), Some(id)) => format!("{n} (key_id {id})"),
                (Some(n), None) => n.clone(),
                (None, Some(id)) => format!("key_id {id}"),
                (None, None) => "-".into(),
            };
            let action = if s.dry_run && r.action == "rewrite" {
                "would rewrite"
            } else {
                r.action
            };
            [
                r.resource.clone(),
                format!("{} {key}", r.provider),
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
    if let Some(after) = &s.resumed_after {
        writeln!(out, "resumed after {after}")?;
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
    if !s.unreadable_objects.is_empty() {
        writeln!(out, "\nUnreadable values (left unchanged):")?;
        for u in &s.unreadable_objects {
            writeln!(out, "  {}: {}", u.key, u.error)?;
        }
    }
    Ok(())
}
