//! The far end of every test: one epoll thread that discards, sources or echoes, chosen by
//! the first byte a connection sends, and one thread on a UDP socket bound to the same port
//! that counts datagrams (echoing those whose first byte is [`MODE_ECHO`]).
//!
//! One sink serves all tests, so a contender's configuration never changes between tests.
//! It runs in a child process of its own (the harness re-executed with `--internal-sink`):
//! the idle test's 10,000 client sockets and the sink's 10,000 accepted ones would not fit
//! one process's file-descriptor limit where it cannot be raised. The parent asks for the
//! counters over the child's stdin and stdout.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::topology::Endpoint;

/// First byte of an upload: the sink reads and counts everything that follows.
pub const MODE_DISCARD: u8 = b'U';
/// First byte of a download: the sink writes until the connection breaks.
pub const MODE_SOURCE: u8 = b'D';
/// First byte of a request (see [`REQUEST_SIZE`]): the sink answers with as many bytes, then
/// closes the connection itself, so TIME_WAIT stays on the server side as with HTTP/1.0 and
/// the client's ephemeral ports do not run out under the connection-rate load.
pub const MODE_REQUEST: u8 = b'R';
/// Size of a request and of its response.
pub const REQUEST_SIZE: usize = 64;
/// Any other first byte starts an echo: everything, that byte included, is sent back.
pub const MODE_ECHO: u8 = b'E';

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONNECTION: usize = 2;
const CHUNK: usize = 256 * 1024;
/// Datagrams one recvmmsg call takes at most.
const UDP_BATCH: usize = 64;
/// Receive buffer per datagram; longer ones are still counted at their full length.
const UDP_BUFFER: usize = 2048;
/// The UDP socket's receive buffer, so that a burst from a forwarder is queued rather than
/// dropped while the sink waits for its turn on the shared load CPU.
pub const UDP_RECEIVE_BUFFER: usize = 8 << 20;

/// Counters the sink keeps; all only grow except `active`.
#[derive(Debug, Default)]
struct SinkStats {
    accepted: AtomicU64,
    active: AtomicU64,
    discarded_bytes: AtomicU64,
    echo_connections: AtomicU64,
    udp_datagrams: AtomicU64,
    udp_bytes: AtomicU64,
}

impl SinkStats {
    fn snapshot(&self) -> SinkCounters {
        SinkCounters {
            accepted: self.accepted.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            discarded_bytes: self.discarded_bytes.load(Ordering::Relaxed),
            echo_connections: self.echo_connections.load(Ordering::Relaxed),
            udp_datagrams: self.udp_datagrams.load(Ordering::Relaxed),
            udp_bytes: self.udp_bytes.load(Ordering::Relaxed),
        }
    }
}

/// The sink's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkCounters {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open now.
    pub active: u64,
    /// Bytes received by discard connections.
    pub discarded_bytes: u64,
    /// Connections whose first byte chose echo (the idle test counts arrivals with it).
    pub echo_connections: u64,
    /// Datagrams received on the UDP socket, echoed or not.
    pub udp_datagrams: u64,
    /// Their payload bytes.
    pub udp_bytes: u64,
}

impl SinkCounters {
    fn to_line(self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.accepted,
            self.active,
            self.discarded_bytes,
            self.echo_connections,
            self.udp_datagrams,
            self.udp_bytes
        )
    }

    fn from_line(line: &str) -> Result<SinkCounters> {
        let numbers: Vec<u64> = line
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| format!("bad counters line from the sink: {line:?}"))?;
        let [
            accepted,
            active,
            discarded_bytes,
            echo_connections,
            udp_datagrams,
            udp_bytes,
        ] = numbers[..]
        else {
            bail!("bad counters line from the sink: {line:?}");
        };
        Ok(SinkCounters {
            accepted,
            active,
            discarded_bytes,
            echo_connections,
            udp_datagrams,
            udp_bytes,
        })
    }
}

/// A sink running in a child process; dropping it ends the child.
pub struct Sink {
    addr: SocketAddr,
    child: Child,
    control: Mutex<Option<(ChildStdin, BufReader<ChildStdout>)>>,
}

impl Sink {
    /// Starts a sink process bound to `endpoint` (inside its namespace, if any).
    pub fn start(endpoint: &Endpoint) -> Result<Sink> {
        endpoint.check_allowed()?;
        let program = std::env::current_exe().context("finding the harness's own binary")?;
        let mut command = Command::new(program);
        command
            .arg("--internal-sink")
            .arg(endpoint.addr.to_string());
        if let Some(netns) = &endpoint.netns {
            command.arg("--internal-sink-netns").arg(netns);
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the sink process")?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("the sink process has no pipes");
        };
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        stdout
            .read_line(&mut line)
            .context("waiting for the sink to start")?;
        let addr = match line.trim().split_once(' ') {
            Some(("ready", addr)) => addr.parse().context("the sink's address")?,
            _ => {
                let _ = child.kill(); // it failed already; this only makes sure
                let _ = child.wait();
                bail!(
                    "the sink for {} did not start: {}",
                    endpoint.addr,
                    line.trim()
                );
            }
        };
        Ok(Sink {
            addr,
            child,
            control: Mutex::new(Some((stdin, stdout))),
        })
    }

    /// Where the sink listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The sink's counters now (one round trip over a pipe, some 20 µs).
    pub fn stats(&self) -> Result<SinkCounters> {
        let mut control = self
            .control
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some((stdin, stdout)) = control.as_mut() else {
            bail!("the sink is stopped")
        };
        stdin
            .write_all(b"stats\n")
            .context("asking the sink for its counters")?;
        stdin.flush()?;
        let mut line = String::new();
        if stdout
            .read_line(&mut line)
            .context("reading the sink's counters")?
            == 0
        {
            bail!("the sink process has exited");
        }
        SinkCounters::from_line(line.trim())
    }

    /// Waits until `wanted` connections are open, or the timeout passes; returns the count
    /// last seen.
    pub fn wait_for_active(&self, wanted: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let active = self.stats()?.active;
            if active == wanted || Instant::now() >= deadline {
                return Ok(active);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // Closing its stdin tells the sink to stop; it closes all its connections on exit.
        let mut control = self
            .control
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        control.take();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill(); // it did not stop in time; nothing else to do about it
        let _ = self.child.wait();
    }
}

/// The child side: binds `endpoint`, says `ready ADDR` (or `error ...`) on stdout, then
/// answers every `stats` line on stdin with the counters until stdin closes.
pub fn serve_as_child(endpoint: Endpoint) -> Result<()> {
    let stdout = std::io::stdout();
    let server = match SinkServer::start(endpoint) {
        Ok(server) => server,
        Err(error) => {
            writeln!(stdout.lock(), "error {error:#}")?;
            return Ok(());
        }
    };
    writeln!(stdout.lock(), "ready {}", server.addr)?;
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if line.trim() == "stats" {
            let mut out = stdout.lock();
            writeln!(out, "{}", server.stats.snapshot().to_line())?;
            out.flush()?;
        }
    }
    Ok(())
}

/// The sink's event loop on its own thread; dropping it stops the thread and closes every
/// connection.
struct SinkServer {
    addr: SocketAddr,
    stats: Arc<SinkStats>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl SinkServer {
    /// Binds `endpoint` (inside its namespace, if any) and starts serving.
    fn start(endpoint: Endpoint) -> Result<SinkServer> {
        let stats = Arc::new(SinkStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_stats = Arc::clone(&stats);
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name(format!("sink {}", endpoint.addr))
            .spawn(move || {
                let setup = (|| {
                    // The parent checked the endpoint before starting this process; the
                    // namespace registry lives there, not here.
                    if let Some(name) = &endpoint.netns {
                        crate::topology::enter_netns(name)?;
                    }
                    let listener = bind_listener(endpoint.addr)?;
                    let udp = bind_udp(listener.local_addr()?)?;
                    let poll = Poll::new().context("creating the sink's epoll")?;
                    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
                    Ok::<_, anyhow::Error>((listener, udp, poll, waker))
                })();
                match setup {
                    Ok((listener, udp, poll, waker)) => {
                        let addr = listener.local_addr().ok();
                        let udp_stats = Arc::clone(&thread_stats);
                        let udp_stop = Arc::clone(&thread_stop);
                        let udp_thread = std::thread::Builder::new()
                            .name("sink udp".into())
                            .spawn(move || serve_udp(&udp, &udp_stats, &udp_stop));
                        let udp_thread = match udp_thread {
                            Ok(thread) => thread,
                            Err(error) => {
                                let error = anyhow::Error::from(error).context("spawning udp");
                                let _ = ready_tx.send(Err(error)); // nobody left to tell
                                return;
                            }
                        };
                        if ready_tx.send(Ok((addr, Arc::clone(&waker)))).is_ok() {
                            serve(listener, poll, &thread_stats, &thread_stop);
                        }
                        thread_stop.store(true, Ordering::Relaxed);
                        let _ = udp_thread.join(); // a panicked UDP thread has nothing to clean
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(error)); // the caller is gone: nothing to tell
                    }
                }
            })
            .context("spawning the sink thread")?;
        let (addr, waker) = ready_rx
            .recv()
            .context("the sink thread died while starting")??;
        Ok(SinkServer {
            addr: addr.context("the sink's listener has no address")?,
            stats,
            stop,
            waker,
            thread: Some(thread),
        })
    }
}

impl Drop for SinkServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake(); // if waking fails the thread is already gone
        if let Some(thread) = self.thread.take() {
            let _ = thread.join(); // a panicked sink thread has nothing left to clean
        }
    }
}

fn bind_listener(addr: SocketAddr) -> Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding the sink to {addr}"))?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// Binds the UDP socket next to the TCP listener, with a large receive buffer (forced past
/// `rmem_max` where the harness may, which it may as root) and a 200 ms receive timeout so
/// that its thread notices the stop flag.
fn bind_udp(addr: SocketAddr) -> Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket
        .bind(&addr.into())
        .with_context(|| format!("binding the sink's UDP socket to {addr}"))?;
    let size = UDP_RECEIVE_BUFFER as libc::c_int;
    // SAFETY: the fd is open and `size` outlives the call, which copies it.
    let forced = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&socket),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if forced != 0 {
        // Without CAP_NET_ADMIN the buffer is capped at rmem_max, which still helps.
        socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER)?;
    }
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(socket.into())
}

/// Counts every datagram with recvmmsg, echoing those that start with [`MODE_ECHO`] to
/// their sender, until `stop` is set.
fn serve_udp(socket: &std::net::UdpSocket, stats: &SinkStats, stop: &AtomicBool) {
    use std::os::fd::AsRawFd;

    let fd = socket.as_raw_fd();
    let mut buffers = vec![[0u8; UDP_BUFFER]; UDP_BATCH];
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid (unspecified) value.
    let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; UDP_BATCH];
    let mut iovecs: Vec<libc::iovec> = buffers
        .iter_mut()
        .map(|buffer| libc::iovec {
            iov_base: buffer.as_mut_ptr().cast(),
            iov_len: UDP_BUFFER,
        })
        .collect();
    // SAFETY: mmsghdr is plain data (pointers and lengths); zeroes are valid before setup.
    let mut headers: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; UDP_BATCH];
    for (index, header) in headers.iter_mut().enumerate() {
        header.msg_hdr.msg_iov = &mut iovecs[index];
        header.msg_hdr.msg_iovlen = 1;
        header.msg_hdr.msg_name = (&mut names[index] as *mut libc::sockaddr_storage).cast();
    }
    let name_size = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;

    while !stop.load(Ordering::Relaxed) {
        for header in headers.iter_mut() {
            header.msg_hdr.msg_namelen = name_size;
        }
        // SAFETY: every header points at a live iovec, buffer and name of the sizes given;
        // none of them moves or is dropped while the call runs. MSG_TRUNC makes each
        // msg_len the datagram's full length even where the buffer was shorter.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                headers.as_mut_ptr(),
                UDP_BATCH as libc::c_uint,
                libc::MSG_WAITFORONE | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if received <= 0 {
            // A timeout (the stop flag is looked at again) or a transient error.
            continue;
        }
        let mut bytes = 0u64;
        for index in 0..received as usize {
            let header = &headers[index];
            let length = header.msg_len as usize;
            bytes += length as u64;
            if length > 0 && buffers[index][0] == MODE_ECHO {
                // SAFETY: the buffer holds min(length, UDP_BUFFER) received bytes and the
                // name is the sender's address as recvmmsg wrote it.
                unsafe {
                    libc::sendto(
                        fd,
                        buffers[index].as_ptr().cast(),
                        length.min(UDP_BUFFER),
                        0,
                        header.msg_hdr.msg_name.cast(),
                        header.msg_hdr.msg_namelen,
                    )
                };
            }
        }
        stats
            .udp_datagrams
            .fetch_add(received as u64, Ordering::Relaxed);
        stats.udp_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

enum Mode {
    Undecided,
    Discard,
    Source,
    Echo,
    /// Bytes of the request received so far.
    Request(usize),
    /// The response is queued; close once it is sent.
    Answered,
}

struct Connection {
    stream: TcpStream,
    mode: Mode,
    unsent: Vec<u8>,
}

fn serve(mut listener: TcpListener, mut poll: Poll, stats: &SinkStats, stop: &AtomicBool) {
    if let Err(error) = poll
        .registry()
        .register(&mut listener, LISTENER, Interest::READABLE)
    {
        eprintln!("uringgost-bench: sink cannot watch its listener: {error}");
        return;
    }
    let mut events = Events::with_capacity(1024);
    let mut connections: Vec<Option<Connection>> = Vec::new();
    let mut free_slots: Vec<usize> = Vec::new();
    let mut buffer = vec![0u8; CHUNK];
    let source = vec![b's'; CHUNK];

    while !stop.load(Ordering::Relaxed) {
        if let Err(error) = poll.poll(&mut events, Some(Duration::from_millis(200))) {
            if error.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            eprintln!("uringgost-bench: sink poll failed: {error}");
            return;
        }
        for event in &events {
            match event.token() {
                WAKER => {}
                LISTENER => loop {
                    let mut stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                        // Out of fds or a connection reset before accept: try the next one.
                        Err(_) => break,
                    };
                    let slot = free_slots.pop().unwrap_or_else(|| {
                        connections.push(None);
                        connections.len() - 1
                    });
                    let token = Token(FIRST_CONNECTION + slot);
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if poll
                        .registry()
                        .register(&mut stream, token, interest)
                        .is_err()
                    {
                        free_slots.push(slot);
                        continue;
                    }
                    let _ = stream.set_nodelay(true); // only a latency nicety
                    stats.accepted.fetch_add(1, Ordering::Relaxed);
                    stats.active.fetch_add(1, Ordering::Relaxed);
                    connections[slot] = Some(Connection {
                        stream,
                        mode: Mode::Undecided,
                        unsent: Vec::new(),
                    });
                },
                Token(token) => {
                    let slot = token - FIRST_CONNECTION;
                    let Some(Some(connection)) = connections.get_mut(slot) else {
                        continue;
                    };
                    if !drive(connection, &mut buffer, &source, stats) {
                        if let Some(mut gone) = connections[slot].take() {
                            let _ = poll.registry().deregister(&mut gone.stream); // closing anyway
                        }
                        free_slots.push(slot);
                        stats.active.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}

/// Moves as much data as the socket allows now; returns false when the connection is done.
fn drive(connection: &mut Connection, buffer: &mut [u8], source: &[u8], stats: &SinkStats) -> bool {
    loop {
        if let Mode::Source = connection.mode {
            return match connection.stream.write(source) {
                Ok(_) => continue,
                Err(error) => keep_after(&error),
            };
        }
        while !connection.unsent.is_empty() {
            match connection.stream.write(&connection.unsent) {
                Ok(written) => {
                    connection.unsent.drain(..written);
                }
                Err(error) => return keep_after(&error),
            }
        }
        if let Mode::Answered = connection.mode {
            return false;
        }
        let received = match connection.stream.read(buffer) {
            Ok(0) => return false,
            Ok(received) => received,
            Err(error) => return keep_after(&error),
        };
        if let Mode::Undecided = connection.mode {
            connection.mode = match buffer[0] {
                MODE_DISCARD => Mode::Discard,
                MODE_SOURCE => Mode::Source,
                MODE_REQUEST => Mode::Request(0),
                _ => {
                    stats.echo_connections.fetch_add(1, Ordering::Relaxed);
                    Mode::Echo
                }
            };
        }
        match connection.mode {
            Mode::Discard => {
                stats
                    .discarded_bytes
                    .fetch_add(received as u64, Ordering::Relaxed);
            }
            Mode::Echo => connection.unsent.extend_from_slice(&buffer[..received]),
            Mode::Request(so_far) if so_far + received >= REQUEST_SIZE => {
                connection
                    .unsent
                    .extend_from_slice(&[MODE_REQUEST; REQUEST_SIZE]);
                connection.mode = Mode::Answered;
            }
            Mode::Request(so_far) => connection.mode = Mode::Request(so_far + received),
            Mode::Source | Mode::Undecided | Mode::Answered => {}
        }
    }
}

/// Whether a connection survives this I/O error: only "would block" and "interrupted" keep it.
fn keep_after(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Checks that a sink answers an echo on `addr` (used before any contender runs).
pub fn self_test(sink: &Sink) -> Result<()> {
    let mut stream = std::net::TcpStream::connect_timeout(&sink.addr(), Duration::from_secs(2))
        .with_context(|| format!("connecting to the sink at {}", sink.addr()))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"Ehello")?;
    let mut answer = [0u8; 6];
    stream
        .read_exact(&mut answer)
        .context("reading the sink's echo")?;
    if &answer != b"Ehello" {
        bail!("the sink echoed {answer:?}");
    }
    udp_echo(sink.addr(), Duration::from_secs(2)).context("the sink's UDP socket")
}

/// Sends one echo datagram to `addr` from a fresh socket and waits `timeout` for it to come
/// back unchanged: the sink answers it, and a forwarder in between must relay the reply.
pub fn udp_echo(addr: SocketAddr, timeout: Duration) -> Result<()> {
    let local: SocketAddr = if addr.is_ipv4() {
        ([127, 0, 0, 1], 0).into()
    } else {
        (std::net::Ipv6Addr::LOCALHOST, 0).into()
    };
    let socket = std::net::UdpSocket::bind(local).context("binding a UDP probe socket")?;
    socket
        .connect(addr)
        .with_context(|| format!("connecting a UDP probe to {addr}"))?;
    socket.set_read_timeout(Some(timeout))?;
    let probe = [MODE_ECHO, b'p', b'r', b'o', b'b', b'e'];
    socket
        .send(&probe)
        .with_context(|| format!("sending a UDP probe to {addr}"))?;
    let mut answer = [0u8; 16];
    let length = socket
        .recv(&mut answer)
        .with_context(|| format!("waiting for the UDP echo from {addr}"))?;
    if answer[..length] != probe {
        bail!(
            "the UDP echo from {addr} came back as {:?}",
            &answer[..length]
        );
    }
    Ok(())
}
