//! HTTP CONNECT, client side.

use monoio::net::TcpStream;

use super::HandshakeError;
use crate::http::{MAX_HEADERS, read_head};
use crate::route::Credentials;
use crate::stream::write_all;

/// Sends `CONNECT authority` and reads the answer; any status but 2xx is a refusal.
pub(super) async fn connect(
    stream: &TcpStream,
    authority: &str,
    auth: Option<&Credentials>,
    mut pending: Vec<u8>,
) -> Result<Vec<u8>, HandshakeError> {
    let mut request = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(auth) = auth {
        request.push_str("Proxy-Authorization: ");
        request.push_str(&auth.basic);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    write_all(stream, request.as_bytes()).await?;

    let mut status = None;
    let length = read_head(stream, &mut pending, |bytes| {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let parsed = response.parse(bytes)?;
        status = response
            .code
            .map(|code| (code, response.reason.unwrap_or("").to_owned()));
        Ok(parsed)
    })
    .await?;
    match status {
        Some((code, _)) if (200..300).contains(&code) => Ok(pending.split_off(length)),
        Some((407, reason)) => Err(HandshakeError::AuthRejected(format!("407 {reason}"))),
        Some((code, reason)) => Err(HandshakeError::Refused(format!("{code} {reason}"))),
        None => Err(HandshakeError::Protocol("no status".to_owned())),
    }
}
