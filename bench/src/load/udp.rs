//! UDP forwarding rate: a few client sockets, each its own session in the forwarder, send
//! datagrams of one size as fast as they can; the sink counts what arrives.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{CpuMeter, Figures, LoadContext};
use crate::procfs;
use crate::sink::MODE_DISCARD;

/// Datagrams one sendmmsg call hands to the kernel.
const SEND_BATCH: usize = 32;

/// Nice value of the sender thread: the sink shares the load CPU with it and must never be
/// the bottleneck, so the sender only gets the CPU time the sink leaves (the sink sleeps
/// whenever its queue is empty).
const SENDER_NICE: libc::c_int = 10;

/// Sends `payload`-byte datagrams from `clients` sockets (one thread, round robin, at a lower
/// priority than the sink) for the warm-up and the measured duration.
///
/// Figures: `sent_pps` and `pps` (received by the sink) in the measured window, `loss_pct`,
/// `gbps` (payload received), `cpu_s`, `kpps_per_cpu_s` and `mbyte_per_cpu_s` (received
/// datagrams and bytes per forwarder CPU-second), `send_errors`, and where datagrams were
/// dropped for a full receive buffer: `fwd_drop_pct` at the forwarder's listening sockets,
/// `sink_drop_pct` at the sink's (both as a share of those sent).
pub fn run(context: &LoadContext<'_>, clients: usize, payload: usize) -> Result<Figures> {
    let sockets = (0..clients)
        .map(|index| client_socket(context.entry.addr, index))
        .collect::<Result<Vec<_>>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let sender = {
        let (stop, sent, errors) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&errors));
        std::thread::Builder::new()
            .name("udp sender".into())
            .spawn(move || send_until(&sockets, payload, &stop, &sent, &errors))
            .context("spawning the UDP sender")?
    };

    let entry_port = context.entry.addr.port();
    let sink_port = context.sink.addr().port();
    // Without a forwarder the entry is the sink: its drops count once, as the sink's.
    let forwarder_drops = || match context.forwarder {
        Some(_) => procfs::udp_drops_on_port(entry_port),
        None => 0,
    };

    std::thread::sleep(context.warmup);
    let drops_before = (forwarder_drops(), procfs::udp_drops_on_port(sink_port));
    let sink_before = context.sink.stats();
    let (sent_before, errors_before) =
        (sent.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
    let (started, cpu) = (Instant::now(), CpuMeter::start(context.forwarder));
    std::thread::sleep(context.duration);
    let (sent_after, errors_after) = (sent.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
    let sink_after = context.sink.stats();
    let drops_after = (forwarder_drops(), procfs::udp_drops_on_port(sink_port));
    let (elapsed, cpu_use) = (started.elapsed(), cpu.stop());
    stop.store(true, Ordering::Relaxed);
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("the UDP sender panicked"))?;
    let (sink_before, sink_after) = (sink_before?, sink_after?);

    let seconds = elapsed.as_secs_f64();
    let sent = sent_after.saturating_sub(sent_before) as f64;
    let received = sink_after
        .udp_datagrams
        .saturating_sub(sink_before.udp_datagrams) as f64;
    let bytes = sink_after.udp_bytes.saturating_sub(sink_before.udp_bytes) as f64;
    let send_errors = errors_after.saturating_sub(errors_before);
    if received == 0.0 {
        bail!(
            "no datagram arrived in {elapsed:?} ({sent} sent, {send_errors} send errors, first \
             client {})",
            context.entry.addr
        );
    }
    let mut figures = Figures::new();
    figures.insert("sent_pps".into(), sent / seconds);
    figures.insert("pps".into(), received / seconds);
    // Datagrams in flight at the window's edges can make this a hair negative: none lost.
    let loss = if sent > 0.0 {
        (1.0 - received / sent).max(0.0) * 100.0
    } else {
        0.0
    };
    figures.insert("loss_pct".into(), loss);
    if sent > 0.0 {
        let share = |after: u64, before: u64| after.saturating_sub(before) as f64 / sent * 100.0;
        figures.insert("fwd_drop_pct".into(), share(drops_after.0, drops_before.0));
        figures.insert("sink_drop_pct".into(), share(drops_after.1, drops_before.1));
    }
    figures.insert("gbps".into(), bytes * 8.0 / 1e9 / seconds);
    figures.insert("send_errors".into(), send_errors as f64);
    cpu_use.record(&mut figures);
    if let Some(cpu_seconds) = cpu_use.forwarder.filter(|seconds| *seconds > 0.0) {
        figures.insert("kpps_per_cpu_s".into(), received / 1e3 / cpu_seconds);
        figures.insert("mbyte_per_cpu_s".into(), bytes / 1e6 / cpu_seconds);
    }
    Ok(figures)
}

/// A client socket on its own loopback port, connected to `entry` so that sendmmsg needs no
/// addresses; the port makes it a session of its own in the forwarder.
fn client_socket(entry: SocketAddr, index: usize) -> Result<UdpSocket> {
    let local: SocketAddr = ([127, 0, 0, 1], 0).into();
    let socket = UdpSocket::bind(local).with_context(|| format!("UDP client {index}: binding"))?;
    socket
        .connect(entry)
        .with_context(|| format!("UDP client {index}: connecting to {entry}"))?;
    // Loopback never holds a datagram in the send buffer, but a send must not hang forever
    // if something does.
    socket.set_write_timeout(Some(Duration::from_millis(200)))?;
    Ok(socket)
}

/// Sends batches round robin over `sockets` until `stop`; counts datagrams the kernel took
/// and calls that failed (a refused port after an ICMP error, a full queue).
fn send_until(
    sockets: &[UdpSocket],
    payload: usize,
    stop: &AtomicBool,
    sent: &AtomicU64,
    errors: &AtomicU64,
) {
    let mut datagram = vec![b'u'; payload.max(1)];
    datagram[0] = MODE_DISCARD;
    // SAFETY: setpriority with PRIO_PROCESS and a thread id changes only that thread's nice
    // value; it touches no memory. Failing leaves the default priority, which is still fair.
    unsafe {
        let thread = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, thread as libc::id_t, SENDER_NICE);
    }
    let mut iovec = libc::iovec {
        iov_base: datagram.as_mut_ptr().cast(),
        iov_len: datagram.len(),
    };
    // SAFETY: mmsghdr is plain data; zeroes (no name, no control data) are valid.
    let mut headers: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; SEND_BATCH];
    for header in headers.iter_mut() {
        // Every message sends the same bytes: the kernel only reads through the iovec.
        header.msg_hdr.msg_iov = &mut iovec;
        header.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        for socket in sockets {
            // SAFETY: every header points at `iovec`, which points at `datagram`; both live
            // and stay in place for the whole call. The socket is connected: no names.
            let count = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    headers.as_mut_ptr(),
                    SEND_BATCH as libc::c_uint,
                    0,
                )
            };
            if count > 0 {
                sent.fetch_add(count as u64, Ordering::Relaxed);
            } else {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
