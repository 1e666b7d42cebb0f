//! Configuration to routes: every check that can fail happens here, before serving.

mod udp;

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;

use super::{
    Chain, Connector, Credentials, Dialer, Egress, Handler, Hop, HopNode, ProxyProtocol, Routes,
    Service, Target, Timeouts,
};
use crate::config::{
    Address, AuthConfig, ChainConfig, Config, NodeMetadata, SelectorConfig, ServiceConfig,
};
use crate::netns::{NamespaceRef, NamespaceTable};
use crate::relay::RelayMode;
use crate::selector::{Group, Selector, Weight};

const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Every problem found in a configuration, each naming where it is and what would be valid.
#[derive(Debug)]
pub struct CompileError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl fmt::Display for CompileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            many => {
                write!(f, "invalid configuration ({} problems):", many.len())?;
                for problem in many {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for CompileError {}

/// Compiles a configuration, opening the namespaces it names into `namespaces`.
pub fn compile(config: &Config, namespaces: &mut NamespaceTable) -> Result<Routes, CompileError> {
    let mut compiler = Compiler {
        namespaces,
        problems: Vec::new(),
    };
    let routes = compiler.routes(config);
    if compiler.problems.is_empty() {
        Ok(routes)
    } else {
        Err(CompileError {
            problems: compiler.problems,
        })
    }
}

struct Compiler<'a> {
    namespaces: &'a mut NamespaceTable,
    problems: Vec<String>,
}

impl Compiler<'_> {
    fn problem(&mut self, place: &str, key: &str, message: impl fmt::Display) {
        self.problems.push(format!("{place}: {key}: {message}"));
    }

    fn routes(&mut self, config: &Config) -> Routes {
        if config.services.is_empty() {
            self.problems.push(
                "no services: add at least one [[services]] table with name, addr and handler"
                    .to_owned(),
            );
        }
        self.unique_names(
            "[[services]]",
            config.services.iter().map(|s| s.name.as_str()),
        );
        self.unique_names("[[chains]]", config.chains.iter().map(|c| c.name.as_str()));
        self.unique_names("[[hosts]]", config.hosts.iter().map(|h| h.name.as_str()));
        let default_relay = match &config.relay {
            None => RelayMode::default(),
            Some(value) => self.relay_mode("top level", "relay", value),
        };
        let (udp, connection): (Vec<_>, Vec<_>) = config
            .services
            .iter()
            .partition(|service| service.handler.kind == "udp");
        let services = connection
            .into_iter()
            .filter_map(|service| self.service(service, config, default_relay))
            .collect();
        let udp_services = udp
            .into_iter()
            .filter_map(|service| self.udp_service(service, config))
            .collect();
        let routes = Routes {
            services,
            udp_services,
        };
        self.distinct_addresses(&routes);
        self.no_self_loops(&routes);
        routes
    }

    /// A service whose target is its own address would accept its own dials until the
    /// process runs out of descriptors.
    fn no_self_loops(&mut self, routes: &Routes) {
        for service in &routes.services {
            let Handler::Forward {
                targets,
                egress: Egress::Direct { netns },
                ..
            } = &service.handler
            else {
                continue;
            };
            if netns.as_ref().map(|n| &n.name) != service.netns.as_ref().map(|n| &n.name) {
                continue;
            }
            let listen = service.listen;
            for target in &targets.nodes {
                let addr = target.socket_addr;
                let same = addr == listen
                    || (listen.ip().is_unspecified()
                        && addr.port() == listen.port()
                        && addr.ip().is_loopback());
                if same {
                    self.problem(
                        &format!("service \"{}\"", service.name),
                        &format!("forwarder.nodes \"{}\".addr", target.name),
                        format!(
                            "{addr} is where this service listens: every connection would \
                             loop back into it; point the target elsewhere"
                        ),
                    );
                }
            }
        }
    }

    /// Two services on one address would share it through SO_REUSEPORT and split its
    /// traffic between two handlers.
    fn distinct_addresses(&mut self, routes: &Routes) {
        let tcp = routes
            .services
            .iter()
            .map(|s| (&s.name, "tcp", s.listen, &s.netns));
        let udp = routes
            .udp_services
            .iter()
            .map(|s| (&s.name, "udp", s.listen, &s.netns));
        let mut seen: Vec<(&String, &str, SocketAddr, Option<&str>)> = Vec::new();
        for (name, transport, listen, netns) in tcp.chain(udp) {
            let netns = netns.as_ref().map(|netns| &*netns.name);
            let clash = seen
                .iter()
                .find(|(_, other_transport, other_listen, other_netns)| {
                    *other_transport == transport
                        && *other_listen == listen
                        && *other_netns == netns
                });
            if let Some((other, ..)) = clash {
                self.problem(
                    &format!("service \"{name}\""),
                    "addr",
                    format!(
                        "{listen} ({transport}) is also the address of service \"{other}\"; \
                         each service needs an address of its own"
                    ),
                );
            } else {
                seen.push((name, transport, listen, netns));
            }
        }
    }

    /// Checks that the names of one list (`place` says which) are set and distinct.
    fn unique_names<'n>(&mut self, place: &str, names: impl Iterator<Item = &'n str>) {
        let mut seen = HashSet::new();
        for name in names {
            if name.is_empty() {
                self.problems
                    .push(format!("{place}: name: must not be empty"));
            } else if !seen.insert(name) {
                self.problems.push(format!(
                    "{place}: name: \"{name}\" is used twice; names must be unique"
                ));
            }
        }
    }

    fn relay_mode(&mut self, place: &str, key: &str, value: &str) -> RelayMode {
        value.parse().unwrap_or_else(|message: String| {
            self.problem(place, key, message);
            RelayMode::default()
        })
    }

    fn namespace(&mut self, place: &str, key: &str, value: Option<&str>) -> Option<NamespaceRef> {
        let value = value?;
        match self.namespaces.open(value) {
            Ok(netns) => Some(netns),
            Err(error) => {
                self.problem(
                    place,
                    key,
                    format!("network namespace \"{value}\": {error}"),
                );
                None
            }
        }
    }

    fn duration(
        &mut self,
        place: &str,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Duration {
        match value.map(parse_duration) {
            None => default,
            Some(Ok(duration)) => duration,
            Some(Err(message)) => {
                self.problem(place, key, message);
                default
            }
        }
    }

    fn service(
        &mut self,
        config: &ServiceConfig,
        whole: &Config,
        default_relay: RelayMode,
    ) -> Option<Service> {
        let place = format!("service \"{}\"", config.name);
        let problems_before = self.problems.len();

        let listen = self.listen_address(&place, &config.addr);
        if config.listener.kind != "tcp" {
            self.problem(
                &place,
                "listener.type",
                format!(
                    "\"{}\" is not a listener type for handler {}; valid: tcp",
                    config.listener.kind, config.handler.kind
                ),
            );
        }
        let metadata = &config.metadata;
        self.no_udp_keys(&place, config);
        let netns = self.namespace(&place, "metadata.netns", metadata.netns.as_deref());
        let netns_out = self.namespace(&place, "metadata.netns.out", metadata.netns_out.as_deref());
        let relay = match &metadata.relay {
            None => default_relay,
            Some(value) => self.relay_mode(&place, "metadata.relay", value),
        };
        let timeouts = Timeouts {
            dial: self.duration(
                &place,
                "metadata.dialTimeout",
                metadata.dial_timeout.as_deref(),
                DEFAULT_DIAL_TIMEOUT,
            ),
            handshake: self.duration(
                &place,
                "metadata.handshakeTimeout",
                metadata.handshake_timeout.as_deref(),
                DEFAULT_HANDSHAKE_TIMEOUT,
            ),
            idle: metadata.idle_timeout.as_deref().map(|value| {
                self.duration(&place, "metadata.idleTimeout", Some(value), Duration::MAX)
            }),
            half_close: metadata.half_close_timeout.as_deref().map(|value| {
                let key = "metadata.halfCloseTimeout";
                self.duration(&place, key, Some(value), Duration::MAX)
            }),
        };

        let egress = match &config.handler.chain {
            None => Some(Egress::Direct {
                netns: netns_out.clone(),
            }),
            Some(name) => match whole.chains.iter().find(|chain| &chain.name == name) {
                Some(chain) => self.chain(chain, netns_out.as_ref()).map(Egress::Chain),
                None => {
                    let known: Vec<String> = whole
                        .chains
                        .iter()
                        .map(|c| format!("\"{}\"", c.name))
                        .collect();
                    let known = if known.is_empty() {
                        "no [[chains]] are defined".to_owned()
                    } else {
                        format!("defined chains: {}", known.join(", "))
                    };
                    self.problem(
                        &place,
                        "handler.chain",
                        format!("no chain is named \"{name}\"; {known}"),
                    );
                    None
                }
            },
        };

        let first_hop_nodes = match &egress {
            Some(Egress::Chain(chain)) => chain.hops[0].nodes.nodes.len(),
            _ => 1,
        };
        let proxy = |protocol, auth| {
            move |egress| Handler::Proxy {
                protocol,
                egress,
                auth,
                attempts: 0,
            }
        };
        let hosts = self.hosts(&place, config, whole);
        let handler = match config.handler.kind.as_str() {
            "tcp" => {
                let targets = self.targets(&place, config, egress.as_ref(), &hosts);
                if config.handler.auth.is_some() {
                    self.problem(
                        &place,
                        "handler.auth",
                        "only proxy handlers (http, socks5, auto) take auth",
                    );
                }
                egress.map(|egress| Handler::Forward {
                    targets,
                    egress,
                    attempts: 0,
                })
            }
            kind @ ("http" | "socks5" | "auto") => {
                if config
                    .forwarder
                    .as_ref()
                    .is_some_and(|f| !f.nodes.is_empty())
                {
                    self.problem(
                        &place,
                        "forwarder",
                        format!(
                            "a {kind} proxy connects where each client asks; forwarder nodes are \
                             only for handler type tcp"
                        ),
                    );
                }
                let protocol = match kind {
                    "http" => ProxyProtocol::Http,
                    "socks5" => ProxyProtocol::Socks5,
                    _ => ProxyProtocol::Auto,
                };
                let speaks = Speaks {
                    http: kind != "socks5",
                    socks5: kind != "http",
                };
                let auth = self.auth(&place, "handler.auth", config.handler.auth.as_ref(), speaks);
                egress.map(proxy(protocol, auth))
            }
            other => {
                self.problem(
                    &place,
                    "handler.type",
                    format!(
                        "\"{other}\" is not a handler type; valid: tcp, udp, http, socks5, auto"
                    ),
                );
                None
            }
        };
        let retries = config.handler.retries;
        let handler = handler.map(|mut handler| {
            let (targets, attempts) = match &mut handler {
                Handler::Forward {
                    targets, attempts, ..
                } => (targets.nodes.len(), attempts),
                Handler::Proxy { attempts, .. } => (1, attempts),
            };
            // By default a connection may try every target and every first-hop node once.
            let every_node_once = targets.max(first_hop_nodes) as u32;
            *attempts = retries.map_or(every_node_once, |retries| retries.saturating_add(1));
            handler
        });

        if self.problems.len() != problems_before {
            return None;
        }
        Some(Service {
            name: config.name.clone(),
            listen: listen?,
            netns,
            handler: handler?,
            relay,
            timeouts,
            hosts,
        })
    }

    fn targets(
        &mut self,
        place: &str,
        config: &ServiceConfig,
        egress: Option<&Egress>,
        hosts: &[(String, std::net::IpAddr)],
    ) -> Group<Target> {
        let forwarder = config.forwarder.clone().unwrap_or_default();
        if forwarder.nodes.is_empty() {
            self.problem(
                place,
                "forwarder.nodes",
                format!(
                    "handler {} needs at least one target: add [[services.forwarder.nodes]] \
                     with name and addr",
                    config.handler.kind
                ),
            );
        }
        let selector = self.selector(place, "forwarder.selector", forwarder.selector.as_ref());
        self.unique_names(
            &format!("{place} forwarder.nodes"),
            forwarder.nodes.iter().map(|node| node.name.as_str()),
        );
        let through_chain = matches!(egress, Some(Egress::Chain(_)));
        let mut targets = Vec::new();
        let mut weights = Vec::new();
        for (index, node) in forwarder.nodes.iter().enumerate() {
            let key = format!("forwarder.nodes[{index}] \"{}\"", node.name);
            if node.metadata.as_ref().is_some_and(|m| m.netns.is_some()) {
                self.problem(
                    place,
                    &format!("{key}.metadata.netns"),
                    "targets are dialed from the \
                    service's netns.out; a namespace per target is not supported",
                );
            }
            let weight = self.weight(
                place,
                &key,
                node.weight,
                node.backup,
                node.metadata.as_ref(),
            );
            let address = match Address::parse(&node.addr) {
                Ok(address) => address,
                Err(error) => {
                    self.problem(place, &format!("{key}.addr"), error);
                    continue;
                }
            };
            if address
                .literal()
                .is_some_and(|addr| addr.ip().is_unspecified())
            {
                self.problem(
                    place,
                    &format!("{key}.addr"),
                    "a target needs a host, e.g. \"127.0.0.1:8000\"",
                );
                continue;
            }
            // Through a chain the last proxy resolves the name, so it need not resolve here.
            let mapped = address.name().and_then(|name| {
                hosts
                    .iter()
                    .find(|(host, _)| host == name)
                    .map(|(_, ip)| *ip)
            });
            let resolved = match mapped {
                Some(ip) => Ok(SocketAddr::new(ip, address.port())),
                None => address.resolve(),
            };
            let socket_addr = match (resolved, through_chain) {
                (Ok(addr), _) => addr,
                (Err(_), true) => SocketAddr::from(([0, 0, 0, 0], address.port())),
                (Err(error), false) => {
                    self.problem(place, &format!("{key}.addr"), error);
                    continue;
                }
            };
            targets.push(Target {
                name: node.name.clone(),
                address,
                socket_addr,
            });
            weights.push(weight);
        }
        Group::new(targets, weights, selector)
    }

    fn selector(&mut self, place: &str, key: &str, config: Option<&SelectorConfig>) -> Selector {
        let mut selector = Selector::default();
        let Some(config) = config else {
            return selector;
        };
        if let Some(strategy) = &config.strategy {
            match strategy.parse() {
                Ok(strategy) => selector.strategy = strategy,
                Err(message) => self.problem(place, &format!("{key}.strategy"), message),
            }
        }
        if let Some(max_fails) = config.max_fails {
            if max_fails == 0 {
                self.problem(place, &format!("{key}.maxFails"), "must be at least 1");
            }
            selector.max_fails = max_fails.max(1);
        }
        selector.fail_timeout = self.duration(
            place,
            &format!("{key}.failTimeout"),
            config.fail_timeout.as_deref(),
            selector.fail_timeout,
        );
        selector
    }

    fn weight(
        &mut self,
        place: &str,
        key: &str,
        weight: Option<u32>,
        backup: Option<bool>,
        metadata: Option<&NodeMetadata>,
    ) -> Weight {
        let key = if key.is_empty() {
            String::new()
        } else {
            format!("{key}.")
        };
        let both = |set: bool, in_metadata: bool| set && in_metadata;
        if both(
            weight.is_some(),
            metadata.is_some_and(|m| m.weight.is_some()),
        ) || both(
            backup.is_some(),
            metadata.is_some_and(|m| m.backup.is_some()),
        ) {
            self.problem(
                place,
                &format!("{key}metadata"),
                "weight and backup are set both on the node and in its metadata; keep one",
            );
        }
        let weight = weight.or(metadata.and_then(|m| m.weight)).unwrap_or(1);
        if weight == 0 {
            self.problem(place, &format!("{key}weight"), "must be at least 1");
        }
        let backup = backup.or(metadata.and_then(|m| m.backup)).unwrap_or(false);
        Weight {
            weight: weight.max(1),
            backup,
        }
    }

    fn hosts(
        &mut self,
        place: &str,
        config: &ServiceConfig,
        whole: &Config,
    ) -> Vec<(String, std::net::IpAddr)> {
        let Some(name) = &config.hosts else {
            return Vec::new();
        };
        let Some(hosts) = whole.hosts.iter().find(|hosts| &hosts.name == name) else {
            self.problem(place, "hosts", format!("no [[hosts]] is named \"{name}\""));
            return Vec::new();
        };
        let mut mappings = Vec::new();
        for (index, mapping) in hosts.mappings.iter().enumerate() {
            match mapping.ip.parse() {
                Ok(ip) => mappings.push((crate::config::canonical_name(&mapping.hostname), ip)),
                Err(_) => self.problem(
                    &format!("hosts \"{name}\""),
                    &format!("mappings[{index}].ip"),
                    format!("\"{}\" is not an IP address", mapping.ip),
                ),
            }
        }
        mappings
    }

    fn chain(&mut self, config: &ChainConfig, netns_out: Option<&NamespaceRef>) -> Option<Chain> {
        let place = format!("chain \"{}\"", config.name);
        let problems_before = self.problems.len();
        if config.hops.is_empty() {
            self.problem(&place, "hops", "a chain needs at least one [[chains.hops]]");
        }
        self.unique_names(
            &format!("chain \"{}\" hops", config.name),
            config.hops.iter().map(|hop| hop.name.as_str()),
        );
        let mut hops = Vec::new();
        for (index, hop) in config.hops.iter().enumerate() {
            let place = format!("chain \"{}\" hop \"{}\"", config.name, hop.name);
            if hop.nodes.is_empty() {
                self.problem(
                    &place,
                    "nodes",
                    "a hop needs at least one [[chains.hops.nodes]]",
                );
            }
            // Only the first hop is dialed; every later one is reached through the tunnel.
            let later_hop_netns = |compiler: &mut Self, place: &str| {
                compiler.problem(
                    place,
                    "metadata.netns",
                    format!(
                        "hop {} of the chain is reached through the tunnel of the hop before \
                         it, never dialed, so a namespace here would not be used; set netns \
                         on the first hop",
                        index + 1
                    ),
                )
            };
            if index > 0 && hop.metadata.netns.is_some() {
                later_hop_netns(self, &place);
            }
            // A hop without a namespace of its own is dialed from the service's netns.out.
            let hop_netns = self.namespace(&place, "metadata.netns", hop.metadata.netns.as_deref());
            let selector = self.selector(&place, "selector", hop.selector.as_ref());
            self.unique_names(
                &format!("{place} nodes"),
                hop.nodes.iter().map(|node| node.name.as_str()),
            );
            let mut nodes = Vec::new();
            let mut weights = Vec::new();
            for node in &hop.nodes {
                let node_place = format!("{place} node \"{}\"", node.name);
                let weight = self.weight(
                    &node_place,
                    "",
                    node.weight,
                    node.backup,
                    node.metadata.as_ref(),
                );
                let node_netns = node.metadata.as_ref().is_some_and(|m| m.netns.is_some());
                if index > 0 && node_netns {
                    later_hop_netns(self, &node_place);
                }
                let netns = match &node.metadata {
                    Some(metadata) if metadata.netns.is_some() => {
                        self.namespace(&node_place, "metadata.netns", metadata.netns.as_deref())
                    }
                    _ => hop_netns.clone().or_else(|| netns_out.cloned()),
                };
                let address = match Address::parse(&node.addr) {
                    Ok(address) => address,
                    Err(error) => {
                        self.problem(&node_place, "addr", error);
                        continue;
                    }
                };
                let socket_addr = match (address.resolve(), index) {
                    (Ok(addr), _) => addr,
                    (Err(_), 1..) => SocketAddr::from(([0, 0, 0, 0], address.port())),
                    (Err(error), 0) => {
                        self.problem(&node_place, "addr", error);
                        continue;
                    }
                };
                let speaks = Speaks {
                    http: node.connector.kind == "http",
                    socks5: matches!(node.connector.kind.as_str(), "socks5" | "socks"),
                };
                let auth = node.connector.auth.as_ref();
                let auth = self.auth(&node_place, "connector.auth", auth, speaks);
                let connector = match node.connector.kind.as_str() {
                    "http" => Connector::Http(auth),
                    "socks5" | "socks" => Connector::Socks5(auth),
                    other => {
                        self.problem(
                            &node_place,
                            "connector.type",
                            format!("\"{other}\" is not a connector type; valid: http, socks5"),
                        );
                        continue;
                    }
                };
                let dialer = match node.dialer.kind.as_str() {
                    "tcp" => Dialer::Tcp,
                    other => {
                        self.problem(
                            &node_place,
                            "dialer.type",
                            format!("\"{other}\" is not a dialer type; valid: tcp"),
                        );
                        continue;
                    }
                };
                nodes.push(HopNode {
                    name: node.name.clone(),
                    address,
                    socket_addr,
                    netns,
                    connector,
                    dialer,
                });
                weights.push(weight);
            }
            let nodes = Group::new(nodes, weights, selector);
            hops.push(Hop {
                name: hop.name.clone(),
                nodes,
            });
        }
        (self.problems.len() == problems_before).then(|| Chain {
            name: config.name.clone(),
            hops,
        })
    }
}

/// The protocols a set of credentials will be sent or checked in.
#[derive(Clone, Copy)]
struct Speaks {
    http: bool,
    socks5: bool,
}

impl Compiler<'_> {
    /// Credentials from `auth` (at `key`), checked against what the protocols they are used
    /// in can carry: RFC 1929 gives SOCKS5 1 to 255 bytes for each, and HTTP Basic a user
    /// name without a colon.
    fn auth(
        &mut self,
        place: &str,
        key: &str,
        auth: Option<&AuthConfig>,
        speaks: Speaks,
    ) -> Option<Credentials> {
        let auth = auth?;
        if speaks.socks5 {
            for (field, value) in [("username", &auth.username), ("password", &auth.password)] {
                if !(1..=255).contains(&value.len()) {
                    self.problem(
                        place,
                        &format!("{key}.{field}"),
                        format!(
                            "{} bytes; SOCKS5 username/password authentication (RFC 1929) \
                             carries 1 to 255",
                            value.len()
                        ),
                    );
                }
            }
        } else if auth.username.is_empty() {
            self.problem(place, &format!("{key}.username"), "must not be empty");
        }
        if speaks.http && auth.username.contains(':') {
            self.problem(
                place,
                &format!("{key}.username"),
                "contains ':', which HTTP Basic authentication cannot carry in a user name",
            );
        }
        Some(credentials(auth))
    }
}

/// Credentials, with the HTTP `Basic` value computed once.
fn credentials(auth: &AuthConfig) -> Credentials {
    let pair = format!("{}:{}", auth.username, auth.password);
    Credentials {
        username: auth.username.clone(),
        password: auth.password.clone(),
        basic: format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        ),
    }
}

/// Parses a duration as GOST (Go) writes them: `500ms`, `10s`, `1m30s`, `1.5h`, `100us`,
/// or a plain number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let invalid =
        || format!("\"{text}\" is not a duration; write e.g. \"500ms\", \"10s\" or \"1m30s\"");
    let mut seconds = 0.0;
    let mut rest = text;
    if rest.is_empty() {
        return Err(invalid());
    }
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(split);
        let number: f64 = number.parse().map_err(|_| invalid())?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            // A bare number is seconds, and only on its own.
            "" if split == rest.len() && seconds == 0.0 => 1.0,
            _ => return Err(invalid()),
        };
        seconds += number * scale;
        rest = after;
    }
    if seconds <= 0.0 {
        return Err(format!("\"{text}\" must be longer than zero"));
    }
    if seconds >= 1e9 {
        return Err(format!("\"{text}\" is too long; give at most a few years"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let config = Config::parse(text, "test").unwrap();
        match compile(&config, &mut NamespaceTable::default()) {
            Ok(_) => Vec::new(),
            Err(error) => error.problems,
        }
    }

    const FORWARD: &str = r#"
        [[services]]
        name = "fwd"
        addr = "127.0.0.1:9000"
        handler = { type = "tcp" }
        [[services.forwarder.nodes]]
        name = "t"
        addr = "127.0.0.1:9001"
    "#;

    #[test]
    fn a_plain_forward_compiles() {
        assert!(problems(FORWARD).is_empty());
    }

    #[test]
    fn an_unknown_chain_names_the_service_key_and_the_defined_chains() {
        let text = FORWARD.replace("type = \"tcp\" }", "type = \"tcp\", chain = \"nope\" }");
        assert_eq!(
            problems(&text),
            [concat!(
                "service \"fwd\": handler.chain: no chain is named \"nope\"; ",
                "no [[chains]] are defined"
            )]
        );
    }

    #[test]
    fn a_missing_namespace_names_the_key_and_how_to_create_it() {
        let text = FORWARD.replace(
            "handler = { type = \"tcp\" }",
            "handler = { type = \"tcp\" }\nmetadata = { netns = \"ug-no-such-ns\" }",
        );
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with(
                "service \"fwd\": metadata.netns: network namespace \"ug-no-such-ns\": cannot \
                 open /run/netns/ug-no-such-ns: No such file or directory"
            ),
            "{}",
            found[0]
        );
        assert!(
            found[0].contains("ip netns add ug-no-such-ns"),
            "{}",
            found[0]
        );
    }

    #[test]
    fn durations_take_gost_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert!(parse_duration("5 s").is_err());
        assert!(parse_duration("1m30").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
