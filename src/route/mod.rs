//! Compiled routes: the configuration resolved into the tables executors serve from.
//!
//! Compilation resolves every name, opens every namespace and checks every value before a
//! socket is created. Each executor gets its own copy, so nothing here is shared or locked,
//! and nothing is looked up by name while serving.

mod compile;
mod udp;

pub use compile::{CompileError, compile};
pub use udp::{SessionLimits, UdpService};

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::Address;
use crate::netns::NamespaceRef;
use crate::relay::RelayMode;
use crate::selector::Group;

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
    /// Static host name mappings, consulted before the resolver.
    pub hosts: Vec<(String, std::net::IpAddr)>,
}

impl Service {
    /// The limits of this service's relays.
    pub fn relay_limits(&self) -> crate::relay::Limits {
        crate::relay::Limits {
            idle: self.timeouts.idle,
            half_close: self.timeouts.half_close,
        }
    }
}

/// How long a connection may wait on each step before it is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// One TCP connect.
    pub dial: Duration,
    /// A proxy handshake, client side or server side.
    pub handshake: Duration,
    /// How long a relay may go without a byte either way; `None`: for ever.
    pub idle: Option<Duration>,
    /// How long a relay may go on after one direction has ended; `None`: until the other
    /// ends too.
    pub half_close: Option<Duration>,
}

/// The handler of a service.
#[derive(Debug, Clone)]
pub enum Handler {
    /// Port forwarding to the service's targets.
    Forward {
        /// Where connections go, and how one is chosen.
        targets: Group<Target>,
        /// How they get there.
        egress: Egress,
        /// Attempts per connection: the first plus the configured retries.
        attempts: u32,
    },
    /// A proxy that connects where each client asks.
    Proxy {
        /// The protocols it answers.
        protocol: ProxyProtocol,
        /// How the requested destinations are reached.
        egress: Egress,
        /// The credentials clients must present, if any.
        auth: Option<Credentials>,
        /// Attempts per connection: the first plus the configured retries.
        attempts: u32,
    },
}

/// The protocols a proxy service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    /// HTTP: CONNECT, and plain requests with an absolute URI.
    Http,
    /// SOCKS5 CONNECT.
    Socks5,
    /// Either, told apart by the first byte the client sends.
    Auto,
}

/// A user name and password, with the HTTP `Basic` form precomputed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// `Basic base64(username:password)`.
    pub basic: String,
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
    /// The proxies that can serve this hop, and how one is chosen.
    pub nodes: Group<HopNode>,
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
    /// HTTP CONNECT, with basic auth when credentials are set.
    Http(Option<Credentials>),
    /// SOCKS5 CONNECT, with username/password auth when credentials are set.
    Socks5(Option<Credentials>),
}

/// The transport to a proxy node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialer {
    /// Plain TCP.
    Tcp,
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
        write!(
            f,
            "service {}: handler {}, listens on {}",
            self.name,
            self.handler.kind(),
            self.listen
        )?;
        match &self.netns {
            Some(netns) => write!(f, " in netns {netns}")?,
            None => write!(f, " in the process's netns")?,
        }
        writeln!(f, ", relay {}", self.relay)?;
        writeln!(
            f,
            "  timeouts: dial {:?}, handshake {:?}, idle {}, half-close {}",
            self.timeouts.dial,
            self.timeouts.handshake,
            unlimited_or(self.timeouts.idle),
            unlimited_or(self.timeouts.half_close)
        )?;
        for (name, ip) in &self.hosts {
            writeln!(f, "  host {name} -> {ip}")?;
        }
        match &self.handler {
            Handler::Forward {
                targets,
                egress,
                attempts,
            } => {
                writeln!(
                    f,
                    "  targets ({}), attempts per connection: {attempts}",
                    targets.selector
                )?;
                for (target, weight) in targets.nodes.iter().zip(&targets.weights) {
                    write!(
                        f,
                        "    target {}: {} ({})",
                        target.name, target.address, target.socket_addr
                    )?;
                    writeln!(f, "{weight}")?;
                }
                write!(f, "{egress}")
            }
            Handler::Proxy {
                auth,
                egress,
                attempts,
                ..
            } => {
                let auth = if auth.is_some() { "required" } else { "none" };
                writeln!(
                    f,
                    "  client auth: {auth}, attempts per connection: {attempts}"
                )?;
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
                    writeln!(
                        f,
                        "    hop {} {} ({}):",
                        index + 1,
                        hop.name,
                        hop.nodes.selector
                    )?;
                    for (node, weight) in hop.nodes.nodes.iter().zip(&hop.nodes.weights) {
                        let (kind, auth) = match &node.connector {
                            Connector::Http(auth) => ("http", auth.is_some()),
                            Connector::Socks5(auth) => ("socks5", auth.is_some()),
                        };
                        let auth = if auth { " with auth" } else { "" };
                        write!(
                            f,
                            "      node {}: {}, connector {kind}{auth}, dialer tcp",
                            node.name, node.address
                        )?;
                        match (&node.netns, index) {
                            (Some(netns), 0) => write!(f, ", dialed from netns {netns}")?,
                            (None, 0) => write!(f, ", dialed from the process's netns")?,
                            _ => write!(f, ", reached through hop {index}")?,
                        }
                        writeln!(f, "{weight}")?;
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
            Handler::Proxy {
                protocol: ProxyProtocol::Http,
                ..
            } => "http",
            Handler::Proxy {
                protocol: ProxyProtocol::Socks5,
                ..
            } => "socks5",
            Handler::Proxy {
                protocol: ProxyProtocol::Auto,
                ..
            } => "auto",
        }
    }
}

/// A limit as `check` prints it.
fn unlimited_or(limit: Option<Duration>) -> String {
    limit.map_or_else(|| "none".to_owned(), |limit| format!("{limit:?}"))
}
