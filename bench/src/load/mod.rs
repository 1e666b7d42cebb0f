//! The load generators: bulk throughput, connection rate, request/response latency, idle
//! scale and UDP forwarding rate. Each runs once against one contender and returns named
//! figures.

pub mod bulk;
pub mod connrate;
pub mod idle;
pub mod latency;
pub mod udp;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use hdrhistogram::Histogram;

use crate::procfs;
use crate::sink::Sink;
use crate::topology::Endpoint;

/// What a load needs to know about the contender under test.
pub struct LoadContext<'a> {
    /// Where clients connect.
    pub entry: &'a Endpoint,
    /// The sink behind the contender.
    pub sink: &'a Sink,
    /// Root pid of the forwarder's process tree; `None` for `direct`.
    pub forwarder: Option<i32>,
    /// Unmeasured run-in.
    pub warmup: Duration,
    /// Measured duration.
    pub duration: Duration,
}

/// Named figures of one run of one load, e.g. `gbps` or `p99_us`.
pub type Figures = BTreeMap<String, f64>;

/// CPU time between two moments: the forwarder's, and that of everything on the machine
/// outside the harness's own process tree (which holds the sink and every contender).
pub struct CpuMeter {
    pid: Option<i32>,
    forwarder_start: f64,
    machine_start: f64,
    harness_start: f64,
}

/// What [`CpuMeter::stop`] measured.
pub struct CpuUse {
    /// CPU seconds of the forwarder's processes; `None` without a forwarder.
    pub forwarder: Option<f64>,
    /// CPU seconds of processes that are not part of the run (another build, say): a
    /// figure far from zero means the measurement shared the CPUs.
    pub other: f64,
}

impl CpuMeter {
    /// Starts counting.
    pub fn start(pid: Option<i32>) -> CpuMeter {
        CpuMeter {
            pid,
            forwarder_start: pid.map_or(0.0, procfs::cpu_seconds),
            machine_start: procfs::machine_busy_seconds(),
            harness_start: procfs::cpu_seconds(std::process::id() as i32),
        }
    }

    /// CPU seconds used since `start`.
    pub fn stop(&self) -> CpuUse {
        let harness = procfs::cpu_seconds(std::process::id() as i32) - self.harness_start;
        let machine = procfs::machine_busy_seconds() - self.machine_start;
        let forwarder = self
            .pid
            .map(|pid| (procfs::cpu_seconds(pid) - self.forwarder_start).max(0.0));
        CpuUse {
            forwarder,
            other: (machine - harness).max(0.0),
        }
    }
}

impl CpuUse {
    /// Records `cpu_s` (with a forwarder) and `other_cpu_s`.
    pub fn record(&self, figures: &mut Figures) {
        if let Some(seconds) = self.forwarder {
            figures.insert("cpu_s".into(), seconds);
        }
        figures.insert("other_cpu_s".into(), self.other);
    }
}

/// Runs `load` on a thread inside the endpoint's namespace (threads it spawns start there
/// too), or on the calling thread when the endpoint has none.
pub fn in_namespace<T: Send>(
    entry: &Endpoint,
    load: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    if entry.netns.is_none() {
        entry.check_allowed()?;
        return load();
    }
    std::thread::scope(|scope| {
        let worker = std::thread::Builder::new()
            .name("load in netns".into())
            .spawn_scoped(scope, || {
                entry.enter_netns()?;
                load()
            })
            .context("spawning the load thread")?;
        worker
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the load thread panicked")))
    })
}

/// A histogram of nanoseconds from 1 ns to 100 s at three significant digits.
pub fn latency_histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).context("creating a latency histogram")
}

/// Records p50, p99, p99.9 and max of `histogram` (in ns) as microseconds under `prefix`.
pub fn add_percentiles(figures: &mut Figures, prefix: &str, histogram: &Histogram<u64>) {
    if histogram.is_empty() {
        return;
    }
    for (name, quantile) in [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)] {
        let micros = histogram.value_at_quantile(quantile) as f64 / 1000.0;
        figures.insert(format!("{prefix}{name}_us"), micros);
    }
    figures.insert(format!("{prefix}max_us"), histogram.max() as f64 / 1000.0);
}

/// Sets the calling thread's timer slack to 1 ns so that sleeps end when asked (the default
/// 50 µs slack would show up in the latency figures).
pub fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
}
