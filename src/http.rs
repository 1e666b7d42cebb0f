//! HTTP/1 heads (the request or status line and headers) read off a stream, for the CONNECT
//! handshakes on both sides. Parsing is httparse's; this module only gathers the bytes.

use std::io;

use monoio::net::TcpStream;

use crate::stream::read_some;

/// The longest head accepted; a peer that sends more is cut off.
pub const MAX_HEAD: usize = 16 * 1024;

/// Headers parsed at most.
pub const MAX_HEADERS: usize = 64;

/// Why a head could not be read.
#[derive(Debug, thiserror::Error)]
pub enum HeadError {
    /// The peer closed before the head was complete.
    #[error("connection closed before a complete HTTP header ({0} bytes received)")]
    Closed(usize),
    /// The head is longer than [`MAX_HEAD`].
    #[error("HTTP header longer than {MAX_HEAD} bytes")]
    TooLarge,
    /// Not HTTP.
    #[error("malformed HTTP header: {0}")]
    Malformed(httparse::Error),
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Reads from `stream` into `buf` (which may already hold bytes) until `parse` reports a
/// complete head. Returns the head's length; bytes after it stay in `buf`.
pub async fn read_head(
    stream: &TcpStream,
    buf: &mut Vec<u8>,
    mut parse: impl FnMut(&[u8]) -> httparse::Result<usize>,
) -> Result<usize, HeadError> {
    let mut filled = buf.len();
    buf.resize(MAX_HEAD, 0);
    loop {
        if filled > 0 {
            match parse(&buf[..filled]) {
                Ok(httparse::Status::Complete(length)) => {
                    buf.truncate(filled);
                    return Ok(length);
                }
                Ok(httparse::Status::Partial) => {}
                Err(error) => return Err(HeadError::Malformed(error)),
            }
        }
        if filled == MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
        match read_some(stream, &mut buf[filled..]).await? {
            0 => return Err(HeadError::Closed(filled)),
            read => filled += read,
        }
    }
}
