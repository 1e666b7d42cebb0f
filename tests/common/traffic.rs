//! Traffic with known content: deterministic byte streams, checksums, and the clients and
//! servers that send them, each on a thread inside a test namespace.

use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use super::STEP_TIMEOUT;
use super::netns::{Worker, spawn_in};

/// One MiB.
pub const MIB: u64 = 1024 * 1024;

/// Bound on every single read or write, so a stuck relay fails the test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

const CHUNK: usize = 64 * 1024;

/// A deterministic, position-addressable byte stream: 8-byte word `k` is `splitmix64(seed+k)`.
#[derive(Clone, Copy, Debug)]
pub struct Pattern {
    seed: u64,
}

impl Pattern {
    /// The stream for `seed`; different seeds give unrelated streams.
    pub fn new(seed: u64) -> Pattern {
        Pattern { seed }
    }

    /// Writes the stream's bytes from `offset` on into `buf`.
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let mut position = offset;
        let mut filled = 0;
        while filled < buf.len() {
            let word = splitmix64(self.seed.wrapping_add(position / 8)).to_le_bytes();
            let start = (position % 8) as usize;
            let count = (8 - start).min(buf.len() - filled);
            buf[filled..filled + count].copy_from_slice(&word[start..start + count]);
            filled += count;
            position += count as u64;
        }
    }

    /// The first `len` bytes of the stream.
    pub fn bytes(&self, len: u64) -> Vec<u8> {
        let mut bytes = vec![0; len as usize];
        self.fill(0, &mut bytes);
        bytes
    }

    /// The digest of the first `len` bytes, to compare with what a peer received.
    pub fn digest(&self, len: u64) -> Digest {
        let mut digest = Digest::default();
        let mut buf = vec![0; CHUNK];
        let mut offset = 0;
        while offset < len {
            let count = (len - offset).min(CHUNK as u64) as usize;
            self.fill(offset, &mut buf[..count]);
            digest.update(&buf[..count]);
            offset += count as u64;
        }
        digest
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Length and 64-bit FNV-1a checksum of a byte stream.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    /// Bytes seen.
    pub len: u64,
    /// FNV-1a over those bytes.
    pub fnv1a: u64,
}

impl Default for Digest {
    fn default() -> Digest {
        Digest {
            len: 0,
            fnv1a: 0xcbf2_9ce4_8422_2325,
        }
    }
}

impl Digest {
    /// Adds `bytes` to the stream.
    pub fn update(&mut self, bytes: &[u8]) {
        let mut hash = self.fnv1a;
        for &byte in bytes {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.fnv1a = hash;
        self.len += bytes.len() as u64;
    }

    /// The digest of `bytes` alone.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut digest = Digest::default();
        digest.update(bytes);
        digest
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes, fnv1a {:016x}", self.len, self.fnv1a)
    }
}

/// What one side of a full-duplex exchange sent and received.
#[derive(Debug)]
pub struct Exchanged {
    /// Digest of the bytes written before shutting down the write side.
    pub sent: Digest,
    /// Digest of the bytes read until EOF.
    pub received: Digest,
}

/// Sends `len` bytes of `pattern` then shuts down the write side, while reading until EOF at
/// the same time; the writer runs on a second thread inside `netns`.
pub fn exchange(stream: TcpStream, netns: &str, pattern: Pattern, len: u64) -> Exchanged {
    let mut writer = stream
        .try_clone()
        .expect("cloning a socket for its writer thread");
    let sending = spawn_in(netns, "pattern writer", move || {
        send_pattern(&mut writer, pattern, len).expect("sending the pattern")
    });
    let mut reader = stream;
    let received = receive_to_end(&mut reader).expect("receiving until EOF");
    let sent = sending.join(STEP_TIMEOUT);
    Exchanged { sent, received }
}

/// Sends `len` bytes of `pattern` while reading exactly `len` bytes, and sends no FIN: the
/// caller keeps the connection open until the peer has all its bytes too. This is for proxies
/// that tear a connection down at the first FIN, as tinyproxy does.
pub fn exchange_open(stream: &TcpStream, netns: &str, pattern: Pattern, len: u64) -> Exchanged {
    let mut writer = stream
        .try_clone()
        .expect("cloning a socket for its writer thread");
    let sending = spawn_in(netns, "pattern writer", move || {
        write_pattern(&mut writer, pattern, len).expect("sending the pattern")
    });
    let mut reader = stream.try_clone().expect("cloning a socket for its reader");
    let received = receive_exact(&mut reader, len).expect("receiving the peer's bytes");
    let sent = sending.join(STEP_TIMEOUT);
    Exchanged { sent, received }
}

/// Writes `len` bytes of `pattern`, then shuts down the write side (sends FIN).
pub fn send_pattern(stream: &mut TcpStream, pattern: Pattern, len: u64) -> io::Result<Digest> {
    let digest = write_pattern(stream, pattern, len)?;
    stream.shutdown(Shutdown::Write)?;
    Ok(digest)
}

fn write_pattern(stream: &mut TcpStream, pattern: Pattern, len: u64) -> io::Result<Digest> {
    let mut digest = Digest::default();
    let mut buf = vec![0; CHUNK];
    while digest.len < len {
        let count = (len - digest.len).min(CHUNK as u64) as usize;
        pattern.fill(digest.len, &mut buf[..count]);
        stream.write_all(&buf[..count])?;
        digest.update(&buf[..count]);
    }
    Ok(digest)
}

/// Reads until EOF and returns the digest of everything read.
pub fn receive_to_end(stream: &mut impl Read) -> io::Result<Digest> {
    let mut digest = Digest::default();
    let mut buf = vec![0; CHUNK];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(digest),
            Ok(count) => digest.update(&buf[..count]),
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
}

/// Reads exactly `len` bytes and returns their digest.
pub fn receive_exact(stream: &mut impl Read, len: u64) -> io::Result<Digest> {
    let mut digest = Digest::default();
    let mut buf = vec![0; CHUNK];
    while digest.len < len {
        let count = (len - digest.len).min(CHUNK as u64) as usize;
        stream.read_exact(&mut buf[..count])?;
        digest.update(&buf[..count]);
    }
    Ok(digest)
}

/// Connects to `addr` from the calling thread's namespace with connect and I/O timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
        .unwrap_or_else(|error| panic!("connecting to {addr}: {error}"));
    set_timeouts(&stream);
    stream
}

fn set_timeouts(stream: &TcpStream) {
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .expect("setting a read timeout");
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .expect("setting a write timeout");
}

/// Writes `message` and reads back exactly as many bytes.
pub fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Vec<u8> {
    stream
        .write_all(message)
        .expect("writing a round-trip message");
    let mut answer = vec![0; message.len()];
    stream
        .read_exact(&mut answer)
        .expect("reading a round-trip answer");
    answer
}

/// How a connection ended that the far side closed.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// An orderly FIN.
    Eof,
    /// A reset (the far side closed with unread data, or aborted).
    Reset,
}

/// Reads until the far side closes; returns every byte that came first and how it closed.
/// A read timeout is a failure: the far side was expected to close.
pub fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Ending) {
    let mut data = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (data, Ending::Eof),
            Ok(count) => data.extend_from_slice(&buf[..count]),
            Err(error) if error.kind() == ErrorKind::ConnectionReset => {
                return (data, Ending::Reset);
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) => panic!("expected the connection to close, got {error} after {data:?}"),
        }
    }
}

/// Sends back every byte until EOF, then shuts down the write side; returns the byte count.
pub fn echo(stream: &mut TcpStream) -> u64 {
    let mut echoed = 0;
    let mut buf = vec![0; CHUNK];
    loop {
        let count = match stream.read(&mut buf) {
            Ok(count) => count,
            Err(error) if error.kind() == ErrorKind::ConnectionReset => break,
            Err(error) => panic!("echo: reading: {error}"),
        };
        if count == 0 {
            break;
        }
        stream.write_all(&buf[..count]).expect("echo: writing");
        echoed += count as u64;
    }
    // The peer may already be gone; the count is what the test looks at.
    let _ = stream.shutdown(Shutdown::Write);
    echoed
}

/// A TCP server on a thread inside `netns`, bound before this returns, that accepts
/// `connections` connections one after the other and hands each to `handler`.
///
/// `join` on the result gives the handler's results in accept order.
pub fn serve<T, F>(
    netns: &str,
    addr: SocketAddr,
    connections: usize,
    mut handler: F,
) -> Worker<Vec<T>>
where
    T: Send + 'static,
    F: FnMut(TcpStream, SocketAddr) -> T + Send + 'static,
{
    let (bound, is_bound) = mpsc::channel();
    let server = spawn_in(netns, &format!("server {addr}"), move || {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|error| panic!("binding {addr}: {error}"));
        // The test may have stopped waiting already; then nobody needs the signal.
        let _ = bound.send(());
        let mut results = Vec::with_capacity(connections);
        for _ in 0..connections {
            let (stream, peer) = listener.accept().expect("accepting a connection");
            set_timeouts(&stream);
            results.push(handler(stream, peer));
        }
        results
    });
    match is_bound.recv_timeout(STEP_TIMEOUT) {
        Ok(()) => server,
        // The thread panicked before binding; joining re-raises its message.
        Err(_) => {
            server.join(STEP_TIMEOUT);
            unreachable!("a server that never bound returned")
        }
    }
}

/// An echo server (see [`echo`]) for `connections` connections; each result is the
/// connection's peer address and the number of bytes echoed.
pub fn echo_server(
    netns: &str,
    addr: SocketAddr,
    connections: usize,
) -> Worker<Vec<(SocketAddr, u64)>> {
    serve(netns, addr, connections, |mut stream, peer| {
        (peer, echo(&mut stream))
    })
}
