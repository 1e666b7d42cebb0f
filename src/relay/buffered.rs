//! Buffered relay: recv(2) into a buffer and send(2) from it, non-blocking, on the executor
//! thread after a readiness event. Buffers come from per-core pools and are held only while
//! data is in flight, so an idle connection costs no buffer memory.

use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;

use monoio::net::TcpStream;

use super::Activity;
use crate::stream::{recv, write_all};

/// Buffer size of the buffered relay.
const LARGE: usize = 64 * 1024;

/// Buffer size of the adaptive relay's first stage: large enough for a typical request or
/// response, small enough that a stream filling it is clearly a bulk transfer.
const SMALL: usize = 16 * 1024;

/// Idle buffers a core keeps per size; beyond this they are freed.
const POOL_LIMIT: usize = 64;

thread_local! {
    static LARGE_POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
    static SMALL_POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A buffer size with its pool.
#[derive(Clone, Copy)]
enum Size {
    Large,
    Small,
}

impl Size {
    fn with_pool<T>(self, work: impl FnOnce(&mut Vec<Box<[u8]>>) -> T) -> T {
        let pool = match self {
            Size::Large => &LARGE_POOL,
            Size::Small => &SMALL_POOL,
        };
        pool.with(|pool| work(&mut pool.borrow_mut()))
    }

    fn take(self) -> Box<[u8]> {
        let length = match self {
            Size::Large => LARGE,
            Size::Small => SMALL,
        };
        self.with_pool(|pool| pool.pop())
            .unwrap_or_else(|| vec![0; length].into_boxed_slice())
    }

    fn give_back(self, buffer: Box<[u8]>) {
        self.with_pool(|pool| {
            if pool.len() < POOL_LIMIT {
                pool.push(buffer);
            }
        });
    }
}

/// How a buffered copy ended.
pub(super) enum Ended {
    /// The source ended.
    Eof(u64),
    /// A read filled the whole buffer: the stream is a bulk transfer (adaptive relay only).
    Bulk(u64),
}

/// Copies `source` to `destination` until `source` ends. Returns the bytes copied.
/// `wait_first`: wait for readiness before the first read, when no data is expected yet.
pub(super) async fn copy(
    source: &TcpStream,
    destination: &TcpStream,
    wait_first: bool,
    activity: &Activity,
) -> io::Result<u64> {
    match copy_with(
        source,
        destination,
        Size::Large,
        false,
        wait_first,
        activity,
    )
    .await?
    {
        Ended::Eof(copied) | Ended::Bulk(copied) => Ok(copied),
    }
}

/// Copies with small buffers until `source` ends or a read fills a whole buffer.
pub(super) async fn copy_until_bulk(
    source: &TcpStream,
    destination: &TcpStream,
    wait_first: bool,
    activity: &Activity,
) -> io::Result<Ended> {
    copy_with(source, destination, Size::Small, true, wait_first, activity).await
}

async fn copy_with(
    source: &TcpStream,
    destination: &TcpStream,
    size: Size,
    stop_at_bulk: bool,
    wait_first: bool,
    activity: &Activity,
) -> io::Result<Ended> {
    let mut copied = 0u64;
    let mut buffer = None;
    // After a short read the socket is most likely drained: waiting for readiness first (an
    // io_uring POLL_ADD, submitted together with every other connection's) saves a recv(2)
    // that would only say EAGAIN.
    let mut drained = wait_first;
    loop {
        if drained {
            source.readable(false).await?;
            drained = false;
        }
        let chunk = buffer.get_or_insert_with(|| size.take());
        match recv(source.as_raw_fd(), chunk) {
            Ok(0) => {
                if let Some(chunk) = buffer.take() {
                    size.give_back(chunk);
                }
                return Ok(Ended::Eof(copied));
            }
            Ok(read) => {
                activity.moved();
                write_all(destination, &chunk[..read]).await?;
                activity.moved();
                copied += read as u64;
                let full = read == chunk.len();
                if stop_at_bulk && full {
                    if let Some(chunk) = buffer.take() {
                        size.give_back(chunk);
                    }
                    return Ok(Ended::Bulk(copied));
                }
                if !full {
                    // Idle until the next readiness: hold no buffer while waiting.
                    if let Some(chunk) = buffer.take() {
                        size.give_back(chunk);
                    }
                    drained = true;
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if let Some(chunk) = buffer.take() {
                    size.give_back(chunk);
                }
                drained = true;
            }
            Err(error) => return Err(error),
        }
    }
}
