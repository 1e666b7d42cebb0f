//! Bulk throughput: N streams push bytes one way for a fixed time; the receiver counts.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{CpuMeter, Figures, LoadContext};
use crate::sink::{MODE_DISCARD, MODE_SOURCE};

/// Which way the bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to sink.
    Upload,
    /// Sink to client.
    Download,
}

const CHUNK: usize = 256 * 1024;
/// How often a blocked stream looks at the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Runs `streams` parallel streams in `direction`; figures: `gbps`, `cpu_s`, `gbit_per_cpu_s`.
pub fn run(context: &LoadContext<'_>, direction: Direction, streams: u32) -> Result<Figures> {
    let baseline_active = context.sink.stats()?.active;
    let stop = Arc::new(AtomicBool::new(false));
    let downloaded = Arc::new(AtomicU64::new(0));

    let mut workers = Vec::new();
    for index in 0..streams {
        let stream = TcpStream::connect_timeout(&context.entry.addr, Duration::from_secs(3))
            .with_context(|| format!("stream {index}: connecting to {}", context.entry.addr))?;
        stream.set_read_timeout(Some(POLL_INTERVAL))?;
        stream.set_write_timeout(Some(POLL_INTERVAL))?;
        let (stop, downloaded) = (Arc::clone(&stop), Arc::clone(&downloaded));
        let worker = std::thread::Builder::new()
            .name(format!("bulk {index}"))
            .spawn(move || match direction {
                Direction::Upload => upload(stream, &stop),
                Direction::Download => download(stream, &stop, &downloaded),
            })
            .context("spawning a bulk stream")?;
        workers.push(worker);
    }
    let received = || -> Result<u64> {
        Ok(match direction {
            Direction::Upload => context.sink.stats()?.discarded_bytes,
            Direction::Download => downloaded.load(Ordering::Relaxed),
        })
    };

    std::thread::sleep(context.warmup);
    let (bytes_before, started, cpu) = (
        received(),
        Instant::now(),
        CpuMeter::start(context.forwarder),
    );
    std::thread::sleep(context.duration);
    let (bytes_after, elapsed, cpu_use) = (received(), started.elapsed(), cpu.stop());
    stop.store(true, Ordering::Relaxed);
    let (bytes_before, bytes_after) = (bytes_before?, bytes_after?);

    let mut failures = Vec::new();
    for (index, worker) in workers.into_iter().enumerate() {
        match worker.join() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failures.push(format!("stream {index}: {error:#}")),
            Err(_) => failures.push(format!("stream {index} panicked")),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    // Give the forwarder time to close its side before the next load starts.
    context
        .sink
        .wait_for_active(baseline_active, Duration::from_secs(5))?;

    let bytes = bytes_after.saturating_sub(bytes_before) as f64;
    if bytes == 0.0 {
        bail!("no bytes arrived in {elapsed:?}");
    }
    let gbit = bytes * 8.0 / 1e9;
    let mut figures = Figures::new();
    figures.insert("gbps".into(), gbit / elapsed.as_secs_f64());
    cpu_use.record(&mut figures);
    if let Some(cpu_seconds) = cpu_use.forwarder.filter(|seconds| *seconds > 0.0) {
        figures.insert("gbit_per_cpu_s".into(), gbit / cpu_seconds);
    }
    Ok(figures)
}

fn upload(mut stream: TcpStream, stop: &AtomicBool) -> Result<()> {
    stream
        .write_all(&[MODE_DISCARD])
        .context("sending the mode byte")?;
    let chunk = vec![b'u'; CHUNK];
    while !stop.load(Ordering::Relaxed) {
        match stream.write(&chunk) {
            Ok(_) => {}
            Err(error) if is_timeout(error.kind()) => {}
            Err(error) => return Err(error).context("writing"),
        }
    }
    Ok(())
}

fn download(mut stream: TcpStream, stop: &AtomicBool, downloaded: &AtomicU64) -> Result<()> {
    stream
        .write_all(&[MODE_SOURCE])
        .context("sending the mode byte")?;
    let mut buffer = vec![0u8; CHUNK];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buffer) {
            Ok(0) => bail!("the connection closed while downloading"),
            Ok(count) => {
                downloaded.fetch_add(count as u64, Ordering::Relaxed);
            }
            Err(error) if is_timeout(error.kind()) => {}
            Err(error) => return Err(error).context("reading"),
        }
    }
    Ok(())
}

fn is_timeout(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
    )
}
