//! age X25519 identities and recipients: generating identity files, reading recipients files.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;

use age::secrecy::ExposeSecret;

use crate::error::{BackupError, Result};

/// A fresh identity: the secret file contents (`AGE-SECRET-KEY-1…`, zeroized on drop) and the
/// public recipient (`age1…`).
pub struct GeneratedIdentity {
    pub identity: age::x25519::Identity,
    pub recipient: age::x25519::Recipient,
}

pub fn generate() -> GeneratedIdentity {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public();
    GeneratedIdentity {
        identity,
        recipient,
    }
}

/// Writes an identity file in age's format (comments + secret key line), mode 0600, refusing to
/// overwrite an existing file. Returns the public recipient.
pub fn write_identity_file(path: &Path) -> Result<age::x25519::Recipient> {
    let generated = generate();
    let file_err = |source| BackupError::File {
        path: path.display().to_string(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(file_err)?;
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let secret = generated.identity.to_string();
    let body = zeroize::Zeroizing::new(format!(
        "# created by atrest backup keygen (unix time {created})\n# public key: {}\n{}\n",
        generated.recipient,
        secret.expose_secret()
    ));
    file.write_all(body.as_bytes())
        .and_then(|_| file.sync_all())
        .map_err(file_err)?;
    Ok(generated.recipient)
}

/// Parses one `age1…` recipient.
pub fn parse_recipient(s: &str) -> Result<age::x25519::Recipient> {
    age::x25519::Recipient::from_str(s.trim()).map_err(|e| BackupError::InvalidRecipient {
        recipient: s.trim().to_string(),
        reason: e.to_string(),
    })
}

/// Parses a recipients file: one `age1…` per line, `#` comments and blank lines ignored.
pub fn parse_recipients_file(text: &str) -> Result<Vec<age::x25519::Recipient>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(parse_recipient)
        .collect()
}

/// Reads an identity file (as written by `atrest backup keygen` or `age-keygen`).
pub fn read_identity_file(path: &Path) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>> {
    let invalid = |reason: String| BackupError::InvalidIdentity {
        path: path.display().to_string(),
        reason,
    };
    let bytes =
        zeroize::Zeroizing::new(std::fs::read(path).map_err(|source| BackupError::File {
            path: path.display().to_string(),
            source,
        })?);
    let file =
        age::IdentityFile::from_buffer(bytes.as_slice()).map_err(|e| invalid(e.to_string()))?;
    let ids = file.into_identities().map_err(|e| invalid(e.to_string()))?;
    if ids.is_empty() {
        return Err(invalid("no identities found".into()));
    }
    Ok(ids)
}
