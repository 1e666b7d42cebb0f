//! Dialers: outbound TCP connections, from the process's own namespace or from sockets the
//! namespace helper pre-opened in another one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::time::Duration;

use monoio::net::TcpStream;
use socket2::SockAddr;

use crate::netns::{NamespaceHelper, NamespaceId, NamespaceRef, SocketRequestError, Transport};
use crate::stream::{borrow, socket_ref};

/// A pool asks the helper for more sockets when it holds fewer than this.
const POOL_LOW_WATER: usize = 16;
/// Sockets the helper creates per request.
const POOL_BATCH: usize = 32;

/// One core's pools of unconnected sockets, one pool per namespace, transport and address
/// family.
///
/// Refills are asked for before a pool runs dry and collected without waiting, so a dial
/// waits for the helper only when connections arrive faster than the pool refills.
pub struct OutboundPools {
    helper: NamespaceHelper,
    pools: RefCell<HashMap<PoolKey, Pool>>,
}

/// Which sockets a pool holds: created in a namespace, of a transport, IPv6 or not.
type PoolKey = (NamespaceId, Transport, bool);

type Refill = flume::Receiver<Result<Vec<OwnedFd>, SocketRequestError>>;

#[derive(Default)]
struct Pool {
    ready: Vec<OwnedFd>,
    refill: Option<Refill>,
}

impl OutboundPools {
    /// Empty pools served by `helper`.
    pub fn new(helper: NamespaceHelper) -> OutboundPools {
        OutboundPools {
            helper,
            pools: RefCell::new(HashMap::new()),
        }
    }

    /// True when a pool for these sockets exists (filled, or refilled as dials need it).
    pub fn has(&self, netns: NamespaceId, transport: Transport, ipv6: bool) -> bool {
        self.pools.borrow().contains_key(&(netns, transport, ipv6))
    }

    /// Fills the pool of `netns` ahead of the first dial; waits for the helper. Used at
    /// start, so that a namespace that cannot be entered is reported before serving.
    pub fn prefill(
        &self,
        netns: NamespaceId,
        transport: Transport,
        ipv6: bool,
    ) -> Result<(), SocketRequestError> {
        let fds = self
            .helper
            .request_sockets(netns, transport, ipv6, POOL_BATCH)
            .recv()
            .map_err(|_| SocketRequestError::Stopped)??;
        self.pools
            .borrow_mut()
            .entry((netns, transport, ipv6))
            .or_default()
            .ready
            .extend(fds);
        Ok(())
    }

    /// An unconnected socket of `transport` created in `netns`.
    pub async fn take(
        &self,
        netns: NamespaceId,
        transport: Transport,
        ipv6: bool,
    ) -> Result<OwnedFd, SocketRequestError> {
        let key = (netns, transport, ipv6);
        let own_request = {
            let mut pools = self.pools.borrow_mut();
            let pool = pools.entry(key).or_default();
            if let Some(refill) = &pool.refill {
                match refill.try_recv() {
                    Ok(Ok(fds)) => {
                        // After a burst the pool keeps at most two batches.
                        let room = (2 * POOL_BATCH).saturating_sub(pool.ready.len());
                        pool.ready.extend(fds.into_iter().take(room));
                        pool.refill = None;
                    }
                    Ok(Err(error)) => {
                        pool.refill = None;
                        return Err(error);
                    }
                    Err(flume::TryRecvError::Empty) => {}
                    Err(flume::TryRecvError::Disconnected) => pool.refill = None,
                }
            }
            if pool.ready.len() < POOL_LOW_WATER && pool.refill.is_none() {
                let refill = self
                    .helper
                    .request_sockets(netns, transport, ipv6, POOL_BATCH);
                pool.refill = Some(refill);
            }
            if let Some(fd) = pool.ready.pop() {
                return Ok(fd);
            }
            // Dry: this dial asks for one socket of its own rather than sharing the refill's
            // answer, which only `take` collects. One, not a batch: in a burst every waiting
            // dial asks, and batches would pile up idle sockets.
            self.helper.request_sockets(netns, transport, ipv6, 1)
        };
        let mut fds = own_request
            .recv_async()
            .await
            .map_err(|_| SocketRequestError::Stopped)??;
        fds.pop().ok_or(SocketRequestError::Stopped)
    }
}

/// Whether a dial failed for want of this process's or this machine's resources
/// (descriptors, buffers, memory, local ports) rather than through anything the far end did:
/// such a failure marks no node.
pub fn out_of_resources(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// Connects to `addr` from `netns` (`None`: the process's own namespace) within `timeout`.
pub async fn connect(
    pools: &OutboundPools,
    netns: Option<&NamespaceRef>,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let timed_out = || {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        )
    };
    let Some(netns) = netns else {
        // In the process's own namespace the runtime's CONNECT op does it in one submission,
        // with the outcome in its completion.
        let stream = monoio::time::timeout(timeout, TcpStream::connect_addr(addr))
            .await
            .map_err(|_| timed_out())??;
        stream.set_nodelay(true)?;
        return Ok(stream);
    };
    let fd = pools
        .take(netns.id, Transport::Tcp, addr.is_ipv6())
        .await
        .map_err(io::Error::other)?;
    let socket = socket2::Socket::from(fd);
    match socket.connect(&SockAddr::from(addr)) {
        Ok(()) => {}
        Err(error) if error.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(error) => return Err(error),
    }
    let stream = TcpStream::from_std(std::net::TcpStream::from(socket))?;
    monoio::time::timeout(timeout, stream.writable(false))
        .await
        .map_err(|_| timed_out())??;
    if let Some(error) = socket_ref(&borrow(&stream)).take_error()? {
        return Err(error);
    }
    Ok(stream)
}
