//! Reaching a destination from a service: a direct dial, or a dial to the first hop of a
//! chain followed by one handshake per later hop and one for the destination. Each hop's
//! node is chosen by its selector, and the outcome is recorded in the node's health.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use monoio::net::TcpStream;

use crate::config::Address;
use crate::connector::{self, HandshakeError};
use crate::dialer::{self, OutboundPools};
use crate::route::{Chain, Egress, Hop, Timeouts};
use crate::selector::Tried;

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
    /// A direct TCP connect to the destination failed.
    #[error("dial {addr}: {source}")]
    Dial {
        /// Where to.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The first hop's chosen node could not be dialed.
    #[error("hop {hop} node {node}: dial {addr}: {source}")]
    HopDial {
        /// The hop.
        hop: String,
        /// The node.
        node: String,
        /// Its address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A proxy did not open the tunnel.
    #[error("hop {hop} node {node}: connect to {target}: {source}")]
    Handshake {
        /// The hop whose node answered.
        hop: String,
        /// The node.
        node: String,
        /// What it was asked for.
        target: String,
        /// Why.
        source: HandshakeError,
        /// True when the destination was asked for (last hop), not a further hop.
        last: bool,
    },
}

impl EgressError {
    /// Whether the failure is the destination's own (it refused or could not be reached),
    /// rather than a proxy's on the way: the caller then counts it against the destination.
    pub fn destination_failed(&self) -> bool {
        match self {
            EgressError::Dial { source, .. } => !dialer::out_of_resources(source),
            EgressError::HopDial { .. } => false,
            EgressError::Handshake { source, last, .. } => *last && source.blames_next(),
        }
    }

    /// Whether the dial failed for want of local resources (see
    /// [`dialer::out_of_resources`]): another attempt now would fail the same way.
    pub fn out_of_resources(&self) -> bool {
        match self {
            EgressError::Dial { source, .. } | EgressError::HopDial { source, .. } => {
                dialer::out_of_resources(source)
            }
            EgressError::Handshake { .. } => false,
        }
    }

    /// Whether the failure was a timeout.
    pub fn timed_out(&self) -> bool {
        match self {
            EgressError::Dial { source, .. } | EgressError::HopDial { source, .. } => {
                source.kind() == std::io::ErrorKind::TimedOut
            }
            EgressError::Handshake { source, .. } => matches!(source, HandshakeError::Timeout(..)),
        }
    }
}

/// Opens a connection to `destination` (`socket_addr` is its resolved form, used for direct
/// dials) the way `egress` says. `tried` holds the first-hop nodes this connection already
/// tried, so a retry picks another while one is left.
pub async fn open(
    pools: &OutboundPools,
    egress: &Egress,
    destination: &Address,
    socket_addr: SocketAddr,
    client: IpAddr,
    tried: &mut Tried,
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
            through_chain(
                pools,
                chain,
                &destination.authority(),
                client,
                tried,
                timeouts,
            )
            .await
        }
    }
}

async fn through_chain(
    pools: &OutboundPools,
    chain: &Chain,
    authority: &str,
    client: IpAddr,
    tried: &mut Tried,
    timeouts: Timeouts,
) -> Result<Upstream, EgressError> {
    let first = &chain.hops[0];
    let index = first
        .nodes
        .pick(client, tried, Instant::now())
        .expect("a hop has nodes");
    tried.add(index);
    let node = &first.nodes.nodes[index];
    let stream =
        match dialer::connect(pools, node.netns.as_ref(), node.socket_addr, timeouts.dial).await {
            Ok(stream) => stream,
            Err(source) => {
                if !dialer::out_of_resources(&source) {
                    first.nodes.failed(index, Instant::now());
                }
                return Err(EgressError::HopDial {
                    hop: first.name.clone(),
                    node: node.name.clone(),
                    addr: node.socket_addr,
                    source,
                });
            }
        };

    // Walk the chain: through the node of hop `at`, ask for the next hop's node, and at the
    // end for the destination.
    let mut pending = Vec::new();
    let mut at: (&Hop, usize) = (first, index);
    let mut used = vec![at];
    for next_hop in chain.hops[1..].iter().map(Some).chain([None]) {
        let (hop, index) = at;
        let node = &hop.nodes.nodes[index];
        let next = next_hop.map(|next_hop| {
            let next_index = next_hop
                .nodes
                .pick(client, &Tried::default(), Instant::now())
                .expect("a hop has nodes");
            (next_hop, next_index)
        });
        let target = match next {
            Some((next_hop, next_index)) => next_hop.nodes.nodes[next_index].address.authority(),
            None => authority.to_owned(),
        };
        let answer = connector::connect(
            &stream,
            &node.connector,
            &target,
            pending,
            timeouts.handshake,
        )
        .await;
        pending = match answer {
            Ok(pending) => pending,
            Err(source) => {
                // A proxy that misbehaves is marked; a refusal to reach the next hop's node
                // counts against that node (and one to reach the destination, against the
                // destination, which the caller marks).
                if source.blames_proxy() {
                    hop.nodes.failed(index, Instant::now());
                }
                if let (true, Some((next_hop, next_index))) = (source.blames_next(), next) {
                    next_hop.nodes.failed(next_index, Instant::now());
                }
                return Err(EgressError::Handshake {
                    hop: hop.name.clone(),
                    node: node.name.clone(),
                    target,
                    source,
                    last: next.is_none(),
                });
            }
        };
        if let Some(next) = next {
            used.push(next);
            at = next;
        }
    }
    for (hop, index) in used {
        hop.nodes.succeeded(index);
    }
    Ok(Upstream { stream, pending })
}
