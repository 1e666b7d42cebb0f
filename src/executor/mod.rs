//! Thread-per-core executors: one runtime per thread, pinned to one CPU, accepting on its
//! own SO_REUSEPORT listener of every service. A connection lives and dies on the core that
//! accepted it; executors share nothing but the namespace helper's queue.

mod accept;

use std::net::{TcpListener, UdpSocket};
use std::rc::Rc;
use std::thread::JoinHandle;

use anyhow::Context;
use monoio::{FusionDriver, RuntimeBuilder};

use crate::dialer::OutboundPools;
use crate::netns::{NamespaceHelper, Transport};
use crate::route::{Egress, Handler, Routes};

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
}

/// Everything an executor thread is started with.
pub struct ExecutorPlan {
    /// The executor's index.
    pub index: usize,
    /// The CPU it is pinned to, if pinning is possible.
    pub cpu: Option<usize>,
    /// Its own copy of the routes.
    pub routes: Routes,
    /// Its listener for each service, in the order of `routes.services`.
    pub listeners: Vec<TcpListener>,
    /// Its socket for each UDP service, in the order of `routes.udp_services`.
    pub datagram_sockets: Vec<UdpSocket>,
    /// The namespace helper.
    pub helper: NamespaceHelper,
}

/// Starts an executor thread. `ready` receives `Ok` once it serves, or the reason it cannot.
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
        routes,
        listeners,
        datagram_sockets,
        helper,
    } = plan;
    if let Some(cpu) = cpu {
        pin_to(cpu).with_context(|| format!("executor {index}: cannot pin to CPU {cpu}"))?;
    }
    let pools = OutboundPools::new(helper.clone());
    for (netns, transport, ipv6) in outbound_namespaces(&routes) {
        pools
            .prefill(netns, transport, ipv6)
            .with_context(|| format!("executor {index}: cannot pre-open outbound sockets"))?;
    }
    let core = Rc::new(Core {
        index,
        pools,
        helper,
    });
    let mut runtime = RuntimeBuilder::<FusionDriver>::new()
        .with_entries(RING_ENTRIES)
        .enable_timer()
        .build()
        .with_context(|| format!("executor {index}: cannot build the runtime"))?;
    runtime.block_on(async move {
        let mut accepting = Vec::new();
        for (service, listener) in routes.services.into_iter().zip(listeners) {
            let name = service.name.clone();
            let listener = monoio::net::TcpListener::from_std(listener).with_context(|| {
                format!("executor {index}: service {name}: adopting the listener")
            })?;
            accepting.push(monoio::spawn(accept::serve(
                core.clone(),
                Rc::new(service),
                listener,
            )));
        }
        for (service, socket) in routes.udp_services.into_iter().zip(datagram_sockets) {
            let name = service.name.clone();
            let socket = monoio::net::udp::UdpSocket::from_std(socket).with_context(|| {
                format!("executor {index}: service {name}: adopting the UDP socket")
            })?;
            accepting.push(monoio::spawn(crate::udp::serve(
                core.clone(),
                Rc::new(service),
                socket,
            )));
        }
        let _ = ready.send(Ok(()));
        for task in accepting {
            task.await;
        }
        anyhow::Ok(())
    })
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
