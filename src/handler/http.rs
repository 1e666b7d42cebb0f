//! Handler `http`: an HTTP proxy. CONNECT opens a tunnel; a plain request with an absolute
//! URI (`GET http://host/path`) is forwarded to that host in origin form, one request per
//! connection.

use monoio::net::TcpStream;

use super::{OpenError, Proxy, ServeError};
use crate::config::Address;
use crate::http::{HeadError, MAX_HEADERS, read_head};
use crate::relay::{Transfer, answer};
use crate::route::Credentials;
use crate::stream::{read_some, write_all};

/// Headers that concern only the hop between the client and this proxy.
const HOP_HEADERS: [&str; 4] = [
    "proxy-authorization",
    "proxy-connection",
    "connection",
    "keep-alive",
];

/// What the handler needs from a request head.
#[derive(Default)]
struct Request {
    method: String,
    target: String,
    minor_version: u8,
    headers: Vec<(String, Vec<u8>)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

pub(super) async fn serve(proxy: &Proxy<'_>, mut buf: Vec<u8>) -> Result<Transfer, ServeError> {
    let client = proxy.client;
    let mut request = Request::default();
    let head = read_head(client, &mut buf, |bytes| {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let status = parsed.parse(bytes)?;
        if status.is_complete() {
            request.method = parsed.method.unwrap_or_default().to_owned();
            request.target = parsed.path.unwrap_or_default().to_owned();
            request.minor_version = parsed.version.unwrap_or(1);
            request.headers = parsed
                .headers
                .iter()
                .map(|header| (header.name.to_owned(), header.value.to_vec()))
                .collect();
        }
        Ok(status)
    });
    let length = match monoio::time::timeout_at(proxy.handshake_deadline, head).await {
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
            let waited = proxy.handshake_timeout();
            return Err(ServeError::Setup(format!(
                "no complete request within {waited:?}"
            )));
        }
    };

    if let Some(auth) = proxy.auth
        && !authorized(request.header("proxy-authorization"), auth)
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

    let early = buf.split_off(length);
    if request.method == "CONNECT" {
        connect(proxy, &request, early).await
    } else {
        forward(proxy, &request, early).await
    }
}

/// CONNECT: a tunnel to the requested `host:port`.
async fn connect(
    proxy: &Proxy<'_>,
    request: &Request,
    early: Vec<u8>,
) -> Result<Transfer, ServeError> {
    let client = proxy.client;
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
    let upstream = match proxy.open(&destination).await {
        Ok(upstream) => upstream,
        Err(error) => {
            return refuse(
                client,
                status_for(&error),
                &format!("CONNECT {destination}: {error}"),
            )
            .await;
        }
    };
    let answer = b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec();
    proxy.tunnel(answer, upstream, early).await
}

/// A plain request with an absolute URI: sent on to the origin in origin form with
/// `Connection: close`, with exactly its `Content-Length` of body; then the origin's answer
/// is relayed to its end. Anything the client pipelined after this request is not sent on:
/// it may be meant for another host, and carries the client's proxy credentials.
async fn forward(
    proxy: &Proxy<'_>,
    request: &Request,
    mut early: Vec<u8>,
) -> Result<Transfer, ServeError> {
    let client = proxy.client;
    let Some(uri) = split_absolute_uri(&request.target) else {
        let reason = format!(
            "\"{} {}\" is not a proxy request; send CONNECT host:port or an absolute http:// URI",
            request.method, request.target
        );
        return refuse(client, "400 Bad Request", &reason).await;
    };
    if request.header("transfer-encoding").is_some() {
        let reason = "request bodies with a Transfer-Encoding are not forwarded; use CONNECT \
                      for this request";
        return refuse(client, "501 Not Implemented", reason).await;
    }
    // Differing lengths leave the body's end in doubt: such a request is refused (RFC 9112,
    // 6.3), as is one whose length is not a number.
    let lengths: Vec<Option<u64>> = request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| parse_length(value))
        .collect();
    let body_length = match lengths.split_first() {
        None => 0,
        Some((Some(length), rest)) if rest.iter().all(|other| other == &Some(*length)) => *length,
        Some(_) => {
            return refuse(
                client,
                "400 Bad Request",
                "invalid or conflicting Content-Length",
            )
            .await;
        }
    };
    let destination = match Address::parse(&uri.authority) {
        Ok(address) => address,
        Err(error) => return refuse(client, "400 Bad Request", &error.to_string()).await,
    };
    let upstream = match proxy.open(&destination).await {
        Ok(upstream) => upstream,
        Err(error) => {
            return refuse(
                client,
                status_for(&error),
                &format!("{} {destination}: {error}", request.method),
            )
            .await;
        }
    };

    // The origin learns the host from the URI, whatever Host the client sent (RFC 9112,
    // 3.2.2); headers that concern only this hop are left out, with those the client's
    // Connection header names.
    let mut head = format!(
        "{} {} HTTP/1.{}\r\nHost: {}\r\n",
        request.method, uri.path, request.minor_version, uri.host
    )
    .into_bytes();
    let named_by_connection: Vec<&str> = request
        .headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("connection"))
        .filter_map(|(_, value)| std::str::from_utf8(value).ok())
        .flat_map(|value| value.split(',').map(str::trim))
        .collect();
    for (name, value) in &request.headers {
        let hop_only = name.eq_ignore_ascii_case("host")
            || HOP_HEADERS.iter().any(|hop| name.eq_ignore_ascii_case(hop))
            || named_by_connection
                .iter()
                .any(|named| name.eq_ignore_ascii_case(named));
        if !hop_only {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
    }
    head.extend_from_slice(b"Connection: close\r\n\r\n");
    early.truncate(
        usize::try_from(body_length)
            .unwrap_or(usize::MAX)
            .min(early.len()),
    );
    head.extend_from_slice(&early);
    let setup = |error: std::io::Error| ServeError::Setup(format!("sending the request: {error}"));
    write_all(&upstream.stream, &head).await.map_err(setup)?;
    let mut body_left = body_length - early.len() as u64;
    let mut buf = vec![0; 16 * 1024];
    while body_left > 0 {
        let want = buf
            .len()
            .min(usize::try_from(body_left).unwrap_or(usize::MAX));
        let read = read_some(client, &mut buf[..want]).await.map_err(setup)?;
        if read == 0 {
            return Err(ServeError::Setup(format!(
                "the client closed with {body_left} bytes of the request body unsent"
            )));
        }
        write_all(&upstream.stream, &buf[..read])
            .await
            .map_err(setup)?;
        body_left -= read as u64;
    }
    if !upstream.pending.is_empty() {
        write_all(client, &upstream.pending).await.map_err(setup)?;
    }
    let limits = proxy.service.relay_limits();
    let received = answer(client, &upstream.stream, proxy.service.relay, limits).await?;
    Ok(Transfer {
        sent: head.len() as u64 + body_length - early.len() as u64,
        received: received + upstream.pending.len() as u64,
    })
}

/// A `Content-Length` value: digits only.
fn parse_length(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Whether a `Proxy-Authorization` value carries `auth`: the scheme is matched without
/// regard to case, as HTTP wants, and the credentials in time that does not depend on where
/// they first differ.
fn authorized(header: Option<&[u8]>, auth: &Credentials) -> bool {
    use base64::Engine;
    let Some(value) = header.and_then(|value| std::str::from_utf8(value).ok()) else {
        return false;
    };
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(token.trim()) else {
        return false;
    };
    let expected = format!("{}:{}", auth.username, auth.password);
    let expected = expected.as_bytes();
    let differences = given
        .iter()
        .zip(expected)
        .fold(given.len() ^ expected.len(), |acc, (a, b)| {
            acc | usize::from(a ^ b)
        });
    differences == 0
}

/// The parts of an absolute `http://` URI a proxy needs.
#[derive(Debug, PartialEq, Eq)]
struct AbsoluteUri {
    /// `host:port` to connect to (port 80 unless the URI says otherwise).
    authority: String,
    /// The host as the URI gives it, port included only if written: the `Host` header.
    host: String,
    /// The origin form: path and query, at least `/`.
    path: String,
}

/// `http://host[:port]/path` → its [`AbsoluteUri`]. Only `http` is forwarded in plain form;
/// clients use CONNECT for anything else.
fn split_absolute_uri(uri: &str) -> Option<AbsoluteUri> {
    let scheme_end = uri.find("://")?;
    if !uri[..scheme_end].eq_ignore_ascii_case("http") {
        return None;
    }
    let rest = &uri[scheme_end + 3..];
    let (authority, path) = match rest.find(['/', '?']) {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if authority.is_empty() {
        return None;
    }
    let has_port = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].contains(':'),
        None => authority.contains(':'),
    };
    let host = authority.to_owned();
    let authority = if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    Some(AbsoluteUri {
        authority,
        host,
        path,
    })
}

fn status_for(error: &OpenError) -> &'static str {
    match error {
        OpenError::Egress(error) if error.timed_out() => "504 Gateway Timeout",
        _ => "502 Bad Gateway",
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

#[cfg(test)]
mod tests {
    use super::split_absolute_uri;
    use crate::route::Credentials;

    #[test]
    fn basic_credentials_match_with_any_scheme_case_and_only_exactly() {
        let auth = Credentials {
            username: "u".to_owned(),
            password: "p".to_owned(),
            basic: "Basic dTpw".to_owned(),
        };
        assert!(super::authorized(Some(b"Basic dTpw"), &auth));
        assert!(super::authorized(Some(b"basic  dTpw "), &auth));
        assert!(!super::authorized(Some(b"Basic dTpx"), &auth));
        assert!(!super::authorized(Some(b"Basic dTpwcA=="), &auth));
        assert!(!super::authorized(Some(b"Bearer dTpw"), &auth));
        assert!(!super::authorized(None, &auth));
    }

    #[test]
    fn absolute_uris_split_into_authority_and_origin_form() {
        let split = |uri| {
            split_absolute_uri(uri)
                .map(|uri| format!("{} {} {}", uri.authority, uri.host, uri.path))
        };
        assert_eq!(
            split("http://example.test/a?b").as_deref(),
            Some("example.test:80 example.test /a?b")
        );
        assert_eq!(
            split("HTTP://u:p@h:8080").as_deref(),
            Some("h:8080 h:8080 /")
        );
        assert_eq!(
            split("http://[::1]/x").as_deref(),
            Some("[::1]:80 [::1] /x")
        );
        assert_eq!(
            split("http://[::1]:81?q").as_deref(),
            Some("[::1]:81 [::1]:81 /?q")
        );
        assert_eq!(split("https://h/"), None);
        assert_eq!(split("/relative"), None);
    }
}
