//! The setns helper thread: the only thread that changes network namespace.
//!
//! It enters a namespace, creates sockets there and returns to the process's own namespace.
//! A socket keeps the namespace it was created in for its whole life, so executors can bind,
//! connect and relay on it from their own namespace.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::thread::JoinHandle;

use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Protocol, Socket, Type};

use super::{NamespaceId, NamespaceTable};

/// Connections a listener queues before accepting; the kernel caps it at somaxconn.
const LISTEN_BACKLOG: i32 = 4096;

/// The transport of an outbound socket the helper creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// A TCP stream socket.
    Tcp,
    /// A UDP datagram socket.
    Udp,
}

/// Why the helper could not provide sockets.
#[derive(Debug, thiserror::Error)]
pub enum SocketRequestError {
    /// Entering the namespace failed.
    #[error("cannot enter network namespace {netns}: {source}")]
    Enter {
        /// The namespace, as configured.
        netns: String,
        /// What setns said.
        source: io::Error,
    },
    /// Creating, binding or listening failed.
    #[error("cannot {action} {addr}{location}: {source}")]
    Socket {
        /// What was being done.
        action: &'static str,
        /// The address.
        addr: String,
        /// ` in network namespace X`, or empty.
        location: String,
        /// What the kernel said.
        source: io::Error,
    },
    /// The helper thread is gone.
    #[error("the namespace helper thread has stopped")]
    Stopped,
}

enum Job {
    Listeners {
        netns: Option<NamespaceId>,
        addr: SocketAddr,
        count: usize,
        reply: flume::Sender<Result<Vec<TcpListener>, SocketRequestError>>,
    },
    DatagramSockets {
        netns: Option<NamespaceId>,
        addr: SocketAddr,
        count: usize,
        reply: flume::Sender<Result<Vec<UdpSocket>, SocketRequestError>>,
    },
    Sockets {
        netns: NamespaceId,
        transport: Transport,
        ipv6: bool,
        count: usize,
        reply: flume::Sender<Result<Vec<OwnedFd>, SocketRequestError>>,
    },
    Resolve {
        netns: Option<NamespaceId>,
        authority: String,
        reply: flume::Sender<io::Result<SocketAddr>>,
    },
}

/// The namespaces, read by the helper and resolver threads for each job and extended by a
/// reload; executors never touch it.
type SharedTable = Arc<RwLock<NamespaceTable>>;

/// A handle to the helper threads; cheap to clone, one per executor.
#[derive(Clone)]
pub struct NamespaceHelper {
    jobs: flume::Sender<Job>,
    lookups: Arc<Lookups>,
}

/// Threads that resolve host names, all serving one queue: a lookup blocks its thread for as
/// long as the DNS server takes, so a few run at once and one slow name does not hold up
/// the others.
const RESOLVER_THREADS: usize = 4;

/// The resolver threads, started at the first name lookup: most routes never need them, and
/// a lookup must not hold up socket creation behind a slow DNS server.
struct Lookups {
    table: SharedTable,
    home: Arc<File>,
    jobs: OnceLock<flume::Sender<Job>>,
}

impl NamespaceHelper {
    /// Starts the helper thread, which owns the opened namespaces from now on.
    pub fn start(table: NamespaceTable) -> io::Result<(NamespaceHelper, JoinHandle<()>)> {
        let home = Arc::new(File::open("/proc/thread-self/ns/net")?);
        let table = Arc::new(RwLock::new(table));
        let (jobs, queue) = flume::unbounded();
        let thread = {
            let (table, home) = (table.clone(), home.clone());
            std::thread::Builder::new()
                .name("ug-netns".to_owned())
                .spawn(move || serve(&table, &home, queue))?
        };
        let lookups = Arc::new(Lookups {
            table,
            home,
            jobs: OnceLock::new(),
        });
        Ok((NamespaceHelper { jobs, lookups }, thread))
    }

    /// A copy of the namespace table, for a reload to compile into.
    pub fn table_snapshot(&self) -> io::Result<NamespaceTable> {
        self.lookups
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .try_clone()
    }

    /// Replaces the namespace table with `table`, which must extend the current one (a
    /// [`NamespaceHelper::table_snapshot`] with entries added), so every id in use stays valid.
    pub fn install_table(&self, table: NamespaceTable) {
        *self
            .lookups
            .table
            .write()
            .unwrap_or_else(PoisonError::into_inner) = table;
    }

    /// Creates `count` SO_REUSEPORT listeners on `addr` in `netns` (or in the process's own
    /// namespace), one per executor. Blocks until they exist; used at start and reload.
    pub fn listeners(
        &self,
        netns: Option<NamespaceId>,
        addr: SocketAddr,
        count: usize,
    ) -> Result<Vec<TcpListener>, SocketRequestError> {
        self.wait_for(|reply| Job::Listeners {
            netns,
            addr,
            count,
            reply,
        })
    }

    /// Creates `count` SO_REUSEPORT UDP sockets bound to `addr` in `netns` (or in the
    /// process's own namespace), one per executor. Blocks until they exist; used at start and
    /// reload.
    pub fn datagram_sockets(
        &self,
        netns: Option<NamespaceId>,
        addr: SocketAddr,
        count: usize,
    ) -> Result<Vec<UdpSocket>, SocketRequestError> {
        self.wait_for(|reply| Job::DatagramSockets {
            netns,
            addr,
            count,
            reply,
        })
    }

    /// Sends the job `make` builds around a reply channel, and blocks for the answer.
    fn wait_for<T>(
        &self,
        make: impl FnOnce(flume::Sender<Result<T, SocketRequestError>>) -> Job,
    ) -> Result<T, SocketRequestError> {
        let (reply, answer) = flume::bounded(1);
        self.jobs
            .send(make(reply))
            .map_err(|_| SocketRequestError::Stopped)?;
        answer.recv().map_err(|_| SocketRequestError::Stopped)?
    }

    /// Asks for `count` unconnected non-blocking sockets of `transport` created in `netns`.
    /// Returns at once; the answer arrives on the returned channel.
    pub fn request_sockets(
        &self,
        netns: NamespaceId,
        transport: Transport,
        ipv6: bool,
        count: usize,
    ) -> flume::Receiver<Result<Vec<OwnedFd>, SocketRequestError>> {
        let (reply, answer) = flume::bounded(1);
        if let Err(flume::SendError(Job::Sockets { reply, .. })) = self.jobs.send(Job::Sockets {
            netns,
            transport,
            ipv6,
            count,
            reply,
        }) {
            // The helper is gone: answer on its behalf so the caller does not wait forever.
            let _ = reply.send(Err(SocketRequestError::Stopped));
        }
        answer
    }

    /// Resolves `host:port` from inside `netns`, so the query leaves from the namespace the
    /// connection will. Returns at once; the answer arrives on the returned channel.
    ///
    /// Lookups run on resolver threads of their own (`ug-resolve`, [`RESOLVER_THREADS`] of
    /// them), so a slow DNS server never delays socket creation and delays other lookups only
    /// once every resolver is waiting on it; callers bound the wait.
    pub fn resolve(
        &self,
        netns: Option<NamespaceId>,
        authority: String,
    ) -> flume::Receiver<io::Result<SocketAddr>> {
        let (reply, answer) = flume::bounded(1);
        let lookups = self.lookups.jobs.get_or_init(|| {
            let (jobs, queue) = flume::unbounded();
            for _ in 0..RESOLVER_THREADS {
                let (table, home) = (self.lookups.table.clone(), self.lookups.home.clone());
                let queue = queue.clone();
                let started = std::thread::Builder::new()
                    .name("ug-resolve".to_owned())
                    .spawn(move || serve(&table, &home, queue));
                if let Err(error) = started {
                    // With no resolver at all the queue has no receiver: every lookup fails.
                    tracing::error!(%error, "cannot start a resolver thread");
                }
            }
            jobs
        });
        if let Err(flume::SendError(Job::Resolve { reply, .. })) = lookups.send(Job::Resolve {
            netns,
            authority,
            reply,
        }) {
            let _ = reply.send(Err(io::Error::other(SocketRequestError::Stopped)));
        }
        answer
    }
}

fn serve(table: &SharedTable, home: &File, queue: flume::Receiver<Job>) {
    for job in queue.iter() {
        let guard = table.read().unwrap_or_else(PoisonError::into_inner);
        let table = &*guard;
        match job {
            Job::Listeners {
                netns,
                addr,
                count,
                reply,
            } => {
                let result = bound(table, home, netns, addr, count, Type::STREAM, bind_listener);
                // The requester may have given up; nothing is owed to it then.
                let _ = reply.send(result);
            }
            Job::DatagramSockets {
                netns,
                addr,
                count,
                reply,
            } => {
                let result = bound(table, home, netns, addr, count, Type::DGRAM, bind_datagram);
                let _ = reply.send(result);
            }
            Job::Sockets {
                netns,
                transport,
                ipv6,
                count,
                reply,
            } => {
                let result = within(table, home, Some(netns), || {
                    (0..count)
                        .map(|_| match transport {
                            Transport::Tcp => outbound_socket(ipv6),
                            Transport::Udp => outbound_datagram_socket(ipv6),
                        })
                        .collect::<io::Result<Vec<_>>>()
                })
                .and_then(|created| {
                    created.map_err(|source| SocketRequestError::Socket {
                        action: "create an outbound socket for",
                        addr: if ipv6 { "IPv6" } else { "IPv4" }.to_owned(),
                        location: location(table, Some(netns)),
                        source,
                    })
                });
                let _ = reply.send(result);
            }
            Job::Resolve {
                netns,
                authority,
                reply,
            } => {
                let entered = netns.map_or(Ok(()), |id| enter(table, id));
                // A slow DNS server must not keep a reload waiting for the table.
                drop(guard);
                let result = entered.map_err(io::Error::other).and_then(|()| {
                    authority.to_socket_addrs()?.next().ok_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, "the name has no addresses")
                    })
                });
                if netns.is_some() {
                    return_home(home);
                }
                let _ = reply.send(result);
            }
        }
    }
}

fn location(table: &NamespaceTable, netns: Option<NamespaceId>) -> String {
    netns
        .map(|id| format!(" in network namespace {}", table.name(id)))
        .unwrap_or_default()
}

/// Runs `bind` `count` times inside `netns`, naming the address and namespace on failure.
fn bound<S>(
    table: &NamespaceTable,
    home: &File,
    netns: Option<NamespaceId>,
    addr: SocketAddr,
    count: usize,
    kind: Type,
    bind: fn(SocketAddr) -> Result<S, (&'static str, io::Error)>,
) -> Result<Vec<S>, SocketRequestError> {
    within(table, home, netns, || {
        // SO_REUSEPORT would let these sockets join a group some other process (or an
        // earlier instance) already bound, and split its traffic silently: an exclusive bind
        // first proves the address is free.
        exclusive_probe(addr, kind)?;
        (0..count)
            .map(|_| bind(addr))
            .collect::<Result<Vec<_>, _>>()
    })
    .and_then(|created| {
        created.map_err(|(action, source)| SocketRequestError::Socket {
            action,
            addr: addr.to_string(),
            location: location(table, netns),
            source,
        })
    })
}

/// Runs `work` inside `netns` and returns to `home`.
fn within<T>(
    table: &NamespaceTable,
    home: &File,
    netns: Option<NamespaceId>,
    work: impl FnOnce() -> T,
) -> Result<T, SocketRequestError> {
    let Some(id) = netns else {
        return Ok(work());
    };
    enter(table, id)?;
    let result = work();
    return_home(home);
    Ok(result)
}

/// Moves the calling thread into namespace `id`.
fn enter(table: &NamespaceTable, id: NamespaceId) -> Result<(), SocketRequestError> {
    setns(table.file(id).as_fd(), CloneFlags::CLONE_NEWNET).map_err(|errno| {
        SocketRequestError::Enter {
            netns: table.name(id).to_owned(),
            source: errno.into(),
        }
    })
}

/// Moves the calling thread back to the process's own namespace.
fn return_home(home: &File) {
    if let Err(errno) = setns(home.as_fd(), CloneFlags::CLONE_NEWNET) {
        // Every later socket would land in the wrong namespace; there is no safe way on.
        tracing::error!(%errno, "cannot return the namespace helper to its own namespace");
        std::process::abort();
    }
}

fn bind_listener(addr: SocketAddr) -> Result<TcpListener, (&'static str, io::Error)> {
    let socket = reusable_bound(addr, Type::STREAM, Protocol::TCP, "create a listener for")?;
    // Accepted sockets inherit it, which saves a setsockopt per connection.
    socket
        .set_tcp_nodelay(true)
        .map_err(|error| ("set TCP_NODELAY on", error))?;
    socket
        .listen(LISTEN_BACKLOG)
        .map_err(|error| ("listen on", error))?;
    Ok(socket.into())
}

/// A non-blocking SO_REUSEPORT UDP socket bound to a service's address: the kernel hashes
/// each client's address to one of them, so a client's datagrams stay on one executor.
///
/// On a wildcard address it also reports each datagram's local address (IP_PKTINFO), so that
/// replies leave from the address the client sent to.
fn bind_datagram(addr: SocketAddr) -> Result<UdpSocket, (&'static str, io::Error)> {
    let socket = reusable_bound(addr, Type::DGRAM, Protocol::UDP, "create a UDP socket for")?;
    if addr.ip().is_unspecified() {
        let (level, option) = if addr.is_ipv6() {
            (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
        } else {
            (libc::IPPROTO_IP, libc::IP_PKTINFO)
        };
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads an int option value of the given size.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                level,
                option,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(("turn on packet info for", io::Error::last_os_error()));
        }
    }
    Ok(socket.into())
}

/// Fails when a socket of any process already listens on `addr` (or on the same port of
/// the wildcard address) in the current namespace: with SO_REUSEPORT the new listeners would
/// join its group and split its traffic silently. Read from the kernel's socket table rather
/// than tried with a bind, which the TIME_WAIT and closing connections an instance leaves
/// behind would fail for a while after every restart.
fn exclusive_probe(addr: SocketAddr, kind: Type) -> Result<(), (&'static str, io::Error)> {
    let (table, bound_state) = match (kind == Type::STREAM, addr.is_ipv6()) {
        // TCP_LISTEN; an unconnected bound UDP socket shows as TCP_CLOSE.
        (true, false) => ("tcp", "0A"),
        (true, true) => ("tcp6", "0A"),
        (false, false) => ("udp", "07"),
        (false, true) => ("udp6", "07"),
    };
    // An instance that has just exited still shows its listeners for a moment, while the
    // kernel tears its io_uring down: a restart waits that moment out.
    for _ in 0..PREDECESSOR_GRACE_STEPS {
        if !listening_there(addr, table, bound_state)? {
            return Ok(());
        }
        std::thread::sleep(PREDECESSOR_GRACE_STEP);
    }
    let error = io::Error::new(
        io::ErrorKind::AddrInUse,
        "another process (or another instance) already listens there",
    );
    Err(("bind", error))
}

/// How long, in steps, a listener of another process may linger before it counts as live.
const PREDECESSOR_GRACE_STEPS: usize = 20;
const PREDECESSOR_GRACE_STEP: std::time::Duration = std::time::Duration::from_millis(50);

fn listening_there(
    addr: SocketAddr,
    table: &str,
    bound_state: &str,
) -> Result<bool, (&'static str, io::Error)> {
    let path = format!("/proc/thread-self/net/{table}");
    let sockets = std::fs::read_to_string(&path)
        .map_err(|error| ("read the socket table to check", error))?;
    Ok(sockets.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3
            && fields[3] == bound_state
            && parse_proc_address(fields[1]).is_some_and(|held| {
                held.port() == addr.port()
                    && (held.ip() == addr.ip()
                        || held.ip().is_unspecified()
                        || addr.ip().is_unspecified())
            })
    }))
}

/// `0100007F:1F90` (address words in host byte order, port in hex) as /proc/net/tcp prints it.
fn parse_proc_address(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in 0..ip.len() / 8 {
        let value = u32::from_str_radix(ip.get(word * 8..word * 8 + 8)?, 16).ok()?;
        bytes.extend_from_slice(&value.to_ne_bytes());
    }
    let ip: std::net::IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// A non-blocking socket bound to `addr` with SO_REUSEPORT, so that every executor binds
/// its own; an IPv6 one takes IPv6 only, leaving IPv4 to a service of its own.
fn reusable_bound(
    addr: SocketAddr,
    kind: Type,
    protocol: Protocol,
    create: &'static str,
) -> Result<Socket, (&'static str, io::Error)> {
    let socket =
        Socket::new(Domain::for_address(addr), kind, Some(protocol)).map_err(|e| (create, e))?;
    if kind == Type::STREAM {
        // Only for TCP: on UDP it would let unrelated sockets share the port.
        socket
            .set_reuse_address(true)
            .map_err(|error| ("set SO_REUSEADDR on", error))?;
    }
    socket
        .set_reuse_port(true)
        .map_err(|error| ("set SO_REUSEPORT on", error))?;
    if addr.is_ipv6() {
        socket
            .set_only_v6(true)
            .map_err(|error| ("set IPV6_V6ONLY on", error))?;
    }
    socket
        .set_nonblocking(true)
        .map_err(|error| ("make non-blocking", error))?;
    socket.bind(&addr.into()).map_err(|error| ("bind", error))?;
    Ok(socket)
}

/// An unconnected non-blocking UDP socket for one session's datagrams to its target.
pub fn outbound_datagram_socket(ipv6: bool) -> io::Result<OwnedFd> {
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::DGRAM.nonblocking(), Some(Protocol::UDP))?;
    Ok(socket.into())
}

/// An unconnected non-blocking socket for an outbound connection. TCP_NODELAY is set here,
/// off the hot path, because a relay forwards whatever arrives without waiting to fill
/// segments.
pub fn outbound_socket(ipv6: bool) -> io::Result<OwnedFd> {
    let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
    let socket = Socket::new(domain, Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    socket.set_tcp_nodelay(true)?;
    Ok(socket.into())
}
