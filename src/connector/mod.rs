//! Connectors: the client side of a proxy protocol, spoken to a hop's node to open a tunnel
//! to the next address.

mod http;
mod socks5;

use std::cell::Cell;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::http::HeadError;
use crate::route::Connector;

/// Why a proxy did not open the tunnel.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The proxy refused to connect to what it was asked for.
    #[error("refused: {0}")]
    Refused(String),
    /// The proxy did not accept our credentials (or wanted some).
    #[error("authentication failed: {0}")]
    AuthRejected(String),
    /// The answer was not HTTP.
    #[error("{0}")]
    Head(#[from] HeadError),
    /// The answer broke the protocol.
    #[error("bad answer: {0}")]
    Protocol(String),
    /// The connection to the proxy failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No complete answer in time, while waiting for what [`Awaiting`] says.
    #[error("no answer within {0:?}{after}", after = .1.describe())]
    Timeout(Duration, Awaiting),
}

/// What a handshake was waiting for when its time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaiting {
    /// The proxy's own part (its SOCKS5 method choice, its verdict on our credentials),
    /// which depends on nothing beyond the proxy.
    Proxy,
    /// The answer to our request for the next address: the proxy may be hung, or waiting on
    /// a next address that does not answer; there is no telling which.
    Next,
}

impl Awaiting {
    fn describe(self) -> &'static str {
        match self {
            Awaiting::Proxy => " to the greeting or the credentials",
            Awaiting::Next => "",
        }
    }
}

impl HandshakeError {
    /// Whether the failure counts against the proxy: it is down, misbehaving, refusing our
    /// credentials, or silent. A proxy silent after our request is counted too, although it
    /// may only be waiting on the next address: a hung proxy left unmarked would stall every
    /// later connection for the whole handshake timeout, while a proxy marked for a dead
    /// next address only loses its turn until `failTimeout` (and is still used when no
    /// other node is alive).
    pub fn blames_proxy(&self) -> bool {
        !matches!(self, HandshakeError::Refused(_))
    }

    /// Whether the failure counts against the next address (the next hop's node, or the
    /// destination): the proxy refused to reach it, or went silent after being asked for it.
    pub fn blames_next(&self) -> bool {
        matches!(
            self,
            HandshakeError::Refused(_) | HandshakeError::Timeout(_, Awaiting::Next)
        )
    }
}

/// Asks the proxy at the other end of `stream` for a tunnel to `authority` (`host:port`).
///
/// `pending` holds bytes already read from `stream` (what an earlier hop's proxy sent after
/// its own answer). Returns the bytes that followed this proxy's answer: they belong to
/// whatever is on the far side of the tunnel.
pub async fn connect(
    stream: &TcpStream,
    connector: &Connector,
    authority: &str,
    pending: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, HandshakeError> {
    // The handshake says here what it waits for, which a timeout then reports.
    let awaiting = Cell::new(Awaiting::Next);
    let handshake = async {
        match connector {
            Connector::Http(auth) => http::connect(stream, authority, auth.as_ref(), pending).await,
            Connector::Socks5(auth) => {
                socks5::connect(stream, authority, auth.as_ref(), pending, &awaiting).await
            }
        }
    };
    monoio::time::timeout(timeout, handshake)
        .await
        .unwrap_or_else(|_| Err(HandshakeError::Timeout(timeout, awaiting.get())))
}
