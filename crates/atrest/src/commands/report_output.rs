//! Rendering of status reports (live `status` and `snapshot status` alike): a table or JSON, the
//! exit code, and a progress bar on stderr when it is a terminal.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use atrest_store::etcd::status::ScanProgress;
use atrest_store::report::{ExitClass, Row, StatusReport};
use indicatif::{ProgressBar, ProgressStyle};

use super::terminal_text::{escape_control as esc, key_cell};

/// `-o table|json|yaml`, the same for every command that reports: a table (or text) for people,
/// or exactly one JSON or YAML document on stdout for scripts.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    #[default]
    #[value(alias = "text")]
    Table,
    Json,
    Yaml,
}

impl OutputFormat {
    /// Whether a document (JSON or YAML) is asked for instead of the human format.
    pub fn is_document(self) -> bool {
        self != OutputFormat::Table
    }
}

/// Writes `value` as the one JSON or YAML document of the output (`Table` writes JSON too:
/// callers print their own table instead).
pub fn write_document<T: serde::Serialize + ?Sized>(
    format: OutputFormat,
    value: &T,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    match format {
        OutputFormat::Yaml => {
            let json = serde_json::to_value(value)?;
            out.write_all(super::yaml_output::single(&json)?.as_bytes())?;
        }
        OutputFormat::Json | OutputFormat::Table => {
            // As an io::Error, so that a closed pipe stays recognizable.
            serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
    }
    Ok(())
}

/// The exit code for a report: 0 all current, 3 stale/plaintext present, 4 unreadable present.
pub fn exit_code(class: ExitClass) -> ExitCode {
    ExitCode::from(match class {
        ExitClass::AllCurrent => crate::exit::SUCCESS,
        ExitClass::NotCurrent => crate::exit::NOT_CURRENT,
        ExitClass::Unreadable => crate::exit::UNREADABLE,
    })
}

fn state(row: &Row) -> &'static str {
    match (row.unreadable, row.covered, row.stale) {
        (true, _, _) => "unreadable",
        (false, false, _) => "not covered",
        (false, true, Some(true)) => "stale",
        (false, true, _) => "current",
    }
}

/// Writes the report as a table or as one JSON/YAML document
/// (`{"rows": [...], "totals": {...}, "unreadable": [...]}`).
pub fn render_status(
    report: &StatusReport,
    format: OutputFormat,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    for warning in &report.warnings {
        note!("warning: {}", esc(warning));
    }
    match format {
        OutputFormat::Table => Ok(render_table(report, out)?),
        document => write_document(document, report, out),
    }
}

fn render_table(report: &StatusReport, out: &mut dyn Write) -> std::io::Result<()> {
    let header = ["RESOURCE", "PROVIDER", "KEY", "STATE", "COUNT"];
    let cells: Vec<[String; 5]> = report
        .rows
        .iter()
        .map(|r| {
            [
                esc(&r.resource).into_owned(),
                esc(&r.provider).into_owned(),
                key_cell(r.key_name.as_deref(), r.key_id.as_deref()),
                state(r).into(),
                r.count.to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 5], out: &mut dyn Write| -> std::io::Result<()> {
        writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:>w4$}",
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            cols[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4]
        )
    };
    line(header, out)?;
    for (row, c) in report.rows.iter().zip(&cells) {
        line([&c[0], &c[1], &c[2], &c[3], &c[4]], out)?;
        for key in row.objects.iter().flatten() {
            writeln!(out, "    {}", esc(key))?;
        }
    }
    let t = &report.totals;
    writeln!(out)?;
    writeln!(
        out,
        "{} objects: {} covered ({} current, {} stale of which {} unencrypted), {} not covered, {} unreadable",
        t.objects, t.covered, t.current, t.stale, t.unencrypted_covered, t.uncovered, t.unreadable
    )?;
    if !report.unreadable.is_empty() {
        writeln!(out)?;
        let more = t.unreadable.saturating_sub(report.unreadable.len() as u64);
        writeln!(
            out,
            "Unreadable values{}:",
            if more > 0 {
                format!(" (first {})", report.unreadable.len())
            } else {
                String::new()
            }
        )?;
        for u in &report.unreadable {
            writeln!(out, "  {}: {}", esc(&u.key), esc(&u.error))?;
        }
    }
    Ok(())
}

/// A progress bar with rate and ETA on stderr, only when stderr is a terminal.
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(message: &'static str) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::new(0);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg} [{bar:30}] {human_pos}/{human_len} keys, {rate} keys/s, eta {eta}",
        ) {
            let style = style.progress_chars("=> ").with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}", state.per_sec());
                },
            );
            bar.set_style(style);
        }
        bar.set_message(message);
        Progress { bar: Some(bar) }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl ScanProgress for Progress {
    fn wants_total(&self) -> bool {
        self.bar.is_some()
    }
    fn set_total(&self, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(total);
        }
    }
    fn advance(&self, n: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(n);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
