//! Engine configs the tests share, as the TOML a user would write (GOST's keys).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::netns::{D_VETH2, NS1_VETH1, NS2_VETH3, Topology};

/// Port of the doc's service-0 on 10.0.0.1 in ns1.
pub const SERVICE_PORT: u16 = 8000;
/// Port of the HTTP proxy node on 10.0.1.1 in ns2.
pub const PROXY_PORT: u16 = 8080;
/// Port of the doc's target on 10.0.1.11 in D.
pub const TARGET_PORT: u16 = 8000;

/// `ip:port` as a socket address.
pub fn addr(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(ip), port)
}

/// The doc's service-0 address, 10.0.0.1:8000 in ns1.
pub fn doc_service() -> SocketAddr {
    addr(NS1_VETH1, SERVICE_PORT)
}

/// The doc's proxy node address, 10.0.1.1:8080 in ns2.
pub fn doc_proxy() -> SocketAddr {
    addr(NS2_VETH3, PROXY_PORT)
}

/// The doc's target address, 10.0.1.11:8000 in D.
pub fn doc_target() -> SocketAddr {
    addr(D_VETH2, TARGET_PORT)
}

/// How the engine copies bytes between the two sockets of a connection.
#[derive(Clone, Copy, Debug)]
pub enum Relay {
    /// Zero-copy through a pipe.
    Splice,
    /// Through user-space buffers.
    Buffered,
}

impl fmt::Display for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Relay::Splice => "splice",
            Relay::Buffered => "buffered",
        })
    }
}

/// The top-level line that sets the default relay; it must come before any table.
pub fn default_relay(relay: Relay) -> String {
    format!("relay = \"{relay}\"\n\n")
}

/// A `tcp` service listening on `listen` inside `netns` that forwards to `target`: directly
/// from the engine's own namespace when `out` and `chain` are `None`, from namespace `out`,
/// or through chain `chain`.
pub fn forward(
    name: &str,
    listen: SocketAddr,
    netns: &str,
    out: Option<&str>,
    chain: Option<&str>,
    target: SocketAddr,
) -> String {
    let chain = chain
        .map(|chain| format!(", chain = \"{chain}\""))
        .unwrap_or_default();
    let out = out
        .map(|out| format!(", \"netns.out\" = \"{out}\""))
        .unwrap_or_default();
    format!(
        "[[services]]\n\
         name = \"{name}\"\n\
         addr = \"{listen}\"\n\
         handler = {{ type = \"tcp\"{chain} }}\n\
         listener = {{ type = \"tcp\" }}\n\
         metadata = {{ netns = \"{netns}\"{out} }}\n\
         [[services.forwarder.nodes]]\n\
         name = \"target-0\"\n\
         addr = \"{target}\"\n\n"
    )
}

/// The engine itself as an HTTP CONNECT proxy listening on `listen` in `netns` and dialing
/// targets from the same namespace.
pub fn http_proxy(name: &str, listen: SocketAddr, netns: &str) -> String {
    format!(
        "[[services]]\n\
         name = \"{name}\"\n\
         addr = \"{listen}\"\n\
         handler = {{ type = \"http\" }}\n\
         listener = {{ type = \"tcp\" }}\n\
         metadata = {{ netns = \"{netns}\", \"netns.out\" = \"{netns}\" }}\n\n"
    )
}

/// A chain of one hop, `hop-0`, whose HTTP node `node-0` at `node` is dialed from `netns`;
/// `auth` adds the connector's username and password.
pub fn chain(name: &str, netns: &str, node: SocketAddr, auth: Option<(&str, &str)>) -> String {
    let auth = auth
        .map(|(user, pass)| format!(", auth = {{ username = \"{user}\", password = \"{pass}\" }}"))
        .unwrap_or_default();
    format!(
        "[[chains]]\n\
         name = \"{name}\"\n\
         [[chains.hops]]\n\
         name = \"hop-0\"\n\
         metadata = {{ netns = \"{netns}\" }}\n\
         [[chains.hops.nodes]]\n\
         name = \"node-0\"\n\
         addr = \"{node}\"\n\
         connector = {{ type = \"http\"{auth} }}\n\
         dialer = {{ type = \"tcp\" }}\n\n"
    )
}

/// The doc's "Using Chain" example: service-0 on 10.0.0.1:8000 in namespace `ns1` reaches the
/// target 10.0.1.11:8000 through the HTTP proxy node 10.0.1.1:8080, dialed from namespace
/// `ns2` (names or paths), with the node's `auth` if any. The node is not part of this config.
pub fn doc_chain_service(ns1: &str, ns2: &str, auth: Option<(&str, &str)>) -> String {
    forward(
        "service-0",
        doc_service(),
        ns1,
        None,
        Some("chain-0"),
        doc_target(),
    ) + &chain("chain-0", ns2, doc_proxy(), auth)
}

/// [`doc_chain_service`] in the topology's ns1 and ns2, the node being a proxy outside the
/// engine (a fake or tinyproxy).
pub fn doc_chain_via(topology: &Topology) -> String {
    doc_chain_service(topology.ns1.name(), topology.ns2.name(), None)
}

/// [`doc_chain_via`] with the engine also serving the proxy node, `proxy-0`, in ns2.
pub fn doc_chain(topology: &Topology, relay: Relay) -> String {
    default_relay(relay)
        + &doc_chain_via(topology)
        + &http_proxy("proxy-0", doc_proxy(), topology.ns2.name())
}

/// service-0 on 10.0.0.1:8000 in ns1 forwarding straight to `target`, dialed from D.
pub fn direct(topology: &Topology, relay: Relay, target: SocketAddr) -> String {
    default_relay(relay)
        + &forward(
            "service-0",
            doc_service(),
            topology.ns1.name(),
            None,
            None,
            target,
        )
}
