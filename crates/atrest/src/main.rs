//! # atrest
//!
//! The operator CLI. Each command is one module under `commands/`, kept thin: parse flags, call the
//! libraries (`atrest-core`, `atrest-kms`, `atrest-store`, `atrest-backup`), render a table, JSON or
//! YAML, and choose the exit code (see [`exit`]).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod exit;

/// Kubernetes encryption at rest, byte-compatible with kube-apiserver.
#[derive(Parser)]
#[command(name = "atrest", version, about, long_about = None, propagate_version = true)]
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
    /// Fetch, decrypt and decode one object from etcd.
    Get(commands::get::GetArgs),
    /// Re-encrypt every object not written by its current write key, safely and resumably.
    Rewrite(commands::rewrite::RewriteArgs),
    /// Read etcd snapshot files offline: status, get, export.
    #[command(subcommand)]
    Snapshot(commands::snapshot::SnapshotCommand),
    /// Encrypt or decrypt backups (age format).
    #[command(subcommand)]
    Backup(commands::backup::BackupCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `kms serve` sets up its own logging (--log-format json, info level by default).
    if !matches!(&cli.command, Command::Kms(k) if commands::kms::inits_logging(k)) {
        init_logging();
    }
    let result = match cli.command {
        Command::Encrypt(args) => commands::encrypt::run(args),
        Command::Decrypt(args) => commands::decrypt::run(args),
        Command::Keygen(args) => commands::keygen::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Config(cmd) => commands::config::run(cmd),
        Command::Kms(cmd) => commands::kms::run(cmd),
        Command::Status(args) => commands::status::run(args),
        Command::Get(args) => commands::get::run(args),
        Command::Rewrite(args) => commands::rewrite::run(args),
        Command::Snapshot(cmd) => commands::snapshot::run(cmd),
        Command::Backup(cmd) => commands::backup::run(cmd),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
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
        .try_init();
}
