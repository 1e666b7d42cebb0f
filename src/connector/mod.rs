//! Connectors: the client side of a proxy protocol, spoken to a hop's node to open a tunnel
//! to the next address.

mod http;
mod socks5;

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
    /// No complete answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

impl HandshakeError {
    /// Whether the proxy itself is at fault (down, misbehaving, or refusing us), as opposed
    /// to refusing the destination it was asked for.
    ///
    /// `last` says the proxy was asked for the destination itself: a timeout there is most
    /// likely the proxy waiting on a destination that does not answer, which must not mark
    /// the proxy dead for every other client.
    pub fn blames_proxy(&self, last: bool) -> bool {
        match self {
            HandshakeError::Refused(_) => false,
            HandshakeError::Timeout(_) => !last,
            _ => true,
        }
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
    let handshake = async {
        match connector {
            Connector::Http(auth) => http::connect(stream, authority, auth.as_ref(), pending).await,
            Connector::Socks5(auth) => {
                socks5::connect(stream, authority, auth.as_ref(), pending).await
            }
        }
    };
    monoio::time::timeout(timeout, handshake)
        .await
        .unwrap_or(Err(HandshakeError::Timeout(timeout)))
}
