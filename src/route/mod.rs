//! Compiled routes: the configuration resolved into the tables executors serve from.
//!
//! Compilation resolves every name, opens every namespace and checks every value before a
//! socket is created. Each executor gets its own copy, so nothing here is shared or locked,
//! and nothing is looked up by name while serving.

mod compile;
mod udp;

pub use compile::{CompileError, compile};
pub use udp::{SessionLimits, Strategy, UdpService};

use std::cell::Cell;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Address;
use crate::netns::NamespaceRef;
use crate::relay::RelayMode;

/// Everything a process serves.
#[derive(Debug, Clone)]
pub struct Routes {
    /// The connection services (tcp, http), in configuration order.
    pub services: Vec<Service>,
    /// The datagram services (udp), in configuration order.
    pub udp_services: Vec<UdpService>,
}

/// A compiled service.
#[derive(Debug, Clone)]
pub struct Service {
    /// The service's name.
    pub name: String,
    /// Where it listens.
    pub listen: SocketAddr,
    /// The namespace the listener lives in; `None` for the process's own.
    pub netns: Option<NamespaceRef>,
    /// What is done with each connection.
    pub handler: Handler,
    /// How bytes are moved once both sides are connected.
    pub relay: RelayMode,
    /// Limits on waiting.
    pub timeouts: Timeouts,
}

/// How long a connection may wait on each step before it is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// One TCP connect.
    pub dial: Duration,
    /// A proxy handshake, client side or server side.
    pub handshake: Duration,
}

/// The handler of a service.
#[derive(Debug, Clone)]
pub enum Handler {
    /// Port forwarding to the service's targets.
    Forward {
        /// Where connections go.
        targets: Targets,
        /// How they get there.
        egress: Egress,
    },
    /// An HTTP proxy that answers CONNECT.
    HttpProxy {
        /// How the requested destinations are reached.
        egress: Egress,
        /// The `Proxy-Authorization` value clients must send, if any.
        authorization: Option<String>,
    },
}

/// The targets of a forwarding service, tried in round-robin order with failover.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The nodes.
    pub nodes: Vec<Target>,
    /// Where this core's next round starts. Each executor has its own copy of the routes.
    pub next: Cell<usize>,
}

/// One forwarding target.
#[derive(Debug, Clone)]
pub struct Target {
    /// Node name.
    pub name: String,
    /// The address as written, which is what a proxy is asked to connect to.
    pub address: Address,
    /// The resolved address, for direct dials.
    pub socket_addr: SocketAddr,
}

/// How outbound connections leave the process.
#[derive(Debug, Clone)]
pub enum Egress {
    /// A direct connection from a namespace (`None`: the process's own).
    Direct {
        /// The namespace to connect from.
        netns: Option<NamespaceRef>,
    },
    /// Through a chain of proxies.
    Chain(Chain),
}

/// A compiled chain: the service's own copy, with its hops in order.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The chain's name.
    pub name: String,
    /// The hops, in the order they are traversed.
    pub hops: Vec<Hop>,
}

/// One level of proxies.
#[derive(Debug, Clone)]
pub struct Hop {
    /// The hop's name.
    pub name: String,
    /// The proxies that can serve this hop, tried in round-robin order with failover.
    pub nodes: Vec<HopNode>,
    /// Where this core's next round starts.
    pub next: Cell<usize>,
}

/// One proxy in a hop.
#[derive(Debug, Clone)]
pub struct HopNode {
    /// Node name.
    pub name: String,
    /// The proxy's address as written; a later hop is reached by asking for it by name.
    pub address: Address,
    /// The resolved address, for when this node is dialed directly (first hop).
    pub socket_addr: SocketAddr,
    /// The namespace a direct dial to this node is made from.
    pub netns: Option<NamespaceRef>,
    /// The protocol spoken to the proxy.
    pub connector: Connector,
    /// The transport to the proxy.
    pub dialer: Dialer,
}

/// The protocol spoken to a proxy node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connector {
    /// HTTP CONNECT.
    Http {
        /// The `Proxy-Authorization` header value to send, if any.
        authorization: Option<String>,
    },
}

/// The transport to a proxy node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialer {
    /// Plain TCP.
    Tcp,
}

impl Targets {
    /// The order in which this connection tries the targets: a rotation starting at this
    /// core's round-robin position, which then advances by one.
    pub fn round(&self) -> impl Iterator<Item = &Target> {
        rotation(&self.nodes, &self.next)
    }
}

impl Hop {
    /// The order in which this connection tries the hop's nodes.
    pub fn round(&self) -> impl Iterator<Item = &HopNode> {
        rotation(&self.nodes, &self.next)
    }
}

fn rotation<'a, T>(nodes: &'a [T], next: &Cell<usize>) -> impl Iterator<Item = &'a T> {
    let start = next.get() % nodes.len().max(1);
    next.set(start + 1);
    nodes[start..].iter().chain(&nodes[..start])
}

impl fmt::Display for Routes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for service in &self.services {
            write!(f, "{service}")?;
        }
        for service in &self.udp_services {
            write!(f, "{service}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.handler {
            Handler::Forward { .. } => "tcp",
            Handler::HttpProxy { .. } => "http",
        };
        write!(
            f,
            "service {}: handler {kind}, listens on {}",
            self.name, self.listen
        )?;
        match &self.netns {
            Some(netns) => write!(f, " in netns {netns}")?,
            None => write!(f, " in the process's netns")?,
        }
        writeln!(f, ", relay {}", self.relay)?;
        writeln!(
            f,
            "  timeouts: dial {:?}, handshake {:?}",
            self.timeouts.dial, self.timeouts.handshake
        )?;
        match &self.handler {
            Handler::Forward { targets, egress } => {
                for target in &targets.nodes {
                    writeln!(
                        f,
                        "  target {}: {} ({})",
                        target.name, target.address, target.socket_addr
                    )?;
                }
                write!(f, "{egress}")
            }
            Handler::HttpProxy {
                egress,
                authorization,
            } => {
                let auth = if authorization.is_some() {
                    "required"
                } else {
                    "none"
                };
                writeln!(f, "  client auth: {auth}")?;
                write!(f, "{egress}")
            }
        }
    }
}

impl fmt::Display for Egress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Egress::Direct { netns: Some(netns) } => {
                writeln!(f, "  dials directly from netns {netns}")
            }
            Egress::Direct { netns: None } => {
                writeln!(f, "  dials directly from the process's netns")
            }
            Egress::Chain(chain) => {
                writeln!(f, "  through chain {}:", chain.name)?;
                for (index, hop) in chain.hops.iter().enumerate() {
                    writeln!(f, "    hop {} {}:", index + 1, hop.name)?;
                    for node in &hop.nodes {
                        let Connector::Http { authorization } = &node.connector;
                        let auth = if authorization.is_some() {
                            " with auth"
                        } else {
                            ""
                        };
                        write!(
                            f,
                            "      node {}: {}, connector http{auth}, dialer tcp",
                            node.name, node.address
                        )?;
                        match (&node.netns, index) {
                            (Some(netns), 0) => writeln!(f, ", dialed from netns {netns}")?,
                            (None, 0) => writeln!(f, ", dialed from the process's netns")?,
                            _ => writeln!(f, ", reached through hop {index}")?,
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

impl Handler {
    /// The handler's type as configured.
    pub fn kind(&self) -> &'static str {
        match self {
            Handler::Forward { .. } => "tcp",
            Handler::HttpProxy { .. } => "http",
        }
    }
}
