//! # atrest
//!
//! The operator CLI. Each command is one module under `commands/`, kept thin: parse flags, call the
//! libraries (`atrest-core`, `atrest-kms`, `atrest-store`, `atrest-backup`), render a table, JSON or
//! YAML, and choose the exit code (see [`exit`]).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// `eprintln!` that never panics: a closed stderr (`2>&1 | head -1`) must not turn into exit 101.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `println!` that never panics, for one-line confirmations (reports go through
/// `commands::common::emit`).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod commands;
mod exit;

/// Kubernetes encryption at rest, byte-compatible with kube-apiserver.
#[derive(Parser)]
#[command(
    name = "atrest",
    version = commands::version::long_version(),
    about,
    long_about = None,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Encrypt stdin for a resource and etcd key exactly as kube-apiserver would.
    Encrypt(commands::encrypt::EncryptArgs),
    /// Decrypt an etcd value from stdin; report provider, key and staleness on stderr.
    Decrypt(commands::decrypt::DecryptArgs),
    /// Decode a stored value from stdin (optionally decrypting it first) into the object the API serves.
    Decode(commands::decode::DecodeArgs),
    /// Generate a fresh key for aescbc, aesgcm or secretbox.
    Keygen(commands::keygen::KeygenArgs),
    /// Measure each provider's encrypt/decrypt speed on this machine.
    Bench(commands::bench::BenchArgs),
    /// Check or explain an EncryptionConfiguration file.
    #[command(subcommand)]
    Config(commands::config::ConfigCommand),
    /// The KMS v2 plugin: serve, manage the local key store, benchmark any plugin.
    #[command(subcommand)]
    Kms(commands::kms::KmsCommand),
    /// Report which objects in etcd are encrypted, with what, and whether they are current.
    Status(commands::status::StatusArgs),
    /// Export live encryption coverage of etcd as Prometheus metrics (watch-driven).
    Monitor(commands::monitor::MonitorArgs),
    /// Fetch, decrypt and decode one object from etcd.
    Get(commands::get::GetArgs),
    /// Re-encrypt every object not written by its current write key, safely and resumably.
    Rewrite(commands::rewrite::RewriteArgs),
    /// Rotate keys or providers across an HA control plane, gated by every apiserver and etcd.
    #[command(subcommand)]
    Rotate(commands::rotate::RotateCommand),
    /// Read etcd snapshot files offline: status, get, export.
    #[command(subcommand)]
    Snapshot(commands::snapshot::SnapshotCommand),
    /// Encrypt or decrypt backups (age format).
    #[command(subcommand)]
    Backup(commands::backup::BackupCommand),
    /// Print the version and whether the AWS-LC FIPS module is in use.
    Version(commands::version::VersionArgs),
    /// Wire encryption at rest into kube-apiserver's static-pod manifest (kubeadm), or print the
    /// k3s/rke2/Talos equivalent.
    #[command(subcommand)]
    Apiserver(commands::apiserver::ApiserverCommand),
    /// Check a control-plane node's encryption at rest: flag, file modes, providers, etcd data.
    Audit(commands::audit::AuditArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `kms serve` sets up its own logging (--log-format json, info level by default).
    // So does `monitor`.
    let own_logging = match &cli.command {
        Command::Kms(k) => commands::kms::inits_logging(k),
        Command::Monitor(_) => true,
        _ => false,
    };
    if !own_logging {
        init_logging();
    }
    let result = match cli.command {
        Command::Encrypt(args) => commands::encrypt::run(args),
        Command::Decrypt(args) => commands::decrypt::run(args),
        Command::Decode(args) => commands::decode::run(args),
        Command::Keygen(args) => commands::keygen::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Config(cmd) => commands::config::run(cmd),
        Command::Kms(cmd) => commands::kms::run(cmd),
        Command::Status(args) => commands::status::run(args),
        Command::Monitor(args) => commands::monitor::run(args),
        Command::Get(args) => commands::get::run(args),
        Command::Rewrite(args) => commands::rewrite::run(args),
        Command::Rotate(cmd) => commands::rotate::run(cmd),
        Command::Snapshot(cmd) => commands::snapshot::run(cmd),
        Command::Backup(cmd) => commands::backup::run(cmd),
        Command::Version(args) => commands::version::run(args),
        Command::Apiserver(cmd) => commands::apiserver::run(cmd),
        Command::Audit(args) => commands::audit::run(args),
    };
    match result {
        Ok(code) => code,
        // The reader went away (`| head`): stop quietly, as `ls | head` does. Commands with a
        // verdict return it themselves (`commands::common::emit`); the rest had nothing to report.
        Err(err) if commands::common::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let text = format!("{err:#}");
            note!(
                "error: {}",
                commands::terminal_text::escape_control_keep_lines(&text)
            );
            ExitCode::from(exit::FAILURE)
        }
    }
}

/// Logs go to stderr, filtered by `ATREST_LOG` (e.g. `info`, `atrest_kms=debug`); default `warn`.
/// Nothing logs plaintext, DEKs or keys at any level.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATREST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour codes only on a terminal: logs redirected to files or journald stay plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .fmt_fields(commands::terminal_text::log_fields())
        .try_init();
}
