//! Handlers: what a service does with an accepted connection.

mod forward;
mod http;
mod socks5;

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::config::Address;
use crate::egress::{self, EgressError, Upstream};
use crate::executor::Core;
use crate::relay::{RelayError, Transfer, relay};
use crate::route::{Credentials, Egress, Handler, ProxyProtocol, Service};
use crate::selector::Tried;
use crate::stream::{read_some, write_all};

/// How a connection ended badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Before the relay: the destination could not be reached, or the client's request
    /// was refused. Worth an operator's attention.
    #[error("{0}")]
    Setup(String),
    /// Before the relay: this process ran out of descriptors, buffers or memory. Logged in
    /// summary, since under exhaustion it concerns every connection.
    #[error("{0}")]
    Exhausted(String),
    /// During the relay: a peer reset or failed. Routine on a busy gateway.
    #[error("{0}")]
    Relay(#[from] RelayError),
}

/// Serves one accepted connection to its end, and logs how it ended.
pub async fn serve(core: Rc<Core>, service: Rc<Service>, client: TcpStream, peer: SocketAddr) {
    let result = match &service.handler {
        Handler::Forward {
            targets,
            egress,
            attempts,
        } => forward::serve(&core, &service, targets, egress, *attempts, &client, peer).await,
        Handler::Proxy {
            protocol,
            egress,
            auth,
            attempts,
        } => {
            let proxy = Proxy {
                core: &core,
                service: &service,
                egress,
                auth: auth.as_ref(),
                attempts: *attempts,
                client: &client,
                peer,
                handshake_deadline: monoio::time::Instant::now() + service.timeouts.handshake,
            };
            // Boxed so that the handshake state of proxies does not size every forward.
            Box::pin(proxy.serve(*protocol)).await
        }
    };
    match result {
        Ok(Transfer { sent, received }) => {
            tracing::debug!(service = %service.name, %peer, sent, received, "connection closed")
        }
        Err(ServeError::Setup(error)) => {
            tracing::warn!(service = %service.name, %peer, %error, "connection failed")
        }
        Err(ServeError::Exhausted(error)) => {
            core.exhaustion.lost(core.index, &service.name, &error)
        }
        Err(ServeError::Relay(error)) => {
            tracing::debug!(service = %service.name, %peer, %error, "connection aborted")
        }
    }
}

/// One client of a proxy service.
struct Proxy<'a> {
    core: &'a Core,
    service: &'a Service,
    egress: &'a Egress,
    auth: Option<&'a Credentials>,
    attempts: u32,
    client: &'a TcpStream,
    peer: SocketAddr,
    /// When the client's handshake must be complete, however many reads it takes.
    handshake_deadline: monoio::time::Instant,
}

/// Why a proxy's destination could not be opened.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, std::io::Error),
    #[error("{0}")]
    Egress(#[from] EgressError),
}

impl Proxy<'_> {
    async fn serve(&self, protocol: ProxyProtocol) -> Result<Transfer, ServeError> {
        match protocol {
            ProxyProtocol::Http => http::serve(self, Vec::new()).await,
            ProxyProtocol::Socks5 => socks5::serve(self, Vec::new()).await,
            ProxyProtocol::Auto => {
                // SOCKS5 starts with its version byte; an HTTP request with a method name.
                let mut first = vec![0; 512];
                let read = monoio::time::timeout_at(
                    self.handshake_deadline,
                    read_some(self.client, &mut first),
                )
                .await
                .map_err(|_| ServeError::Setup("the client sent nothing".to_owned()))?
                .map_err(|error| ServeError::Setup(format!("reading the client: {error}")))?;
                if read == 0 {
                    return Err(ServeError::Setup(
                        "the client closed without a request".to_owned(),
                    ));
                }
                first.truncate(read);
                if first[0] == crate::socks5::VERSION {
                    socks5::serve(self, first).await
                } else {
                    http::serve(self, first).await
                }
            }
        }
    }

    fn handshake_timeout(&self) -> Duration {
        self.service.timeouts.handshake
    }

    /// Opens the tunnel: `answer` (the protocol's success reply) and what the destination
    /// already sent go to the client, what the client sent `early` goes to the destination,
    /// and the relay runs to its end.
    async fn tunnel(
        &self,
        mut answer: Vec<u8>,
        upstream: Upstream,
        early: Vec<u8>,
    ) -> Result<Transfer, ServeError> {
        let setup =
            |error: std::io::Error| ServeError::Setup(format!("starting the tunnel: {error}"));
        answer.extend_from_slice(&upstream.pending);
        write_all(self.client, &answer).await.map_err(setup)?;
        if !early.is_empty() {
            write_all(&upstream.stream, &early).await.map_err(setup)?;
        }
        let limits = self.service.relay_limits();
        let relayed = relay(self.client, &upstream.stream, self.service.relay, limits).await;
        let mut transfer = relayed?;
        transfer.sent += early.len() as u64;
        transfer.received += upstream.pending.len() as u64;
        Ok(transfer)
    }

    /// Opens `destination` for the client, retrying through other first-hop nodes when one
    /// fails on the way; a destination that itself fails is not asked again.
    async fn open(&self, destination: &Address) -> Result<Upstream, OpenError> {
        let socket_addr = self.resolve(destination).await?;
        let mut tried = Tried::default();
        let mut attempt = 1;
        loop {
            let opened = egress::open(
                &self.core.pools,
                self.egress,
                destination,
                socket_addr,
                self.peer.ip(),
                &mut tried,
                self.service.timeouts,
            )
            .await;
            match opened {
                Err(error) if attempt < self.attempts && !error.destination_failed() => {
                    tracing::debug!(
                        service = %self.service.name, peer = %self.peer, %error,
                        "retrying"
                    );
                    attempt += 1;
                }
                result => return Ok(result?),
            }
        }
    }

    /// The destination's address for a direct dial: a literal, a mapping of the service's
    /// hosts, or an answer of the resolver in the namespace the dial leaves from. Through a
    /// chain the last proxy resolves names, so anything else is passed on as written.
    async fn resolve(&self, destination: &Address) -> Result<SocketAddr, OpenError> {
        if let Some(addr) = destination.literal() {
            return Ok(addr);
        }
        let name = destination.name().unwrap_or_default();
        if let Some((_, ip)) = self.service.hosts.iter().find(|(host, _)| host == name) {
            return Ok(SocketAddr::new(*ip, destination.port()));
        }
        match self.egress {
            Egress::Chain(_) => Ok(SocketAddr::new(
                IpAddr::from([0, 0, 0, 0]),
                destination.port(),
            )),
            Egress::Direct { netns } => {
                let netns = netns.as_ref().map(|netns| netns.id);
                let answer = self.core.helper.resolve(netns, destination.authority());
                let limit = self.service.timeouts.dial;
                let resolved = match monoio::time::timeout(limit, answer.recv_async()).await {
                    Ok(Ok(resolved)) => resolved,
                    Ok(Err(_)) => Err(std::io::Error::other("the resolver thread has stopped")),
                    Err(_) => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {limit:?}"),
                    )),
                };
                resolved.map_err(|error| OpenError::Resolve(destination.to_string(), error))
            }
        }
    }
}
