//! Command-line options and the choices they name: suites, tests and contenders.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};

use crate::contenders::ContenderKind;
use crate::system::CpuSet;

/// Benchmark uringgost against HAProxy, nginx stream and socat on one topology.
#[derive(Debug, Parser)]
#[command(name = "uringgost-bench", version)]
pub struct Args {
    /// Which suite: `short` (3 s per load) or `full` (5 s per load, longer latency run).
    #[arg(long, value_enum, default_value_t = Suite::Short)]
    pub suite: Suite,

    /// Rounds; contenders run interleaved in every round and medians are reported.
    #[arg(
        long,
        default_value_t = 3,
        value_parser = clap::value_parser!(u32).range(1..=50)
    )]
    pub rounds: u32,

    /// Worker threads (or processes) each forwarder gets; a list (`1,2`) runs every
    /// forwarder at each count and adds a scaling table (count over the first count).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1",
        value_parser = clap::value_parser!(u32).range(1..=64)
    )]
    pub threads: Vec<u32>,

    /// Contenders, comma-separated: direct, uringgost, uringgost-auto, uringgost-splice,
    /// uringgost-buffered, uringgost-uring-splice, haproxy, nginx, socat.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,uringgost,haproxy,nginx,socat"
    )]
    pub contenders: Vec<String>,

    /// Tests, comma-separated (see `--list-tests`); default: all.
    #[arg(long, value_delimiter = ',')]
    pub tests: Vec<String>,

    /// Print the available tests and exit.
    #[arg(long)]
    pub list_tests: bool,

    /// The uringgost binary; built with `cargo build --release` when missing.
    #[arg(long, default_value = "target/release/uringgost")]
    pub uringgost: PathBuf,

    /// Where results go: `<out>/<timestamp>/` plus `<out>/latest.{md,json,svg}`.
    #[arg(long, default_value = "perf/results")]
    pub out: PathBuf,

    /// CPUs every forwarder is pinned to (e.g. `1` or `1-3`); default: all but CPU 0, or all
    /// CPUs for a thread count larger than that.
    #[arg(long)]
    pub forwarder_cpus: Option<String>,

    /// CPUs the load generators and sinks are pinned to; default: CPU 0.
    #[arg(long)]
    pub load_cpus: Option<String>,

    /// Relayed idle connections in the idle-scale test.
    #[arg(
        long,
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..=30_000)
    )]
    pub idle_conns: u32,

    /// Offered requests per second in the latency test (kept below saturation).
    #[arg(
        long,
        default_value_t = 5_000,
        value_parser = clap::value_parser!(u32).range(1..=200_000)
    )]
    pub latency_rate: u32,

    /// Internal: run as the sink process, listening on this address.
    #[arg(long, hide = true)]
    pub internal_sink: Option<std::net::SocketAddr>,

    /// Internal: the sink process's network namespace.
    #[arg(long, hide = true)]
    pub internal_sink_netns: Option<String>,

    /// First TCP port the harness uses on loopback (sink, then one port per contender).
    #[arg(
        long,
        default_value_t = 20_000,
        value_parser = clap::value_parser!(u16).range(1024..=60_000)
    )]
    pub base_port: u16,
}

/// How long each load runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Suite {
    /// 3 s loads: a quick comparison, what `cargo bench` runs.
    Short,
    /// 5 s loads and a 10 s latency run.
    Full,
}

impl Suite {
    /// Measured duration of the bulk and connection-rate loads.
    pub fn load_duration(self) -> Duration {
        match self {
            Suite::Short => Duration::from_secs(3),
            Suite::Full => Duration::from_secs(5),
        }
    }

    /// Measured duration of the latency load.
    pub fn latency_duration(self) -> Duration {
        match self {
            Suite::Short => Duration::from_secs(3),
            Suite::Full => Duration::from_secs(10),
        }
    }

    /// Unmeasured run-in before every load, so that slow start and lazy allocation settle.
    pub fn warmup(self) -> Duration {
        Duration::from_millis(500)
    }
}

/// Everything a run needs, checked and resolved from [`Args`].
#[derive(Debug, Clone)]
pub struct Plan {
    /// The suite chosen.
    pub suite: Suite,
    /// Rounds to run.
    pub rounds: u32,
    /// Thread counts per forwarder, each run in turn (distinct, in the order given).
    pub threads: Vec<u32>,
    /// Contenders in the order given.
    pub contenders: Vec<ContenderKind>,
    /// Tests in the order given.
    pub tests: Vec<crate::runner::TestCase>,
    /// uringgost binary.
    pub uringgost: PathBuf,
    /// Results root.
    pub out: PathBuf,
    /// CPUs for the forwarders, when `--forwarder-cpus` names them.
    pub forwarder_cpus_option: Option<CpuSet>,
    /// CPUs online.
    pub online_cpus: usize,
    /// CPUs for load generators and sinks.
    pub load_cpus: CpuSet,
    /// Connections in the idle-scale test.
    pub idle_conns: u32,
    /// Offered rate of the latency test.
    pub latency_rate: u32,
    /// First port used on loopback.
    pub base_port: u16,
    /// RLIMIT_NOFILE the harness and every contender run with.
    pub nofile_limit: u64,
    /// What the plan had to change from the options, for the report.
    pub adjustments: Vec<String>,
}

impl Plan {
    /// Checks the options and resolves names into tests and contenders.
    pub fn from_args(args: &Args) -> Result<Plan> {
        let contenders = args
            .contenders
            .iter()
            .map(|name| name.parse::<ContenderKind>())
            .collect::<Result<Vec<_>>>()?;
        if contenders.is_empty() {
            bail!(
                "--contenders is empty; name at least one of {}",
                ContenderKind::NAMES
            );
        }
        let tests = if args.tests.is_empty() {
            crate::runner::TestCase::all()
        } else {
            args.tests
                .iter()
                .map(|name| crate::runner::TestCase::from_name(name))
                .collect::<Result<Vec<_>>>()?
        };

        let online = crate::system::online_cpus();
        let load_cpus = match &args.load_cpus {
            Some(text) => CpuSet::parse(text).context("--load-cpus")?,
            None => CpuSet::from_cpus(vec![0]),
        };
        let forwarder_cpus_option = match &args.forwarder_cpus {
            Some(text) => Some(CpuSet::parse(text).context("--forwarder-cpus")?),
            None => None,
        };
        let mut threads = Vec::new();
        for count in &args.threads {
            if !threads.contains(count) {
                threads.push(*count);
            }
        }
        if threads.is_empty() {
            bail!("--threads is empty; give a count such as 1 or a list such as 1,2");
        }
        for (option, set) in [
            ("--load-cpus", Some(&load_cpus)),
            ("--forwarder-cpus", forwarder_cpus_option.as_ref()),
        ] {
            let Some(set) = set else { continue };
            if let Some(cpu) = set.cpus().iter().find(|cpu| **cpu >= online) {
                bail!(
                    "{option} names CPU {cpu}, but this machine has CPUs 0-{}",
                    online - 1
                );
            }
        }

        let nofile_limit = crate::system::usable_nofile_limit();
        let mut adjustments = Vec::new();
        // A relayed connection holds two sockets in the forwarder; 2,000 fds stay spare for
        // HAProxy's splice pipes and the like.
        let idle_fit = (nofile_limit.saturating_sub(2000) / 2 / 500 * 500) as u32;
        let idle_conns = args.idle_conns.min(idle_fit.max(100));
        if idle_conns < args.idle_conns {
            adjustments.push(format!(
                "idle test uses {idle_conns} connections, not {}: RLIMIT_NOFILE cannot be raised \
                 above {nofile_limit} here (no CAP_SYS_RESOURCE), and a forwarder holds two \
                 sockets per relayed connection",
                args.idle_conns
            ));
        }

        let highest_port = u32::from(args.base_port) + ContenderKind::PORT_SLOTS;
        if highest_port > 60_000 {
            bail!(
                "--base-port {} leaves no room for the contenders' ports",
                args.base_port
            );
        }

        Ok(Plan {
            suite: args.suite,
            rounds: args.rounds,
            threads,
            contenders,
            tests,
            uringgost: args.uringgost.clone(),
            out: args.out.clone(),
            forwarder_cpus_option,
            online_cpus: online,
            load_cpus,
            idle_conns,
            latency_rate: args.latency_rate,
            base_port: args.base_port,
            nofile_limit,
            adjustments,
        })
    }

    /// The CPUs a forwarder with `threads` threads is pinned to: `--forwarder-cpus` if given,
    /// else every CPU but the load generators' first while that leaves one per thread, else
    /// every CPU (the forwarder then competes with the load generators and sinks).
    pub fn forwarder_cpus(&self, threads: u32) -> CpuSet {
        if let Some(set) = &self.forwarder_cpus_option {
            return set.clone();
        }
        let spare = self.online_cpus.saturating_sub(1);
        if spare >= threads as usize && spare > 0 {
            CpuSet::from_cpus((1..self.online_cpus).collect())
        } else {
            CpuSet::from_cpus((0..self.online_cpus).collect())
        }
    }

    /// Whether the forwarder at `threads` threads shares a CPU with the load generators.
    pub fn shares_load_cpus(&self, threads: u32) -> bool {
        self.forwarder_cpus(threads)
            .cpus()
            .iter()
            .any(|cpu| self.load_cpus.cpus().contains(cpu))
    }
}
