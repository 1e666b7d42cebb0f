//! Buffered relay: recv(2) into a buffer and send(2) from it, non-blocking, on the executor
//! thread after a readiness event. The buffer comes from a per-core pool and is held only
//! while data is in flight, so an idle connection costs no buffer memory.

use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;

use monoio::net::TcpStream;

use crate::stream::{recv, shutdown_write, write_all};

/// Bytes read at a time.
const BUFFER_SIZE: usize = 64 * 1024;

/// Idle buffers a core keeps for reuse; beyond this they are freed.
const POOL_LIMIT: usize = 64;

thread_local! {
    static POOL: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

fn take() -> Box<[u8]> {
    POOL.with(|pool| pool.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; BUFFER_SIZE].into_boxed_slice())
}

fn give_back(buffer: Box<[u8]>) {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_LIMIT {
            pool.push(buffer);
        }
    });
}

/// Copies `source` to `destination` until `source` ends, then shuts down `destination`'s
/// write half. Returns the bytes copied.
pub(super) async fn copy(source: &TcpStream, destination: &TcpStream) -> io::Result<u64> {
    let mut copied = 0u64;
    let mut buffer = None;
    loop {
        let chunk = buffer.get_or_insert_with(take);
        match recv(source.as_raw_fd(), chunk) {
            Ok(0) => {
                if let Some(chunk) = buffer.take() {
                    give_back(chunk);
                }
                shutdown_write(destination)?;
                return Ok(copied);
            }
            Ok(read) => {
                write_all(destination, &chunk[..read]).await?;
                copied += read as u64;
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                // Idle: hold no buffer while waiting.
                if let Some(chunk) = buffer.take() {
                    give_back(chunk);
                }
                source.readable(false).await?;
            }
            Err(error) => return Err(error),
        }
    }
}
