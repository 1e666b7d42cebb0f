//! The accept loop of one service on one executor.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::{TcpListener, TcpStream};

use super::{Core, Stop};
use crate::route::Service;

/// Connections accepted per readiness event before other tasks get a turn.
const ACCEPT_BATCH: usize = 64;

/// How long to back off when the process is out of descriptors or memory.
const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections for `service` until `stop` is given (by a reload); a failed accept is
/// logged and retried, never the end of the service. Connections already accepted are not
/// affected by the stop: they keep the route they started with until they end.
pub(super) async fn serve(
    core: Rc<Core>,
    service: Rc<Service>,
    listener: TcpListener,
    stop: Rc<Stop>,
) {
    let mut exhausted = Exhaustion::default();
    while let Some(ready) = stop.or(listener.readable(false)).await {
        if let Err(error) = ready {
            tracing::error!(
                service = %service.name, executor = core.index, %error,
                "listener failed"
            );
            stop.or(monoio::time::sleep(EXHAUSTED_BACKOFF)).await;
            continue;
        }
        for _ in 0..ACCEPT_BATCH {
            match accept(&listener) {
                Ok((stream, peer)) => {
                    exhausted.ended(&service, core.index);
                    tracing::debug!(
                        service = %service.name, executor = core.index, %peer,
                        "connection accepted"
                    );
                    monoio::spawn(crate::handler::serve(
                        core.clone(),
                        service.clone(),
                        stream,
                        peer,
                    ));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                // The listener was taken out of the LISTEN state: the process is stopping.
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::debug!(
                        service = %service.name, executor = core.index,
                        "listener no longer listening"
                    );
                    return;
                }
                Err(error) if transient(&error) => continue,
                Err(error) => {
                    exhausted.began(&service, core.index, &error);
                    stop.or(monoio::time::sleep(EXHAUSTED_BACKOFF)).await;
                    break;
                }
            }
        }
    }
}

/// How long accepts must go without failing before an episode of exhaustion counts as over.
const EXHAUSTION_QUIET: Duration = Duration::from_secs(1);
/// How often a warning repeats while accepts keep failing.
const EXHAUSTION_REMINDER: Duration = Duration::from_secs(10);

/// One episode of failing accepts (out of descriptors or memory): a warning when it begins,
/// a reminder every few seconds while it lasts, and a line when accepts have stopped failing,
/// so an exhausted gateway does not also flood its log.
#[derive(Default)]
struct Exhaustion {
    /// When the episode began and when it was last logged.
    since: Option<(Instant, Instant)>,
    last_failure: Option<Instant>,
    failures: u64,
}

impl Exhaustion {
    fn began(&mut self, service: &Service, executor: usize, error: &io::Error) {
        let now = Instant::now();
        self.failures += 1;
        self.last_failure = Some(now);
        match &mut self.since {
            None => {
                self.since = Some((now, now));
                tracing::warn!(
                    service = %service.name, executor, %error,
                    "accept failed; backing off and retrying"
                );
            }
            Some((began, logged)) if now.duration_since(*logged) >= EXHAUSTION_REMINDER => {
                *logged = now;
                tracing::warn!(
                    service = %service.name, executor, %error, failures = self.failures,
                    seconds = now.duration_since(*began).as_secs_f64(),
                    "accepts still failing"
                );
            }
            Some(_) => {
                tracing::debug!(service = %service.name, executor, %error, "accept failed again")
            }
        }
    }

    fn ended(&mut self, service: &Service, executor: usize) {
        let Some((began, _)) = self.since else {
            return;
        };
        let last = self.last_failure.unwrap_or(began);
        if last.elapsed() < EXHAUSTION_QUIET {
            return;
        }
        // The episode lasted until its last failure, however long the quiet after it.
        tracing::info!(
            service = %service.name, executor, failures = self.failures,
            seconds = last.duration_since(began).as_secs_f64(),
            "accepting again"
        );
        *self = Exhaustion::default();
    }
}

/// Errors that concern only the connection being accepted.
fn transient(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::ECONNABORTED | libc::EINTR | libc::EPROTO | libc::EPERM)
    )
}

/// One non-blocking accept4(2): the new socket is non-blocking and close-on-exec from the
/// start, and inherits TCP_NODELAY from the listener.
fn accept(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    // SAFETY: accept4 writes at most `len` bytes of address into the storage try_init gives.
    let (fd, addr) = unsafe {
        socket2::SockAddr::try_init(|storage, len| {
            let fd = libc::accept4(
                listener.as_raw_fd(),
                storage.cast(),
                len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            );
            if fd < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(fd)
            }
        })?
    };
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    let std_stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let peer = addr
        .as_socket()
        .ok_or_else(|| io::Error::other("accepted a connection with a non-IP peer address"))?;
    Ok((TcpStream::from_std(std_stream)?, peer))
}
