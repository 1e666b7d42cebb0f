//! Connection rate: a fixed number of clients each connect, send a 64-byte request, read the
//! 64-byte response and the server's close, and start over, as fast as the contender allows.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::{CpuMeter, Figures, LoadContext, add_percentiles, latency_histogram};
use crate::sink::{MODE_REQUEST, REQUEST_SIZE};

/// Upper bound on connections one run makes, whatever its duration.
const MAX_CONNECTIONS: u64 = 5_000_000;
/// A run gives up when this many connections fail before any succeeds.
const MAX_EARLY_FAILURES: u64 = 200;

enum Phase {
    /// SYN sent, waiting for the connection to be writable.
    Connecting,
    /// Request sent; counts response bytes read.
    Waiting(usize),
}

struct Client {
    stream: TcpStream,
    started: Instant,
    first_byte: Option<Instant>,
    phase: Phase,
}

/// Runs `clients` concurrent connect/request/response/close loops. Figures: `conn_per_s`,
/// connect-to-first-byte percentiles (`p50_us`, ...), `errors`, `cpu_s`, `cpu_us_per_conn`.
pub fn run(context: &LoadContext<'_>, clients: usize) -> Result<Figures> {
    let addr = context.entry.addr;
    let mut poll = Poll::new().context("creating the client's epoll")?;
    let mut events = Events::with_capacity(256);
    let mut histogram = latency_histogram()?;
    let mut slots: Vec<Option<Client>> = (0..clients).map(|_| None).collect();
    let mut buffer = [0u8; 4096];
    let (mut started_total, mut completed, mut errors) = (0u64, 0u64, 0u64);
    let mut first_error: Option<String> = None;

    let begin = Instant::now();
    let measure_from = begin + context.warmup;
    let measure_until = measure_from + context.duration;
    let mut cpu: Option<CpuMeter> = None;
    let cpu_use;

    loop {
        let now = Instant::now();
        if cpu.is_none() && now >= measure_from {
            cpu = Some(CpuMeter::start(context.forwarder));
        }
        if now >= measure_until {
            cpu_use = cpu.as_ref().map(CpuMeter::stop);
            break;
        }
        for (index, slot) in slots.iter_mut().enumerate() {
            if slot.is_none() && started_total < MAX_CONNECTIONS {
                started_total += 1;
                match open(&poll, addr, index) {
                    Ok(client) => *slot = Some(client),
                    Err(error) => {
                        errors += 1;
                        first_error.get_or_insert_with(|| format!("{error:#}"));
                    }
                }
            }
        }
        if completed == 0 && errors >= MAX_EARLY_FAILURES {
            bail!(
                "{errors} connections failed, none succeeded; first: {}",
                first_error.unwrap_or_default()
            );
        }
        match poll.poll(&mut events, Some(Duration::from_millis(10))) {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(error).context("polling the clients"),
        }
        for event in &events {
            let index = event.token().0;
            let Some(client) = slots[index].as_mut() else {
                continue;
            };
            let outcome = advance(client, &mut buffer);
            let finished_at = Instant::now();
            match outcome {
                Ok(Progress::Pending) => continue,
                Ok(Progress::Done { first_byte }) => {
                    if finished_at >= measure_from && finished_at < measure_until {
                        completed += 1;
                        let nanos = first_byte.duration_since(client.started).as_nanos();
                        histogram.saturating_record(u64::try_from(nanos).unwrap_or(u64::MAX));
                    }
                }
                Err(error) => {
                    errors += 1;
                    first_error.get_or_insert_with(|| format!("{error:#}"));
                }
            }
            if let Some(mut gone) = slots[index].take() {
                let _ = poll.registry().deregister(&mut gone.stream); // closing it anyway
            }
        }
    }
    drop(slots);

    if completed == 0 {
        bail!(
            "no connection completed; {errors} failed, first: {}",
            first_error.unwrap_or_default()
        );
    }
    let mut figures = Figures::new();
    figures.insert(
        "conn_per_s".into(),
        completed as f64 / context.duration.as_secs_f64(),
    );
    figures.insert("errors".into(), errors as f64);
    add_percentiles(&mut figures, "", &histogram);
    if let Some(cpu_use) = &cpu_use {
        cpu_use.record(&mut figures);
    }
    if let Some(cpu_seconds) = cpu_use.and_then(|cpu_use| cpu_use.forwarder) {
        figures.insert(
            "cpu_us_per_conn".into(),
            cpu_seconds * 1e6 / completed as f64,
        );
    }
    Ok(figures)
}

enum Progress {
    Pending,
    /// The response arrived and the server closed; `first_byte` is when the response began.
    Done {
        first_byte: Instant,
    },
}

fn open(poll: &Poll, addr: std::net::SocketAddr, index: usize) -> Result<Client> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    poll.registry()
        .register(
            &mut stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        )
        .context("registering a client")?;
    Ok(Client {
        stream,
        started: Instant::now(),
        first_byte: None,
        phase: Phase::Connecting,
    })
}

fn advance(client: &mut Client, buffer: &mut [u8]) -> Result<Progress> {
    if let Phase::Connecting = client.phase {
        if let Some(error) = client.stream.take_error()? {
            return Err(error).context("connecting");
        }
        match client.stream.peer_addr() {
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::NotConnected => return Ok(Progress::Pending),
            Err(error) => return Err(error).context("connecting"),
        }
        let _ = client.stream.set_nodelay(true); // only a latency nicety
        let request = [MODE_REQUEST; REQUEST_SIZE];
        let written = client
            .stream
            .write(&request)
            .context("sending the request")?;
        if written != REQUEST_SIZE {
            bail!("a {REQUEST_SIZE}-byte request went out as {written} bytes");
        }
        client.phase = Phase::Waiting(0);
    }
    let Phase::Waiting(mut received) = client.phase else {
        return Ok(Progress::Pending);
    };
    loop {
        match client.stream.read(buffer) {
            Ok(0) if received >= REQUEST_SIZE => {
                let first_byte = client.first_byte.unwrap_or_else(Instant::now);
                return Ok(Progress::Done { first_byte });
            }
            Ok(0) => bail!("closed after {received} of {REQUEST_SIZE} response bytes"),
            Ok(count) => {
                if received == 0 {
                    client.first_byte = Some(Instant::now());
                }
                received += count;
                client.phase = Phase::Waiting(received);
            }
            Err(error) if error.kind() == ErrorKind::WouldBlock => return Ok(Progress::Pending),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error).context("reading the response"),
        }
    }
}
