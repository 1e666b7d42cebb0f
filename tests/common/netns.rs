//! Network namespaces the tests create and delete, and threads that run inside them.

use std::any::Any;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use super::unique_name;

/// veth0 in D, the doc's "default namespace" side of the ns1 link.
pub const D_VETH0: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
/// veth1 in ns1.
pub const NS1_VETH1: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
/// veth2 in D, the "default namespace" side of the ns2 link.
pub const D_VETH2: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 11);
/// veth3 in ns2.
pub const NS2_VETH3: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);

/// A named network namespace (`ip netns add`), deleted on drop, even when the test panics.
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named after `role` with its loopback interface up.
    pub fn create(role: &str) -> Netns {
        let name = unique_name(role);
        run_ip(&["netns", "add", &name]);
        let netns = Netns { name };
        netns.ip(&["link", "set", "dev", "lo", "up"]);
        netns
    }

    /// Deletes the namespace and creates a new one under the same name, loopback up: what a
    /// process holding the old one still sees is no longer what the name refers to.
    pub fn recreate(&self) {
        run_ip(&["netns", "del", &self.name]);
        run_ip(&["netns", "add", &self.name]);
        self.ip(&["link", "set", "dev", "lo", "up"]);
    }

    /// The name under /run/netns, as a config's `netns` key takes it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file, for a config's path form (`/run/netns/NAME`).
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs `ip -n NAME ARGS...` and panics with ip's stderr if it fails.
    pub fn ip(&self, args: &[&str]) {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run_ip(&full);
    }

    /// Runs `f` on a new thread that has entered this namespace (see [`spawn_in`]).
    pub fn spawn<T, F>(&self, what: &str, f: F) -> Worker<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        spawn_in(&self.name, what, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let output = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        match output {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
            Err(error) => eprintln!("ip netns del {}: {error}", self.name),
        }
    }
}

/// The doc's topology with D standing in for the default namespace, which tests never touch:
///
/// ```text
/// ns1 [veth1 10.0.0.1] <-> [veth0 10.0.0.11] D [veth2 10.0.1.11] <-> [veth3 10.0.1.1] ns2
/// ```
///
/// ns1 and ns2 only reach their own /24; D reaches both.
pub struct Topology {
    /// Stand-in for the default namespace; the engine runs here.
    pub d: Netns,
    /// Where the doc's service listens and its client connects.
    pub ns1: Netns,
    /// Where the doc's HTTP proxy node lives and the chain's hop dials from.
    pub ns2: Netns,
}

impl Topology {
    /// Builds the three namespaces and both veth pairs, every interface up.
    pub fn doc() -> Topology {
        let topology = Topology {
            d: Netns::create("d"),
            ns1: Netns::create("n1"),
            ns2: Netns::create("n2"),
        };
        topology.link(("veth0", D_VETH0), &topology.ns1, ("veth1", NS1_VETH1));
        topology.link(("veth2", D_VETH2), &topology.ns2, ("veth3", NS2_VETH3));
        topology
    }

    /// A veth pair created inside D with its peer moved straight into `peer_netns`, so that
    /// no interface ever appears in the machine's own namespace.
    fn link(
        &self,
        (local, local_ip): (&str, Ipv4Addr),
        peer_netns: &Netns,
        peer: (&str, Ipv4Addr),
    ) {
        let (peer_name, peer_ip) = peer;
        let peer_ns = peer_netns.name();
        self.d.ip(&[
            "link", "add", local, "type", "veth", "peer", "name", peer_name, "netns", peer_ns,
        ]);
        self.d
            .ip(&["addr", "add", &format!("{local_ip}/24"), "dev", local]);
        self.d.ip(&["link", "set", "dev", local, "up"]);
        peer_netns.ip(&["addr", "add", &format!("{peer_ip}/24"), "dev", peer_name]);
        peer_netns.ip(&["link", "set", "dev", peer_name, "up"]);
    }
}

fn run_ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running ip {}: {error}", args.join(" ")));
    assert!(
        output.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// Moves the calling thread into the named network namespace for the rest of its life.
///
/// `setns(CLONE_NEWNET)` changes only the calling thread, which is what lets one test process
/// have threads in several namespaces at once.
pub fn enter(netns: &str) {
    let path = PathBuf::from("/run/netns").join(netns);
    let file = std::fs::File::open(&path)
        .unwrap_or_else(|error| panic!("opening {}: {error}", path.display()));
    // SAFETY: setns only reads the descriptor, which `file` keeps open during the call.
    let result = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        result,
        0,
        "setns into {netns}: {}",
        std::io::Error::last_os_error()
    );
}

/// Runs `f` on a new thread named `what` that first enters namespace `netns` and stays there.
pub fn spawn_in<T, F>(netns: &str, what: &str, f: F) -> Worker<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let (sender, receiver) = mpsc::channel();
    let netns = netns.to_owned();
    let handle = thread::Builder::new()
        .name(what.to_owned())
        .spawn(move || {
            enter(&netns);
            // A panic drops the sender, which is how `join` tells a panic from a timeout.
            let _ = sender.send(f());
        })
        .expect("spawning a test thread");
    Worker {
        what: what.to_owned(),
        receiver,
        handle,
    }
}

/// A thread started by [`spawn_in`] whose result is awaited with a bound on time.
pub struct Worker<T> {
    what: String,
    receiver: mpsc::Receiver<T>,
    handle: thread::JoinHandle<()>,
}

impl<T> Worker<T> {
    /// The thread's result; re-raises its panic, and panics if it takes longer than `timeout`
    /// (the thread is then left behind, blocked, until the test process exits).
    pub fn join(self, timeout: Duration) -> T {
        match self.receiver.recv_timeout(timeout) {
            Ok(value) => value,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                panic!("{} did not finish within {timeout:?}", self.what)
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => match self.handle.join() {
                Err(payload) => panic!("{} panicked: {}", self.what, panic_message(&*payload)),
                Ok(()) => unreachable!("{} ended without a result", self.what),
            },
        }
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a non-text panic".to_owned()
    }
}
