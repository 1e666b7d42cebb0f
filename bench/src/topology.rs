//! Where traffic goes: loopback, or the GOST doc's namespace chain built in namespaces the
//! harness creates (and always removes).

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::cleanup;

/// An address a load generator or sink uses, and the namespace its sockets are made in.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The address.
    pub addr: SocketAddr,
    /// A namespace the harness created, or `None` for the harness's own namespace.
    pub netns: Option<String>,
}

impl Endpoint {
    /// A loopback endpoint in the harness's own namespace.
    pub fn loopback(port: u16) -> Endpoint {
        Endpoint {
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            netns: None,
        }
    }

    /// Refuses any address the harness may not send to: traffic leaves loopback only inside
    /// namespaces the harness itself created.
    pub fn check_allowed(&self) -> Result<()> {
        if self.addr.ip().is_loopback() {
            return Ok(());
        }
        match &self.netns {
            Some(name) if cleanup::is_registered_namespace(name) => Ok(()),
            Some(name) => bail!(
                "{} in namespace {name}: not a namespace this run made",
                self.addr
            ),
            None => bail!("{} is not loopback and no test namespace is set", self.addr),
        }
    }

    /// Moves the calling thread into this endpoint's namespace, if it has one; sockets the
    /// thread creates afterwards belong to that namespace wherever they are used.
    pub fn enter_netns(&self) -> Result<()> {
        self.check_allowed()?;
        match &self.netns {
            Some(name) => enter_netns(name),
            None => Ok(()),
        }
    }
}

/// Moves the calling thread into a namespace under /run/netns.
pub fn enter_netns(name: &str) -> Result<()> {
    let file = open_netns(name)?;
    // SAFETY: the fd is open for the duration of the call; setns only affects this thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        bail!("setns into network namespace {name}: {error}");
    }
    Ok(())
}

/// Opens /run/netns/NAME, for `setns` now or in a child between fork and exec.
pub fn open_netns(name: &str) -> Result<File> {
    let path = format!("/run/netns/{name}");
    File::open(&path).with_context(|| format!("opening network namespace {path}"))
}

/// The GOST doc's topology, with a stand-in `default` namespace D so that the machine's own
/// namespace is never touched:
///
/// ```text
///   ns1: client, service 10.0.0.1:8000 ── veth1 ⇄ veth0 ── D: 10.0.0.11
///   ns2: HTTP proxy 10.0.1.1:8080     ── veth3 ⇄ veth2 ── D: 10.0.1.11, sink :8000
/// ```
///
/// No namespace has a default route. Dropping the value deletes all three namespaces.
pub struct NamespaceChain {
    /// Stand-in for the default namespace: sink and forwarder process.
    pub default_ns: String,
    /// Client side and the service's listener.
    pub ns1: String,
    /// The HTTP CONNECT proxy hop.
    pub ns2: String,
}

impl NamespaceChain {
    /// Where the service listens (in ns1).
    pub const SERVICE: SocketAddr = v4(10, 0, 0, 1, 8000);
    /// Where the proxy hop listens (in ns2).
    pub const PROXY: SocketAddr = v4(10, 0, 1, 1, 8080);
    /// The target behind the proxy (the sink in D).
    pub const TARGET: SocketAddr = v4(10, 0, 1, 11, 8000);
    /// The sink as ns1 reaches it without any forwarder (one veth hop).
    pub const DIRECT: SocketAddr = v4(10, 0, 0, 11, 8000);

    /// Creates the namespaces, veth pairs and addresses; names carry the harness's pid.
    pub fn create() -> Result<NamespaceChain> {
        let pid = std::process::id();
        let mut chain = NamespaceChain {
            default_ns: String::new(),
            ns1: String::new(),
            ns2: String::new(),
        };
        // Each name is recorded as soon as it exists, so a failure halfway still removes it.
        for (slot, suffix) in [
            (&mut chain.default_ns, 'd'),
            (&mut chain.ns1, 'a'),
            (&mut chain.ns2, 'b'),
        ] {
            let name = format!("ugb{pid}{suffix}");
            ip(&["netns", "add", &name])?;
            cleanup::register_namespace(&name);
            *slot = name;
        }

        let d = chain.default_ns.clone();
        let (ns1, ns2) = (chain.ns1.clone(), chain.ns2.clone());
        // Veth pairs are made inside the test namespaces, never in the machine's own.
        ip(&[
            "-n", &ns1, "link", "add", "veth1", "type", "veth", "peer", "name", "veth0", "netns",
            &d,
        ])?;
        ip(&[
            "-n", &ns2, "link", "add", "veth3", "type", "veth", "peer", "name", "veth2", "netns",
            &d,
        ])?;
        for (ns, device, address) in [
            (&d, "veth0", "10.0.0.11/24"),
            (&ns1, "veth1", "10.0.0.1/24"),
            (&d, "veth2", "10.0.1.11/24"),
            (&ns2, "veth3", "10.0.1.1/24"),
        ] {
            ip(&["-n", ns, "addr", "add", address, "dev", device])?;
            ip(&["-n", ns, "link", "set", device, "up"])?;
        }
        for ns in [&d, &ns1, &ns2] {
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            // Loopback reuses TIME_WAIT ports by default (tcp_tw_reuse = 2); veth does not,
            // and the connection-rate load would run out of ports without it.
            run(Command::new("ip").args([
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv4.tcp_tw_reuse=1",
            ]))?;
        }
        Ok(chain)
    }
}

impl Drop for NamespaceChain {
    fn drop(&mut self) {
        for name in [&self.ns1, &self.ns2, &self.default_ns] {
            if name.is_empty() {
                continue;
            }
            match cleanup::delete_namespace(name) {
                Ok(()) => cleanup::unregister_namespace(name),
                Err(error) => eprintln!("uringgost-bench: namespace {name} left behind: {error:#}"),
            }
        }
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port)
}

fn ip(args: &[&str]) -> Result<()> {
    run(Command::new("ip").args(args))
}

fn run(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
