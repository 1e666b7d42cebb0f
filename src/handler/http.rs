//! Handler `http`: an HTTP proxy that answers CONNECT, so a chain's hop can be uringgost.

use std::net::SocketAddr;

use monoio::net::TcpStream;

use super::ServeError;
use crate::config::Address;
use crate::egress::{self, EgressError};
use crate::executor::Core;
use crate::http::{HeadError, MAX_HEADERS, read_head};
use crate::relay::{Transfer, relay};
use crate::route::{Egress, Service};
use crate::stream::write_all;

/// What the handler needs from a request head.
#[derive(Default)]
struct Request {
    method: String,
    target: String,
    authorization: Option<Vec<u8>>,
}

pub(super) async fn serve(
    core: &Core,
    service: &Service,
    egress: &Egress,
    required_authorization: Option<&str>,
    client: &TcpStream,
) -> Result<Transfer, ServeError> {
    let mut buf = Vec::new();
    let mut request = Request::default();
    let head = read_head(client, &mut buf, |bytes| {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let status = parsed.parse(bytes)?;
        if status.is_complete() {
            request.method = parsed.method.unwrap_or_default().to_owned();
            request.target = parsed.path.unwrap_or_default().to_owned();
            request.authorization = parsed
                .headers
                .iter()
                .find(|header| header.name.eq_ignore_ascii_case("proxy-authorization"))
                .map(|header| header.value.to_vec());
        }
        Ok(status)
    });
    let length = match monoio::time::timeout(service.timeouts.handshake, head).await {
        Ok(Ok(length)) => length,
        Ok(Err(HeadError::Malformed(error))) => {
            return refuse(
                client,
                "400 Bad Request",
                &format!("malformed request: {error}"),
            )
            .await;
        }
        Ok(Err(HeadError::TooLarge)) => {
            return refuse(
                client,
                "431 Request Header Fields Too Large",
                "header too large",
            )
            .await;
        }
        Ok(Err(error)) => return Err(ServeError::Setup(format!("reading the request: {error}"))),
        Err(_) => {
            return Err(ServeError::Setup(format!(
                "no complete request within {:?}",
                service.timeouts.handshake
            )));
        }
    };

    if let Some(required) = required_authorization
        && request.authorization.as_deref() != Some(required.as_bytes())
    {
        let answer = "HTTP/1.1 407 Proxy Authentication Required\r\n\
                      Proxy-Authenticate: Basic realm=\"uringgost\"\r\n\
                      Content-Length: 0\r\nConnection: close\r\n\r\n";
        // The client is refused either way; a failed write changes nothing.
        let _ = write_all(client, answer.as_bytes()).await;
        return Err(ServeError::Setup(
            "client sent no or wrong proxy credentials".to_owned(),
        ));
    }
    if request.method != "CONNECT" {
        let reason = format!(
            "method {} is not supported; this proxy serves CONNECT",
            request.method
        );
        return refuse(client, "501 Not Implemented", &reason).await;
    }
    let destination = match Address::parse(&request.target) {
        Ok(address)
            if address
                .literal()
                .is_none_or(|addr| !addr.ip().is_unspecified()) =>
        {
            address
        }
        _ => {
            let reason = format!("CONNECT target \"{}\" is not host:port", request.target);
            return refuse(client, "400 Bad Request", &reason).await;
        }
    };

    let socket_addr = match resolve(core, egress, &destination).await {
        Ok(addr) => addr,
        Err(error) => {
            let reason = format!("cannot resolve {destination}: {error}");
            return refuse(client, "502 Bad Gateway", &reason).await;
        }
    };
    let upstream = match egress::open(
        &core.pools,
        egress,
        &destination,
        socket_addr,
        service.timeouts,
    )
    .await
    {
        Ok(upstream) => upstream,
        Err(error) => {
            let status = match &error {
                EgressError::Dial { source, .. }
                    if source.kind() == std::io::ErrorKind::TimedOut =>
                {
                    "504 Gateway Timeout"
                }
                _ => "502 Bad Gateway",
            };
            return refuse(client, status, &format!("CONNECT {destination}: {error}")).await;
        }
    };

    let established = b"HTTP/1.1 200 Connection established\r\n\r\n";
    let setup = |error: std::io::Error| ServeError::Setup(format!("starting the tunnel: {error}"));
    let mut answer = Vec::with_capacity(established.len() + upstream.pending.len());
    answer.extend_from_slice(established);
    answer.extend_from_slice(&upstream.pending);
    write_all(client, &answer).await.map_err(setup)?;
    let early = &buf[length..];
    if !early.is_empty() {
        write_all(&upstream.stream, early).await.map_err(setup)?;
    }
    let mut transfer = relay(client, &upstream.stream, service.relay).await?;
    transfer.sent += early.len() as u64;
    transfer.received += upstream.pending.len() as u64;
    Ok(transfer)
}

/// The destination's address for a direct dial. Through a chain the last proxy resolves
/// names, so only literals are needed and anything else is passed on as written.
async fn resolve(
    core: &Core,
    egress: &Egress,
    destination: &Address,
) -> std::io::Result<SocketAddr> {
    if let Some(addr) = destination.literal() {
        return Ok(addr);
    }
    match egress {
        Egress::Chain(_) => Ok(SocketAddr::from(([0, 0, 0, 0], destination.port()))),
        Egress::Direct { netns } => core
            .helper
            .resolve(
                netns.as_ref().map(|netns| netns.id),
                destination.authority(),
            )
            .recv_async()
            .await
            .map_err(|_| std::io::Error::other("the namespace helper has stopped"))?,
    }
}

/// Answers with an error status and ends the connection.
async fn refuse(client: &TcpStream, status: &str, reason: &str) -> Result<Transfer, ServeError> {
    let answer = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{reason}\n",
        reason.len() + 1
    );
    // The client is refused either way; a failed write changes nothing.
    let _ = write_all(client, answer.as_bytes()).await;
    Err(ServeError::Setup(format!("answered {status}: {reason}")))
}
