//! Start and run: compile the routes, start the namespace helper, create every listener,
//! start the executors, and wait for a signal to stop.

use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use anyhow::{Context, bail};
use nix::sys::signal::{SigSet, Signal};

use crate::config::Config;
use crate::executor::{self, ExecutorPlan};
use crate::netns::{NamespaceHelper, NamespaceTable};
use crate::route::{self, Routes};

/// Loads and compiles a configuration file, opening the namespaces it names.
pub fn load(path: &Path) -> anyhow::Result<(Routes, NamespaceTable)> {
    let config = Config::load(path)?;
    let mut namespaces = NamespaceTable::default();
    let routes = route::compile(&config, &mut namespaces)?;
    Ok((routes, namespaces))
}

/// Serves `routes` on `threads` executors until SIGINT or SIGTERM.
pub fn run(routes: Routes, namespaces: NamespaceTable, threads: usize) -> anyhow::Result<()> {
    // Blocked here, before any thread starts, so every thread inherits the mask and the
    // signals wait for `sigwait` below instead of interrupting an executor.
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    signals.thread_block().context("cannot block signals")?;

    raise_descriptor_limit();

    let driver = if monoio::utils::detect_uring() {
        "io_uring"
    } else {
        if std::env::var_os("MONOIO_FORCE_LEGACY_DRIVER").is_some() {
            tracing::warn!("MONOIO_FORCE_LEGACY_DRIVER is set: serving on the epoll fallback");
        } else {
            tracing::warn!(
                "io_uring is unavailable (kernel.io_uring_disabled, seccomp or an old kernel); \
                 serving on the epoll fallback"
            );
        }
        "epoll"
    };

    let (helper, _helper_thread) =
        NamespaceHelper::start(namespaces).context("cannot start the namespace helper thread")?;
    let mut per_executor: Vec<Vec<std::net::TcpListener>> =
        (0..threads).map(|_| Vec::new()).collect();
    let mut problems = Vec::new();
    for service in &routes.services {
        let netns = service.netns.as_ref().map(|netns| netns.id);
        match helper.listeners(netns, service.listen, threads) {
            Ok(listeners) => {
                for (executor, listener) in per_executor.iter_mut().zip(listeners) {
                    executor.push(listener);
                }
            }
            Err(error) => problems.push(format!("service \"{}\": addr: {error}", service.name)),
        }
    }
    let mut datagram_sockets: Vec<Vec<std::net::UdpSocket>> =
        (0..threads).map(|_| Vec::new()).collect();
    for service in &routes.udp_services {
        let netns = service.netns.as_ref().map(|netns| netns.id);
        match helper.datagram_sockets(netns, service.listen, threads) {
            Ok(sockets) => {
                for (executor, socket) in datagram_sockets.iter_mut().zip(sockets) {
                    executor.push(socket);
                }
            }
            Err(error) => problems.push(format!("service \"{}\": addr: {error}", service.name)),
        }
    }
    if !problems.is_empty() {
        bail!("cannot start: {}", problems.join("; "));
    }

    let cpus = executor::allowed_cpus();
    if threads > cpus.len().max(1) {
        tracing::warn!(
            executors = threads,
            cpus = cpus.len(),
            "more executors than CPUs: several share a CPU and wait for each other"
        );
    }
    // Kept to stop listening at exit: see `stop_listening`.
    let listening: Vec<RawFd> = per_executor
        .iter()
        .flatten()
        .map(|listener| listener.as_raw_fd())
        .collect();
    let (ready, started) = std::sync::mpsc::channel();
    let sockets = per_executor.into_iter().zip(datagram_sockets);
    for (index, (listeners, datagram_sockets)) in sockets.enumerate() {
        let plan = ExecutorPlan {
            index,
            cpu: (!cpus.is_empty()).then(|| cpus[index % cpus.len()]),
            routes: routes.clone(),
            listeners,
            datagram_sockets,
            helper: helper.clone(),
        };
        executor::spawn(plan, ready.clone()).context("cannot start an executor thread")?;
    }
    drop(ready);
    for _ in 0..threads {
        started
            .recv()
            .context("an executor stopped while starting")??;
    }

    for service in &routes.services {
        tracing::info!(
            service = %service.name,
            addr = %service.listen,
            netns = service.netns.as_ref().map_or("-", |netns| &netns.name),
            handler = service.handler.kind(),
            relay = %service.relay,
            executors = threads,
            "service listening"
        );
    }
    for service in &routes.udp_services {
        tracing::info!(
            service = %service.name,
            addr = %service.listen,
            netns = service.netns.as_ref().map_or("-", |netns| &netns.name),
            handler = "udp",
            ttl = ?service.sessions.ttl,
            executors = threads,
            "service listening"
        );
    }
    tracing::info!(
        services = routes.services.len() + routes.udp_services.len(),
        executors = threads,
        driver,
        "uringgost is serving"
    );

    loop {
        match signals.wait().context("waiting for signals")? {
            Signal::SIGHUP => tracing::warn!(
                "SIGHUP received: reloading is not supported yet; restart to apply a new configuration"
            ),
            signal => {
                tracing::info!(%signal, "stopping");
                stop_listening(&listening);
                return Ok(());
            }
        }
    }
}

/// Takes the listeners out of the LISTEN state before the process exits: the kernel tears
/// an exiting process's io_uring down in the background, and its pending accept polls would
/// keep the listeners open (and a restarted instance waiting) for a moment longer.
fn stop_listening(listeners: &[RawFd]) {
    for &fd in listeners {
        // SAFETY: the executors own these descriptors and never close them while the process
        // runs; shutdown(2) only changes the socket's state.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
    }
}

/// A gateway holds two descriptors per direct connection and more through namespaces and
/// chains: the soft limit (often 1024) is raised to the hard limit the process is allowed.
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "raised the open file limit"),
            Err(error) => tracing::warn!(%error, soft, "cannot raise the open file limit"),
        },
        Ok((soft, _)) => tracing::debug!(limit = soft, "open file limit"),
        Err(error) => tracing::warn!(%error, "cannot read the open file limit"),
    }
}
