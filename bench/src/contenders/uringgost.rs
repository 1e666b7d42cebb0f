//! uringgost itself, configured in GOST's terms: a TCP or UDP forwarding service on loopback,
//! or the GOST doc's chain (service in ns1, HTTP CONNECT hop in ns2, target in the default
//! namespace).

use std::fmt::Write;
use std::net::SocketAddr;

use anyhow::Result;

use super::{DaemonCommand, LaunchSpec, Layout, Recipe, RelayMode};
use crate::topology::NamespaceChain;

/// The line uringgost logs once every listener is up.
const READY_LINE: &str = "uringgost is serving";

/// Configuration and command for uringgost.
pub fn recipe(
    spec: &LaunchSpec<'_>,
    relay: Option<RelayMode>,
    listen: SocketAddr,
    target: SocketAddr,
) -> Result<Recipe> {
    let mut config = String::new();
    if let Some(relay) = relay {
        writeln!(config, "relay = \"{}\"\n", relay.key())?;
    }
    let netns = match spec.layout {
        Layout::Loopback { .. } => {
            write_forwarding_service(&mut config, listen, target, None)?;
            None
        }
        Layout::LoopbackUdp { .. } => {
            write_udp_service(&mut config, listen, target)?;
            None
        }
        Layout::NamespaceChain(chain) => {
            write_namespace_chain(&mut config, chain)?;
            Some(chain.default_ns.clone())
        }
    };
    let path = spec.workdir.join("uringgost.toml");
    Ok(Recipe {
        config: Some(("uringgost.toml", config)),
        command: DaemonCommand {
            program: spec.uringgost.to_owned(),
            args: vec![
                "--config".into(),
                path.display().to_string(),
                "--threads".into(),
                spec.threads.to_string(),
                "--log-level".into(),
                "info".into(),
            ],
            netns,
            ready_line: Some(READY_LINE),
        },
    })
}

/// A `tcp` service forwarding to one node, optionally through a chain from a namespace.
fn write_forwarding_service(
    config: &mut String,
    listen: SocketAddr,
    target: SocketAddr,
    chain: Option<(&str, &str)>,
) -> std::fmt::Result {
    writeln!(config, "[[services]]")?;
    writeln!(config, "name = \"service-0\"")?;
    writeln!(config, "addr = \"{listen}\"")?;
    match chain {
        Some((chain_name, netns)) => {
            writeln!(
                config,
                "handler = {{ type = \"tcp\", chain = \"{chain_name}\" }}"
            )?;
            writeln!(config, "listener = {{ type = \"tcp\" }}")?;
            writeln!(config, "metadata = {{ netns = \"{netns}\" }}")?;
        }
        None => {
            writeln!(config, "handler = {{ type = \"tcp\" }}")?;
            writeln!(config, "listener = {{ type = \"tcp\" }}")?;
        }
    }
    writeln!(config, "[[services.forwarder.nodes]]")?;
    writeln!(config, "name = \"target-0\"")?;
    writeln!(config, "addr = \"{target}\"\n")
}

/// A `udp` service: one session per client address, closed after 60 s without a datagram
/// (as long as nginx's `proxy_timeout` here).
fn write_udp_service(
    config: &mut String,
    listen: SocketAddr,
    target: SocketAddr,
) -> std::fmt::Result {
    write!(
        config,
        "[[services]]
name = \"udp\"
addr = \"{listen}\"
handler = {{ type = \"udp\" }}
listener = {{ type = \"udp\" }}
metadata = {{ ttl = \"60s\" }}
[[services.forwarder.nodes]]
name = \"sink\"
addr = \"{target}\"
"
    )
}

/// The GOST doc's example, with the harness's namespace names.
fn write_namespace_chain(config: &mut String, chain: &NamespaceChain) -> std::fmt::Result {
    let (service, proxy, target) = (
        NamespaceChain::SERVICE,
        NamespaceChain::PROXY,
        NamespaceChain::TARGET,
    );
    write_forwarding_service(config, service, target, Some(("chain-0", &chain.ns1)))?;
    let ns2 = &chain.ns2;
    write!(
        config,
        "[[services]]
name = \"proxy-0\"
addr = \"{proxy}\"
handler = {{ type = \"http\" }}
listener = {{ type = \"tcp\" }}
metadata = {{ netns = \"{ns2}\", \"netns.out\" = \"{ns2}\" }}

[[chains]]
name = \"chain-0\"
[[chains.hops]]
name = \"hop-0\"
metadata = {{ netns = \"{ns2}\" }}
[[chains.hops.nodes]]
name = \"node-0\"
addr = \"{proxy}\"
connector = {{ type = \"http\" }}
dialer = {{ type = \"tcp\" }}
"
    )
}
