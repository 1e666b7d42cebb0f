//! uringgost-bench: starts uringgost and its peers (HAProxy, nginx stream, socat) on the same
//! topology, drives them with its own load generators, and reports how they compare.

mod cleanup;
mod cli;
mod contenders;
mod load;
mod procfs;
mod report;
mod runner;
mod sink;
mod system;
mod topology;

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use crate::cli::{Args, Plan};
use crate::report::{Report, RunInfo};
use crate::system::MachineInfo;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("uringgost-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    if args.list_tests {
        for test in runner::TestCase::all() {
            println!("{}", test.name());
        }
        return Ok(());
    }
    if let Some(addr) = args.internal_sink {
        system::set_nofile_limit(system::usable_nofile_limit())?;
        let endpoint = topology::Endpoint {
            addr,
            netns: args.internal_sink_netns.clone(),
        };
        return sink::serve_as_child(endpoint);
    }
    let plan = Plan::from_args(args)?;

    // Affinity and the fd limit are set before any thread exists so that all inherit them.
    plan.load_cpus
        .pin_current()
        .context("pinning the harness to --load-cpus")?;
    system::set_nofile_limit(plan.nofile_limit)
        .with_context(|| format!("setting RLIMIT_NOFILE to {}", plan.nofile_limit))?;
    cleanup::install_signal_cleanup()?;

    let started_utc = system::utc_timestamp();
    let results_dir = plan.out.join(&started_utc);
    std::fs::create_dir_all(&results_dir)
        .with_context(|| format!("creating {}", results_dir.display()))?;
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    eprintln!("uringgost-bench: results go to {}", results_dir.display());

    let load_before = system::load_average();
    let samples = runner::run(&plan, &results_dir)?;
    let load_after = system::load_average();

    let run_info = RunInfo {
        command_line,
        started_utc,
        suite: plan.suite,
        rounds: plan.rounds,
        threads: plan.threads.clone(),
        forwarder_cpus: forwarder_cpus(&plan),
        load_cpus: plan.load_cpus.to_string(),
        machine: MachineInfo::collect(),
        notes: {
            let mut notes = notes(&plan);
            notes.push(format!(
                "load average before the run {load_before}, after it {load_after} (other work \
                 on the machine shows here, and so do socat's thousands of processes)"
            ));
            notes
        },
    };
    let report = Report::new(&plan, run_info, samples);
    let text = report.write(&results_dir, &plan.out)?;
    println!("{text}");
    eprintln!(
        "uringgost-bench: wrote {} and {}/latest.*",
        results_dir.display(),
        plan.out.display()
    );
    Ok(())
}

fn notes(plan: &Plan) -> Vec<String> {
    let mut notes = vec![
        "every contender is started afresh for every test and round, pinned to the forwarder \
         CPUs, with RLIMIT_NOFILE raised; the client and sink share the load CPUs"
            .to_owned(),
        "socat forks one process per connection and has no thread setting; it gets \
         backlog=4096 and nodelay like the others"
            .to_owned(),
        "CPU figures are the forwarder's utime+stime (all its processes and threads, reaped \
         children included) during the measured window; `other CPU s` is the machine's busy \
         time outside the harness, its sink and the contenders in that window: far from zero, \
         the measurement shared the CPUs with other work"
            .to_owned(),
        "ns-* tests run only for direct and uringgost: HAProxy, nginx stream and socat have no \
         HTTP CONNECT proxy to stand as the chain's hop"
            .to_owned(),
    ];
    if plan
        .tests
        .iter()
        .any(|test| matches!(test, runner::TestCase::Udp(_)))
    {
        notes.push(
            "udp-* tests: HAProxy has no UDP proxy; the forced relay modes of uringgost are TCP \
             settings, so the `uringgost` row is its UDP path; socat runs \
             `UDP4-LISTEN:port,fork,reuseaddr UDP4:sink` (a child per client address), nginx \
             `listen udp reuseport` with `proxy_timeout 60s` and no `proxy_responses` limit, \
             uringgost a udp service with `ttl = \"60s\"`; every forwarder is first checked to \
             relay a reply (an echo through it) before it is loaded"
                .to_owned(),
        );
    }
    notes.extend(plan.adjustments.iter().cloned());
    notes.push(format!(
        "RLIMIT_NOFILE {} for the harness and every contender",
        plan.nofile_limit
    ));
    for &threads in &plan.threads {
        if plan.shares_load_cpus(threads) {
            notes.push(format!(
                "with {threads} thread(s) the forwarder runs on CPU(s) {} and shares them with \
                 the load generators and sinks (CPU(s) {}): its figures include that contention, \
                 and a scaling ratio below the thread count partly measures it",
                plan.forwarder_cpus(threads),
                plan.load_cpus
            ));
        }
    }
    notes
}

/// The forwarder CPUs per thread count, e.g. `1` or `1 (1 thread), 0-1 (2 threads)`.
fn forwarder_cpus(plan: &Plan) -> String {
    if let [threads] = plan.threads[..] {
        return plan.forwarder_cpus(threads).to_string();
    }
    let per_count: Vec<String> = plan
        .threads
        .iter()
        .map(|&threads| format!("{} ({threads} thread(s))", plan.forwarder_cpus(threads)))
        .collect();
    per_count.join(", ")
}
