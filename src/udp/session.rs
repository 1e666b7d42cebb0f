//! One client's session: its connected socket to the target, its counters, and how it is
//! told to end.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::task::{Poll, Waker};

use monoio::net::udp::UdpSocket;

use super::Counter;
use super::table::SlotId;
use crate::route::Target;

/// A client's session on one executor.
pub(super) struct Session {
    /// The client's address, where replies go.
    pub client: SocketAddr,
    /// The service address the client sent to, when the service listens on a wildcard
    /// address: replies leave from it.
    pub local: Option<IpAddr>,
    /// The target's node name, for logs.
    pub target: Arc<str>,
    /// Connected to the target, so the kernel delivers only the target's datagrams.
    pub upstream: UdpSocket,
    /// The session's entry in the table while it is there.
    pub slot: Cell<Option<SlotId>>,
    /// Set once the session must end.
    pub closing: Closing,
    /// Datagrams forwarded to the target.
    pub to_target: Counter,
    /// Datagrams forwarded to the client.
    pub from_target: Counter,
    /// Datagrams dropped, either way.
    pub dropped: Counter,
}

impl Session {
    /// A session for `client` (which sent to `local`) on `fd`, an unconnected UDP socket,
    /// connected to `target`.
    pub fn connect(
        fd: OwnedFd,
        client: SocketAddr,
        local: Option<IpAddr>,
        target: &Target,
    ) -> io::Result<Session> {
        let socket = socket2::Socket::from(fd);
        socket
            .connect(&target.socket_addr.into())
            .map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("connect to {}: {error}", target.socket_addr),
                )
            })?;
        let upstream = UdpSocket::from_std(socket.into())?;
        Ok(Session {
            client,
            local,
            target: Arc::from(target.name.as_str()),
            upstream,
            slot: Cell::new(None),
            closing: Closing::default(),
            to_target: Counter::default(),
            from_target: Counter::default(),
            dropped: Counter::default(),
        })
    }

    /// Ends the session, which has left the table, for `reason`.
    pub fn close(&self, reason: &'static str) {
        self.slot.set(None);
        self.closing.close(reason.to_owned());
    }

    /// Ends the session because its socket failed; the reply task removes it from the table.
    pub fn close_with_error(&self, error: io::Error) {
        self.closing.close(format!("socket failed: {error}"));
    }

    /// Logs the end of the session: at debug level, or info when it lost datagrams.
    pub fn log_end(&self, service: &str) {
        let reason = self.closing.reason();
        let reason = reason.as_deref().unwrap_or("stopped");
        let (to_target, from_target, dropped) = (
            self.to_target.get(),
            self.from_target.get(),
            self.dropped.get(),
        );
        if dropped == 0 {
            tracing::debug!(
                service = %service, peer = %self.client, target = %self.target,
                to_target, from_target, dropped, reason, "udp session closed"
            );
        } else {
            tracing::info!(
                service = %service, peer = %self.client, target = %self.target,
                to_target, from_target, dropped, reason, "udp session closed"
            );
        }
    }
}

/// The signal that ends a session's reply task.
#[derive(Default)]
pub(super) struct Closing {
    reason: RefCell<Option<String>>,
    waker: Cell<Option<Waker>>,
}

impl Closing {
    /// Records the first reason and wakes the task waiting in [`Closing::wait`].
    fn close(&self, reason: String) {
        self.reason.borrow_mut().get_or_insert(reason);
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn reason(&self) -> Option<String> {
        self.reason.borrow().clone()
    }

    /// Completes once the session is closed.
    pub async fn wait(&self) {
        poll_fn(|context| {
            if self.reason.borrow().is_some() {
                Poll::Ready(())
            } else {
                self.waker.set(Some(context.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

/// A service's counters on one executor.
#[derive(Default)]
pub(super) struct Stats {
    /// Sessions opened.
    pub opened: Counter,
    /// Sessions closed after `ttl` idle.
    pub expired: Counter,
    /// Sessions evicted because the table was full.
    pub evicted: Counter,
    /// Datagrams larger than `bufferSize`.
    pub dropped_oversize: Counter,
    /// Datagrams a socket did not take, or that had no session to go through.
    pub dropped_unsent: Counter,
}

/// The counters' values at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Totals {
    pub opened: u64,
    pub expired: u64,
    pub evicted: u64,
    pub dropped_oversize: u64,
    pub dropped_unsent: u64,
}

impl Stats {
    /// The counters now.
    pub fn snapshot(&self) -> Totals {
        Totals {
            opened: self.opened.get(),
            expired: self.expired.get(),
            evicted: self.evicted.get(),
            dropped_oversize: self.dropped_oversize.get(),
            dropped_unsent: self.dropped_unsent.get(),
        }
    }
}

impl Totals {
    /// Whether datagrams were dropped or sessions evicted since `earlier`.
    pub fn has_losses_since(&self, earlier: &Totals) -> bool {
        self.evicted > earlier.evicted
            || self.dropped_oversize > earlier.dropped_oversize
            || self.dropped_unsent > earlier.dropped_unsent
    }
}
