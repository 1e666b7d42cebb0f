//! Zero-copy relay: splice(2) from the source socket into a pipe and from the pipe into the
//! destination socket, non-blocking, on the executor thread after a readiness event.
//!
//! io_uring's SPLICE op is not used: the kernel always hands it to an io-wq worker, which
//! costs a thread switch per call and pins a kernel thread per waiting direction.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use monoio::net::TcpStream;

use super::Activity;
use crate::stream::{borrow, socket_ref};

/// Idle pipes a core keeps for reuse; beyond this they are closed.
const POOL_LIMIT: usize = 128;

thread_local! {
    static POOL: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

/// A pipe owning both ends, with a count of the bytes it holds.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
    held: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_GETPIPE_SZ only reads the pipe's size.
        let capacity = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_GETPIPE_SZ) };
        let capacity = if capacity > 0 {
            capacity as usize
        } else {
            64 * 1024
        };
        Ok(Pipe {
            read,
            write,
            capacity,
            held: 0,
        })
    }

    /// An empty pipe from this core's pool, or a new one.
    fn take() -> io::Result<Pipe> {
        match POOL.with(|pool| pool.borrow_mut().pop()) {
            Some(pipe) => Ok(pipe),
            None => Pipe::new(),
        }
    }

    /// Returns an empty pipe to the pool; a pipe still holding bytes is closed instead.
    fn give_back(self) {
        if self.held == 0 {
            POOL.with(|pool| {
                let mut pool = pool.borrow_mut();
                if pool.len() < POOL_LIMIT {
                    pool.push(self);
                }
            });
        }
    }
}

/// Copies `source` to `destination` until `source` ends. Returns the bytes copied.
pub(super) async fn copy(
    source: &TcpStream,
    destination: &TcpStream,
    activity: &Activity,
) -> io::Result<u64> {
    // splice(2) honours SPLICE_F_NONBLOCK only on the pipe side; the sockets must be in
    // non-blocking mode themselves. The runtime's own connect leaves them blocking.
    for stream in [source, destination] {
        socket_ref(&borrow(stream)).set_nonblocking(true)?;
    }
    let mut copied = 0u64;
    loop {
        let mut pipe = Pipe::take()?;
        let filled = splice(source.as_raw_fd(), pipe.write.as_raw_fd(), pipe.capacity);
        match filled {
            Ok(0) => {
                pipe.give_back();
                return Ok(copied);
            }
            Ok(filled) => {
                pipe.held = filled;
                activity.moved();
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                // Idle: hold no pipe while waiting.
                pipe.give_back();
                source.readable(false).await?;
                continue;
            }
            Err(error) => return Err(error),
        }
        while pipe.held > 0 {
            match splice(pipe.read.as_raw_fd(), destination.as_raw_fd(), pipe.held) {
                Ok(moved) => {
                    pipe.held -= moved;
                    copied += moved as u64;
                    activity.moved();
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    destination.writable(false).await?
                }
                Err(error) => return Err(error),
            }
        }
        pipe.give_back();
    }
}

/// One non-blocking splice(2) of up to `len` bytes, retried on EINTR.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both descriptors are open for the call; null offsets are valid for pipes
        // and sockets.
        let moved = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if moved >= 0 {
            return Ok(moved as usize);
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}
