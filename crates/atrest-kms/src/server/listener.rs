//! The unix socket: stale-socket replacement, 0600 permissions (0660 with a group), abstract names.
//! Accepting (backoff, connection cap, timeouts, the SO_PEERCRED uid filter) is in [`super::guard`].

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use super::ServeError;
use crate::endpoint::{connect_std, Endpoint};

/// A bound listener and the file to remove at shutdown.
pub(crate) struct Bound {
    pub listener: UnixListener,
    pub socket_file: Option<PathBuf>,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ServeError + '_ {
    move |source| ServeError::Socket {
        path: path.display().to_string(),
        source,
    }
}

/// Binds `endpoint`. A leftover socket file nobody listens on (crash, kill -9) is replaced; a live
/// server on it, or a non-socket file, is refused.
pub(crate) fn bind(endpoint: &Endpoint, group: Option<u32>) -> Result<Bound, ServeError> {
    match endpoint {
        Endpoint::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .map_err(io_at(Path::new(name)))?;
            let std_listener = std::os::unix::net::UnixListener::bind_addr(&addr).map_err(|e| {
                if e.kind() == io::ErrorKind::AddrInUse {
                    ServeError::AlreadyServing(endpoint.to_string())
                } else {
                    ServeError::Socket {
                        path: format!("@{name}"),
                        source: e,
                    }
                }
            })?;
            std_listener
                .set_nonblocking(true)
                .map_err(io_at(Path::new(name)))?;
            let listener = UnixListener::from_std(std_listener).map_err(io_at(Path::new(name)))?;
            Ok(Bound {
                listener,
                socket_file: None,
            })
        }
        Endpoint::Path(path) => {
            match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_socket() => match connect_std(endpoint) {
                    Ok(_) => return Err(ServeError::AlreadyServing(endpoint.to_string())),
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        tracing::warn!(path = %path.display(), "replacing stale socket left by a previous run");
                        std::fs::remove_file(path).map_err(io_at(path))?;
                    }
                    Err(e) => return Err(io_at(path)(e)),
                },
                Ok(_) => return Err(ServeError::NotASocket(path.clone())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_at(path)(e)),
            }
            if let Some(parent) = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty() && !p.exists())
            {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)
                    .map_err(io_at(parent))?;
            }
            // Bind under a temporary name, fix owner and mode, then rename into place: the socket is
            // never reachable with looser permissions.
            let file_name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let tmp = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            let std_listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(io_at(&tmp))?;
            let mode = if group.is_some() { 0o660 } else { 0o600 };
            let fix = (|| {
                if let Some(gid) = group {
                    std::os::unix::fs::chown(&tmp, None, Some(gid))?;
                }
                std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
                std::fs::rename(&tmp, path)
            })();
            if let Err(e) = fix {
                let _ = std::fs::remove_file(&tmp);
                return Err(io_at(path)(e));
            }
            std_listener.set_nonblocking(true).map_err(io_at(path))?;
            let listener = UnixListener::from_std(std_listener).map_err(io_at(path))?;
            Ok(Bound {
                listener,
                socket_file: Some(path.clone()),
            })
        }
    }
}

use std::os::unix::fs::DirBuilderExt;

/// Resolves `--socket-group`: a numeric gid or a name from /etc/group.
pub fn resolve_group(group: &str) -> Result<u32, ServeError> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    let text = std::fs::read_to_string("/etc/group").map_err(io_at(Path::new("/etc/group")))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let _ = f.next();
            let gid = f.next()?.parse::<u32>().ok()?;
            (name == group).then_some(gid)
        })
        .next()
        .ok_or_else(|| ServeError::UnknownGroup(group.to_string()))
}
