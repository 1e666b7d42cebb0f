//! Reaching a destination from a service: a direct dial, or a dial to the first hop of a
//! chain followed by one CONNECT per later hop and one for the destination.

use std::net::SocketAddr;

use monoio::net::TcpStream;

use crate::config::Address;
use crate::connector::{self, HandshakeError};
use crate::dialer::{self, OutboundPools};
use crate::route::{Chain, Egress, HopNode, Timeouts};

/// An open connection towards the destination.
pub struct Upstream {
    /// The connection: to the destination itself, or a tunnel through the chain.
    pub stream: TcpStream,
    /// Bytes the destination already sent, read along with the last proxy's answer. They
    /// go to the client before anything else.
    pub pending: Vec<u8>,
}

/// Why the destination could not be reached; the text names the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// A TCP connect failed.
    #[error("dial {addr}: {source}")]
    Dial {
        /// Where to.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// No node of the first hop could be dialed.
    #[error("hop {hop}: no node reachable; last: node {node}: {source}")]
    FirstHop {
        /// The hop.
        hop: String,
        /// The last node tried.
        node: String,
        /// Its failure.
        source: Box<EgressError>,
    },
    /// A proxy did not open the tunnel.
    #[error("hop {hop} node {node}: CONNECT {target}: {source}")]
    Handshake {
        /// The hop whose node refused.
        hop: String,
        /// The node.
        node: String,
        /// What it was asked for.
        target: String,
        /// Why.
        source: HandshakeError,
    },
}

/// Opens a connection to `destination` (`socket_addr` is its resolved form, used for direct
/// dials) the way `egress` says.
pub async fn open(
    pools: &OutboundPools,
    egress: &Egress,
    destination: &Address,
    socket_addr: SocketAddr,
    timeouts: Timeouts,
) -> Result<Upstream, EgressError> {
    match egress {
        Egress::Direct { netns } => {
            let stream = dialer::connect(pools, netns.as_ref(), socket_addr, timeouts.dial)
                .await
                .map_err(|source| EgressError::Dial {
                    addr: socket_addr,
                    source,
                })?;
            Ok(Upstream {
                stream,
                pending: Vec::new(),
            })
        }
        Egress::Chain(chain) => {
            through_chain(pools, chain, &destination.authority(), timeouts).await
        }
    }
}

async fn through_chain(
    pools: &OutboundPools,
    chain: &Chain,
    authority: &str,
    timeouts: Timeouts,
) -> Result<Upstream, EgressError> {
    let (first, rest) = chain
        .hops
        .split_first()
        .expect("a compiled chain has at least one hop");
    let (stream, mut node) = dial_first_hop(pools, first, timeouts).await?;
    let mut hop_name = &first.name;
    let mut pending = Vec::new();
    for hop in rest {
        let next = hop
            .round()
            .next()
            .expect("a compiled hop has at least one node");
        let target = next.address.authority();
        pending = connector::connect(
            &stream,
            &node.connector,
            &target,
            pending,
            timeouts.handshake,
        )
        .await
        .map_err(|source| EgressError::Handshake {
            hop: hop_name.clone(),
            node: node.name.clone(),
            target,
            source,
        })?;
        node = next;
        hop_name = &hop.name;
    }
    let pending = connector::connect(
        &stream,
        &node.connector,
        authority,
        pending,
        timeouts.handshake,
    )
    .await
    .map_err(|source| EgressError::Handshake {
        hop: hop_name.clone(),
        node: node.name.clone(),
        target: authority.to_owned(),
        source,
    })?;
    Ok(Upstream { stream, pending })
}

/// Dials the first hop's nodes in this core's round-robin order until one answers.
async fn dial_first_hop<'a>(
    pools: &OutboundPools,
    hop: &'a crate::route::Hop,
    timeouts: Timeouts,
) -> Result<(TcpStream, &'a HopNode), EgressError> {
    let mut last = None;
    for node in hop.round() {
        match dialer::connect(pools, node.netns.as_ref(), node.socket_addr, timeouts.dial).await {
            Ok(stream) => return Ok((stream, node)),
            Err(source) => {
                tracing::debug!(hop = %hop.name, node = %node.name, %source, "hop node unreachable");
                last = Some((
                    node,
                    EgressError::Dial {
                        addr: node.socket_addr,
                        source,
                    },
                ));
            }
        }
    }
    let (node, source) = last.expect("a compiled hop has at least one node");
    Err(EgressError::FirstHop {
        hop: hop.name.clone(),
        node: node.name.clone(),
        source: Box::new(source),
    })
}
