//! Handler `socks5`: a SOCKS5 proxy (RFC 1928) answering CONNECT, with optional
//! username/password authentication (RFC 1929).

use std::net::{Ipv4Addr, Ipv6Addr};

use super::{OpenError, Proxy, ServeError};
use crate::config::Address;
use crate::egress::EgressError;
use crate::relay::Transfer;
use crate::socks5::{self, reply_text};
use crate::stream::{Incoming, write_all};

pub(super) async fn serve(proxy: &Proxy<'_>, already: Vec<u8>) -> Result<Transfer, ServeError> {
    let client = proxy.client;
    let mut input = Incoming::new(client, already);
    let handshake =
        monoio::time::timeout_at(proxy.handshake_deadline, negotiate(proxy, &mut input));
    let destination = match handshake.await {
        Ok(Ok(destination)) => destination,
        Ok(Err(error)) => return Err(error),
        Err(_) => {
            let waited = proxy.handshake_timeout();
            return Err(ServeError::Setup(format!(
                "no complete SOCKS5 request within {waited:?}"
            )));
        }
    };

    let upstream = match proxy.open(&destination).await {
        Ok(upstream) => upstream,
        Err(error) => {
            let code = reply_for(&error);
            let _ = write_all(client, &reply(code)).await;
            return Err(ServeError::Setup(format!(
                "CONNECT {destination}: {error}; answered {code} ({})",
                reply_text(code)
            )));
        }
    };
    let answer = reply(socks5::SUCCEEDED).to_vec();
    proxy.tunnel(answer, upstream, input.rest()).await
}

/// Method selection, authentication and the request; returns the requested destination.
async fn negotiate(proxy: &Proxy<'_>, input: &mut Incoming<'_>) -> Result<Address, ServeError> {
    let client = proxy.client;
    let io = |error: std::io::Error| ServeError::Setup(format!("SOCKS5 handshake: {error}"));
    let greeting = input.exact(2).await.map_err(io)?;
    let (version, count) = (greeting[0], usize::from(greeting[1]));
    if version != socks5::VERSION {
        return Err(ServeError::Setup(format!(
            "not SOCKS5: version byte {version}"
        )));
    }
    let methods = input.exact(count).await.map_err(io)?.to_vec();
    let wanted = if proxy.auth.is_some() {
        socks5::USER_PASSWORD
    } else {
        socks5::NO_AUTH
    };
    if !methods.contains(&wanted) {
        let _ = write_all(client, &[socks5::VERSION, socks5::NO_ACCEPTABLE]).await;
        let what = if proxy.auth.is_some() {
            "username/password"
        } else {
            "no authentication"
        };
        return Err(ServeError::Setup(format!(
            "the client does not offer {what}"
        )));
    }
    write_all(client, &[socks5::VERSION, wanted])
        .await
        .map_err(io)?;

    if let Some(auth) = proxy.auth {
        let head = input.exact(2).await.map_err(io)?;
        let (version, length) = (head[0], usize::from(head[1]));
        if version != socks5::AUTH_VERSION {
            return Err(ServeError::Setup(format!(
                "username/password version {version}"
            )));
        }
        let username = input.exact(length).await.map_err(io)?.to_vec();
        let length = usize::from(input.byte().await.map_err(io)?);
        let password = input.exact(length).await.map_err(io)?.to_vec();
        let accepted = username == auth.username.as_bytes() && password == auth.password.as_bytes();
        write_all(
            client,
            &[socks5::AUTH_VERSION, if accepted { 0 } else { 1 }],
        )
        .await
        .map_err(io)?;
        if !accepted {
            return Err(ServeError::Setup(
                "client sent wrong SOCKS5 credentials".to_owned(),
            ));
        }
    }

    let head = input.exact(4).await.map_err(io)?;
    let (version, command, address_type) = (head[0], head[1], head[3]);
    if version != socks5::VERSION {
        return Err(ServeError::Setup(format!(
            "SOCKS5 request with version byte {version}"
        )));
    }
    if command != socks5::CONNECT {
        let _ = write_all(client, &reply(socks5::COMMAND_NOT_SUPPORTED)).await;
        return Err(ServeError::Setup(format!(
            "SOCKS5 command {command} is not supported"
        )));
    }
    let destination = match address_type {
        socks5::IPV4 => {
            let octets: [u8; 4] = input
                .exact(4)
                .await
                .map_err(io)?
                .try_into()
                .expect("4 bytes");
            Ok(Ipv4Addr::from(octets).into())
        }
        socks5::IPV6 => {
            let octets: [u8; 16] = input
                .exact(16)
                .await
                .map_err(io)?
                .try_into()
                .expect("16 bytes");
            Ok(Ipv6Addr::from(octets).into())
        }
        socks5::DOMAIN => {
            let length = usize::from(input.byte().await.map_err(io)?);
            Err(String::from_utf8_lossy(input.exact(length).await.map_err(io)?).into_owned())
        }
        other => {
            let _ = write_all(client, &reply(socks5::ADDRESS_NOT_SUPPORTED)).await;
            return Err(ServeError::Setup(format!(
                "SOCKS5 address type {other} is not supported"
            )));
        }
    };
    let port = input.exact(2).await.map_err(io)?;
    let port = u16::from_be_bytes([port[0], port[1]]);
    let destination = match destination {
        _ if port == 0 => Err("port 0".to_owned()),
        Ok(ip) => Ok(Address::from_ip(ip, port)),
        Err(name) => Address::from_name(&name, port).map_err(|error| error.to_string()),
    };
    match destination {
        Ok(destination) => Ok(destination),
        Err(reason) => {
            let _ = write_all(client, &reply(socks5::HOST_UNREACHABLE)).await;
            Err(ServeError::Setup(format!("SOCKS5 destination: {reason}")))
        }
    }
}

/// A reply with an unspecified bound address: clients of CONNECT do not use it.
fn reply(code: u8) -> [u8; 10] {
    [socks5::VERSION, code, 0, socks5::IPV4, 0, 0, 0, 0, 0, 0]
}

fn reply_for(error: &OpenError) -> u8 {
    match error {
        OpenError::Resolve(..) => socks5::HOST_UNREACHABLE,
        OpenError::Egress(error) if error.timed_out() => socks5::TTL_EXPIRED,
        OpenError::Egress(EgressError::Dial { source, .. }) => match source.raw_os_error() {
            Some(libc::ECONNREFUSED) => socks5::CONNECTION_REFUSED,
            Some(libc::EHOSTUNREACH | libc::ENETUNREACH) => socks5::HOST_UNREACHABLE,
            _ => socks5::GENERAL_FAILURE,
        },
        OpenError::Egress(_) => socks5::GENERAL_FAILURE,
    }
}
