//! Handler `udp`: datagram forwarding through one session per client address.
//!
//! Each executor receives on its own SO_REUSEPORT socket of the service, so the kernel keeps
//! a client's datagrams on one core, and the NAT table of that core holds the client's
//! session: a socket connected to the session's target (the kernel then drops datagrams from
//! anyone else), created in the service's `netns.out`. Replies are sent to that client only,
//! from the service's own socket. A session ends after `ttl` without a datagram either way,
//! or when the table is full and it is the one idle the longest.
//!
//! Sockets are waited on through the runtime's driver (an io_uring POLL_ADD), then drained
//! with `recvmmsg(2)` and forwarded with `sendmmsg(2)` on the executor thread, a batch at a
//! time. The batch buffers are per service and core, not per session, so an idle session
//! costs a socket and a small task, and no buffer.

mod batch;
mod session;
mod table;

pub use table::{SessionTable, SlotId};

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::net::udp::UdpSocket;

use self::batch::{BATCH, Batch, Datagram};
use self::session::{Session, Stats};
use crate::executor::{Core, Stop};
use crate::netns::Transport;
use crate::route::UdpService;

/// Batches drained from one socket per readiness event before other tasks get a turn.
const ROUNDS: usize = 16;

/// How long to back off when waiting on the service's socket fails.
const FAILURE_BACKOFF: Duration = Duration::from_millis(100);

/// How often drops and evictions are summarized at info level, when there were any.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// One UDP service on one executor.
struct Service {
    core: Rc<Core>,
    route: Rc<UdpService>,
    socket: UdpSocket,
    table: RefCell<SessionTable<Rc<Session>>>,
    /// Shared by every session's reply task: each uses it only between two awaits.
    replies: RefCell<Batch>,
    stats: Stats,
}

/// Serves `route` on this executor's socket until `stop` is given (by a reload that changes
/// or removes the service); its sessions are closed then.
pub async fn serve(core: Rc<Core>, route: Rc<UdpService>, socket: UdpSocket, stop: Rc<Stop>) {
    let limits = route.sessions;
    let service = Rc::new(Service {
        core,
        socket,
        table: RefCell::new(SessionTable::new(limits.max_sessions)),
        replies: RefCell::new(Batch::new(limits.buffer_size)),
        stats: Stats::default(),
        route,
    });
    monoio::spawn(sweep(service.clone(), stop.clone()));
    receive(&service, &stop).await;
    let sessions = service.table.borrow_mut().drain();
    tracing::debug!(
        service = %service.route.name, executor = service.core.index, sessions = sessions.len(),
        "udp service stopped by a reload; closing its sessions"
    );
    for (_, session) in sessions {
        session.close("configuration reloaded");
    }
}

/// Client to target: drains the service's socket into the clients' sessions, until `stop`.
async fn receive(service: &Rc<Service>, stop: &Stop) {
    let mut batch = Batch::new(service.route.sessions.buffer_size);
    while let Some(ready) = stop.or(service.socket.readable(false)).await {
        if let Err(error) = ready {
            tracing::error!(
                service = %service.route.name, executor = service.core.index, %error,
                "udp socket failed"
            );
            stop.or(monoio::time::sleep(FAILURE_BACKOFF)).await;
            continue;
        }
        for _ in 0..ROUNDS {
            match batch.receive(service.socket.as_raw_fd()) {
                Ok(count) => {
                    service.forward(&mut batch).await;
                    if count < BATCH {
                        break;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    tracing::warn!(
                        service = %service.route.name, executor = service.core.index, %error,
                        "udp receive failed"
                    );
                    break;
                }
            }
        }
    }
}

impl Service {
    /// Forwards a received batch, each run of datagrams from one client with one send.
    async fn forward(self: &Rc<Self>, batch: &mut Batch) {
        let now = Instant::now();
        let mut index = 0;
        while index < batch.len() {
            let Some(client) = batch.source(index) else {
                index += 1;
                continue;
            };
            if let Datagram::Oversize(size) = batch.datagram(index) {
                self.stats.dropped_oversize.add(1);
                tracing::debug!(
                    service = %self.route.name, peer = %client, size,
                    limit = self.route.sessions.buffer_size,
                    "udp datagram dropped: larger than bufferSize"
                );
                if let Some(session) = self.table.borrow_mut().get(client, now) {
                    session.1.dropped.add(1);
                }
                index += 1;
                continue;
            }
            let end = (index + 1..batch.len())
                .find(|&next| {
                    batch.source(next) != Some(client)
                        || matches!(batch.datagram(next), Datagram::Oversize(_))
                })
                .unwrap_or(batch.len());
            let local = batch.local_address(index);
            match self.session(client, local, now).await {
                Some(session) => {
                    let sent = batch.send(session.upstream.as_raw_fd(), None, None, index..end);
                    session.to_target.add(sent.sent as u64);
                    self.unsent(&session, sent, "to target");
                }
                None => self.stats.dropped_unsent.add((end - index) as u64),
            }
            index = end;
        }
    }

    /// The session of `client`, opened if it has none; `None` when it cannot be opened.
    /// `local`: the address the client sent to, when the service listens on a wildcard
    /// address; the session's replies leave from it.
    async fn session(
        self: &Rc<Self>,
        client: SocketAddr,
        local: Option<IpAddr>,
        now: Instant,
    ) -> Option<Rc<Session>> {
        if let Some((_, session)) = self.table.borrow_mut().get(client, now) {
            return Some(session.clone());
        }
        let target = self.route.choose_target(client.ip());
        let opened = match &self.route.netns_out {
            None => crate::netns::outbound_datagram_socket(target.socket_addr.is_ipv6()),
            Some(netns) => {
                let ipv6 = target.socket_addr.is_ipv6();
                self.core
                    .pools
                    .take(netns.id, Transport::Udp, ipv6)
                    .await
                    .map_err(io::Error::other)
            }
        };
        let session = opened
            .and_then(|fd| Session::connect(fd, client, local, target))
            .inspect_err(|error| {
                tracing::warn!(
                    service = %self.route.name, peer = %client, target = %target.name, %error,
                    "udp session not opened; datagram dropped"
                )
            })
            .ok()?;
        let session = Rc::new(session);
        let (slot, evicted) =
            self.table
                .borrow_mut()
                .insert(client, session.clone(), Instant::now());
        session.slot.set(Some(slot));
        self.stats.opened.add(1);
        if let Some((_, oldest)) = evicted {
            self.stats.evicted.add(1);
            oldest.close("evicted: maxSessions reached");
        }
        tracing::debug!(
            service = %self.route.name, peer = %client, target = %target.name,
            "udp session opened"
        );
        monoio::spawn(reply(self.clone(), session.clone()));
        Some(session)
    }

    /// Counts and logs datagrams a send left behind.
    fn unsent(&self, session: &Session, sent: batch::Sent, direction: &'static str) {
        let unsent = sent.attempted - sent.sent;
        if unsent == 0 {
            return;
        }
        self.stats.dropped_unsent.add(unsent as u64);
        session.dropped.add(unsent as u64);
        let error = sent
            .error
            .map_or_else(|| "not sent".to_owned(), |error| error.to_string());
        tracing::debug!(
            service = %self.route.name, peer = %session.client, target = %session.target,
            direction, unsent, %error, "udp datagrams dropped"
        );
    }
}

/// Target to client: the session's reply task, until the session is closed.
async fn reply(service: Rc<Service>, session: Rc<Session>) {
    let upstream = session.upstream.as_raw_fd();
    let client = socket2::SockAddr::from(session.client);
    'session: loop {
        let ready = monoio::select! {
            ready = session.upstream.readable(false) => ready,
            _ = session.closing.wait() => break 'session,
        };
        if let Err(error) = ready {
            session.close_with_error(error);
            break;
        }
        for _ in 0..ROUNDS {
            let mut batch = service.replies.borrow_mut();
            let count = match batch.receive(upstream) {
                Ok(count) => count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) if error.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    // ICMP port unreachable for an earlier datagram: the target may be
                    // restarting, so the session stays until its ttl.
                    tracing::debug!(
                        service = %service.route.name, peer = %session.client,
                        target = %session.target, "udp target refused a datagram"
                    );
                    continue;
                }
                Err(error) => {
                    session.close_with_error(error);
                    break 'session;
                }
            };
            if let Some(slot) = session.slot.get() {
                service.table.borrow_mut().touch(slot, Instant::now());
            }
            // Collected first: sending needs the batch mutably.
            let mut whole = [0; BATCH];
            let mut wholes = 0;
            for index in 0..count {
                if let Datagram::Oversize(size) = batch.datagram(index) {
                    service.stats.dropped_oversize.add(1);
                    session.dropped.add(1);
                    tracing::debug!(
                        service = %service.route.name, peer = %session.client,
                        target = %session.target, size,
                        limit = service.route.sessions.buffer_size,
                        "udp reply dropped: larger than bufferSize"
                    );
                } else {
                    whole[wholes] = index;
                    wholes += 1;
                }
            }
            // On a wildcard service address the reply leaves from the address the client
            // sent to, not from whichever address the route to the client would pick.
            let whole = whole[..wholes].iter().copied();
            let socket = service.socket.as_raw_fd();
            let sent = batch.send(socket, Some(&client), session.local, whole);
            session.from_target.add(sent.sent as u64);
            service.unsent(&session, sent, "to client");
            if count < BATCH {
                break;
            }
        }
    }
    if let Some(slot) = session.slot.take() {
        service.table.borrow_mut().remove(slot);
    }
    session.log_end(&service.route.name);
}

/// Closes sessions idle for `ttl`, and summarizes drops and evictions now and then, until
/// `stop`.
async fn sweep(service: Rc<Service>, stop: Rc<Stop>) {
    let ttl = service.route.sessions.ttl;
    let mut last_summary = Instant::now();
    let mut reported = service.stats.snapshot();
    loop {
        let now = Instant::now();
        let wake = service
            .table
            .borrow()
            .next_expiry(ttl)
            .unwrap_or(now + ttl)
            .min(last_summary + SUMMARY_INTERVAL);
        let pause = monoio::time::sleep(wake.saturating_duration_since(now));
        if stop.or(pause).await.is_none() {
            return;
        }

        let now = Instant::now();
        let expired = service.table.borrow_mut().expire(now, ttl);
        service.stats.expired.add(expired.len() as u64);
        for (_, session) in expired {
            session.close("idle for ttl");
        }
        if now.saturating_duration_since(last_summary) >= SUMMARY_INTERVAL {
            let current = service.stats.snapshot();
            if current.has_losses_since(&reported) {
                tracing::info!(
                    service = %service.route.name, executor = service.core.index,
                    sessions = service.table.borrow().len(),
                    opened = current.opened, expired = current.expired,
                    evicted = current.evicted, dropped_oversize = current.dropped_oversize,
                    dropped_unsent = current.dropped_unsent,
                    "udp service totals: datagrams dropped or sessions evicted"
                );
            }
            reported = current;
            last_summary = now;
        }
    }
}

/// A counter owned by one executor.
#[derive(Default)]
struct Counter(Cell<u64>);

impl Counter {
    fn add(&self, count: u64) {
        self.0.set(self.0.get() + count);
    }

    fn get(&self) -> u64 {
        self.0.get()
    }
}
