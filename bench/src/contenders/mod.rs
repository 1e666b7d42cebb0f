//! The contenders: no forwarder at all, uringgost, and the peers it is measured against.
//! Each kind writes its own configuration and says how it is started.

mod daemon;
mod haproxy;
mod nginx;
mod socat;
mod uringgost;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Result, bail};

pub use daemon::{Daemon, DaemonCommand, Probe};

use crate::system::CpuSet;
use crate::topology::{Endpoint, NamespaceChain};

/// How uringgost relays bytes, when the harness names it in the configuration (its
/// top-level `relay` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Buffered while messages are small, splice once a read fills a buffer (the default,
    /// written out).
    Auto,
    /// Kernel splice through a pipe.
    Splice,
    /// Read into a user-space buffer and write it out.
    Buffered,
    /// io_uring SPLICE ops, which wait in an io-wq kernel thread per idle direction.
    UringSplice,
}

impl RelayMode {
    /// The value of uringgost's `relay` key.
    pub fn key(self) -> &'static str {
        match self {
            RelayMode::Auto => "auto",
            RelayMode::Splice => "splice",
            RelayMode::Buffered => "buffered",
            RelayMode::UringSplice => "uring-splice",
        }
    }
}

/// One contender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContenderKind {
    /// No forwarder: the client talks to the sink (the machine's limit).
    Direct,
    /// uringgost, with its default relay or a forced one.
    Uringgost(Option<RelayMode>),
    /// HAProxy in TCP mode with `option splice-auto`.
    Haproxy,
    /// nginx `stream { server { proxy_pass } }`.
    Nginx,
    /// socat, forking one process per connection.
    Socat,
}

impl ContenderKind {
    /// The names `--contenders` accepts.
    pub const NAMES: &'static str = "direct, uringgost, uringgost-auto, uringgost-splice, \
                                     uringgost-buffered, uringgost-uring-splice, haproxy, nginx, \
                                     socat";

    /// Loopback ports used above `--base-port` (the sink takes the first).
    pub const PORT_SLOTS: u32 = 10;

    /// The contender's name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ContenderKind::Direct => "direct",
            ContenderKind::Uringgost(None) => "uringgost",
            ContenderKind::Uringgost(Some(RelayMode::Auto)) => "uringgost-auto",
            ContenderKind::Uringgost(Some(RelayMode::Splice)) => "uringgost-splice",
            ContenderKind::Uringgost(Some(RelayMode::Buffered)) => "uringgost-buffered",
            ContenderKind::Uringgost(Some(RelayMode::UringSplice)) => "uringgost-uring-splice",
            ContenderKind::Haproxy => "haproxy",
            ContenderKind::Nginx => "nginx",
            ContenderKind::Socat => "socat",
        }
    }

    /// Whether this is one of the established peers uringgost is compared against.
    pub fn is_peer(self) -> bool {
        matches!(
            self,
            ContenderKind::Haproxy | ContenderKind::Nginx | ContenderKind::Socat
        )
    }

    /// Whether the kind can serve the namespace chain (it needs an HTTP CONNECT hop, which
    /// HAProxy, nginx stream and socat do not provide).
    pub fn supports_namespace_chain(self) -> bool {
        matches!(self, ContenderKind::Direct | ContenderKind::Uringgost(_))
    }

    /// Why the kind sits out the UDP tests, if it does: HAProxy has no UDP proxy, and a
    /// forced relay mode is a TCP setting (uringgost's UDP path is the same whatever `relay`
    /// says, so one `uringgost` row measures it).
    pub fn udp_unsupported(self) -> Option<&'static str> {
        match self {
            ContenderKind::Haproxy => Some("HAProxy has no UDP proxy"),
            ContenderKind::Uringgost(Some(_)) => {
                Some("relay modes are TCP only; the `uringgost` row is its UDP path")
            }
            ContenderKind::Direct
            | ContenderKind::Uringgost(None)
            | ContenderKind::Nginx
            | ContenderKind::Socat => None,
        }
    }

    /// The loopback port the contender listens on, above the sink's (`direct` uses the sink's).
    fn port(self, base_port: u16) -> u16 {
        let slot = match self {
            ContenderKind::Direct => return base_port,
            ContenderKind::Uringgost(None) => 0,
            ContenderKind::Uringgost(Some(RelayMode::Splice)) => 1,
            ContenderKind::Uringgost(Some(RelayMode::Buffered)) => 2,
            ContenderKind::Haproxy => 3,
            ContenderKind::Nginx => 4,
            ContenderKind::Socat => 5,
            ContenderKind::Uringgost(Some(RelayMode::Auto)) => 6,
            ContenderKind::Uringgost(Some(RelayMode::UringSplice)) => 7,
        };
        base_port + 1 + slot
    }
}

impl fmt::Display for ContenderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ContenderKind {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Self> {
        Ok(match text.trim() {
            "direct" => ContenderKind::Direct,
            "uringgost" => ContenderKind::Uringgost(None),
            "uringgost-auto" => ContenderKind::Uringgost(Some(RelayMode::Auto)),
            "uringgost-splice" => ContenderKind::Uringgost(Some(RelayMode::Splice)),
            "uringgost-buffered" => ContenderKind::Uringgost(Some(RelayMode::Buffered)),
            "uringgost-uring-splice" => ContenderKind::Uringgost(Some(RelayMode::UringSplice)),
            "haproxy" => ContenderKind::Haproxy,
            "nginx" => ContenderKind::Nginx,
            "socat" => ContenderKind::Socat,
            other => bail!("unknown contender {other:?}; known: {}", Self::NAMES),
        })
    }
}

/// Where a contender runs: the loopback pair of ports (TCP or UDP), or the namespace chain.
#[derive(Clone, Copy)]
pub enum Layout<'a> {
    /// Client and sink on loopback in the harness's namespace.
    Loopback {
        /// First harness port; the sink listens on it.
        base_port: u16,
    },
    /// A UDP forward on loopback: the same ports as [`Layout::Loopback`], as UDP.
    LoopbackUdp {
        /// First harness port; the sink's UDP socket is bound to it.
        base_port: u16,
    },
    /// The GOST doc's chain; the sink listens in the stand-in default namespace.
    NamespaceChain(&'a NamespaceChain),
}

/// What every contender is given, the same for all.
pub struct LaunchSpec<'a> {
    /// Where the contender runs.
    pub layout: Layout<'a>,
    /// Worker threads or processes.
    pub threads: u32,
    /// CPUs it is pinned to.
    pub cpus: &'a CpuSet,
    /// uringgost binary.
    pub uringgost: &'a Path,
    /// A fresh directory for its configuration, pid file and logs.
    pub workdir: &'a Path,
    /// Connections it must hold at once (for maxconn-style limits).
    pub max_connections: u32,
    /// RLIMIT_NOFILE it is started with.
    pub nofile_limit: u64,
}

/// A contender ready for load.
pub struct Launched {
    /// Where clients connect (a UDP port in [`Layout::LoopbackUdp`]).
    pub entry: Endpoint,
    /// The forwarder process, absent for `direct`.
    pub daemon: Option<Daemon>,
    /// The configuration file it was given, with its text (for the results folder).
    pub config: Option<(PathBuf, String)>,
}

/// A contender's start-up recipe: configuration text and command.
pub struct Recipe {
    /// File name (inside the workdir) and text of the configuration, if it has one.
    pub config: Option<(&'static str, String)>,
    /// How to start it.
    pub command: DaemonCommand,
}

/// Starts a contender and waits until it accepts connections.
pub fn launch(kind: ContenderKind, spec: &LaunchSpec<'_>) -> Result<Launched> {
    let (entry, target) = addresses(kind, spec.layout)?;
    let udp = matches!(spec.layout, Layout::LoopbackUdp { .. });
    let recipe = match kind {
        ContenderKind::Direct => {
            return Ok(Launched {
                entry,
                daemon: None,
                config: None,
            });
        }
        ContenderKind::Uringgost(relay) => uringgost::recipe(spec, relay, entry.addr, target)?,
        ContenderKind::Haproxy if udp => bail!("haproxy has no UDP proxy"),
        ContenderKind::Haproxy => haproxy::recipe(spec, entry.addr, target),
        ContenderKind::Nginx => nginx::recipe(spec, entry.addr, target, udp),
        ContenderKind::Socat => socat::recipe(entry.addr, target, udp),
    };
    let config = match &recipe.config {
        Some((file_name, text)) => {
            let path = spec.workdir.join(file_name);
            std::fs::write(&path, text)?;
            Some((path, text.clone()))
        }
        None => None,
    };
    let log = spec.workdir.join(format!("{kind}.log"));
    let mut daemon = Daemon::spawn(kind.name(), &recipe.command, spec, &log)?;
    let probe = if udp {
        Probe::UdpEcho(entry.clone())
    } else {
        Probe::Connect(entry.clone())
    };
    daemon.wait_ready(&recipe.command, &probe, Duration::from_secs(15))?;
    Ok(Launched {
        entry,
        daemon: Some(daemon),
        config,
    })
}

/// The client's entry point and the forwarder's target for a kind in a layout.
fn addresses(kind: ContenderKind, layout: Layout<'_>) -> Result<(Endpoint, SocketAddr)> {
    match layout {
        Layout::Loopback { base_port } | Layout::LoopbackUdp { base_port } => {
            let sink = Endpoint::loopback(base_port);
            let entry = Endpoint::loopback(kind.port(base_port));
            Ok((entry, sink.addr))
        }
        Layout::NamespaceChain(chain) => {
            let address = match kind {
                ContenderKind::Direct => NamespaceChain::DIRECT,
                ContenderKind::Uringgost(_) => NamespaceChain::SERVICE,
                other => bail!("{other} cannot serve the namespace chain (no HTTP CONNECT hop)"),
            };
            let entry = Endpoint {
                addr: address,
                netns: Some(chain.ns1.clone()),
            };
            Ok((entry, NamespaceChain::TARGET))
        }
    }
}
