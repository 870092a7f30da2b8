//! The plugin under hostile or broken clients: an accept loop that backs off on errors (EMFILE
//! must not become a busy loop writing the same warning a million times) and rate-limits its
//! warning, a cap on open connections (beyond it the kernel backlog holds new ones), and per
//! connection a handshake deadline (the first bytes must arrive soon) and an idle deadline (no bytes
//! at all for a long time; live HTTP/2 clients answer the server's keepalive pings). At start the
//! soft `RLIMIT_NOFILE` is raised to the hard limit.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;

/// Connection limits of one server.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Time from accept to the client's first bytes.
    pub handshake_timeout: Duration,
    /// Time without any bytes from the client (keepalive pings are answered, so only dead or
    /// silent peers reach it).
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 1024,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// Raises the soft open-files limit to the hard one; returns the soft limit now in force.
pub fn raise_nofile_limit() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let current = getrlimit(Resource::Nofile);
    if current.current < current.maximum {
        let raised = rustix::process::Rlimit {
            current: current.maximum,
            maximum: current.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return current.maximum;
        }
    }
    current.current
}

/// The server's own uid (the default `--allowed-uid` of abstract sockets).
pub fn own_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Warns at most once per interval, saying how many were suppressed.
struct RateLimited {
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimited {
    fn warn(&mut self, error: &io::Error) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(5))
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(error = %error, suppressed = self.suppressed, "accept failed; backing off");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Accepts in the background, handing out guarded connections; the loop ends with the receiver.
pub(crate) fn incoming(
    listener: UnixListener,
    allowed_uids: Vec<u32>,
    limits: ConnLimits,
) -> ReceiverStream<Result<Guarded, io::Error>> {
    let (tx, rx) = mpsc::channel(16);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::spawn(async move {
        let mut warn = RateLimited {
            last: None,
            suppressed: 0,
        };
        let mut backoff = Duration::ZERO;
        let mut cap_warned = false;
        loop {
            let permit = match Arc::clone(&permits).try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    if !cap_warned {
                        tracing::warn!(
                            max = limits.max_connections,
                            "connection limit reached; new connections wait"
                        );
                        cap_warned = true;
                    }
                    tokio::select! {
                        p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
                        () = tx.closed() => return,
                    }
                }
            };
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = tx.closed() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => {
                    backoff = Duration::ZERO;
                    cap_warned = false;
                    stream
                }
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS...: the same error comes back at once; wait as Go's
                    // net/http does (5 ms doubling to 1 s).
                    warn.warn(&e);
                    backoff = (backoff * 2).clamp(Duration::from_millis(5), Duration::from_secs(1));
                    drop(permit);
                    tokio::time::sleep(backoff).await;
                    continue;
                }
            };
            if !peer_allowed(&stream, &allowed_uids) {
                continue;
            }
            let conn = Guarded::new(stream, permit, limits);
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

fn peer_allowed(stream: &UnixStream, allowed_uids: &[u32]) -> bool {
    if allowed_uids.is_empty() {
        return true;
    }
    match stream.peer_cred() {
        Ok(cred) if allowed_uids.contains(&cred.uid()) => true,
        Ok(cred) => {
            tracing::warn!(uid = cred.uid(), pid = ?cred.pid(), "refused connection from a uid not in --allowed-uid");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "refused connection: cannot read peer credentials");
            false
        }
    }
}

/// A connection that holds one slot of the cap and closes itself when silent too long.
pub(crate) struct Guarded {
    stream: UnixStream,
    _permit: OwnedSemaphorePermit,
    limits: ConnLimits,
    greeted: bool,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Guarded {
    fn new(stream: UnixStream, permit: OwnedSemaphorePermit, limits: ConnLimits) -> Self {
        Guarded {
            stream,
            _permit: permit,
            limits,
            greeted: false,
            deadline: Box::pin(tokio::time::sleep(limits.handshake_timeout)),
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.greeted = true;
                    let next = tokio::time::Instant::now() + self.limits.idle_timeout;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(result)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let what = if self.greeted {
                        "idle timeout"
                    } else {
                        "handshake timeout"
                    };
                    tracing::debug!(what, "closing connection");
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

use std::future::Future;

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Guarded {
    type ConnectInfo = tonic::transport::server::UdsConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
