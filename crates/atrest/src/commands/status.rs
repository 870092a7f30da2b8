//! `atrest status`: which objects in etcd are encrypted, with what, and whether they are current.

use std::process::ExitCode;

use atrest_store::report::ReportOptions;

use super::etcd_args::{runtime, ConfigArgs, EtcdArgs};
use super::report_output::{exit_code, render_status, OutputFormat, Progress};

#[derive(clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Decrypt every value (reports values that do not decrypt as unreadable; KMS values call the plugin).
    #[arg(long)]
    pub verify: bool,
    /// Name the objects of each row.
    #[arg(long)]
    pub list: bool,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
}

pub fn run(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let (_, transformers) = args.config.load()?;
    super::common::check_kms(&transformers)?;
    let rt = runtime()?;
    let conn = args.etcd.connect(&rt)?;
    let opts = ReportOptions {
        etcd_prefix: args.etcd.etcd_prefix.clone(),
        verify: args.verify,
        list: args.list,
    };
    let progress = Progress::new("status");
    let started = std::time::Instant::now();
    let (report, revision) = rt
        .block_on(atrest_store::etcd::status::status(
            &conn,
            transformers,
            opts,
            &progress,
        ))
        .map_err(|e| {
            super::common::etcd_failure(
                e,
                format!("reading {} from etcd", args.etcd.etcd_prefix),
                "the scan stopped and no report was made",
            )
        })?;
    progress.finish();
    let code = super::common::emit(exit_code(report.exit_class()), |out| {
        render_status(&report, args.output, out)?;
        if report.totals.unreadable > 0 && args.output == OutputFormat::Table {
            // A candidate config: say which keys it lacks, one line per stored provider/key.
            let (config, transformers) = args.config.load()?;
            let scan = rt.block_on(atrest_rotate::gates::scan_objects(
                &conn,
                &config,
                transformers,
                &args.etcd.etcd_prefix,
                args.verify,
            ))?;
            writeln!(
                out,
                "\nNot readable with {}, by the key in their stored prefix:",
                args.config.config.display()
            )?;
            for line in atrest_rotate::gates::unreadable_summary(&scan) {
                writeln!(out, "  {}", super::terminal_text::escape_control(&line))?;
            }
        }
        Ok(())
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    note!(
        "read {} objects at revision {revision} in {elapsed:.2}s ({:.0} objects/s)",
        report.totals.objects,
        report.totals.objects as f64 / elapsed.max(1e-9)
    );
    Ok(code)
}
