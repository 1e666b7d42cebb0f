//! Request/response latency: 1 KiB ping-pong on persistent connections at a fixed offered
//! rate. Each request has a scheduled send time and its latency counts from that time, so a
//! stall delays the requests behind it and shows up in the figures instead of hiding.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;

use super::{
    CpuMeter, Figures, LoadContext, add_percentiles, latency_histogram, tighten_timer_slack,
};
use crate::sink::MODE_ECHO;

/// Size of each request and of its echo.
pub const MESSAGE_SIZE: usize = 1024;

/// Runs `connections` connections offering `rate` requests per second in total.
/// Figures: `p50_us`, `p99_us`, `p999_us`, `max_us`, `achieved_per_s`, `cpu_s`.
pub fn run(context: &LoadContext<'_>, connections: u32, rate: u32) -> Result<Figures> {
    let mut streams = Vec::new();
    for index in 0..connections {
        let stream = TcpStream::connect_timeout(&context.entry.addr, Duration::from_secs(3))
            .with_context(|| format!("connection {index}: connecting to {}", context.entry.addr))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        streams.push(stream);
    }

    // Requests are spread evenly: connection i sends at start + i/rate + k * connections/rate.
    let interval = Duration::from_secs_f64(f64::from(connections) / f64::from(rate));
    let start = Instant::now() + Duration::from_millis(50);
    let measure_from = start + context.warmup;
    let measure_until = measure_from + context.duration;

    let (histograms, cpu_use) = std::thread::scope(|scope| {
        let mut workers = Vec::new();
        for (index, stream) in streams.into_iter().enumerate() {
            let first = start + Duration::from_secs_f64(index as f64 / f64::from(rate));
            let window = (measure_from, measure_until);
            let worker = std::thread::Builder::new()
                .name(format!("latency {index}"))
                .spawn_scoped(scope, move || ping_pong(stream, first, interval, window));
            workers.push(worker);
        }
        let wait = measure_from.saturating_duration_since(Instant::now());
        std::thread::sleep(wait);
        let cpu = CpuMeter::start(context.forwarder);
        std::thread::sleep(measure_until.saturating_duration_since(Instant::now()));
        let cpu_use = cpu.stop();
        let mut histograms = Vec::new();
        for (index, worker) in workers.into_iter().enumerate() {
            let outcome = match worker {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("panicked"))),
                Err(error) => Err(error.into()),
            };
            histograms.push(outcome.with_context(|| format!("connection {index}")));
        }
        (histograms, cpu_use)
    });

    let mut total = latency_histogram()?;
    for histogram in histograms {
        total
            .add(histogram?)
            .context("merging latency histograms")?;
    }
    if total.is_empty() {
        bail!("no request was answered");
    }
    let mut figures = Figures::new();
    add_percentiles(&mut figures, "", &total);
    figures.insert(
        "achieved_per_s".into(),
        total.len() as f64 / context.duration.as_secs_f64(),
    );
    cpu_use.record(&mut figures);
    Ok(figures)
}

fn ping_pong(
    mut stream: TcpStream,
    first: Instant,
    interval: Duration,
    (measure_from, measure_until): (Instant, Instant),
) -> Result<Histogram<u64>> {
    tighten_timer_slack();
    let mut histogram = latency_histogram()?;
    let request = [MODE_ECHO; MESSAGE_SIZE];
    let mut response = [0u8; MESSAGE_SIZE];
    let mut scheduled = first;
    while scheduled < measure_until {
        let now = Instant::now();
        if scheduled > now {
            std::thread::sleep(scheduled - now);
        }
        stream.write_all(&request).context("sending a request")?;
        stream
            .read_exact(&mut response)
            .context("reading the echo")?;
        if scheduled >= measure_from {
            let nanos = scheduled.elapsed().as_nanos();
            histogram.saturating_record(u64::try_from(nanos).unwrap_or(u64::MAX));
        }
        scheduled += interval;
    }
    Ok(histogram)
}
