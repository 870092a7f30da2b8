//! `atrest backup snapshot`: etcd's Maintenance Snapshot RPC streamed straight into the age
//! encryptor. The plaintext snapshot exists only in memory, a few chunks at a time: what reaches
//! the disk is ciphertext, in a 0600 temporary file beside `-o` that is renamed into place only
//! after the stream ended with a matching sha256 trailer (the check `etcdctl snapshot save` makes).
//! `etcdctl snapshot save /dev/stdout | …` cannot do this: etcdctl writes a temporary file and
//! renames it over the path.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use anyhow::Context;
use atrest_store::etcd::maintenance::{self, SnapshotSummary};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::backup::{recipients, RecipientArgs};
use super::etcd_args::{runtime, EtcdArgs};
use super::snapshot::Progress;
use crate::exit;

#[derive(clap::Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    etcd: EtcdArgs,
    #[command(flatten)]
    to: RecipientArgs,
    /// The encrypted backup to write (mode 0600), e.g. `etcd-2026-12-01.db.age`.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: PathBuf,
    /// No progress bar and no summary.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// What the etcd side sends the encryptor.
enum Msg {
    Data(Zeroizing<Vec<u8>>),
    /// The stream ended and its sha256 trailer matched.
    Done(SnapshotSummary),
    Failed(String),
}

/// The encryptor's input: chunks from the etcd stream; EOF only after a verified end.
struct StreamReader {
    rx: mpsc::Receiver<Msg>,
    chunk: Zeroizing<Vec<u8>>,
    pos: usize,
    done: Option<SnapshotSummary>,
}

impl Read for StreamReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.chunk.len() {
            if self.done.is_some() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Msg::Data(c)) => {
                    self.chunk = c;
                    self.pos = 0;
                }
                Ok(Msg::Done(s)) => self.done = Some(s),
                Ok(Msg::Failed(e)) => return Err(io::Error::other(e)),
                Err(_) => return Err(io::Error::other("the etcd snapshot stream stopped")),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

pub fn run(args: SnapshotArgs) -> anyhow::Result<ExitCode> {
    let (recipients, described) = recipients(&args.to)?;
    let started = Instant::now();
    let written = stream_encrypted(&args.etcd, &recipients, &args.output, args.quiet)?;
    if !args.quiet {
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        eprintln!(
            "snapshot of {}: {} bytes (sha256 trailer verified) encrypted to {} -> {} ({} bytes) in {:.2}s ({:.0} MB/s)",
            written.endpoints,
            written.summary.bytes_in,
            described.join(", "),
            args.output.display(),
            written.summary.bytes_out,
            secs,
            written.summary.bytes_in as f64 / secs / 1e6
        );
    }
    Ok(ExitCode::from(exit::SUCCESS))
}

/// What [`stream_encrypted`] wrote.
pub(crate) struct Written {
    /// The etcd endpoints the snapshot came from (for messages).
    pub endpoints: String,
    pub summary: atrest_backup::Summary,
    /// `sha256:<hex>` of the encrypted file's bytes.
    pub sha256: String,
}

/// Streams etcd's snapshot into `output`, encrypted to `recipients`: the file appears (0600, by
/// rename) only once the stream ended with a matching trailer; before that nothing has its name.
/// Also used by `rotate apply --backup`.
pub(crate) fn stream_encrypted(
    etcd: &EtcdArgs,
    recipients: &[atrest_backup::Recipient],
    output: &Path,
    quiet: bool,
) -> anyhow::Result<Written> {
    let rt = runtime()?;
    let mut settings = etcd.settings();
    // One request streams the whole database: --command-timeout bounds the connection checks,
    // not the transfer.
    settings.command_timeout = settings
        .command_timeout
        .max(std::time::Duration::from_secs(24 * 3600));
    let conn = rt.block_on(atrest_store::etcd::connect(&settings))?;
    let endpoints = conn.endpoints();
    let total = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::sync_channel::<Msg>(64);
    let producer = {
        let total = total.clone();
        std::thread::spawn(move || {
            let sink_tx = tx.clone();
            let result = rt.block_on(maintenance::snapshot(
                &conn,
                |chunk| {
                    sink_tx
                        .send(Msg::Data(Zeroizing::new(chunk.to_vec())))
                        .map_err(|_| io::Error::other("the encryptor stopped"))
                },
                |received, remaining| {
                    total.store(received.saturating_add(remaining), Ordering::Relaxed)
                },
            ));
            let _ = tx.send(match result {
                Ok(s) => Msg::Done(s),
                Err(e) => Msg::Failed(e.to_string()),
            });
        })
    };
    let mut input = StreamReader {
        rx,
        chunk: Zeroizing::new(Vec::new()),
        pos: 0,
        done: None,
    };
    let mut bar = if quiet {
        None
    } else {
        Some(Progress::bytes("streaming snapshot", 0))
    };
    let result = atrest_backup::write_atomically(output, |out| {
        let mut hashed = Sha256Writer {
            inner: out,
            hash: Sha256::new(),
        };
        let summary = atrest_backup::encrypt(recipients, &mut input, &mut hashed, &mut |done| {
            if let Some(bar) = bar.as_mut() {
                bar.update(done, total.load(Ordering::Relaxed).max(done));
            }
        })?;
        Ok((summary, hex::encode(hashed.hash.finalize())))
    });
    if let Some(bar) = bar.as_mut() {
        bar.finish();
    }
    drop(input); // unblocks the producer if encryption failed first
    let _ = producer.join();
    let (summary, sha256) = result.with_context(|| {
        format!(
            "backing up etcd {endpoints} to {}: nothing was written",
            output.display()
        )
    })?;
    Ok(Written {
        endpoints,
        summary,
        sha256: format!("sha256:{sha256}"),
    })
}

/// Hashes what the encryptor writes (the file's bytes, for summaries and later checks).
struct Sha256Writer<'a> {
    inner: &'a mut dyn Write,
    hash: Sha256,
}

impl Write for Sha256Writer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
