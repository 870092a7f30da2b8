//! `unix://` endpoint URLs as kube-apiserver parses them (KMS-PLUGIN-API.md §1).
//!
//! `unix:///var/run/kms.sock` → the file `/var/run/kms.sock`; `unix:/tmp/k.sock` → `/tmp/k.sock`;
//! `unix://host/x.sock` → `/x.sock` (host ignored); `unix:///@name` → the Linux abstract socket
//! `name`. A bare absolute path is accepted too (the Go server helper takes one).

use std::fmt;
use std::path::PathBuf;

/// Where a plugin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A socket file.
    Path(PathBuf),
    /// A Linux abstract socket (no file, no permissions; scoped by network namespace).
    Abstract(String),
}

/// Why an endpoint string was refused. Texts follow kube-apiserver's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("remote KMS provider can't use empty string as endpoint")]
    Empty,
    #[error("invalid endpoint {0:?} for remote KMS provider, error: {1}")]
    Invalid(String, String),
    #[error("unsupported scheme {0:?} for remote KMS provider")]
    UnsupportedScheme(String),
}

impl Endpoint {
    /// Parses `unix://…` (or an absolute path).
    pub fn parse(s: &str) -> Result<Endpoint, EndpointError> {
        if s.is_empty() {
            return Err(EndpointError::Empty);
        }
        if s.starts_with('/') {
            return Ok(Self::from_path(s));
        }
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(EndpointError::UnsupportedScheme(String::new()));
        };
        if scheme != "unix" {
            return Err(EndpointError::UnsupportedScheme(scheme.to_string()));
        }
        let path = if let Some(after) = rest.strip_prefix("//") {
            // authority, then path
            match after.find('/') {
                Some(i) => &after[i..],
                None => "",
            }
        } else {
            rest
        };
        let path = path.split(['?', '#']).next().unwrap_or("");
        if path.is_empty() || path == "/" {
            return Err(EndpointError::Invalid(
                s.to_string(),
                "no socket path".into(),
            ));
        }
        Ok(Self::from_path(path))
    }

    fn from_path(path: &str) -> Endpoint {
        match path.strip_prefix("/@") {
            Some(name) => Endpoint::Abstract(name.to_string()),
            None => Endpoint::Path(PathBuf::from(path)),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Path(p) => write!(f, "unix://{}", p.display()),
            Endpoint::Abstract(n) => write!(f, "unix:///@{n}"),
        }
    }
}

/// Connects a blocking std socket to `endpoint` (abstract names need std's `SocketAddrExt`), then
/// hands it to tokio.
pub(crate) fn connect_std(endpoint: &Endpoint) -> std::io::Result<std::os::unix::net::UnixStream> {
    use std::os::unix::net::UnixStream;
    match endpoint {
        Endpoint::Path(p) => UnixStream::connect(p),
        Endpoint::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            UnixStream::connect_addr(&addr)
        }
    }
}

/// Async connect used by the client and by the stale-socket check.
pub(crate) async fn connect(endpoint: &Endpoint) -> std::io::Result<tokio::net::UnixStream> {
    match endpoint {
        Endpoint::Path(p) => tokio::net::UnixStream::connect(p).await,
        Endpoint::Abstract(_) => {
            let s = connect_std(endpoint)?;
            s.set_nonblocking(true)?;
            tokio::net::UnixStream::from_std(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_the_apiserver() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/k.sock").unwrap(),
            Endpoint::Path("/var/run/k.sock".into())
        );
        assert_eq!(
            Endpoint::parse("unix:/tmp/k.sock").unwrap(),
            Endpoint::Path("/tmp/k.sock".into())
        );
        assert_eq!(
            Endpoint::parse("unix://host/x.sock").unwrap(),
            Endpoint::Path("/x.sock".into())
        );
        assert_eq!(
            Endpoint::parse("unix:///@kms").unwrap(),
            Endpoint::Abstract("kms".into())
        );
        assert_eq!(
            Endpoint::parse("/a/b").unwrap(),
            Endpoint::Path("/a/b".into())
        );
        assert_eq!(Endpoint::parse("").unwrap_err(), EndpointError::Empty);
        assert_eq!(
            Endpoint::parse("tcp://1.2.3.4:5").unwrap_err().to_string(),
            "unsupported scheme \"tcp\" for remote KMS provider"
        );
        assert!(Endpoint::parse("unix://").is_err());
    }
}
