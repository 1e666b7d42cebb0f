//! The relay: moves bytes both ways between a client and its upstream until both are done.
//!
//! Each direction ends at its source's end of stream, which is passed on as a shutdown of
//! the destination's write half; the other direction keeps flowing for as long as its peers
//! keep it open. An error in either direction ends both.

mod buffered;
mod splice;
mod uring_splice;

use std::cell::Cell;
use std::fmt;
use std::io;
use std::pin::pin;
use std::str::FromStr;

use monoio::net::TcpStream;

use crate::stream::shutdown_write;

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
}

/// Relays until both directions have ended, or one has failed.
pub async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    mode: RelayMode,
) -> Result<Transfer, RelayError> {
    let ended = Cell::new(false);
    // The client's request is usually waiting already; the upstream's answer is not.
    let mut up = pin!(copy(client, upstream, mode, false, &ended));
    let mut down = pin!(copy(upstream, client, mode, true, &ended));
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

/// Moves `source` to `destination` until `source` ends, then shuts down `destination`'s
/// write half: for exchanges whose other direction the protocol has already finished (a
/// proxied HTTP request, sent in full).
pub async fn one_way(
    source: &TcpStream,
    destination: &TcpStream,
    mode: RelayMode,
) -> io::Result<u64> {
    copy(source, destination, mode, true, &Cell::new(false)).await
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
) -> io::Result<u64> {
    let copied = match mode {
        RelayMode::Auto => {
            match buffered::copy_until_bulk(source, destination, wait_first).await? {
                buffered::Ended::Eof(copied) => copied,
                buffered::Ended::Bulk(copied) => copied + splice::copy(source, destination).await?,
            }
        }
        RelayMode::Splice => splice::copy(source, destination).await?,
        RelayMode::Buffered => buffered::copy(source, destination, wait_first).await?,
        // On the epoll fallback the op would be a blocking splice(2) on the executor.
        RelayMode::UringSplice if !monoio::utils::detect_uring() => {
            splice::copy(source, destination).await?
        }
        // Boxed: its futures are large, and it is there for comparison only.
        RelayMode::UringSplice => Box::pin(uring_splice::copy(source, destination)).await?,
    };
    if !other_ended.replace(true) {
        shutdown_write(destination)?;
    }
    Ok(copied)
}
