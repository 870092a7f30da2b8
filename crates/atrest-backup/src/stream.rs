//! Streaming encryption and decryption (age v1: header, then ChaCha20-Poly1305 STREAM in 64 KiB
//! chunks, the last chunk flagged final, so truncation and reordering are detected).

use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use age::secrecy::SecretString;

use crate::error::{BackupError, Result};
use crate::kms::{KmsIdentity, KmsRecipient};

/// Who can decrypt the backup.
pub enum Recipient {
    /// scrypt-derived key; must be the only recipient (age's rule).
    Passphrase(SecretString),
    X25519(age::x25519::Recipient),
    Kms(KmsRecipient),
}

/// What to decrypt with.
pub enum Identity {
    Passphrase(SecretString),
    /// Identities from an identity file.
    File(Vec<Box<dyn age::Identity + Send + Sync>>),
    Kms(KmsIdentity),
}

/// Bytes read and written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Copy buffer: a multiple of the 64 KiB chunk size.
const BUF: usize = 1 << 20;

struct Counting<R> {
    inner: R,
    count: u64,
}
impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// Encrypts `input` to `recipients` into `output`; `progress` gets the plaintext bytes done.
pub fn encrypt(
    recipients: &[Recipient],
    input: &mut dyn Read,
    output: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<Summary> {
    if recipients.is_empty() {
        return Err(BackupError::Recipients(
            "no recipients: give --recipient, --recipients-file, --passphrase or --kms-endpoint"
                .into(),
        ));
    }
    let passphrases = recipients
        .iter()
        .filter(|r| matches!(r, Recipient::Passphrase(_)))
        .count();
    if passphrases > 0 && recipients.len() > 1 {
        return Err(BackupError::Recipients(
            "a passphrase must be the only recipient (age format rule)".into(),
        ));
    }
    let scrypt;
    let mut dyns: Vec<&dyn age::Recipient> = Vec::new();
    for r in recipients {
        match r {
            Recipient::Passphrase(p) => {
                scrypt = age::scrypt::Recipient::new(p.clone());
                dyns.push(&scrypt);
                break;
            }
            Recipient::X25519(x) => dyns.push(x),
            Recipient::Kms(k) => dyns.push(k),
        }
    }
    let encryptor = age::Encryptor::with_recipients(dyns.into_iter()).map_err(|e| match e {
        age::EncryptError::Io(io) => BackupError::Kms(io.to_string()),
        other => BackupError::Recipients(other.to_string()),
    })?;
    let mut out = Counting2 {
        inner: output,
        count: 0,
    };
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(BackupError::Write)?;
    let mut buf = vec![0u8; BUF];
    let mut done = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BackupError::Read(e)),
        };
        writer.write_all(&buf[..n]).map_err(BackupError::Write)?;
        done += n as u64;
        progress(done);
    }
    writer.finish().map_err(BackupError::Write)?;
    out.flush().map_err(BackupError::Write)?;
    Ok(Summary {
        bytes_in: done,
        bytes_out: out.count,
    })
}

struct Counting2<'a> {
    inner: &'a mut dyn Write,
    count: u64,
}
impl Write for Counting2<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Decrypts `input` into `output`. Plaintext is written chunk by chunk as each 64 KiB chunk
/// authenticates; an error means the output is incomplete and must be discarded (the file variant
/// [`decrypt_to_file`] does that for you).
pub fn decrypt(
    identities: &[Identity],
    input: &mut dyn Read,
    output: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<Summary> {
    if identities.is_empty() {
        return Err(BackupError::Recipients(
            "no identity: give --identity, --passphrase or --kms-endpoint".into(),
        ));
    }
    let mut counted = Counting {
        inner: input,
        count: 0,
    };
    let mut buffered = BufReader::with_capacity(BUF, &mut counted);
    let header = crate::header::read_bounded(&mut buffered)?;
    let decryptor = age::Decryptor::new_buffered(io::Cursor::new(header).chain(buffered))
        .map_err(map_header_error)?;
    let is_scrypt = decryptor.is_scrypt();
    let mut scrypt_ids = Vec::new();
    let mut dyns: Vec<&dyn age::Identity> = Vec::new();
    for id in identities {
        if let Identity::Passphrase(p) = id {
            scrypt_ids.push(age::scrypt::Identity::new(p.clone()));
        }
    }
    for s in &scrypt_ids {
        dyns.push(s);
    }
    let mut kms_ids = Vec::new();
    for id in identities {
        match id {
            Identity::Passphrase(_) => {}
            Identity::File(ids) => {
                dyns.extend(ids.iter().map(|b| b.as_ref() as &dyn age::Identity))
            }
            Identity::Kms(k) => {
                kms_ids.push(k.clone());
                dyns.push(k);
            }
        }
    }
    let mut reader = match decryptor.decrypt(dyns.into_iter()) {
        Ok(r) => r,
        Err(e) => {
            if let Some(msg) = kms_ids.iter().find_map(|k| k.last_error()) {
                return Err(BackupError::Kms(msg));
            }
            return Err(match e {
                age::DecryptError::NoMatchingKeys if is_scrypt => {
                    BackupError::NoMatchingIdentity("a passphrase".into())
                }
                age::DecryptError::NoMatchingKeys => BackupError::NoMatchingIdentity(
                    "recipients none of the given identities match".into(),
                ),
                age::DecryptError::DecryptionFailed | age::DecryptError::KeyDecryptionFailed => {
                    BackupError::WrongKey
                }
                age::DecryptError::InvalidMac => BackupError::HeaderTampered,
                age::DecryptError::ExcessiveWork { .. } => BackupError::ExcessiveWork,
                other => map_header_error(other),
            });
        }
    };
    let mut buf = vec![0u8; BUF];
    let mut done = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(match e.kind() {
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => {
                        BackupError::Tampered {
                            offset: done - done % (64 * 1024),
                            detail: e.to_string(),
                        }
                    }
                    _ => BackupError::Read(e),
                })
            }
        };
        output.write_all(&buf[..n]).map_err(BackupError::Write)?;
        done += n as u64;
        progress(done);
    }
    output.flush().map_err(BackupError::Write)?;
    drop(reader);
    Ok(Summary {
        bytes_in: counted.count,
        bytes_out: done,
    })
}

fn map_header_error(e: age::DecryptError) -> BackupError {
    match e {
        age::DecryptError::Io(io)
            if io.kind() != io::ErrorKind::UnexpectedEof
                && io.kind() != io::ErrorKind::InvalidData =>
        {
            BackupError::Read(io)
        }
        age::DecryptError::InvalidMac => BackupError::HeaderTampered,
        other => BackupError::NotAge(other.to_string()),
    }
}

/// Writes to a temporary file (mode 0600) next to `path` and renames it into place only when `f`
/// succeeds, so a failed decryption never leaves partial plaintext under the final name. Where the
/// filesystem supports it the temporary file is unnamed (`O_TMPFILE`) and linked into the
/// directory only when complete: a process killed by SIGINT, SIGTERM or SIGKILL halfway leaves
/// nothing behind.
pub fn write_atomically<T>(path: &Path, f: impl FnOnce(&mut dyn Write) -> Result<T>) -> Result<T> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file_err = |source| BackupError::File {
        path: path.display().to_string(),
        source,
    };
    if let Some(unnamed) = unnamed_temp(dir) {
        let mut writer = io::BufWriter::with_capacity(BUF, unnamed.map_err(file_err)?);
        let value = f(&mut writer)?;
        let file = writer.into_inner().map_err(|e| file_err(e.into_error()))?;
        file.sync_all().map_err(file_err)?;
        link_into_place(&file, dir, path).map_err(file_err)?;
        return Ok(value);
    }
    let tmp = tempfile::Builder::new()
        .prefix(".atrest-backup-")
        .tempfile_in(dir)
        .map_err(file_err)?;
    let mut writer = io::BufWriter::with_capacity(BUF, tmp);
    let value = f(&mut writer)?;
    let tmp = writer.into_inner().map_err(|e| file_err(e.into_error()))?;
    tmp.as_file().sync_all().map_err(file_err)?;
    tmp.persist(path).map_err(|e| file_err(e.error))?;
    Ok(value)
}

/// An unnamed file in `dir`; `None` when the filesystem has no `O_TMPFILE` (then a named temp
/// file is used).
fn unnamed_temp(dir: &Path) -> Option<io::Result<std::fs::File>> {
    use rustix::fs::{Mode, OFlags};
    match rustix::fs::open(
        dir,
        OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    ) {
        Ok(fd) => Some(Ok(std::fs::File::from(fd))),
        Err(e)
            if e == rustix::io::Errno::OPNOTSUPP
                || e == rustix::io::Errno::ISDIR
                || e == rustix::io::Errno::INVAL =>
        {
            None
        }
        Err(e) => Some(Err(e.into())),
    }
}

/// Gives the complete unnamed file a name (a fresh one: `linkat` never replaces), then renames it
/// over `path`.
fn link_into_place(file: &std::fs::File, dir: &Path, path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let proc_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    for n in 0..16u32 {
        let name = dir.join(format!(".atrest-backup-{}-{n}.part", std::process::id()));
        match rustix::fs::linkat(
            rustix::fs::CWD,
            proc_path.as_str(),
            rustix::fs::CWD,
            &name,
            rustix::fs::AtFlags::SYMLINK_FOLLOW,
        ) {
            Ok(()) => {
                return std::fs::rename(&name, path).inspect_err(|_| {
                    let _ = std::fs::remove_file(&name);
                })
            }
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary name",
    ))
}
