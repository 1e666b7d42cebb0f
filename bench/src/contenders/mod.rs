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

pub use daemon::{Daemon, DaemonCommand};

use crate::system::CpuSet;
use crate::topology::{Endpoint, NamespaceChain};

/// How uringgost relays bytes, when the harness pins it down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Kernel splice through a pipe.
    Splice,
    /// Read into a user-space buffer and write it out.
    Buffered,
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
    pub const NAMES: &'static str =
        "direct, uringgost, uringgost-splice, uringgost-buffered, haproxy, nginx, socat";

    /// Loopback ports used above `--base-port` (the sink takes the first).
    pub const PORT_SLOTS: u32 = 8;

    /// The contender's name in tables and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ContenderKind::Direct => "direct",
            ContenderKind::Uringgost(None) => "uringgost",
            ContenderKind::Uringgost(Some(RelayMode::Splice)) => "uringgost-splice",
            ContenderKind::Uringgost(Some(RelayMode::Buffered)) => "uringgost-buffered",
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
            "uringgost-splice" => ContenderKind::Uringgost(Some(RelayMode::Splice)),
            "uringgost-buffered" => ContenderKind::Uringgost(Some(RelayMode::Buffered)),
            "haproxy" => ContenderKind::Haproxy,
            "nginx" => ContenderKind::Nginx,
            "socat" => ContenderKind::Socat,
            other => bail!("unknown contender {other:?}; known: {}", Self::NAMES),
        })
    }
}

/// Where a contender runs: the loopback pair of ports, or the namespace chain.
#[derive(Clone, Copy)]
pub enum Layout<'a> {
    /// Client and sink on loopback in the harness's namespace.
    Loopback {
        /// First harness port; the sink listens on it.
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
    /// Where clients connect.
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
    let recipe = match kind {
        ContenderKind::Direct => {
            return Ok(Launched {
                entry,
                daemon: None,
                config: None,
            });
        }
        ContenderKind::Uringgost(relay) => uringgost::recipe(spec, relay, entry.addr, target)?,
        ContenderKind::Haproxy => haproxy::recipe(spec, entry.addr, target),
        ContenderKind::Nginx => nginx::recipe(spec, entry.addr, target),
        ContenderKind::Socat => socat::recipe(entry.addr, target),
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
    daemon.wait_ready(&recipe.command, &entry, Duration::from_secs(15))?;
    Ok(Launched {
        entry,
        daemon: Some(daemon),
        config,
    })
}

/// The client's entry point and the forwarder's target for a kind in a layout.
fn addresses(kind: ContenderKind, layout: Layout<'_>) -> Result<(Endpoint, SocketAddr)> {
    match layout {
        Layout::Loopback { base_port } => {
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
