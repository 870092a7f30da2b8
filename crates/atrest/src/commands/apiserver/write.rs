//! Replacing a static-pod manifest safely. kubelet runs every file in its manifests directory
//! (except dot files), so neither the backup nor the temporary file may sit there as a plain file:
//! the backup goes to atrest's state directory, the new content is written next to the manifests
//! directory (same filesystem, so `rename` is atomic) and renamed over the manifest.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// `/var/lib/atrest/backups` as root, else `$XDG_STATE_HOME/atrest/backups` (or
/// `~/.local/state/atrest/backups`).
pub fn default_backup_dir() -> PathBuf {
    let root = fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false);
    if root {
        return PathBuf::from("/var/lib/atrest/backups");
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    state.join("atrest/backups")
}

/// The manifest's real path (a symlinked manifest is replaced at its target) and directory.
pub fn resolve(manifest: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let real =
        fs::canonicalize(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let dir = real
        .parent()
        .with_context(|| format!("{} has no parent directory", real.display()))?
        .to_path_buf();
    Ok((real, dir))
}

/// Saves `original` as `<dir>/<manifest name>.<unix time>` (0600, directory 0700) and returns the
/// path. Refuses a backup directory inside the manifests directory.
pub fn backup(
    manifest: &Path,
    manifests_dir: &Path,
    original: &[u8],
    dir: &Path,
) -> anyhow::Result<PathBuf> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating backup directory {}", dir.display()))?;
    let real_dir = fs::canonicalize(dir).with_context(|| format!("reading {}", dir.display()))?;
    if real_dir.starts_with(manifests_dir) {
        bail!(
            "backup directory {} is inside the manifests directory {}: kubelet would run the backup as a second pod",
            dir.display(),
            manifests_dir.display()
        );
    }
    let name = manifest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "manifest".into());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    for n in 0..1000u32 {
        let file = if n == 0 {
            real_dir.join(format!("{name}.{stamp}"))
        } else {
            real_dir.join(format!("{name}.{stamp}-{n}"))
        };
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
        {
            Ok(mut f) => {
                f.write_all(original)
                    .and_then(|_| f.sync_all())
                    .with_context(|| format!("writing backup {}", file.display()))?;
                return Ok(file);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("writing backup {}", file.display())),
        }
    }
    bail!("no free backup file name in {}", real_dir.display())
}

/// Where the temporary file goes: the manifests directory's parent when it is on the same
/// filesystem (the usual `/etc/kubernetes`); otherwise (the manifests directory is a mount point)
/// a dot file inside it, which kubelet ignores. Returns the directory and whether it is the
/// fallback.
fn temp_dir(manifests_dir: &Path) -> anyhow::Result<(PathBuf, bool)> {
    let here = fs::metadata(manifests_dir)
        .with_context(|| format!("reading {}", manifests_dir.display()))?;
    if let Some(parent) = manifests_dir.parent() {
        if let Ok(meta) = fs::metadata(parent) {
            if meta.dev() == here.dev() {
                return Ok((parent.to_path_buf(), false));
            }
        }
    }
    Ok((manifests_dir.to_path_buf(), true))
}

/// Replaces `manifest` (a resolved path in `manifests_dir`) with `content` atomically, keeping its
/// mode and owner.
pub fn replace(manifest: &Path, manifests_dir: &Path, content: &[u8]) -> anyhow::Result<()> {
    let meta = fs::metadata(manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let (dir, fallback) = temp_dir(manifests_dir)?;
    if fallback {
        eprintln!(
            "note: {} is on its own filesystem; writing the new manifest through a hidden temporary file inside it (kubelet ignores dot files)",
            manifests_dir.display()
        );
    }
    let name = manifest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.atrest-"))
        .tempfile_in(&dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    let context = || format!("writing {}", tmp_path_display(&dir, &name));
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(meta.mode() & 0o7777))
        .with_context(context)?;
    if let Err(e) = std::os::unix::fs::fchown(tmp.as_file(), Some(meta.uid()), Some(meta.gid())) {
        // Only root can give a file away; a user editing their own manifest keeps ownership.
        let me = fs::metadata("/proc/self")
            .map(|m| m.uid())
            .unwrap_or(u32::MAX);
        if me != meta.uid() {
            return Err(e).with_context(|| {
                format!(
                    "keeping the owner (uid {}) of {}",
                    meta.uid(),
                    manifest.display()
                )
            });
        }
    }
    tmp.write_all(content).with_context(context)?;
    tmp.as_file().sync_all().with_context(context)?;
    tmp.persist(manifest)
        .map_err(|e| e.error)
        .with_context(|| format!("renaming the new manifest over {}", manifest.display()))?;
    // Make the rename itself durable.
    if let Ok(d) = fs::File::open(manifests_dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn tmp_path_display(dir: &Path, name: &str) -> String {
    format!("{}/.{name}.atrest-*", dir.display())
}
