//! Start and run: compile the routes, start the namespace helper, create every listener,
//! start the executors, and wait for a signal: SIGHUP reloads the configuration, SIGINT and
//! SIGTERM stop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use nix::sys::signal::{SigSet, Signal};

use crate::config::Config;
use crate::executor::{self, ExecutorPlan, Services};
use crate::netns::{NamespaceHelper, NamespaceId, NamespaceTable, Transport};
use crate::route::{self, Routes, Service, UdpService};

/// Loads and compiles a configuration file, opening the namespaces it names.
pub fn load(path: &Path) -> anyhow::Result<(Routes, NamespaceTable)> {
    let config = Config::load(path)?;
    let mut namespaces = NamespaceTable::default();
    let routes = route::compile(&config, &mut namespaces)?;
    Ok((routes, namespaces))
}

/// Serves `routes` on `threads` executors until SIGINT or SIGTERM; SIGHUP reloads `path`.
pub fn run(
    path: &Path,
    routes: Routes,
    namespaces: NamespaceTable,
    threads: usize,
) -> anyhow::Result<()> {
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
    let prepared = prepare(&helper, &routes, None, threads).context("cannot start")?;

    let cpus = executor::allowed_cpus();
    if threads > cpus.len().max(1) {
        tracing::warn!(
            executors = threads,
            cpus = cpus.len(),
            "more executors than CPUs: several share a CPU and wait for each other"
        );
    }
    let (ready, started) = std::sync::mpsc::channel();
    let mut updates = Vec::with_capacity(threads);
    for index in 0..threads {
        let (sender, receiver) = flume::unbounded();
        let plan = ExecutorPlan {
            index,
            cpu: (!cpus.is_empty()).then(|| cpus[index % cpus.len()]),
            helper: helper.clone(),
            updates: receiver,
        };
        executor::spawn(plan, ready.clone()).context("cannot start an executor thread")?;
        updates.push(sender);
    }
    drop(ready);
    for _ in 0..threads {
        started
            .recv()
            .context("an executor stopped while starting")??;
    }
    let mut serving = Serving {
        path: path.to_owned(),
        threads,
        helper,
        routes: Routes {
            services: Vec::new(),
            udp_services: Vec::new(),
        },
        sockets: HashMap::new(),
        updates,
    };
    serving.install(routes, prepared, true)?;
    tracing::info!(
        services = serving.routes.services.len() + serving.routes.udp_services.len(),
        executors = threads,
        driver,
        "uringgost is serving"
    );

    loop {
        match signals.wait().context("waiting for signals")? {
            Signal::SIGHUP => serving.reload(),
            signal => {
                tracing::info!(%signal, "stopping");
                serving.stop_listening();
                return Ok(());
            }
        }
    }
}

/// Identifies a listening socket across reloads: namespace, address and transport.
type ListenKey = (Option<NamespaceId>, SocketAddr, Transport);

fn tcp_key(service: &Service) -> ListenKey {
    let netns = service.netns.as_ref().map(|netns| netns.id);
    (netns, service.listen, Transport::Tcp)
}

fn udp_key(service: &UdpService) -> ListenKey {
    let netns = service.netns.as_ref().map(|netns| netns.id);
    (netns, service.listen, Transport::Udp)
}

/// What the main thread keeps while serving.
struct Serving {
    path: PathBuf,
    threads: usize,
    helper: NamespaceHelper,
    /// The routes being served, as compiled (executors serve their own copies).
    routes: Routes,
    /// A descriptor of every listening socket, one per executor: a reload hands the same
    /// sockets on to services that keep their address, so no queued connection is lost.
    sockets: HashMap<ListenKey, Vec<OwnedFd>>,
    /// Each executor's channel for new services.
    updates: Vec<flume::Sender<Services>>,
}

/// One socket per executor, or why they could not be created.
type SocketsResult = Result<Vec<OwnedFd>, crate::netns::SocketRequestError>;

/// Sockets for a set of routes, ready to hand to the executors.
struct Prepared {
    sockets: HashMap<ListenKey, Vec<OwnedFd>>,
    /// For each UDP service: true when it is unchanged and keeps running as it is.
    keep_udp: Vec<bool>,
}

/// Finds or creates every listening socket `routes` need: those of `current` (the routes
/// being served, with their sockets) that keep their address are reused, the others are
/// created by the namespace helper. Every problem is reported, not only the first.
fn prepare(
    helper: &NamespaceHelper,
    routes: &Routes,
    current: Option<(&Routes, &HashMap<ListenKey, Vec<OwnedFd>>)>,
    threads: usize,
) -> anyhow::Result<Prepared> {
    let mut sockets = HashMap::new();
    let mut problems = Vec::new();
    // Reuses the sockets being served under `key`, or creates them with `create`.
    let mut obtain = |key: ListenKey, name: &str, create: &dyn Fn() -> SocketsResult| {
        let found = match current.and_then(|(_, sockets)| sockets.get(&key)) {
            Some(fds) => fds
                .iter()
                .map(OwnedFd::try_clone)
                .collect::<std::io::Result<_>>()
                .map_err(|error| format!("cannot reuse its socket: {error}")),
            None => create().map_err(|error| error.to_string()),
        };
        match found {
            Ok(fds) => {
                sockets.insert(key, fds);
            }
            Err(error) => problems.push(format!("service \"{name}\": addr: {error}")),
        }
    };
    for service in &routes.services {
        obtain(tcp_key(service), &service.name, &|| {
            let listeners = helper.listeners(tcp_key(service).0, service.listen, threads)?;
            Ok(listeners.into_iter().map(OwnedFd::from).collect())
        });
    }
    let mut keep_udp = Vec::with_capacity(routes.udp_services.len());
    for service in &routes.udp_services {
        let key = udp_key(service);
        // An unchanged service keeps running with its sessions; `Debug` shows every setting
        // (the routes kept here are never served, so their selector state is as compiled).
        let unchanged = current.is_some_and(|(running, _)| {
            running
                .udp_services
                .iter()
                .any(|old| udp_key(old) == key && format!("{old:?}") == format!("{service:?}"))
        });
        keep_udp.push(unchanged);
        obtain(key, &service.name, &|| {
            let sockets = helper.datagram_sockets(key.0, service.listen, threads)?;
            Ok(sockets.into_iter().map(OwnedFd::from).collect())
        });
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(Prepared { sockets, keep_udp })
}

impl Serving {
    /// Hands `routes` and their sockets to every executor, waits until each serves them,
    /// and logs what changed. `starting`: nothing is served yet, and any failure ends the
    /// start.
    fn install(
        &mut self,
        routes: Routes,
        prepared: Prepared,
        starting: bool,
    ) -> anyhow::Result<()> {
        let Prepared { sockets, keep_udp } = prepared;
        let mut answers = Vec::with_capacity(self.threads);
        for (index, updates) in self.updates.iter().enumerate() {
            let mut listeners = Vec::with_capacity(routes.services.len());
            for service in &routes.services {
                let fd = sockets[&tcp_key(service)][index]
                    .try_clone()
                    .context("duplicating a listener for an executor")?;
                listeners.push(std::net::TcpListener::from(fd));
            }
            let mut datagram_sockets = Vec::with_capacity(routes.udp_services.len());
            for (service, &keep) in routes.udp_services.iter().zip(&keep_udp) {
                if keep {
                    datagram_sockets.push(None);
                    continue;
                }
                let fd = sockets[&udp_key(service)][index]
                    .try_clone()
                    .context("duplicating a UDP socket for an executor")?;
                datagram_sockets.push(Some(std::net::UdpSocket::from(fd)));
            }
            let (done, answer) = flume::bounded(1);
            let services = Services {
                routes: routes.clone(),
                listeners,
                datagram_sockets,
                done,
            };
            updates
                .send(services)
                .map_err(|_| anyhow::anyhow!("executor {index} has stopped"))?;
            answers.push(answer);
        }
        let mut failures = Vec::new();
        for (index, answer) in answers.into_iter().enumerate() {
            match answer.recv() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => failures.push(format!("{error:#}")),
                Err(_) => failures.push(format!("executor {index} has stopped")),
            }
        }
        if starting && !failures.is_empty() {
            bail!("{}", failures.join("; "));
        }

        let threads = self.threads;
        for service in &routes.services {
            if !self.sockets.contains_key(&tcp_key(service)) {
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
        }
        for service in &routes.udp_services {
            if !self.sockets.contains_key(&udp_key(service)) {
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
        }
        let old_names = self
            .routes
            .services
            .iter()
            .map(|service| (tcp_key(service), &service.name, service.listen))
            .chain(
                self.routes
                    .udp_services
                    .iter()
                    .map(|service| (udp_key(service), &service.name, service.listen)),
            );
        for (key, name, addr) in old_names {
            if !sockets.contains_key(&key) {
                tracing::info!(service = %name, %addr, "service stopped listening");
            }
        }
        self.sockets = sockets;
        self.routes = routes;
        if failures.is_empty() {
            Ok(())
        } else {
            bail!("{}", failures.join("; "))
        }
    }

    /// Reads the configuration file again and serves it, or logs why not and keeps serving
    /// the current one. Listeners whose service keeps its address stay open throughout.
    fn reload(&mut self) {
        tracing::info!(config = %self.path.display(), "SIGHUP received: reloading");
        let compiled = Config::load(&self.path).and_then(|config| {
            let mut table = self
                .helper
                .table_snapshot()
                .context("copying the namespace table")?;
            let routes = route::compile(&config, &mut table)?;
            Ok((routes, table))
        });
        let (routes, table) = match compiled {
            Ok(compiled) => compiled,
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "reload failed: the configuration is invalid; still serving the previous one"
                );
                return;
            }
        };
        // The new table extends the old one, so routes being served keep their ids.
        self.helper.install_table(table);
        let current = Some((&self.routes, &self.sockets));
        let prepared = match prepare(&self.helper, &routes, current, self.threads) {
            Ok(prepared) => prepared,
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    "reload failed: cannot listen; still serving the previous configuration"
                );
                return;
            }
        };
        let kept_udp = prepared.keep_udp.iter().filter(|&&keep| keep).count();
        let services = routes.services.len() + routes.udp_services.len();
        match self.install(routes, prepared, false) {
            Ok(()) => tracing::info!(
                services,
                udp_services_kept = kept_udp,
                "configuration reloaded"
            ),
            Err(error) => tracing::error!(
                error = format!("{error:#}"),
                "configuration reloaded, but not on every executor"
            ),
        }
    }

    /// Takes every TCP listener out of the LISTEN state; see [`stop_listening`].
    fn stop_listening(&self) {
        let listening: Vec<RawFd> = self
            .sockets
            .iter()
            .filter(|((_, _, transport), _)| *transport == Transport::Tcp)
            .flat_map(|(_, fds)| fds.iter().map(AsRawFd::as_raw_fd))
            .collect();
        stop_listening(&listening);
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
