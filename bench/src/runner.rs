//! The run: every round starts each contender afresh for each test, in an order that rotates
//! between rounds, and keeps every outcome (figures or the reason it failed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use crate::cli::Plan;
use crate::contenders::{self, ContenderKind, LaunchSpec, Layout};
use crate::load::bulk::Direction;
use crate::load::{self, Figures, LoadContext};
use crate::sink::{self, Sink};
use crate::topology::{Endpoint, NamespaceChain};

/// Concurrent clients of the connection-rate test.
const CONNRATE_CLIENTS: usize = 32;
/// Persistent connections of the latency test.
const LATENCY_CONNECTIONS: u32 = 64;
/// Client sockets of the UDP tests, each a session of its own in the forwarder.
const UDP_CLIENTS: usize = 4;

/// One test of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestCase {
    /// Bulk throughput on loopback.
    Bulk(Direction, u32),
    /// Connection rate on loopback.
    ConnectionRate,
    /// 1 KiB ping-pong latency on loopback.
    Latency,
    /// Idle connections on loopback.
    Idle,
    /// Bulk throughput through the namespace chain.
    ChainBulk(Direction, u32),
    /// Connection rate through the namespace chain.
    ChainConnectionRate,
    /// One-way UDP forwarding rate with datagrams of this many payload bytes.
    Udp(u32),
}

impl TestCase {
    /// Every test, in the order a full run performs them.
    pub fn all() -> Vec<TestCase> {
        use Direction::{Download, Upload};
        vec![
            TestCase::Bulk(Upload, 1),
            TestCase::Bulk(Upload, 8),
            TestCase::Bulk(Download, 1),
            TestCase::Bulk(Download, 8),
            TestCase::ConnectionRate,
            TestCase::Latency,
            TestCase::Idle,
            TestCase::ChainBulk(Upload, 1),
            TestCase::ChainBulk(Download, 1),
            TestCase::ChainConnectionRate,
            TestCase::Udp(64),
            TestCase::Udp(1400),
        ]
    }

    /// The test's name on the command line and in the results.
    pub fn name(self) -> String {
        let direction = |direction| match direction {
            Direction::Upload => "up",
            Direction::Download => "down",
        };
        match self {
            TestCase::Bulk(way, streams) => format!("bulk-{}-{streams}", direction(way)),
            TestCase::ConnectionRate => "connrate".into(),
            TestCase::Latency => "latency".into(),
            TestCase::Idle => "idle".into(),
            TestCase::ChainBulk(way, streams) => format!("ns-bulk-{}-{streams}", direction(way)),
            TestCase::ChainConnectionRate => "ns-connrate".into(),
            TestCase::Udp(payload) => format!("udp-{payload}"),
        }
    }

    /// Parses a name from [`TestCase::name`].
    pub fn from_name(name: &str) -> Result<TestCase> {
        let all = TestCase::all();
        match all.iter().find(|test| test.name() == name.trim()) {
            Some(test) => Ok(*test),
            None => {
                let known: Vec<String> = all.iter().map(|test| test.name()).collect();
                bail!("unknown test {name:?}; known: {}", known.join(", "))
            }
        }
    }

    /// One line saying what the test does, for the report.
    pub fn description(self, plan: &Plan) -> String {
        let seconds = plan.suite.load_duration().as_secs();
        let way = |direction| match direction {
            Direction::Upload => "client to sink",
            Direction::Download => "sink to client",
        };
        match self {
            TestCase::Bulk(direction, streams) => {
                format!(
                    "{streams} stream(s) {} on loopback for {seconds} s",
                    way(direction)
                )
            }
            TestCase::ConnectionRate => format!(
                "{CONNRATE_CLIENTS} clients: connect, 64 B request, 64 B response, server closes; \
                 {seconds} s; latency is connect to first response byte"
            ),
            TestCase::Latency => format!(
                "1 KiB ping-pong on {LATENCY_CONNECTIONS} persistent connections at {} req/s \
                 offered for {} s; latency from each request's scheduled send time",
                plan.latency_rate,
                plan.suite.latency_duration().as_secs()
            ),
            TestCase::Idle => format!(
                "{} relayed idle connections, then one byte each way on every one",
                plan.idle_conns
            ),
            TestCase::ChainBulk(direction, streams) => format!(
                "{streams} stream(s) {}: client in ns1 -> service 10.0.0.1:8000 (ns1) -> HTTP \
                 CONNECT hop 10.0.1.1:8080 (ns2) -> sink 10.0.1.11:8000 (D); direct = ns1 -> \
                 10.0.0.11:8000 over one veth",
                way(direction)
            ),
            TestCase::ChainConnectionRate => format!(
                "connection rate as `connrate`, {CONNRATE_CLIENTS} clients, through the namespace \
                 chain"
            ),
            TestCase::Udp(payload) => format!(
                "{UDP_CLIENTS} UDP client sockets (a session each) send {payload} B datagrams \
                 as fast as one sender thread can (sendmmsg, round robin) for {seconds} s on \
                 loopback; the sink counts arrivals (recvmmsg, {} MiB receive buffer); loss is \
                 1 - received/sent in the window",
                crate::sink::UDP_RECEIVE_BUFFER >> 20
            ),
        }
    }

    /// The figure tables sort and compare by, and whether more of it is better.
    pub fn primary_figure(self) -> (&'static str, bool) {
        match self {
            TestCase::Bulk(..) | TestCase::ChainBulk(..) => ("gbps", true),
            TestCase::ConnectionRate | TestCase::ChainConnectionRate => ("conn_per_s", true),
            TestCase::Latency => ("p99_us", false),
            // PSS, not RSS: socat's thousands of processes share most of their pages.
            TestCase::Idle => ("pss_kib_per_conn", false),
            TestCase::Udp(_) => ("pps", true),
        }
    }

    fn uses_namespace_chain(self) -> bool {
        matches!(
            self,
            TestCase::ChainBulk(..) | TestCase::ChainConnectionRate
        )
    }
}

/// The outcome of one test for one contender in one round.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The load ran; its figures.
    Measured {
        /// Named figures.
        figures: Figures,
    },
    /// The contender did not start or the load failed.
    Failed {
        /// Why.
        error: String,
    },
    /// The contender cannot serve this topology.
    NotApplicable {
        /// Why not.
        reason: String,
    },
}

/// One contender at one thread count (`direct` runs once, without a count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entrant {
    /// Which contender.
    pub kind: ContenderKind,
    /// Its threads or worker processes; `None` for `direct`.
    pub threads: Option<u32>,
}

impl Entrant {
    /// Every contender at every thread count of the plan, thread count by thread count.
    pub fn all(plan: &Plan) -> Vec<Entrant> {
        let mut entrants = Vec::new();
        for (index, &threads) in plan.threads.iter().enumerate() {
            for &kind in &plan.contenders {
                match kind {
                    ContenderKind::Direct if index == 0 => entrants.push(Entrant {
                        kind,
                        threads: None,
                    }),
                    ContenderKind::Direct => {}
                    _ => entrants.push(Entrant {
                        kind,
                        threads: Some(threads),
                    }),
                }
            }
        }
        entrants
    }

    /// The row's name: the contender's, with the thread count when the plan has several.
    pub fn label(self, plan: &Plan) -> String {
        label(self.kind.name(), self.threads, plan.threads.len() > 1)
    }
}

/// `uringgost`, or `uringgost 2t` when a run compares thread counts.
pub fn label(name: &str, threads: Option<u32>, several_counts: bool) -> String {
    match threads {
        Some(threads) if several_counts => format!("{name} {threads}t"),
        _ => name.to_owned(),
    }
}

/// One outcome with its coordinates.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Round, from 1.
    pub round: u32,
    /// Test name.
    pub test: String,
    /// Contender name.
    pub contender: String,
    /// Threads or worker processes of the forwarder; absent for `direct`.
    pub threads: Option<u32>,
    /// What happened.
    pub outcome: Outcome,
}

/// Runs the plan; `results_dir` receives contender configurations and failure logs.
pub fn run(plan: &Plan, results_dir: &Path) -> Result<Vec<Sample>> {
    let workdir = TempDir::create()?;
    let uringgost_problem = prepare_uringgost(plan);

    let loopback_sink = Sink::start(&Endpoint::loopback(plan.base_port))?;
    sink::self_test(&loopback_sink).context("the loopback sink does not echo")?;

    let needs_chain = plan.tests.iter().any(|test| test.uses_namespace_chain());
    let chain = if needs_chain {
        Some(NamespaceChain::create()?)
    } else {
        None
    };
    let chain_sink = match &chain {
        Some(chain) => Some(Sink::start(&Endpoint {
            addr: std::net::SocketAddr::new([0, 0, 0, 0].into(), NamespaceChain::TARGET.port()),
            netns: Some(chain.default_ns.clone()),
        })?),
        None => None,
    };

    let entrants = Entrant::all(plan);
    let mut samples = Vec::new();
    let mut launch_number = 0u32;
    for round in 1..=plan.rounds {
        for &test in &plan.tests {
            let rotation = (round as usize - 1) % entrants.len();
            let mut order = entrants.clone();
            order.rotate_left(rotation);
            for entrant in order {
                let kind = entrant.kind;
                let udp_reason = match test {
                    TestCase::Udp(_) => kind.udp_unsupported(),
                    _ => None,
                };
                let outcome = if test.uses_namespace_chain() && !kind.supports_namespace_chain() {
                    Outcome::NotApplicable {
                        reason: "needs an HTTP CONNECT proxy hop, which it does not have".into(),
                    }
                } else if let Some(reason) = udp_reason {
                    Outcome::NotApplicable {
                        reason: reason.into(),
                    }
                } else if let (ContenderKind::Uringgost(_), Some(problem)) =
                    (kind, &uringgost_problem)
                {
                    Outcome::Failed {
                        error: problem.clone(),
                    }
                } else {
                    launch_number += 1;
                    let threads = entrant.threads.unwrap_or(plan.threads[0]);
                    let run_dir = workdir.path.join(format!(
                        "{launch_number:04}-{}-{kind}-{threads}t",
                        test.name()
                    ));
                    std::fs::create_dir_all(&run_dir)?;
                    let (layout, sink) = match (&chain, &chain_sink) {
                        (Some(chain), Some(sink)) if test.uses_namespace_chain() => {
                            (Layout::NamespaceChain(chain), sink)
                        }
                        _ if matches!(test, TestCase::Udp(_)) => (
                            Layout::LoopbackUdp {
                                base_port: plan.base_port,
                            },
                            &loopback_sink,
                        ),
                        _ => (
                            Layout::Loopback {
                                base_port: plan.base_port,
                            },
                            &loopback_sink,
                        ),
                    };
                    eprintln!(
                        "round {round}/{}: {} with {}",
                        plan.rounds,
                        test.name(),
                        entrant.label(plan)
                    );
                    let run = Launch {
                        test,
                        kind,
                        threads,
                        layout,
                    };
                    let result = measure(plan, &run, sink, &run_dir, results_dir);
                    match result {
                        Ok(figures) => Outcome::Measured { figures },
                        Err(error) => {
                            eprintln!("  failed: {error:#}");
                            keep_logs(&run_dir, results_dir, launch_number);
                            Outcome::Failed {
                                error: format!("{error:#}"),
                            }
                        }
                    }
                };
                samples.push(Sample {
                    round,
                    test: test.name(),
                    contender: kind.name().into(),
                    threads: entrant.threads,
                    outcome,
                });
            }
        }
    }
    Ok(samples)
}

/// What one launch runs: which test, which contender with how many threads, where.
struct Launch<'a> {
    test: TestCase,
    kind: ContenderKind,
    threads: u32,
    layout: Layout<'a>,
}

/// Starts one contender, runs one load against it, stops it.
fn measure(
    plan: &Plan,
    run: &Launch<'_>,
    sink: &Sink,
    run_dir: &Path,
    results_dir: &Path,
) -> Result<Figures> {
    let Launch {
        test,
        kind,
        threads,
        layout,
    } = *run;
    let cpus = plan.forwarder_cpus(threads);
    let spec = LaunchSpec {
        layout,
        threads,
        cpus: &cpus,
        uringgost: &plan.uringgost,
        workdir: run_dir,
        max_connections: plan.idle_conns.max(1000),
        nofile_limit: plan.nofile_limit,
    };
    let mut launched = contenders::launch(kind, &spec)?;
    if let Some((path, text)) = &launched.config {
        let suffix = if plan.threads.len() > 1 {
            format!("-{threads}t")
        } else {
            String::new()
        };
        save_config(results_dir, &format!("{kind}{suffix}"), layout, path, text);
    }
    // The readiness probe's connection must be gone before loads read the sink's counters;
    // the forwarder may still be dialing the sink for it a moment after the probe closed.
    std::thread::sleep(Duration::from_millis(100));
    sink.wait_for_active(0, Duration::from_secs(5))?;

    let context = LoadContext {
        entry: &launched.entry,
        sink,
        forwarder: launched.daemon.as_ref().map(contenders::Daemon::pid),
        warmup: plan.suite.warmup(),
        duration: plan.suite.load_duration(),
    };
    let figures = load::in_namespace(&launched.entry, || match test {
        TestCase::Bulk(direction, streams) | TestCase::ChainBulk(direction, streams) => {
            load::bulk::run(&context, direction, streams)
        }
        TestCase::ConnectionRate | TestCase::ChainConnectionRate => {
            load::connrate::run(&context, CONNRATE_CLIENTS)
        }
        TestCase::Latency => {
            let context = LoadContext {
                duration: plan.suite.latency_duration(),
                ..context
            };
            load::latency::run(&context, LATENCY_CONNECTIONS, plan.latency_rate)
        }
        TestCase::Idle => load::idle::run(&context, plan.idle_conns),
        TestCase::Udp(payload) => load::udp::run(&context, UDP_CLIENTS, payload as usize),
    });
    // A forwarder that died under load fails the test even if the load finished.
    if let Some(daemon) = launched.daemon.as_mut() {
        daemon.check_alive()?;
    }
    figures
}

/// Builds uringgost when it is wanted and missing; returns why it cannot run, if so.
fn prepare_uringgost(plan: &Plan) -> Option<String> {
    let wanted = plan
        .contenders
        .iter()
        .any(|kind| matches!(kind, ContenderKind::Uringgost(_)));
    if !wanted || plan.uringgost.exists() {
        return None;
    }
    eprintln!(
        "{} is missing: running `cargo build --release`",
        plan.uringgost.display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args([
            "build",
            "--release",
            "-p",
            "uringgost",
            "--bin",
            "uringgost",
        ])
        .status();
    match status {
        Ok(status) if status.success() && plan.uringgost.exists() => None,
        Ok(status) if status.success() => Some(format!(
            "built, but {} still does not exist",
            plan.uringgost.display()
        )),
        Ok(status) => Some(format!("`cargo build --release` exited with {status}")),
        Err(error) => Some(format!("could not run cargo: {error}")),
    }
}

fn save_config(results_dir: &Path, kind: &str, layout: Layout<'_>, path: &Path, text: &str) {
    let topology = match layout {
        Layout::Loopback { .. } => "loopback",
        Layout::LoopbackUdp { .. } => "udp",
        Layout::NamespaceChain(_) => "netns",
    };
    let extension = path
        .extension()
        .and_then(|ext| ext.to_str())
        .unwrap_or("conf");
    let target = results_dir
        .join("configs")
        .join(format!("{kind}-{topology}.{extension}"));
    if !target.exists() {
        let _ = std::fs::create_dir_all(results_dir.join("configs"));
        let _ = std::fs::write(target, text); // a missing copy only loses documentation
    }
}

fn keep_logs(run_dir: &Path, results_dir: &Path, launch_number: u32) {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return;
    };
    let logs = results_dir.join("logs");
    let _ = std::fs::create_dir_all(&logs);
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") {
            let _ = std::fs::copy(
                entry.path(),
                logs.join(format!("{launch_number:04}-{name}")),
            );
        }
    }
}

/// A scratch directory for contenders' configurations and logs, removed when dropped.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn create() -> Result<TempDir> {
        let path = std::env::temp_dir().join(format!("uringgost-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path); // leftovers in /tmp harm nothing
    }
}
