//! Thread-per-core executors: one runtime per thread, pinned to one CPU, accepting on its
//! own SO_REUSEPORT listener of every service. A connection lives and dies on the core that
//! accepted it; executors share nothing but the namespace helper's queue.
//!
//! An executor serves what the main thread sends it as a [`Services`] message: once at start,
//! and again at each reload. A new message replaces the accept loops and changed UDP
//! services; connections already accepted finish on the routes they started with.

mod accept;
mod stop;

pub use stop::Stop;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::rc::Rc;
use std::thread::JoinHandle;

use anyhow::Context;
use monoio::{FusionDriver, RuntimeBuilder};

use crate::dialer::OutboundPools;
use crate::netns::{NamespaceHelper, NamespaceId, Transport};
use crate::route::{Egress, Handler, Routes, UdpService};

/// The runtime every executor runs: io_uring with timers, or epoll where io_uring is missing.
type Runtime = monoio::FusionRuntime<
    monoio::time::TimeDriver<monoio::IoUringDriver>,
    monoio::time::TimeDriver<monoio::LegacyDriver>,
>;

/// Submission queue entries per executor ring.
const RING_ENTRIES: u32 = 4096;

/// What one executor owns.
pub struct Core {
    /// The executor's index, from 0.
    pub index: usize,
    /// Its pools of sockets pre-opened in other namespaces.
    pub pools: OutboundPools,
    /// The namespace helper, for name resolution.
    pub helper: NamespaceHelper,
    /// Connections lost to this process running out of resources, logged in summary.
    pub exhaustion: ExhaustionLog,
}

/// Connections that failed because this process or machine ran out of descriptors, buffers
/// or memory: one warning, then one summary at most every [`ExhaustionLog::INTERVAL`], so an
/// exhausted gateway does not also flood its log with a line per connection.
#[derive(Default)]
pub struct ExhaustionLog {
    last_warning: std::cell::Cell<Option<std::time::Instant>>,
    unlogged: std::cell::Cell<u64>,
}

impl ExhaustionLog {
    /// The least time between two warnings.
    pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

    /// Records one connection lost for `error` on `service`; warns if the last warning is
    /// old enough, counting the connections lost since.
    pub fn lost(&self, executor: usize, service: &str, error: &str) {
        let now = std::time::Instant::now();
        let due = self
            .last_warning
            .get()
            .is_none_or(|last| now.duration_since(last) >= Self::INTERVAL);
        if due {
            let since_last = self.unlogged.replace(0);
            self.last_warning.set(Some(now));
            tracing::warn!(
                executor, service, %error, lost_since_last_warning = since_last,
                "connection failed: out of local resources (further ones are summarized)"
            );
        } else {
            self.unlogged.set(self.unlogged.get() + 1);
            tracing::debug!(executor, service, %error, "connection failed: out of local resources");
        }
    }
}

/// Everything an executor thread is started with.
pub struct ExecutorPlan {
    /// The executor's index.
    pub index: usize,
    /// The CPU it is pinned to, if pinning is possible.
    pub cpu: Option<usize>,
    /// The namespace helper.
    pub helper: NamespaceHelper,
    /// Where the services to serve arrive, at start and at each reload.
    pub updates: flume::Receiver<Services>,
}

/// The services an executor is to serve from now on, with its own sockets for them.
pub struct Services {
    /// Its own copy of the routes.
    pub routes: Routes,
    /// Its listener for each service, in the order of `routes.services`.
    pub listeners: Vec<TcpListener>,
    /// Its socket for each UDP service, in the order of `routes.udp_services`; `None` keeps
    /// the UDP service already running on the same address (unchanged by a reload), with
    /// its sessions.
    pub datagram_sockets: Vec<Option<UdpSocket>>,
    /// Answered once the services are in place, or with why they could not be.
    pub done: flume::Sender<anyhow::Result<()>>,
}

/// Starts an executor thread. `ready` receives `Ok` once its runtime runs, or the reason it
/// cannot; it then serves each [`Services`] message that arrives on the plan's channel.
pub fn spawn(
    plan: ExecutorPlan,
    ready: std::sync::mpsc::Sender<anyhow::Result<()>>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("ug-exec-{}", plan.index))
        .spawn(move || {
            let index = plan.index;
            if let Err(error) = run(plan, &ready) {
                tracing::error!(
                    executor = index,
                    error = format!("{error:#}"),
                    "executor stopped"
                );
                // Start may still be waiting for this executor.
                let _ = ready.send(Err(error));
            }
        })
}

fn run(
    plan: ExecutorPlan,
    ready: &std::sync::mpsc::Sender<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let ExecutorPlan {
        index,
        cpu,
        helper,
        updates,
    } = plan;
    if let Some(cpu) = cpu {
        pin_to(cpu).with_context(|| format!("executor {index}: cannot pin to CPU {cpu}"))?;
    }
    let core = Rc::new(Core {
        index,
        pools: OutboundPools::new(helper.clone()),
        helper,
        exhaustion: ExhaustionLog::default(),
    });
    let mut runtime =
        build_runtime().with_context(|| format!("executor {index}: cannot build the runtime"))?;
    runtime.block_on(async move {
        let _ = ready.send(Ok(()));
        let mut serving = Serving::default();
        // Ends when the main thread drops its sender, which it does only on its way out.
        while let Ok(services) = updates.recv_async().await {
            let done = services.done.clone();
            let _ = done.send(serving.replace(&core, services));
        }
    });
    Ok(())
}

/// What an executor serves now: a stop signal per running task.
#[derive(Default)]
struct Serving {
    accepting: Vec<Rc<Stop>>,
    datagrams: HashMap<(Option<NamespaceId>, SocketAddr), Rc<Stop>>,
}

impl Serving {
    /// Stops what `services` replaces and starts what it adds.
    fn replace(&mut self, core: &Rc<Core>, services: Services) -> anyhow::Result<()> {
        let index = core.index;
        let Services {
            routes,
            listeners,
            datagram_sockets,
            ..
        } = services;
        let first = self.accepting.is_empty() && self.datagrams.is_empty();
        for (netns, transport, ipv6) in outbound_namespaces(&routes) {
            if core.pools.has(netns, transport, ipv6) {
                continue;
            }
            let filled = core.pools.prefill(netns, transport, ipv6);
            match filled {
                Ok(()) => {}
                // At start, a namespace that cannot be used stops the start; at a reload,
                // dials refill the pool (and report the failure) when they need it.
                Err(error) if first => {
                    return Err(error)
                        .with_context(|| format!("executor {index}: cannot pre-open sockets"));
                }
                Err(error) => tracing::warn!(
                    executor = index, error = %error,
                    "cannot pre-open outbound sockets; dials will retry"
                ),
            }
        }

        let mut accepting = Vec::with_capacity(listeners.len());
        for (service, listener) in routes.services.into_iter().zip(listeners) {
            let name = service.name.clone();
            let listener = monoio::net::TcpListener::from_std(listener).with_context(|| {
                format!("executor {index}: service {name}: adopting the listener")
            })?;
            let stop = Stop::new();
            monoio::spawn(accept::serve(
                core.clone(),
                Rc::new(service),
                listener,
                stop.clone(),
            ));
            accepting.push(stop);
        }
        for stop in std::mem::replace(&mut self.accepting, accepting) {
            stop.give();
        }

        let mut datagrams = HashMap::new();
        for (service, socket) in routes.udp_services.into_iter().zip(datagram_sockets) {
            let key = udp_key(&service);
            let Some(socket) = socket else {
                match self.datagrams.remove(&key) {
                    Some(running) => {
                        datagrams.insert(key, running);
                    }
                    None => tracing::error!(
                        executor = index, service = %service.name,
                        "udp service to keep is not running here"
                    ),
                }
                continue;
            };
            let name = service.name.clone();
            let socket = monoio::net::udp::UdpSocket::from_std(socket).with_context(|| {
                format!("executor {index}: service {name}: adopting the UDP socket")
            })?;
            let stop = Stop::new();
            monoio::spawn(crate::udp::serve(
                core.clone(),
                Rc::new(service),
                socket,
                stop.clone(),
            ));
            datagrams.insert(key, stop);
        }
        for (_, stop) in std::mem::replace(&mut self.datagrams, datagrams) {
            stop.give();
        }
        Ok(())
    }
}

/// Where a UDP service receives: a kept service is found again by this.
fn udp_key(service: &UdpService) -> (Option<NamespaceId>, SocketAddr) {
    (service.netns.as_ref().map(|netns| netns.id), service.listen)
}

/// The namespaces (with transports and address families) this executor dials from directly:
/// each gets a pool of pre-opened sockets.
fn outbound_namespaces(routes: &Routes) -> Vec<(crate::netns::NamespaceId, Transport, bool)> {
    let mut found = Vec::new();
    for service in &routes.udp_services {
        if let Some(netns) = &service.netns_out {
            let families = service
                .targets
                .nodes
                .iter()
                .map(|t| t.socket_addr.is_ipv6());
            found.extend(families.map(|ipv6| (netns.id, Transport::Udp, ipv6)));
        }
    }
    for service in &routes.services {
        let (egress, ipv6_targets) = match &service.handler {
            Handler::Forward {
                targets, egress, ..
            } => (
                egress,
                targets
                    .nodes
                    .iter()
                    .map(|t| t.socket_addr.is_ipv6())
                    .collect(),
            ),
            Handler::Proxy { egress, .. } => (egress, vec![false]),
        };
        match egress {
            Egress::Direct { netns: Some(netns) } => {
                let families = ipv6_targets.into_iter();
                found.extend(families.map(|ipv6| (netns.id, Transport::Tcp, ipv6)))
            }
            Egress::Direct { netns: None } => {}
            Egress::Chain(chain) => {
                found.extend(chain.hops[0].nodes.nodes.iter().filter_map(|node| {
                    node.netns
                        .as_ref()
                        .map(|netns| (netns.id, Transport::Tcp, node.socket_addr.is_ipv6()))
                }))
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

/// The executor's runtime. Its ring is set up for one thread that runs the kernel's
/// completion work only when it asks for completions (DEFER_TASKRUN, Linux 6.1): readiness
/// events and connects complete in one batch per wait instead of interrupting every
/// `recv`, `send` and `accept4` the executor makes in between. Older kernels refuse the
/// flags; the ring is then made without them.
fn build_runtime() -> std::io::Result<Runtime> {
    let mut deferred = io_uring::IoUring::builder();
    deferred.setup_single_issuer().setup_defer_taskrun();
    let built = RuntimeBuilder::<FusionDriver>::new()
        .with_entries(RING_ENTRIES)
        .uring_builder(deferred)
        .enable_timer()
        .build();
    match built {
        Ok(runtime) => Ok(runtime),
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
            tracing::info!(
                "io_uring refuses deferred task running (Linux 6.1 or newer has it); \
                 using a plain ring"
            );
            RuntimeBuilder::<FusionDriver>::new()
                .with_entries(RING_ENTRIES)
                .enable_timer()
                .build()
        }
        Err(error) => Err(error),
    }
}

fn pin_to(cpu: usize) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

/// The CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    }
}
