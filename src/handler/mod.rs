//! Handlers: what a service does with an accepted connection.

mod forward;
mod http;

use std::net::SocketAddr;
use std::rc::Rc;

use monoio::net::TcpStream;

use crate::executor::Core;
use crate::relay::{RelayError, Transfer};
use crate::route::{Handler, Service};

/// How a connection ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Before the relay: the destination could not be reached, or the client's request
    /// was refused. Worth an operator's attention.
    #[error("{0}")]
    Setup(String),
    /// During the relay: a peer reset or failed. Routine on a busy gateway.
    #[error("{0}")]
    Relay(#[from] RelayError),
}

/// Serves one accepted connection to its end, and logs how it ended.
pub async fn serve(core: Rc<Core>, service: Rc<Service>, client: TcpStream, peer: SocketAddr) {
    let result = match &service.handler {
        Handler::Forward { targets, egress } => {
            forward::serve(&core, &service, targets, egress, &client, peer).await
        }
        Handler::HttpProxy {
            egress,
            authorization,
        } => http::serve(&core, &service, egress, authorization.as_deref(), &client).await,
    };
    match result {
        Ok(Transfer { sent, received }) => {
            tracing::debug!(service = %service.name, %peer, sent, received, "connection closed")
        }
        Err(ServeError::Setup(error)) => {
            tracing::warn!(service = %service.name, %peer, %error, "connection failed")
        }
        Err(ServeError::Relay(error)) => {
            tracing::debug!(service = %service.name, %peer, %error, "connection aborted")
        }
    }
}
