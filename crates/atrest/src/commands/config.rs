//! `atrest config check|explain`: kube-apiserver's verdict on an EncryptionConfiguration file, and
//! a per-resource explanation with an expert's warnings. Secrets never reach the output: errors
//! print them as `REDACTED`, and the explanation only names keys.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use atrest_core::config::{
    self, ConfigError, EncryptionConfiguration, Explanation, FeatureGates, LoadOptions, Step,
    Warning,
};

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
    /// The EncryptionConfiguration file (YAML or JSON).
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
    /// With `--endpoints`: also tell which stored objects FILE could not read, grouped by the
    /// provider/key their stored prefix names (exit 4 if any).
    #[command(flatten)]
    pub etcd: super::etcd_args::EtcdArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExplainFormat {
    #[default]
    Text,
    Json,
}

#[derive(clap::Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub load: LoadFlags,
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    pub output: ExplainFormat,
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check(args) => check(&args),
        ConfigCommand::Explain(args) => explain(&args.load, args.output),
    }
}

/// Turns the flags into load options, warning (not failing) about gates we do not know.
fn load_options(flags: &LoadFlags) -> anyhow::Result<LoadOptions> {
    let mut gates = FeatureGates::default();
    for value in &flags.feature_gates {
        config::parse_feature_gates(value, &mut gates)
            .map_err(|e| anyhow::anyhow!("--feature-gates: {e}"))?;
    }
    for unknown in &gates.unknown {
        eprintln!(
            "warning: feature gate {unknown} does not affect encryption config loading; ignored"
        );
    }
    Ok(LoadOptions {
        kms_v1_enabled: gates.kms_v1.unwrap_or(false),
        automatic_reload: flags.automatic_reload,
    })
}

fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let flags = &args.load;
    let opts = load_options(flags)?;
    match config::load_file(&flags.file, &opts) {
        Ok(_) => {
            println!("ok");
            if super::etcd_args::endpoints_given() {
                return check_stored(args, &opts);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            print_rejection(&flags.file, &err);
            Ok(ExitCode::from(exit::FAILURE))
        }
    }
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
fn print_rejection(file: &Path, err: &ConfigError) {
    let problems = err.problems();
    match problems.as_slice() {
        [single] => match single.line {
            Some(line) => println!("{}: {err} (line {line})", file.display()),
            None => println!("{}: {err}", file.display()),
        },
        many => {
            println!("{}: {err}", file.display());
            for p in many {
                match p.line {
                    Some(line) => println!("  line {line}: {}", p.message),
                    None => println!("  {}", p.message),
                }
            }
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

fn explain(flags: &LoadFlags, format: ExplainFormat) -> anyhow::Result<ExitCode> {
    let opts = load_options(flags)?;
    let parsed: EncryptionConfiguration = match config::parse_file(&flags.file, &opts) {
        Ok(parsed) => parsed,
        Err(err) => {
            print_rejection(&flags.file, &err);
            return Ok(ExitCode::from(exit::FAILURE));
        }
    };
    // Masking and the KMSv1 gate are explained as warnings; the verdict still says whether it loads.
    let load_error = config::load_file(&flags.file, &opts)
        .err()
        .map(|e| e.to_string());
    let explanation = config::explain(&parsed, &opts);
    let report = ExplainReport {
        file: flags.file.display().to_string(),
        loads: load_error.is_none(),
        load_error,
        explanation: &explanation,
        file_warnings: file_mode_warning(&flags.file).into_iter().collect(),
    };
    match format {
        ExplainFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        ExplainFormat::Text => print_text(&report),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_text(report: &ExplainReport<'_>) {
    println!("{} ({})", report.file, report.explanation.content_hash);
    match &report.load_error {
        None => println!("kube-apiserver would load this file."),
        Some(err) => println!("kube-apiserver would NOT load this file: {err}"),
    }
    for entry in &report.explanation.entries {
        println!();
        println!("resources[{}]: {}", entry.index, entry.resources.join(", "));
        println!("  writes: {}", describe(&entry.write, true));
        let reads: Vec<String> = entry
            .read_order
            .iter()
            .map(|s| describe(s, false))
            .collect();
        println!("  reads:  {}", reads.join(" -> "));
        for w in &entry.warnings {
            println!("  warning [{}]: {}", w.code, w.message);
        }
    }
    let global: Vec<&Warning> = report
        .explanation
        .warnings
        .iter()
        .chain(&report.file_warnings)
        .collect();
    if !global.is_empty() {
        println!();
        for w in global {
            println!("warning [{}]: {}", w.code, w.message);
        }
    }
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

/// The file holds keys (or KMS socket paths): it should be readable by its owner only.
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
