//! SOCKS5 CONNECT, client side (RFC 1928), with username/password authentication
//! (RFC 1929).

use std::cell::Cell;
use std::net::IpAddr;

use monoio::net::TcpStream;

use super::{Awaiting, HandshakeError};
use crate::config::Address;
use crate::route::Credentials;
use crate::socks5::{self, reply_text};
use crate::stream::{Incoming, write_all};

/// Greets, authenticates if asked to, sends CONNECT for `authority` and reads the reply.
/// Returns the bytes read after the reply. `awaiting` follows the steps: the proxy's own
/// until the CONNECT request is sent.
pub(super) async fn connect(
    stream: &TcpStream,
    authority: &str,
    auth: Option<&Credentials>,
    pending: Vec<u8>,
    awaiting: &Cell<Awaiting>,
) -> Result<Vec<u8>, HandshakeError> {
    awaiting.set(Awaiting::Proxy);
    let destination = Address::parse(authority)
        .map_err(|error| HandshakeError::Protocol(format!("cannot name {authority}: {error}")))?;
    let request = connect_request(&destination)?;
    let greeting: &[u8] = match auth {
        Some(_) => &[socks5::VERSION, 2, socks5::NO_AUTH, socks5::USER_PASSWORD],
        None => &[socks5::VERSION, 1, socks5::NO_AUTH],
    };
    write_all(stream, greeting).await?;

    let mut input = Incoming::new(stream, pending);
    let choice = input.exact(2).await?;
    if choice[0] != socks5::VERSION {
        return Err(HandshakeError::Protocol(format!(
            "version {} in the method reply",
            choice[0]
        )));
    }
    match (choice[1], auth) {
        (socks5::NO_AUTH, _) => {}
        (socks5::USER_PASSWORD, Some(auth)) => {
            write_all(stream, &password_request(auth)?).await?;
            let status = input.exact(2).await?;
            if status[1] != 0 {
                return Err(HandshakeError::AuthRejected(format!(
                    "username/password refused (status {})",
                    status[1]
                )));
            }
        }
        (socks5::NO_ACCEPTABLE, _) => {
            return Err(HandshakeError::AuthRejected(
                "the proxy accepts none of the offered methods".to_owned(),
            ));
        }
        (other, _) => {
            return Err(HandshakeError::Protocol(format!(
                "the proxy chose method {other}"
            )));
        }
    }

    write_all(stream, &request).await?;
    awaiting.set(Awaiting::Next);
    let head = input.exact(4).await?;
    let (version, reply, address_type) = (head[0], head[1], head[3]);
    if version != socks5::VERSION {
        return Err(HandshakeError::Protocol(format!(
            "version {version} in the reply"
        )));
    }
    let address_length = match address_type {
        socks5::IPV4 => 4,
        socks5::IPV6 => 16,
        socks5::DOMAIN => usize::from(input.byte().await?),
        other => return Err(HandshakeError::Protocol(format!("address type {other}"))),
    };
    input.exact(address_length + 2).await?;
    if reply != socks5::SUCCEEDED {
        return Err(HandshakeError::Refused(format!(
            "{reply} ({})",
            reply_text(reply)
        )));
    }
    Ok(input.rest())
}

fn connect_request(destination: &Address) -> Result<Vec<u8>, HandshakeError> {
    let mut request = vec![socks5::VERSION, socks5::CONNECT, 0];
    match (
        destination.literal().map(|addr| addr.ip()),
        destination.name(),
    ) {
        (Some(IpAddr::V4(ip)), _) => {
            request.push(socks5::IPV4);
            request.extend_from_slice(&ip.octets());
        }
        (Some(IpAddr::V6(ip)), _) => {
            request.push(socks5::IPV6);
            request.extend_from_slice(&ip.octets());
        }
        (None, Some(name)) => {
            let length = u8::try_from(name.len())
                .map_err(|_| HandshakeError::Protocol(format!("host name {name} is too long")))?;
            request.push(socks5::DOMAIN);
            request.push(length);
            request.extend_from_slice(name.as_bytes());
        }
        (None, None) => unreachable!("an address is a literal or a name"),
    }
    request.extend_from_slice(&destination.port().to_be_bytes());
    Ok(request)
}

fn password_request(auth: &Credentials) -> Result<Vec<u8>, HandshakeError> {
    let too_long = |what| HandshakeError::Protocol(format!("the {what} is over 255 bytes"));
    let user = u8::try_from(auth.username.len()).map_err(|_| too_long("user name"))?;
    let password = u8::try_from(auth.password.len()).map_err(|_| too_long("password"))?;
    let mut request = vec![socks5::AUTH_VERSION, user];
    request.extend_from_slice(auth.username.as_bytes());
    request.push(password);
    request.extend_from_slice(auth.password.as_bytes());
    Ok(request)
}
