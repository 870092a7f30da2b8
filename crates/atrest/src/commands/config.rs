//! `atrest config check|explain`: kube-apiserver's verdict on an EncryptionConfiguration file, and
//! a per-resource explanation with an expert's warnings. Secrets never reach the output: errors
//! print them as `REDACTED`, and the explanation only names keys.

use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use atrest_core::config::{
    self, ConfigError, EncryptionConfiguration, Explanation, FeatureGates, LoadOptions, Step,
    Warning,
};
use zeroize::Zeroizing;

use super::common::emit;
use super::report_output::{write_document, OutputFormat};
use crate::exit;

#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Print `ok` if kube-apiserver would load FILE with these flags, else every error (exit 1).
    Check(CheckArgs),
    /// Explain per resource entry what writes, what reads, and what deserves attention.
    Explain(ExplainArgs),
}

/// The kube-apiserver flags that change whether a file loads.
#[derive(clap::Args)]
pub struct LoadFlags {
    /// The EncryptionConfiguration file (YAML or JSON); `-` reads stdin.
    pub file: PathBuf,
    /// kube-apiserver's `--feature-gates` (e.g. `KMSv1=true`; comma-separated, repeatable).
    #[arg(long = "feature-gates", value_name = "GATES")]
    pub feature_gates: Vec<String>,
    /// As with `--encryption-provider-config-automatic-reload`: all KMS names must be unique.
    #[arg(long, alias = "encryption-provider-config-automatic-reload")]
    pub automatic_reload: bool,
}

#[derive(clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub load: LoadFlags,
    /// Output format: `ok`/errors as text (warnings on stderr), or one JSON/YAML document.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
    /// With `--endpoints`: also tell which stored objects FILE could not read, grouped by the
    /// provider/key their stored prefix names (exit 4 if any).
    #[command(flatten)]
    pub etcd: super::etcd_args::EtcdArgs,
}

#[derive(clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub load: LoadFlags,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: OutputFormat,
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check(args) => check(&args),
        ConfigCommand::Explain(args) => explain(&args.load, args.output),
    }
}

/// The file's bytes and the name messages use for it (`-`: stdin, shown as `<stdin>`). Read errors
/// are kube-apiserver's (from the loader) for files.
struct Source {
    shown: String,
    stdin: Option<Zeroizing<Vec<u8>>>,
}

impl Source {
    fn open(file: &Path) -> anyhow::Result<Source> {
        if file != Path::new("-") {
            return Ok(Source {
                shown: file.display().to_string(),
                stdin: None,
            });
        }
        let mut bytes = Zeroizing::new(Vec::new());
        std::io::stdin()
            .read_to_end(&mut bytes)
            .context("reading the config from stdin")?;
        Ok(Source {
            shown: "<stdin>".into(),
            stdin: Some(bytes),
        })
    }

    fn load(
        &self,
        file: &Path,
        opts: &LoadOptions,
    ) -> Result<EncryptionConfiguration, ConfigError> {
        match &self.stdin {
            Some(bytes) => config::load_bytes(bytes, &self.shown, opts),
            None => config::load_file(file, opts),
        }
    }

    fn parse(
        &self,
        file: &Path,
        opts: &LoadOptions,
    ) -> Result<EncryptionConfiguration, ConfigError> {
        match &self.stdin {
            Some(bytes) => config::parse_bytes(bytes, &self.shown, opts),
            None => config::parse_file(file, opts),
        }
    }

    /// The warnings about the file itself: its mode, only when it holds key material.
    fn file_warnings(&self, file: &Path, parsed: &EncryptionConfiguration) -> Vec<Warning> {
        if self.stdin.is_some() || !config::holds_key_material(parsed) {
            return Vec::new();
        }
        file_mode_warning(file).into_iter().collect()
    }
}

/// One problem of a rejected file, for `-o json|yaml`.
#[derive(serde::Serialize)]
struct ProblemOut {
    line: Option<usize>,
    field: Option<String>,
    message: String,
}

/// `config check -o json|yaml`.
#[derive(serde::Serialize)]
struct CheckReport {
    file: String,
    /// Whether kube-apiserver would load the file with the given flags.
    loads: bool,
    /// kube-apiserver's message when it would not.
    error: Option<String>,
    problems: Vec<ProblemOut>,
    /// Mistakes kube-apiserver accepts (typos, resources in several entries, file mode).
    warnings: Vec<Warning>,
}

/// Turns the flags into load options, warning (not failing) about gates we do not know.
fn load_options(flags: &LoadFlags) -> anyhow::Result<LoadOptions> {
    let mut gates = FeatureGates::default();
    for value in &flags.feature_gates {
        config::parse_feature_gates(value, &mut gates)
            .map_err(|e| anyhow::anyhow!("--feature-gates: {e}"))?;
    }
    for unknown in &gates.unknown {
        note!("warning: feature gate {unknown} does not affect encryption config loading; ignored");
    }
    Ok(LoadOptions {
        kms_v1_enabled: gates.kms_v1.unwrap_or(false),
        automatic_reload: flags.automatic_reload,
    })
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let flags = &args.load;
    let format = args.output;
    let opts = load_options(flags)?;
    let source = Source::open(&flags.file)?;
    let loaded = source.load(&flags.file, &opts);
    let report = CheckReport {
        file: source.shown.clone(),
        loads: loaded.is_ok(),
        error: loaded.as_ref().err().map(ToString::to_string),
        problems: loaded
            .as_ref()
            .err()
            .map(|e| {
                e.problems()
                    .into_iter()
                    .map(|p| ProblemOut {
                        line: p.line,
                        field: p.field.clone(),
                        message: p.message.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        warnings: match &loaded {
            Ok(parsed) => {
                let mut w = config::lint(parsed);
                w.extend(source.file_warnings(&flags.file, parsed));
                w
            }
            Err(_) => Vec::new(),
        },
    };
    let code = ExitCode::from(if report.loads {
        exit::SUCCESS
    } else {
        exit::FAILURE
    });
    emit(code, |out| {
        if format.is_document() {
            return write_document(format, &report, out);
        }
        match &loaded {
            Ok(parsed) => {
                writeln!(out, "ok")?;
                // kube-apiserver loads the file; a FIPS build of atrest still cannot write with it.
                for index in atrest_core::fips::secretbox_write_entries(parsed) {
                    note!(
                        "note: resources[{index}]: {}",
                        config::fips_secretbox_message(true)
                    );
                }
            }
            Err(err) => print_rejection(&source.shown, err, out)?,
        }
        for w in &report.warnings {
            note!("warning [{}]: {}", w.code, w.message);
        }
        Ok(())
    })?;
    if report.loads && super::etcd_args::endpoints_given() {
        return check_stored(args, &opts);
    }
    Ok(code)
}

/// Which stored objects the (loadable) file could not read, by the key of their stored prefix.
fn check_stored(args: &CheckArgs, opts: &LoadOptions) -> anyhow::Result<ExitCode> {
    let (config, transformers) = super::common::load_transformers(&args.load.file, opts)?;
    let rt = super::etcd_args::runtime()?;
    let conn = args.etcd.connect(&rt)?;
    let scan = rt.block_on(atrest_rotate::gates::scan_objects(
        &conn,
        &config,
        transformers,
        &args.etcd.etcd_prefix,
        false,
    ))?;
    let lines = atrest_rotate::gates::unreadable_summary(&scan);
    if lines.is_empty() {
        println!(
            "every stored object of the resources it covers is readable with {} (etcd revision {})",
            args.load.file.display(),
            scan.revision
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "stored objects {} could not read (etcd revision {}):",
        args.load.file.display(),
        scan.revision
    );
    for l in lines {
        println!("  {l}");
    }
    Ok(ExitCode::from(exit::UNREADABLE))
}

/// kube-apiserver's message (as it would log it), with the line when the file is YAML; several
/// problems are then listed one per line, each with its own line number.
fn print_rejection(file: &str, err: &ConfigError, out: &mut dyn Write) -> std::io::Result<()> {
    let problems = err.problems();
    match problems.as_slice() {
        [single] => match single.line {
            Some(line) => writeln!(out, "{file}: {err} (line {line})"),
            None => writeln!(out, "{file}: {err}"),
        },
        many => {
            writeln!(out, "{file}: {err}")?;
            for p in many {
                match p.line {
                    Some(line) => writeln!(out, "  line {line}: {}", p.message)?,
                    None => writeln!(out, "  {}", p.message)?,
                }
            }
            Ok(())
        }
    }
}

#[derive(serde::Serialize)]
struct ExplainReport<'a> {
    file: String,
    /// Whether kube-apiserver would load the file with the given flags.
    loads: bool,
    load_error: Option<String>,
    #[serde(flatten)]
    explanation: &'a Explanation,
    file_warnings: Vec<Warning>,
}

fn explain(flags: &LoadFlags, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let opts = load_options(flags)?;
    let source = Source::open(&flags.file)?;
    let parsed: EncryptionConfiguration = match source.parse(&flags.file, &opts) {
        Ok(parsed) => parsed,
        Err(err) => {
            return emit(ExitCode::from(exit::FAILURE), |out| {
                Ok(print_rejection(&source.shown, &err, out)?)
            })
        }
    };
    // Masking and the KMSv1 gate are explained as warnings; the verdict still says whether it loads.
    let load_error = source.load(&flags.file, &opts).err().map(|e| e.to_string());
    let explanation = config::explain(&parsed, &opts);
    let report = ExplainReport {
        file: source.shown.clone(),
        loads: load_error.is_none(),
        load_error,
        explanation: &explanation,
        file_warnings: source.file_warnings(&flags.file, &parsed),
    };
    emit(ExitCode::SUCCESS, |out| match format {
        OutputFormat::Table => Ok(print_text(&report, out)?),
        document => write_document(document, &report, out),
    })
}

fn print_text(report: &ExplainReport<'_>, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(out, "{} ({})", report.file, report.explanation.content_hash)?;
    match &report.load_error {
        None => writeln!(out, "kube-apiserver would load this file.")?,
        Some(err) => writeln!(out, "kube-apiserver would NOT load this file: {err}")?,
    }
    for entry in &report.explanation.entries {
        writeln!(out)?;
        let shadowed: Vec<String> = entry
            .shadowed
            .iter()
            .map(|s| format!("{} (written by resources[{}])", s.resource, s.written_by))
            .collect();
        if entry.resources.is_empty() {
            writeln!(
                out,
                "resources[{}]: governs nothing; also lists {}, whose reads only fall back to these providers",
                entry.index,
                shadowed.join(", ")
            )?;
            let reads: Vec<String> = entry
                .read_order
                .iter()
                .map(|s| describe(s, false))
                .collect();
            writeln!(out, "  read fallback: {}", reads.join(" -> "))?;
            continue;
        }
        writeln!(
            out,
            "resources[{}]: {}",
            entry.index,
            entry.resources.join(", ")
        )?;
        if !shadowed.is_empty() {
            writeln!(
                out,
                "  also lists (not governed here): {}",
                shadowed.join(", ")
            )?;
        }
        writeln!(out, "  writes: {}", describe(&entry.write, true))?;
        let reads: Vec<String> = entry
            .read_order
            .iter()
            .map(|s| describe(s, false))
            .collect();
        writeln!(out, "  reads:  {}", reads.join(" -> "))?;
        for x in &entry.extended_reads {
            let reads: Vec<String> = x.read_order.iter().map(|s| describe(s, false)).collect();
            let from: Vec<String> = x
                .from_entries
                .iter()
                .map(|i| format!("resources[{i}]"))
                .collect();
            writeln!(
                out,
                "  reads {}: {} (with {})",
                x.resource,
                reads.join(" -> "),
                from.join(", ")
            )?;
        }
        for w in &entry.warnings {
            writeln!(out, "  warning [{}]: {}", w.code, w.message)?;
        }
    }
    let global: Vec<&Warning> = report
        .explanation
        .warnings
        .iter()
        .chain(&report.file_warnings)
        .collect();
    if !global.is_empty() {
        writeln!(out)?;
        for w in global {
            writeln!(out, "warning [{}]: {}", w.code, w.message)?;
        }
    }
    Ok(())
}

fn describe(step: &Step, with_prefix: bool) -> String {
    let mut text = step.provider.clone();
    if let Some(name) = &step.name {
        text.push_str(&format!(" {name:?}"));
    }
    match (&step.prefix, with_prefix) {
        (Some(prefix), true) => format!("{text} (stored with prefix {prefix})"),
        (None, true) => format!("{text} (plaintext)"),
        _ => text,
    }
}

/// The file holds keys: it should be readable by its owner only.
#[cfg(unix)]
fn file_mode_warning(path: &Path) -> Option<Warning> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    let who = match (mode & 0o004 != 0, mode & 0o040 != 0) {
        (true, _) => "world-readable",
        (false, true) => "group-readable",
        _ => return None,
    };
    Some(Warning {
        code: "file-mode",
        message: format!(
            "{} is {who} (mode {:o}): it holds key material; chmod 600 it.",
            path.display(),
            mode & 0o777
        ),
    })
}

#[cfg(not(unix))]
fn file_mode_warning(_path: &Path) -> Option<Warning> {
    None
}
