//! Socket I/O on an executor: wait for readiness through the runtime's driver (an io_uring
//! POLL_ADD, or epoll on the fallback), then make one non-blocking syscall on the executor
//! thread.
//!
//! Nothing is parked in the kernel while a socket is idle: no buffer, no pipe, and no io-wq
//! worker thread, which an io_uring read or splice waiting on an idle socket would pin.

use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

use monoio::net::TcpStream;

/// Reads what is available into `buf`, waiting for readiness if nothing is. Returns 0 at
/// end of stream.
pub async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match recv(stream.as_raw_fd(), buf) {
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                stream.readable(false).await?
            }
            result => return result,
        }
    }
}

/// Writes all of `buf`, waiting for room in the send buffer when it is full.
pub async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        match send(stream.as_raw_fd(), buf) {
            Ok(written) => buf = &buf[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                stream.writable(false).await?
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Bytes arriving on a stream, read in whatever pieces they come and taken in exact sizes:
/// for binary handshakes such as SOCKS5. Whatever was read beyond the handshake stays
/// available through [`Incoming::rest`].
pub struct Incoming<'a> {
    stream: &'a TcpStream,
    buf: Vec<u8>,
    taken: usize,
}

impl<'a> Incoming<'a> {
    /// Starts with `already` (bytes read from `stream` earlier).
    pub fn new(stream: &'a TcpStream, already: Vec<u8>) -> Incoming<'a> {
        Incoming {
            stream,
            buf: already,
            taken: 0,
        }
    }

    /// The next `count` bytes, waiting for them; an end of stream first is an error.
    pub async fn exact(&mut self, count: usize) -> io::Result<&[u8]> {
        while self.buf.len() - self.taken < count {
            let filled = self.buf.len();
            self.buf.resize(filled + 4096, 0);
            let read = read_some(self.stream, &mut self.buf[filled..]).await;
            self.buf.truncate(filled + *read.as_ref().unwrap_or(&0));
            if read? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed after {} bytes of the handshake",
                        self.buf.len()
                    ),
                ));
            }
        }
        let start = self.taken;
        self.taken += count;
        Ok(&self.buf[start..self.taken])
    }

    /// The next byte.
    pub async fn byte(&mut self) -> io::Result<u8> {
        Ok(self.exact(1).await?[0])
    }

    /// What was read but not taken.
    pub fn rest(mut self) -> Vec<u8> {
        self.buf.split_off(self.taken)
    }
}

/// Passes an end of stream on: shuts down the write half, so the peer reads EOF while the
/// other direction stays open.
pub fn shutdown_write(stream: &TcpStream) -> io::Result<()> {
    match socket_ref(&borrow(stream)).shutdown(Shutdown::Write) {
        // The peer is already gone; the other direction will report it if it matters.
        Err(error) if error.raw_os_error() == Some(libc::ENOTCONN) => Ok(()),
        result => result,
    }
}

/// The stream's descriptor, borrowed for as long as the stream.
pub fn borrow(stream: &TcpStream) -> BorrowedFd<'_> {
    // SAFETY: the stream owns the descriptor and outlives the borrow.
    unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) }
}

/// socket2's view of a borrowed socket, for socket options.
pub fn socket_ref<'a>(fd: &'a BorrowedFd<'a>) -> socket2::SockRef<'a> {
    socket2::SockRef::from(fd)
}

/// One non-blocking `recv(2)`, retried on EINTR.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
        let read =
            unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if read >= 0 {
            return Ok(read as usize);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// One non-blocking `send(2)`, retried on EINTR. MSG_NOSIGNAL turns a write to a closed peer
/// into EPIPE for this connection instead of a SIGPIPE for the process.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call.
        let written = unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if written >= 0 {
            return Ok(written as usize);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}
