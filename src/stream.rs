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
