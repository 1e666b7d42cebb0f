//! Compiling `udp` services, and the checks that keep UDP keys off other services.

use std::net::SocketAddr;
use std::time::Duration;

use super::Compiler;
use crate::config::{Address, Config, ServiceConfig};
use crate::route::{SessionLimits, UdpService};

const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Large enough for any UDP payload: 65,507 bytes over IPv4, 65,527 over IPv6.
const DEFAULT_BUFFER_SIZE: u64 = 65_535;
const MAX_BUFFER_SIZE: u64 = 65_535;
const DEFAULT_MAX_SESSIONS: u64 = 16_384;

impl Compiler<'_> {
    pub(super) fn udp_service(
        &mut self,
        config: &ServiceConfig,
        whole: &Config,
    ) -> Option<UdpService> {
        let place = format!("service \"{}\"", config.name);
        let problems_before = self.problems.len();

        let listen = self.listen_address(&place, &config.addr);
        if config.listener.kind != "udp" {
            self.problem(
                &place,
                "listener.type",
                format!(
                    "\"{}\" does not receive datagrams; handler udp needs listener = {{ type = \
                     \"udp\" }}",
                    config.listener.kind
                ),
            );
        }
        if config.handler.chain.is_some() {
            self.problem(
                &place,
                "handler.chain",
                "handler udp cannot go through a chain (UDP over proxies is not supported); \
                 remove the chain, and use metadata \"netns.out\" to pick the namespace \
                 datagrams leave from",
            );
        }
        if config.handler.auth.is_some() {
            self.problem(
                &place,
                "handler.auth",
                "only proxy handlers (http, socks5, auto) take auth",
            );
        }
        let metadata = &config.metadata;
        for (key, set) in [
            ("metadata.relay", metadata.relay.is_some()),
            ("metadata.dialTimeout", metadata.dial_timeout.is_some()),
            (
                "metadata.handshakeTimeout",
                metadata.handshake_timeout.is_some(),
            ),
            ("metadata.idleTimeout", metadata.idle_timeout.is_some()),
            (
                "metadata.halfCloseTimeout",
                metadata.half_close_timeout.is_some(),
            ),
        ] {
            if set {
                self.problem(&place, key, "applies to connections; handler udp has none");
            }
        }
        let netns = self.namespace(&place, "metadata.netns", metadata.netns.as_deref());
        let netns_out = self.namespace(&place, "metadata.netns.out", metadata.netns_out.as_deref());
        let selector = config.forwarder.as_ref().and_then(|f| f.selector.as_ref());
        if selector.is_some_and(|s| s.max_fails.is_some() || s.fail_timeout.is_some()) {
            self.problem(
                &place,
                "forwarder.selector",
                "maxFails and failTimeout need a failure to count, and a UDP target gives none; \
                 remove them (strategy, weight and backup apply)",
            );
        }
        let hosts = self.hosts(&place, config, whole);
        let targets = self.targets(&place, config, None, &hosts);
        let sessions = SessionLimits {
            ttl: self.duration(&place, "metadata.ttl", metadata.ttl.as_deref(), DEFAULT_TTL),
            keep_alive: metadata.keep_alive.unwrap_or(false),
            buffer_size: self.bounded(
                &place,
                "metadata.bufferSize",
                metadata.buffer_size,
                DEFAULT_BUFFER_SIZE,
                MAX_BUFFER_SIZE,
                "a datagram is at most 65,535 bytes",
            ),
            max_sessions: self.bounded(
                &place,
                "metadata.maxSessions",
                metadata.max_sessions,
                DEFAULT_MAX_SESSIONS,
                u32::MAX.into(),
                "each session holds one socket",
            ),
        };

        if self.problems.len() != problems_before {
            return None;
        }
        Some(UdpService {
            name: config.name.clone(),
            listen: listen?,
            netns,
            netns_out,
            targets,
            sessions,
        })
    }

    /// The address a service listens on, or `None` after reporting why it is invalid.
    pub(super) fn listen_address(&mut self, place: &str, addr: &str) -> Option<SocketAddr> {
        match Address::parse(addr).and_then(|address| address.resolve()) {
            Ok(addr) => Some(addr),
            Err(error) => {
                self.problem(place, "addr", error);
                None
            }
        }
    }

    /// Reports UDP session keys set on a service whose handler is not `udp`.
    pub(super) fn no_udp_keys(&mut self, place: &str, config: &ServiceConfig) {
        let metadata = &config.metadata;
        for (key, set) in [
            ("metadata.ttl", metadata.ttl.is_some()),
            ("metadata.keepAlive", metadata.keep_alive.is_some()),
            ("metadata.bufferSize", metadata.buffer_size.is_some()),
            ("metadata.maxSessions", metadata.max_sessions.is_some()),
        ] {
            if set {
                self.problem(place, key, "applies only to handler udp");
            }
        }
    }

    /// A count from 1 to `max`, `default` when unset.
    fn bounded(
        &mut self,
        place: &str,
        key: &str,
        value: Option<u64>,
        default: u64,
        max: u64,
        why: &str,
    ) -> usize {
        match value {
            None => default as usize,
            Some(value) if (1..=max).contains(&value) => value as usize,
            Some(value) => {
                self.problem(
                    place,
                    key,
                    format!("{value} is out of range; {why}: use 1 to {max}"),
                );
                default as usize
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use crate::netns::NamespaceTable;
    use crate::route::compile;

    const UDP: &str = r#"
        [[services]]
        name = "dns"
        addr = "127.0.0.1:10053"
        handler = { type = "udp" }
        listener = { type = "udp" }
        [[services.forwarder.nodes]]
        name = "t"
        addr = "127.0.0.1:53"
    "#;

    fn problems(text: &str) -> Vec<String> {
        let config = Config::parse(text, "test").unwrap();
        match compile(&config, &mut NamespaceTable::default()) {
            Ok(_) => Vec::new(),
            Err(error) => error.problems,
        }
    }

    #[test]
    fn a_udp_forward_compiles_with_gost_defaults() {
        let config = Config::parse(UDP, "test").unwrap();
        let routes = compile(&config, &mut NamespaceTable::default()).unwrap();
        let service = &routes.udp_services[0];
        assert_eq!(service.sessions.ttl.as_secs(), 60);
        assert_eq!(service.sessions.buffer_size, 65_535);
        assert!(routes.services.is_empty());
    }

    #[test]
    fn a_chain_on_a_udp_service_is_refused_with_the_reason() {
        let text = UDP.replace(
            "type = \"udp\" }\n        listener",
            "type = \"udp\", chain = \"c\" }\n        listener",
        );
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with(
                "service \"dns\": handler.chain: handler udp cannot go through a chain"
            ),
            "{}",
            found[0]
        );
    }

    #[test]
    fn udp_keys_out_of_range_or_on_tcp_services_are_refused() {
        let text = UDP.replace(
            "listener = { type = \"udp\" }",
            "listener = { type = \"udp\" }\nmetadata = { bufferSize = 70000, maxSessions = 0 }",
        );
        assert_eq!(
            problems(&text),
            [
                "service \"dns\": metadata.bufferSize: 70000 is out of range; a datagram is at \
                 most 65,535 bytes: use 1 to 65535",
                "service \"dns\": metadata.maxSessions: 0 is out of range; each session holds \
                 one socket: use 1 to 4294967295",
            ]
        );
        let tcp = UDP
            .replace(
                "{ type = \"udp\" }\n        listener = { type = \"udp\" }",
                "{ type = \"tcp\" }",
            )
            .replace(
                "[[services.forwarder",
                "metadata = { ttl = \"5s\" }\n[[services.forwarder",
            );
        assert_eq!(
            problems(&tcp),
            ["service \"dns\": metadata.ttl: applies only to handler udp"]
        );
    }
}
