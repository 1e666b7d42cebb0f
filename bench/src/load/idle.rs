//! Idle scale: many relayed connections that carry nothing, what they cost the forwarder,
//! and whether every one of them still carries one byte each way afterwards.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mio::{Events, Interest, Poll, Token};

use super::{CpuMeter, Figures, LoadContext};
use crate::procfs::{self, Resources};
use crate::sink::MODE_ECHO;

/// Connections opened but not yet seen by the sink, at most (the forwarder's accept queue
/// and dialing keep up at their own pace; SYNs beyond its backlog would be dropped).
const IN_FLIGHT: u64 = 256;
/// Give up on the sink seeing more connections after this long without progress.
const STALL_LIMIT: Duration = Duration::from_secs(10);
/// Stop connecting after this many refused or timed-out connects.
const MAX_CONNECT_FAILURES: u64 = 100;

/// Opens `count` connections through the contender. Figures: `connections`, `relayed`,
/// `lost_up`, `lost_down`, `setup_s`, `cpu_s`, and for a forwarder its `rss_mib`, `pss_mib`,
/// per-connection `rss_kib_per_conn` and `pss_kib_per_conn` (idle), the same after one byte
/// each way (`..._after_io`), `threads`, `io_wq_threads`, `fds`, `processes`, and
/// `kernel_stack_kib_per_conn` (the machine's kernel stacks' growth while the connections are
/// idle: what io-wq workers cost outside any RSS; other work on the machine adds noise).
pub fn run(context: &LoadContext<'_>, count: u32) -> Result<Figures> {
    let before = context.sink.stats()?;
    let resources_before = context.forwarder.map(procfs::resources);
    let kernel_stack_before = procfs::kernel_stack_kib();
    let cpu = CpuMeter::start(context.forwarder);
    let began = Instant::now();

    let mut streams: Vec<TcpStream> = Vec::with_capacity(count as usize);
    let mut failures = 0u64;
    let mut first_failure = None;
    let mut last_progress = (0u64, Instant::now());
    while streams.len() < count as usize && failures < MAX_CONNECT_FAILURES {
        if (streams.len() as u64).saturating_sub(last_progress.0) >= IN_FLIGHT {
            let seen = context.sink.stats()?.accepted - before.accepted;
            if seen != last_progress.0 {
                last_progress = (seen, Instant::now());
            } else if last_progress.1.elapsed() > STALL_LIMIT {
                break;
            } else {
                std::thread::sleep(Duration::from_micros(500));
            }
            continue;
        }
        match TcpStream::connect_timeout(&context.entry.addr, Duration::from_secs(3)) {
            Ok(stream) => streams.push(stream),
            Err(error) => {
                failures += 1;
                first_failure.get_or_insert(error);
            }
        }
    }
    let opened = streams.len() as u64;
    if opened == 0 {
        bail!("no connection opened; first error: {first_failure:?}");
    }
    let sink = context.sink;
    let relayed = sink.wait_for_active(before.active + opened, STALL_LIMIT)? - before.active;
    let setup_seconds = began.elapsed().as_secs_f64();

    // Let lazily freed memory settle before reading what the idle connections hold.
    std::thread::sleep(Duration::from_millis(500));
    let resources_idle = context.forwarder.map(procfs::resources);
    let kernel_stack_idle = procfs::kernel_stack_kib();

    let (returned, streams) = exchange_one_byte(streams)?;
    // Bytes that reached the sink, echoed back or not.
    let arrived = sink.stats()?.echo_connections - before.echo_connections;
    let resources_after = context.forwarder.map(procfs::resources);
    let cpu_use = cpu.stop();

    drop(streams);
    sink.wait_for_active(before.active, Duration::from_secs(30))?;

    let mut figures = Figures::new();
    figures.insert("connections".into(), opened as f64);
    figures.insert("connect_failures".into(), failures as f64);
    figures.insert("relayed".into(), relayed as f64);
    figures.insert("lost_up".into(), opened.saturating_sub(arrived) as f64);
    figures.insert("lost_down".into(), opened.saturating_sub(returned) as f64);
    figures.insert("setup_s".into(), setup_seconds);
    figures.insert(
        "kernel_stack_kib_per_conn".into(),
        kernel_stack_idle.saturating_sub(kernel_stack_before) as f64 / opened as f64,
    );
    cpu_use.record(&mut figures);
    if let (Some(before), Some(idle), Some(after)) =
        (resources_before, resources_idle, resources_after)
    {
        add_resources(&mut figures, "", &before, &idle, opened);
        add_resources(&mut figures, "after_io_", &before, &after, opened);
    }
    Ok(figures)
}

fn add_resources(
    figures: &mut Figures,
    prefix: &str,
    before: &Resources,
    now: &Resources,
    count: u64,
) {
    let per_conn = |now: u64, before: u64| now.saturating_sub(before) as f64 / count as f64;
    figures.insert(format!("{prefix}rss_mib"), now.rss_kib as f64 / 1024.0);
    figures.insert(format!("{prefix}pss_mib"), now.pss_kib as f64 / 1024.0);
    figures.insert(
        format!("{prefix}rss_kib_per_conn"),
        per_conn(now.rss_kib, before.rss_kib),
    );
    figures.insert(
        format!("{prefix}pss_kib_per_conn"),
        per_conn(now.pss_kib, before.pss_kib),
    );
    figures.insert(format!("{prefix}threads"), now.threads as f64);
    figures.insert(format!("{prefix}io_wq_threads"), now.io_wq_threads as f64);
    figures.insert(format!("{prefix}fds"), now.fds as f64);
    figures.insert(format!("{prefix}processes"), now.processes as f64);
}

/// Sends one byte on every connection and counts those whose echo comes back within 10 s.
/// Returns the connections so that the caller decides when they close.
fn exchange_one_byte(streams: Vec<TcpStream>) -> Result<(u64, Vec<mio::net::TcpStream>)> {
    let poll = Poll::new().context("creating the idle test's epoll")?;
    let mut streams: Vec<mio::net::TcpStream> = streams
        .into_iter()
        .map(|stream| {
            stream.set_nonblocking(true)?;
            Ok(mio::net::TcpStream::from_std(stream))
        })
        .collect::<std::io::Result<_>>()?;
    for (index, stream) in streams.iter_mut().enumerate() {
        poll.registry()
            .register(stream, Token(index), Interest::READABLE)?;
    }
    let mut pending = vec![true; streams.len()];
    let mut unsent = 0u64;
    for stream in streams.iter_mut() {
        // A fresh connection's send buffer is empty: one byte never blocks.
        if stream.write(&[MODE_ECHO]).is_err() {
            unsent += 1;
        }
    }
    let mut poll = poll;
    let mut returned = 0u64;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Events::with_capacity(1024);
    let mut byte = [0u8; 16];
    while returned + unsent < streams.len() as u64 && Instant::now() < deadline {
        match poll.poll(&mut events, Some(Duration::from_millis(100))) {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(error).context("waiting for echoes"),
        }
        for event in &events {
            let index = event.token().0;
            if !pending[index] {
                continue;
            }
            if let Ok(count) = streams[index].read(&mut byte)
                && count > 0
            {
                pending[index] = false;
                returned += 1;
            }
        }
    }
    Ok((returned, streams))
}
