//! Compiled UDP services: datagrams forwarded through one session per client address.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::Target;
use crate::netns::NamespaceRef;
use crate::selector::{Group, Tried};

/// A compiled `udp` service.
#[derive(Debug, Clone)]
pub struct UdpService {
    /// The service's name.
    pub name: String,
    /// The address it receives datagrams on, and sends replies from.
    pub listen: SocketAddr,
    /// The namespace the receiving socket lives in; `None` for the process's own.
    pub netns: Option<NamespaceRef>,
    /// The namespace each session's socket to its target is created in.
    pub netns_out: Option<NamespaceRef>,
    /// Where datagrams go, and how a new session picks its target.
    pub targets: Group<Target>,
    /// Session lifetime and limits.
    pub sessions: SessionLimits,
}

/// How long sessions live and how many a service keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLimits {
    /// A session idle (no datagram either way) this long is closed.
    pub ttl: Duration,
    /// GOST's `keepAlive`, recorded for `check`: sessions are kept until `ttl` either way,
    /// because ending a session at its first reply breaks every protocol that answers twice.
    pub keep_alive: bool,
    /// The largest datagram forwarded; a larger one is dropped and counted.
    pub buffer_size: usize,
    /// The most sessions one executor keeps for this service; beyond it the session idle the
    /// longest is evicted.
    pub max_sessions: usize,
}

impl UdpService {
    /// The target a new session from `client` is sent to, by the forwarder's selector.
    pub fn choose_target(&self, client: IpAddr) -> &Target {
        let index = self.targets.pick(client, &Tried::default(), Instant::now());
        &self.targets.nodes[index.expect("a udp service has targets")]
    }
}

impl fmt::Display for UdpService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service {}: handler udp, listens on {}",
            self.name, self.listen
        )?;
        match &self.netns {
            Some(netns) => writeln!(f, " in netns {netns}")?,
            None => writeln!(f, " in the process's netns")?,
        }
        let limits = &self.sessions;
        writeln!(
            f,
            "  sessions: ttl {:?}, keepAlive {} (kept until ttl either way), bufferSize {}, \
             maxSessions {} per executor",
            limits.ttl, limits.keep_alive, limits.buffer_size, limits.max_sessions
        )?;
        writeln!(f, "  selector: {}", self.targets.selector)?;
        for target in &self.targets.nodes {
            writeln!(
                f,
                "  target {}: {} ({})",
                target.name, target.address, target.socket_addr
            )?;
        }
        match &self.netns_out {
            Some(netns) => writeln!(f, "  sends from netns {netns}"),
            None => writeln!(f, "  sends from the process's netns"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Address;
    use crate::selector::{Selector, Strategy, Weight};

    fn service(strategy: Strategy) -> UdpService {
        let nodes: Vec<Target> = (1..=3)
            .map(|n| Target {
                name: format!("t{n}"),
                address: Address::parse(&format!("127.0.0.{n}:53")).unwrap(),
                socket_addr: SocketAddr::from(([127, 0, 0, n], 53)),
            })
            .collect();
        let weights = vec![Weight::default(); nodes.len()];
        let selector = Selector {
            strategy,
            ..Selector::default()
        };
        UdpService {
            name: "dns".to_owned(),
            listen: SocketAddr::from(([127, 0, 0, 1], 10053)),
            netns: None,
            netns_out: None,
            targets: Group::new(nodes, weights, selector),
            sessions: SessionLimits {
                ttl: Duration::from_secs(60),
                keep_alive: false,
                buffer_size: 65535,
                max_sessions: 10,
            },
        }
    }

    #[test]
    fn round_gives_each_new_session_the_next_target() {
        let service = service(Strategy::Round);
        let client = IpAddr::from([10, 0, 0, 1]);
        let chosen: Vec<&str> = (0..4)
            .map(|_| service.choose_target(client).name.as_str())
            .collect();
        assert_eq!(chosen, ["t1", "t2", "t3", "t1"]);
    }

    #[test]
    fn hash_keeps_a_client_ip_on_one_target() {
        let service = service(Strategy::Hash);
        let client = IpAddr::from([10, 0, 0, 7]);
        let first = service.choose_target(client).name.clone();
        for _ in 0..5 {
            assert_eq!(service.choose_target(client).name, first);
        }
    }
}
