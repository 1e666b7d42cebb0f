//! io_uring's SPLICE op, kept for comparison in benchmarks only.
//!
//! The kernel never completes IORING_OP_SPLICE inline: every call goes to an io-wq worker
//! thread, and a splice waiting on an idle socket pins one worker per direction. `splice`
//! mode does the same work with non-blocking splice(2) on the executor instead.

use std::io;

use monoio::io::splice::{SpliceDestination, SpliceSource};
use monoio::net::TcpStream;

use super::Activity;
use crate::stream::borrow;

/// Bytes asked for per splice.
const CHUNK: u32 = 64 * 1024;

/// Copies `source` to `destination` with SPLICE ops until `source` ends.
pub(super) async fn copy(
    source: &TcpStream,
    destination: &TcpStream,
    activity: &Activity,
) -> io::Result<u64> {
    // The ops need exclusive handles; duplicated descriptors give this direction its own.
    let mut reader = duplicate(source)?;
    let mut writer = duplicate(destination)?;
    let (mut pipe_out, mut pipe_in) = monoio::net::unix::new_pipe()?;
    let mut copied = 0u64;
    loop {
        let mut held = reader.splice_to_pipe(&mut pipe_in, CHUNK).await?;
        if held == 0 {
            return Ok(copied);
        }
        copied += u64::from(held);
        activity.moved();
        while held > 0 {
            held -= writer.splice_from_pipe(&mut pipe_out, held).await?;
            activity.moved();
        }
    }
}

/// A second handle on the socket, in blocking mode: on a non-blocking socket the op fails
/// with EAGAIN instead of waiting in the worker. The mode is the socket's, so the original
/// handle blocks too; this relay is the only user of both from here on.
fn duplicate(stream: &TcpStream) -> io::Result<TcpStream> {
    let fd = borrow(stream).try_clone_to_owned()?;
    let socket = std::net::TcpStream::from(fd);
    socket.set_nonblocking(false)?;
    TcpStream::from_std(socket)
}
