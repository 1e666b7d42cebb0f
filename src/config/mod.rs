//! The configuration file as the user writes it: GOST's object model in TOML.
//!
//! This layer only parses. Every cross-reference, address and namespace is checked when the
//! configuration is compiled into routes (`crate::route`).

mod address;

pub use address::{Address, AddressError, canonical_name};

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Default relay for every service that does not set `metadata.relay`.
    pub relay: Option<String>,
    /// The services: each listens on one address and hands its connections to a handler.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Named chains of proxy hops that services reach their targets through.
    #[serde(default)]
    pub chains: Vec<ChainConfig>,
    /// Named host name mappings, consulted before the system resolver.
    #[serde(default)]
    pub hosts: Vec<HostsConfig>,
}

/// One `[[hosts]]` entry: static name-to-address mappings, as GOST's hosts mapper.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostsConfig {
    /// Unique name, referenced by a service's `hosts`.
    pub name: String,
    /// The mappings.
    #[serde(default)]
    pub mappings: Vec<HostMappingConfig>,
}

/// One `[[hosts.mappings]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostMappingConfig {
    /// The IP address the name maps to.
    pub ip: String,
    /// The host name.
    pub hostname: String,
}

/// `selector = { strategy, maxFails, failTimeout }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectorConfig {
    /// `round` (default), `random` (or `rand`), `fifo`, `hash`.
    pub strategy: Option<String>,
    /// Failures within `failTimeout` after which a node is skipped (default 1).
    #[serde(rename = "maxFails")]
    pub max_fails: Option<u32>,
    /// How long a failed node is skipped (default `10s`).
    #[serde(rename = "failTimeout")]
    pub fail_timeout: Option<String>,
}

/// One `[[services]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Unique service name, used in logs and errors.
    pub name: String,
    /// Listen address: `host:port`, `[v6]:port` or `:port` (all IPv4 interfaces).
    pub addr: String,
    /// What is done with each accepted connection.
    pub handler: HandlerConfig,
    /// How connections are accepted (`tcp`).
    #[serde(default)]
    pub listener: ListenerConfig,
    /// The targets of a forwarding handler.
    pub forwarder: Option<ForwarderConfig>,
    /// Namespaces and tuning.
    #[serde(default)]
    pub metadata: ServiceMetadata,
    /// Name of the `[[hosts]]` mapping this service resolves names with first.
    pub hosts: Option<String>,
}

/// `handler = { type, chain }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerConfig {
    /// Handler type: `tcp` or `udp` (port forwarding), or a proxy: `http`, `socks5`, `auto`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Name of the chain that outbound connections go through.
    pub chain: Option<String>,
    /// Credentials a client of a proxy handler must present.
    pub auth: Option<AuthConfig>,
    /// Further attempts after a failed one, each with a newly selected node.
    pub retries: Option<u32>,
}

/// `listener = { type }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Listener type: `tcp`, or `udp` for handler `udp`.
    #[serde(rename = "type")]
    pub kind: String,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            kind: "tcp".to_owned(),
        }
    }
}

/// `forwarder = { nodes }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwarderConfig {
    /// The targets.
    #[serde(default)]
    pub nodes: Vec<TargetConfig>,
    /// How a target is chosen for each connection.
    pub selector: Option<SelectorConfig>,
}

/// One `[[services.forwarder.nodes]]` entry: a target of a forwarding service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// Node name, used in logs.
    pub name: String,
    /// Target address, `host:port`.
    pub addr: String,
    /// Relative share of connections (default 1).
    pub weight: Option<u32>,
    /// Used only when no other target is alive.
    pub backup: Option<bool>,
    /// GOST's place for `weight` and `backup`.
    pub metadata: Option<NodeMetadata>,
}

/// A service's `metadata` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceMetadata {
    /// Namespace the listener is created in.
    pub netns: Option<String>,
    /// Namespace outbound connections are made from.
    #[serde(rename = "netns.out")]
    pub netns_out: Option<String>,
    /// Relay implementation for this service's connections.
    pub relay: Option<String>,
    /// Timeout for one outbound connect, e.g. `"5s"` or `"500ms"`.
    #[serde(rename = "dialTimeout")]
    pub dial_timeout: Option<String>,
    /// Timeout for a proxy handshake, e.g. `"10s"`.
    #[serde(rename = "handshakeTimeout")]
    pub handshake_timeout: Option<String>,
    /// A relayed connection with no byte either way for this long is closed; unset: never.
    #[serde(rename = "idleTimeout")]
    pub idle_timeout: Option<String>,
    /// Once one direction of a relayed connection has ended, the other may go on for this
    /// long before both are closed; unset: for as long as the peers keep it open.
    #[serde(rename = "halfCloseTimeout")]
    pub half_close_timeout: Option<String>,
    /// UDP: how long a session may stay idle before it is closed, e.g. `"60s"`.
    pub ttl: Option<String>,
    /// UDP: accepted for GOST compatibility; sessions are always kept until `ttl`.
    #[serde(rename = "keepAlive")]
    pub keep_alive: Option<bool>,
    /// UDP: the largest datagram forwarded, in bytes; larger ones are dropped.
    #[serde(rename = "bufferSize")]
    pub buffer_size: Option<u64>,
    /// UDP: the most sessions one executor keeps for the service.
    #[serde(rename = "maxSessions")]
    pub max_sessions: Option<u64>,
}

/// One `[[chains]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// Unique chain name, referenced by `handler.chain`.
    pub name: String,
    /// The hops in the order they are traversed.
    #[serde(default)]
    pub hops: Vec<HopConfig>,
}

/// One `[[chains.hops]]` entry: one proxy level.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopConfig {
    /// Hop name, unique within its chain.
    pub name: String,
    /// Hop metadata, inherited by its nodes.
    #[serde(default)]
    pub metadata: HopMetadata,
    /// The proxies that can serve this hop.
    #[serde(default)]
    pub nodes: Vec<HopNodeConfig>,
    /// How a node is chosen for each connection.
    pub selector: Option<SelectorConfig>,
}

/// A hop's `metadata` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopMetadata {
    /// Namespace the connection to the hop's node is made from.
    pub netns: Option<String>,
}

/// A node's `metadata` table.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeMetadata {
    /// Namespace the connection to this node is made from (hop nodes only).
    pub netns: Option<String>,
    /// Relative share of connections (default 1).
    pub weight: Option<u32>,
    /// Used only when no other node is alive.
    pub backup: Option<bool>,
}

/// One `[[chains.hops.nodes]]` entry: a proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HopNodeConfig {
    /// Node name, used in logs.
    pub name: String,
    /// The proxy's address, `host:port`.
    pub addr: String,
    /// The protocol spoken to the proxy.
    #[serde(default)]
    pub connector: ConnectorConfig,
    /// The transport to the proxy.
    #[serde(default)]
    pub dialer: DialerConfig,
    /// Relative share of connections (default 1).
    pub weight: Option<u32>,
    /// Used only when no other node of the hop is alive.
    pub backup: Option<bool>,
    /// Overrides the hop's metadata for this node; GOST's place for `weight` and `backup`.
    pub metadata: Option<NodeMetadata>,
}

/// `connector = { type, auth }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectorConfig {
    /// Connector type: `http` or `socks5`.
    #[serde(rename = "type", default = "default_connector")]
    pub kind: String,
    /// Credentials presented to the proxy.
    pub auth: Option<AuthConfig>,
}

fn default_connector() -> String {
    "http".to_owned()
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        ConnectorConfig {
            kind: default_connector(),
            auth: None,
        }
    }
}

/// `dialer = { type }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialerConfig {
    /// Dialer type: `tcp`.
    #[serde(rename = "type", default = "default_dialer")]
    pub kind: String,
}

fn default_dialer() -> String {
    "tcp".to_owned()
}

impl Default for DialerConfig {
    fn default() -> Self {
        DialerConfig {
            kind: default_dialer(),
        }
    }
}

/// `auth = { username, password }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// User name.
    pub username: String,
    /// Password.
    #[serde(default)]
    pub password: String,
}

impl Config {
    /// Parses a configuration from TOML text; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Config> {
        toml::from_str(text).with_context(|| format!("{origin} is not a valid configuration"))
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration file {}", path.display()))?;
        Config::parse(&text, &path.display().to_string())
    }
}
