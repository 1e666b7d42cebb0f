//! The relay: moves bytes both ways between a client and its upstream until both are done.
//!
//! Each direction ends at its source's end of stream, which is passed on as a shutdown of
//! the destination's write half; the other direction keeps flowing for as long as its peers
//! keep it open, or for the half-close limit if the service sets one. An error in either
//! direction ends both, and so does the idle limit, if set, when no byte moves either way.

mod buffered;
mod splice;
mod uring_splice;

use std::cell::Cell;
use std::fmt;
use std::future::{Future, pending};
use std::io;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::str::FromStr;
use std::time::Duration;

use monoio::net::TcpStream;
use monoio::time::Instant;

use crate::stream::{recv, shutdown_write};

/// How a relay moves bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RelayMode {
    /// Per direction: buffered with 16 KiB buffers while messages are small, splice from the
    /// first read that fills a buffer on.
    #[default]
    Auto,
    /// splice(2) through a pipe taken from a per-core pool only while data is in flight:
    /// the bytes never enter user space.
    Splice,
    /// recv(2)/send(2) through a 64 KiB buffer taken from a per-core pool only while data
    /// is in flight.
    Buffered,
    /// io_uring SPLICE ops: for comparison only; costs an io-wq kernel thread per waiting
    /// direction.
    UringSplice,
}

impl FromStr for RelayMode {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "auto" => Ok(RelayMode::Auto),
            "splice" => Ok(RelayMode::Splice),
            "buffered" => Ok(RelayMode::Buffered),
            "uring-splice" => Ok(RelayMode::UringSplice),
            other => Err(format!(
                "\"{other}\" is not a relay; valid: auto, splice, buffered (and uring-splice, \
                 for comparison only)"
            )),
        }
    }
}

impl fmt::Display for RelayMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RelayMode::Auto => "auto",
            RelayMode::Splice => "splice",
            RelayMode::Buffered => "buffered",
            RelayMode::UringSplice => "uring-splice",
        })
    }
}

/// Bytes moved by a finished relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    /// From the client to the upstream.
    pub sent: u64,
    /// From the upstream to the client.
    pub received: u64,
}

/// Which direction failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading the client or writing the upstream.
    #[error("client to upstream: {0}")]
    Upstream(io::Error),
    /// Reading the upstream or writing the client.
    #[error("upstream to client: {0}")]
    Downstream(io::Error),
    /// No byte moved either way for the service's idle limit.
    #[error("closed after {0:?} without a byte either way (idleTimeout)")]
    Idle(Duration),
    /// One direction ended and the other went on for the service's half-close limit.
    #[error("closed {0:?} after one direction ended (halfCloseTimeout)")]
    HalfClosed(Duration),
}

/// How long a relay may go on: both unset, for as long as the peers keep it open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Without a byte either way.
    pub idle: Option<Duration>,
    /// After one direction has ended.
    pub half_close: Option<Duration>,
}

/// When a relay last moved bytes, kept only when an idle limit needs it.
pub(crate) struct Activity(Option<Cell<Instant>>);

impl Activity {
    fn new(tracked: bool) -> Activity {
        Activity(tracked.then(|| Cell::new(Instant::now())))
    }

    /// Notes that bytes moved.
    pub(crate) fn moved(&self) {
        if let Some(last) = &self.0 {
            last.set(Instant::now());
        }
    }

    /// Completes once `limit` has passed since bytes last moved; never without a limit.
    async fn idle_for(&self, limit: Option<Duration>) {
        let (Some(last), Some(limit)) = (&self.0, limit) else {
            return pending().await;
        };
        loop {
            let deadline = last.get() + limit;
            if Instant::now() >= deadline {
                return;
            }
            monoio::time::sleep_until(deadline).await;
        }
    }
}

/// Completes `limit` after it is first polled; never without a limit.
async fn after(limit: Option<Duration>) {
    match limit {
        Some(limit) => monoio::time::sleep(limit).await,
        None => pending().await,
    }
}

/// Relays until both directions have ended, one has failed, or `limits` end it.
pub async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    mode: RelayMode,
    limits: Limits,
) -> Result<Transfer, RelayError> {
    if limits == Limits::default() {
        return unlimited(client, upstream, mode).await;
    }
    // Boxed: the timers would otherwise size every relay, limited or not, and an idle
    // connection keeps its relay's state for as long as it lives.
    Box::pin(limited(client, upstream, mode, limits)).await
}

/// Both directions, for as long as the peers keep them open.
async fn unlimited(
    client: &TcpStream,
    upstream: &TcpStream,
    mode: RelayMode,
) -> Result<Transfer, RelayError> {
    let ended = Cell::new(false);
    let untracked = Activity::new(false);
    // The client's request is usually waiting already; the upstream's answer is not.
    let mut up = pin!(copy(client, upstream, mode, false, &ended, &untracked));
    let mut down = pin!(copy(upstream, client, mode, true, &ended, &untracked));
    monoio::select! {
        sent = &mut up => {
            let sent = sent.map_err(RelayError::Upstream)?;
            let received = down.await.map_err(RelayError::Downstream)?;
            Ok(Transfer { sent, received })
        }
        received = &mut down => {
            let received = received.map_err(RelayError::Downstream)?;
            let sent = up.await.map_err(RelayError::Upstream)?;
            Ok(Transfer { sent, received })
        }
    }
}

/// Both directions within `limits`.
async fn limited(
    client: &TcpStream,
    upstream: &TcpStream,
    mode: RelayMode,
    limits: Limits,
) -> Result<Transfer, RelayError> {
    let ended = Cell::new(false);
    let activity = Activity::new(limits.idle.is_some());
    // The client's request is usually waiting already; the upstream's answer is not.
    let mut up = pin!(copy(client, upstream, mode, false, &ended, &activity));
    let mut down = pin!(copy(upstream, client, mode, true, &ended, &activity));
    let mut idle = pin!(activity.idle_for(limits.idle));
    let idle_limit = limits.idle.unwrap_or_default();
    monoio::select! {
        sent = &mut up => {
            let sent = sent.map_err(RelayError::Upstream)?;
            let received = finish(down, RelayError::Downstream, idle, limits).await?;
            Ok(Transfer { sent, received })
        }
        received = &mut down => {
            let received = received.map_err(RelayError::Downstream)?;
            let sent = finish(up, RelayError::Upstream, idle, limits).await?;
            Ok(Transfer { sent, received })
        }
        _ = &mut idle => Err(RelayError::Idle(idle_limit)),
    }
}

/// Waits for the direction still going after the other has ended, within the limits; its
/// own error is reported as `failed` says.
async fn finish(
    direction: impl Future<Output = io::Result<u64>>,
    failed: fn(io::Error) -> RelayError,
    idle: impl Future<Output = ()>,
    limits: Limits,
) -> Result<u64, RelayError> {
    monoio::select! {
        copied = direction => copied.map_err(failed),
        _ = idle => Err(RelayError::Idle(limits.idle.unwrap_or_default())),
        _ = after(limits.half_close) => {
            Err(RelayError::HalfClosed(limits.half_close.unwrap_or_default()))
        }
    }
}

/// Relays the upstream's answer to the client until the answer ends, within `limits`: for
/// a proxied HTTP request already sent in full with `Connection: close`. What the client
/// sends meanwhile is not forwarded (it may be meant for another host) but read and dropped,
/// so that the client's end of stream is seen and passed on, and the limits apply as in any
/// relay. Returns the bytes of the answer.
pub async fn answer(
    client: &TcpStream,
    upstream: &TcpStream,
    mode: RelayMode,
    limits: Limits,
) -> Result<u64, RelayError> {
    let ended = Cell::new(false);
    let activity = Activity::new(limits.idle.is_some());
    let mut down = pin!(copy(upstream, client, mode, true, &ended, &activity));
    let mut idle = pin!(activity.idle_for(limits.idle));
    let idle_limit = limits.idle.unwrap_or_default();
    monoio::select! {
        received = &mut down => received.map_err(RelayError::Downstream),
        dropped = drain(client, &activity) => {
            dropped.map_err(RelayError::Upstream)?;
            // The origin may still answer a client that has finished sending.
            shutdown_write(upstream).map_err(RelayError::Upstream)?;
            finish(down, RelayError::Downstream, idle, limits).await
        }
        _ = &mut idle => Err(RelayError::Idle(idle_limit)),
    }
}

/// Reads `source` to its end and drops what it sends; returns how many bytes that was.
async fn drain(source: &TcpStream, activity: &Activity) -> io::Result<u64> {
    let mut scratch = [0u8; 512];
    let mut dropped = 0u64;
    loop {
        source.readable(false).await?;
        loop {
            match recv(source.as_raw_fd(), &mut scratch) {
                Ok(0) => return Ok(dropped),
                Ok(read) => {
                    dropped += read as u64;
                    activity.moved();
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => return Err(error),
            }
        }
    }
}

/// One direction, to the source's end, which is passed on as a shutdown of the
/// destination's write half. The direction that ends second skips that: both sockets are
/// closed right after, and the close sends the same FIN.
async fn copy(
    source: &TcpStream,
    destination: &TcpStream,
    mode: RelayMode,
    wait_first: bool,
    other_ended: &Cell<bool>,
    activity: &Activity,
) -> io::Result<u64> {
    let copied = match mode {
        RelayMode::Auto => {
            match buffered::copy_until_bulk(source, destination, wait_first, activity).await? {
                buffered::Ended::Eof(copied) => copied,
                buffered::Ended::Bulk(copied) => {
                    copied + splice::copy(source, destination, activity).await?
                }
            }
        }
        RelayMode::Splice => splice::copy(source, destination, activity).await?,
        RelayMode::Buffered => buffered::copy(source, destination, wait_first, activity).await?,
        // On the epoll fallback the op would be a blocking splice(2) on the executor.
        RelayMode::UringSplice if !monoio::utils::detect_uring() => {
            splice::copy(source, destination, activity).await?
        }
        // Boxed: its futures are large, and it is there for comparison only.
        RelayMode::UringSplice => {
            Box::pin(uring_splice::copy(source, destination, activity)).await?
        }
    };
    if !other_ended.replace(true) {
        shutdown_write(destination)?;
    }
    Ok(copied)
}
