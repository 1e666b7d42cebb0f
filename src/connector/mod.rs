//! Connectors: the client side of a proxy protocol, spoken to a hop's node to open a tunnel
//! to the next address.

mod http;

use std::time::Duration;

use monoio::net::TcpStream;

use crate::http::HeadError;
use crate::route::Connector;

/// Why a proxy did not open the tunnel.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The proxy answered with a refusal.
    #[error("proxy refused: {0}")]
    Refused(String),
    /// The answer could not be read.
    #[error("{0}")]
    Head(#[from] HeadError),
    /// Writing the request failed.
    #[error("sending the request: {0}")]
    Io(#[from] std::io::Error),
    /// No complete answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
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
            Connector::Http { authorization } => {
                http::connect(stream, authority, authorization.as_deref(), pending).await
            }
        }
    };
    monoio::time::timeout(timeout, handshake)
        .await
        .unwrap_or(Err(HandshakeError::Timeout(timeout)))
}
