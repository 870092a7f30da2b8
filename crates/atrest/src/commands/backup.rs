//! `atrest backup`: encrypt and decrypt backups (etcd snapshots or any file) in the age format, to
//! passphrases, age X25519 keys or a KMS v2 plugin; `keygen` makes an X25519 identity file.
//!
//! Passphrases never come from argv: `--passphrase-file FILE`, the `ATREST_BACKUP_PASSPHRASE`
//! environment variable, or an interactive prompt on the terminal (`--passphrase`).
//! Decrypting to a file (`-o`) writes a temporary file and renames it only after the last chunk
//! authenticated. Decrypting to stdout streams plaintext as chunks authenticate: on error the exit
//! code is 1 and everything written must be discarded.

use std::fs::File;
use std::io::{self, BufReader, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use atrest_backup::{keys, Identity, KmsIdentity, KmsRecipient, Recipient, SecretString, Summary};

use super::snapshot::Progress;
use crate::exit;

/// Environment variable holding the passphrase.
pub const PASSPHRASE_ENV: &str = "ATREST_BACKUP_PASSPHRASE";

#[derive(clap::Subcommand)]
pub enum BackupCommand {
    /// Encrypt a file or stdin (age format, 64 KiB authenticated chunks).
    Encrypt(EncryptArgs),
    /// Decrypt a backup; refuses tampered or truncated input.
    Decrypt(DecryptArgs),
    /// Create an age X25519 identity file (mode 0600) and print its public recipient.
    Keygen(KeygenArgs),
    /// Stream a snapshot from etcd straight into an encrypted backup (no plaintext on disk).
    Snapshot(super::backup_snapshot::SnapshotArgs),
}

#[derive(clap::Args)]
pub struct PassphraseArgs {
    /// Use a passphrase: from $ATREST_BACKUP_PASSPHRASE if set, else prompted on the terminal.
    #[arg(long)]
    passphrase: bool,
    /// Read the passphrase from the first line of this file.
    #[arg(long, value_name = "FILE")]
    passphrase_file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct KmsArgs {
    /// KMS v2 plugin socket, e.g. `unix:///var/run/kms/plugin.sock` (envelope: the plugin wraps the file key).
    #[arg(long, value_name = "ENDPOINT")]
    kms_endpoint: Option<String>,
    /// Per-call timeout for the plugin (e.g. 10s; a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = super::common::parse_duration)]
    kms_timeout: std::time::Duration,
}

#[derive(clap::Args)]
pub struct IoArgs {
    /// Input file (default stdin).
    #[arg(long, short = 'i', value_name = "FILE")]
    input: Option<PathBuf>,
    /// Output file (default stdout); written to a temporary file and renamed on success, mode 0600.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// No summary line on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

#[derive(clap::Args)]
pub struct EncryptArgs {
    #[command(flatten)]
    to: RecipientArgs,
    #[command(flatten)]
    io: IoArgs,
}

/// Whom a backup is encrypted to.
#[derive(clap::Args)]
pub struct RecipientArgs {
    /// An age X25519 recipient (`age1…`); repeatable.
    #[arg(long, short = 'r', value_name = "RECIPIENT")]
    recipient: Vec<String>,
    /// A file of recipients, one per line (`#` comments); repeatable.
    #[arg(long, short = 'R', value_name = "FILE")]
    recipients_file: Vec<PathBuf>,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    #[command(flatten)]
    kms: KmsArgs,
}

#[derive(clap::Args)]
pub struct DecryptArgs {
    /// An identity file (from `atrest backup keygen` or `age-keygen`); repeatable.
    #[arg(long, value_name = "FILE")]
    identity: Vec<PathBuf>,
    #[command(flatten)]
    passphrase: PassphraseArgs,
    #[command(flatten)]
    kms: KmsArgs,
    #[command(flatten)]
    io: IoArgs,
}

#[derive(clap::Args)]
pub struct KeygenArgs {
    /// Where to write the identity (refuses to overwrite).
    #[arg(long, short = 'o', value_name = "FILE")]
    output: PathBuf,
}

pub fn run(cmd: BackupCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        BackupCommand::Encrypt(args) => encrypt(args),
        BackupCommand::Snapshot(args) => super::backup_snapshot::run(args),
        BackupCommand::Decrypt(args) => decrypt(args),
        BackupCommand::Keygen(args) => {
            let recipient = keys::write_identity_file(&args.output)?;
            note!(
                "wrote identity to {} (mode 0600); public recipient:",
                args.output.display()
            );
            say!("{recipient}");
            Ok(ExitCode::from(exit::SUCCESS))
        }
    }
}

fn read_passphrase(args: &PassphraseArgs, confirm: bool) -> anyhow::Result<Option<SecretString>> {
    if let Some(path) = &args.passphrase_file {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading passphrase file {}", path.display()))?,
        );
        let line = text.lines().next().unwrap_or("");
        anyhow::ensure!(
            !line.is_empty(),
            "passphrase file {} is empty",
            path.display()
        );
        return Ok(Some(SecretString::from(line.to_string())));
    }
    if !args.passphrase {
        return Ok(None);
    }
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        anyhow::ensure!(!p.is_empty(), "{PASSPHRASE_ENV} is empty");
        return Ok(Some(SecretString::from(p)));
    }
    anyhow::ensure!(
        io::stdin().is_terminal() || Path::new("/dev/tty").exists(),
        "--passphrase needs a terminal, {PASSPHRASE_ENV} or --passphrase-file"
    );
    let first = zeroize::Zeroizing::new(
        rpassword::prompt_password("Passphrase: ")
            .context("reading passphrase from the terminal")?,
    );
    anyhow::ensure!(!first.is_empty(), "empty passphrase");
    if confirm {
        let second = zeroize::Zeroizing::new(rpassword::prompt_password("Confirm passphrase: ")?);
        anyhow::ensure!(*first == *second, "passphrases do not match");
    }
    Ok(Some(SecretString::from(first.to_string())))
}

fn kms_service(
    args: &KmsArgs,
) -> anyhow::Result<Option<std::sync::Arc<dyn atrest_core::kms::KmsV2Service>>> {
    let Some(endpoint) = &args.kms_endpoint else {
        return Ok(None);
    };
    let service = super::kms::connector()
        .connect_v2("backup", endpoint, args.kms_timeout)
        .with_context(|| format!("connecting to KMS plugin {endpoint}"))?;
    Ok(Some(service))
}

fn open_input(args: &IoArgs) -> anyhow::Result<(Box<dyn Read>, Option<u64>)> {
    Ok(match &args.input {
        Some(p) => {
            let f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
            let len = f.metadata().ok().map(|m| m.len());
            (Box::new(BufReader::with_capacity(1 << 20, f)), len)
        }
        None => (Box::new(io::stdin().lock()), None),
    })
}

/// Runs `f` writing to the output file (atomically) or stdout.
fn with_output(
    args: &IoArgs,
    f: impl FnOnce(&mut dyn Write) -> atrest_backup::Result<Summary>,
) -> anyhow::Result<Summary> {
    match &args.output {
        Some(p) => atrest_backup::write_atomically(p, f)
            .with_context(|| format!("writing {}", p.display())),
        None => {
            let mut out = io::BufWriter::with_capacity(1 << 20, io::stdout().lock());
            Ok(f(&mut out)?)
        }
    }
}

fn summary(args: &IoArgs, verb: &str, s: &Summary, started: Instant, to: &str) {
    if args.quiet {
        return;
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    note!(
        "{verb} {} bytes -> {} bytes in {:.2}s ({:.0} MB/s) {to}",
        s.bytes_in,
        s.bytes_out,
        secs,
        s.bytes_in.max(s.bytes_out) as f64 / secs / 1e6
    );
}

/// The recipients the flags name, and how to describe them in the summary.
pub(crate) fn recipients(args: &RecipientArgs) -> anyhow::Result<(Vec<Recipient>, Vec<String>)> {
    let mut recipients = Vec::new();
    let mut described = Vec::new();
    for r in &args.recipient {
        recipients.push(Recipient::X25519(keys::parse_recipient(r)?));
        described.push(r.clone());
    }
    for path in &args.recipients_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        for r in
            keys::parse_recipients_file(&text).with_context(|| format!("in {}", path.display()))?
        {
            described.push(r.to_string());
            recipients.push(Recipient::X25519(r));
        }
    }
    if let Some(service) = kms_service(&args.kms)? {
        recipients
            .push(Recipient::Kms(KmsRecipient::new(service).with_endpoint(
                args.kms.kms_endpoint.as_deref().unwrap_or_default(),
            )));
        described.push(format!(
            "kms {}",
            args.kms.kms_endpoint.as_deref().unwrap_or_default()
        ));
    }
    if let Some(p) = read_passphrase(&args.passphrase, true)? {
        recipients.push(Recipient::Passphrase(p));
        described.push("passphrase".into());
    }
    anyhow::ensure!(
        !recipients.is_empty(),
        "no recipients: give --recipient, --recipients-file, --passphrase(-file) or --kms-endpoint"
    );
    Ok((recipients, described))
}

impl RecipientArgs {
    /// Whether any recipient flag was given.
    pub(crate) fn given(&self) -> bool {
        !self.recipient.is_empty()
            || !self.recipients_file.is_empty()
            || self.passphrase.passphrase
            || self.passphrase.passphrase_file.is_some()
            || self.kms.kms_endpoint.is_some()
    }
}

/// What can open a backup just encrypted to `recipients` (from `args`) without asking again: the
/// passphrase, the KMS plugin, and the identity files given (age X25519 recipients have no other
/// way back). Empty when none can.
pub(crate) fn identities_for(
    args: &RecipientArgs,
    recipients: &[Recipient],
    identity_files: &[PathBuf],
) -> anyhow::Result<Vec<Identity>> {
    let mut identities = Vec::new();
    for path in identity_files {
        identities.push(Identity::File(keys::read_identity_file(path)?));
    }
    for r in recipients {
        if let Recipient::Passphrase(p) = r {
            identities.push(Identity::Passphrase(p.clone()));
        }
    }
    if let Some(service) = kms_service(&args.kms)? {
        identities.push(Identity::Kms(KmsIdentity::new(service)));
    }
    Ok(identities)
}

fn encrypt(args: EncryptArgs) -> anyhow::Result<ExitCode> {
    let (recipients, described) = recipients(&args.to)?;
    if args.io.output.is_none() && io::stdout().is_terminal() {
        anyhow::bail!(
            "refusing to write encrypted binary data to a terminal: use -o FILE or a pipe"
        );
    }
    let (mut input, total) = open_input(&args.io)?;
    let started = Instant::now();
    let mut bar = Progress::bytes("encrypting", total.unwrap_or(0));
    let s = with_output(&args.io, |out| {
        atrest_backup::encrypt(&recipients, &mut input, out, &mut |done| {
            bar.update(done, total.unwrap_or(done))
        })
    })?;
    bar.finish();
    summary(
        &args.io,
        "encrypted",
        &s,
        started,
        &format!("to {}", described.join(", ")),
    );
    Ok(ExitCode::from(exit::SUCCESS))
}

fn decrypt(args: DecryptArgs) -> anyhow::Result<ExitCode> {
    let mut identities = Vec::new();
    for path in &args.identity {
        identities.push(Identity::File(keys::read_identity_file(path)?));
    }
    if let Some(service) = kms_service(&args.kms)? {
        identities.push(Identity::Kms(KmsIdentity::new(service)));
    }
    if let Some(p) = read_passphrase(&args.passphrase, false)? {
        identities.push(Identity::Passphrase(p));
    }
    anyhow::ensure!(
        !identities.is_empty(),
        "no identity: give --identity, --passphrase(-file) or --kms-endpoint"
    );
    let (mut input, total) = open_input(&args.io)?;
    let started = Instant::now();
    let mut bar = Progress::bytes("decrypting", total.unwrap_or(0));
    let result = with_output(&args.io, |out| {
        atrest_backup::decrypt(&identities, &mut input, out, &mut |done| {
            bar.update(done, total.unwrap_or(done))
        })
    });
    bar.finish();
    let source = args
        .io
        .input
        .as_ref()
        .map_or_else(|| "stdin".to_owned(), |p| p.display().to_string());
    let s = match result {
        Ok(s) => s,
        Err(e) if args.io.output.is_none() => {
            return Err(e.context(format!("decrypting {source} failed: the plaintext written to stdout is incomplete and must be discarded")))
        }
        Err(e) => {
            return Err(e.context(format!(
                "decrypting {source} failed: no output file was written"
            )))
        }
    };
    summary(&args.io, "decrypted", &s, started, "(authenticated)");
    Ok(ExitCode::from(exit::SUCCESS))
}
