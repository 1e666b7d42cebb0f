//! Addresses as written in the configuration: `host:port`, `[v6]:port` or `:port`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

/// Why an address string was rejected; the text says what would be valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// An IPv6 literal written without brackets, which makes the port ambiguous.
    #[error("\"{0}\" looks like an IPv6 address without brackets; write it as \"[{1}]:{2}\"")]
    UnbracketedIpv6(String, String, String),
    /// No `:port` part.
    #[error("\"{0}\" has no port; write it as host:port, e.g. \"127.0.0.1:8000\"")]
    MissingPort(String),
    /// The port is not a number from 1 to 65535.
    #[error("\"{0}\" has an invalid port \"{1}\"; a port is a number from 1 to 65535")]
    InvalidPort(String, String),
    /// A bracketed host that is not an IPv6 literal, or an empty or malformed host.
    #[error("\"{0}\" has an invalid host; use an IPv4 address, a host name, or [IPv6]")]
    InvalidHost(String),
    /// A host name that did not resolve.
    #[error("\"{0}\" does not resolve: {1}")]
    Unresolved(String, String),
}

/// A parsed `host:port` address. The host is kept as written so that a proxy can be asked
/// for a name it resolves itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    host: Host,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Unspecified,
    Ip(IpAddr),
    Name(String),
}

impl Address {
    /// Parses an address string.
    pub fn parse(text: &str) -> Result<Address, AddressError> {
        let text = text.trim();
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (inside, after) = rest
                .split_once(']')
                .ok_or_else(|| AddressError::InvalidHost(text.to_owned()))?;
            let ip: std::net::Ipv6Addr = inside
                .parse()
                .map_err(|_| AddressError::InvalidHost(text.to_owned()))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| AddressError::MissingPort(text.to_owned()))?;
            (Host::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = text
                .rsplit_once(':')
                .ok_or_else(|| AddressError::MissingPort(text.to_owned()))?;
            if host.contains(':') {
                return Err(AddressError::UnbracketedIpv6(
                    text.to_owned(),
                    host.to_owned(),
                    port.to_owned(),
                ));
            }
            let host = if host.is_empty() {
                Host::Unspecified
            } else if let Ok(ip) = host.parse::<Ipv4Addr>() {
                Host::Ip(IpAddr::V4(ip))
            } else if is_host_name(host) {
                Host::Name(canonical_name(host))
            } else {
                return Err(AddressError::InvalidHost(text.to_owned()));
            };
            (host, port)
        };
        let port = match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => return Err(AddressError::InvalidPort(text.to_owned(), port.to_owned())),
        };
        Ok(Address { host, port })
    }

    /// An address from an IP address and port.
    pub fn from_ip(ip: IpAddr, port: u16) -> Address {
        Address {
            host: Host::Ip(ip),
            port,
        }
    }

    /// An address from a host name (as a SOCKS5 client sends it) and port.
    pub fn from_name(name: &str, port: u16) -> Result<Address, AddressError> {
        if let Ok(ip) = name.parse::<IpAddr>() {
            return Ok(Address::from_ip(ip, port));
        }
        if !is_host_name(name) {
            return Err(AddressError::InvalidHost(name.to_owned()));
        }
        Ok(Address {
            host: Host::Name(canonical_name(name)),
            port,
        })
    }

    /// The host name, when the host is not an IP literal.
    pub fn name(&self) -> Option<&str> {
        match &self.host {
            Host::Name(name) => Some(name),
            _ => None,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address as `host:port` with IPv6 in brackets: what an HTTP CONNECT names.
    pub fn authority(&self) -> String {
        self.to_string()
    }

    /// The IP address when the host is a literal (or empty, meaning all IPv4 interfaces).
    pub fn literal(&self) -> Option<SocketAddr> {
        match &self.host {
            Host::Unspecified => Some(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), self.port)),
            Host::Ip(ip) => Some(SocketAddr::new(*ip, self.port)),
            Host::Name(_) => None,
        }
    }

    /// Resolves the address to one socket address, preferring the first the resolver gives.
    pub fn resolve(&self) -> Result<SocketAddr, AddressError> {
        if let Some(addr) = self.literal() {
            return Ok(addr);
        }
        let text = self.to_string();
        let mut addrs = text
            .to_socket_addrs()
            .map_err(|error| AddressError::Unresolved(text.clone(), error.to_string()))?;
        addrs
            .next()
            .ok_or_else(|| AddressError::Unresolved(text.clone(), "no addresses".to_owned()))
    }
}

/// A host name as it is compared and resolved: lower case, without the trailing dot of a
/// fully qualified name (`Example.COM.` and `example.com` are one name).
pub fn canonical_name(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// A DNS name: dot-separated labels, with the one trailing dot of a fully qualified name
/// allowed.
fn is_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Unspecified => write!(f, ":{}", self.port),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}:{}", self.port),
            Host::Name(name) => write!(f, "{name}:{}", self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_ipv6_names_and_empty_hosts_parse() {
        assert_eq!(
            Address::parse("10.0.0.1:8000").unwrap().to_string(),
            "10.0.0.1:8000"
        );
        assert_eq!(
            Address::parse("[::1]:8000").unwrap().to_string(),
            "[::1]:8000"
        );
        assert_eq!(
            Address::parse("Example.com:80").unwrap().authority(),
            "example.com:80"
        );
        let any = Address::parse(":8000").unwrap();
        assert_eq!(any.literal().unwrap().to_string(), "0.0.0.0:8000");
    }

    #[test]
    fn a_fully_qualified_name_with_its_trailing_dot_parses_but_empty_labels_do_not() {
        assert_eq!(
            Address::parse("LocalHost.:8000").unwrap().authority(),
            "localhost:8000"
        );
        assert!(Address::parse(".:8000").is_err());
        assert!(Address::parse("a..b:8000").is_err());
        assert!(Address::parse("a.b..:8000").is_err());
    }

    #[test]
    fn ipv6_without_brackets_is_rejected_with_the_fix() {
        let error = Address::parse("::1:8000").unwrap_err();
        assert_eq!(
            error.to_string(),
            "\"::1:8000\" looks like an IPv6 address without brackets; write it as \"[::1]:8000\""
        );
    }

    #[test]
    fn missing_zero_or_large_ports_are_rejected() {
        assert!(matches!(
            Address::parse("10.0.0.1"),
            Err(AddressError::MissingPort(_))
        ));
        assert!(matches!(
            Address::parse("10.0.0.1:0"),
            Err(AddressError::InvalidPort(..))
        ));
        assert!(matches!(
            Address::parse("a:65536"),
            Err(AddressError::InvalidPort(..))
        ));
        assert!(matches!(
            Address::parse("[::1]"),
            Err(AddressError::MissingPort(_))
        ));
        assert!(matches!(
            Address::parse("a b:1"),
            Err(AddressError::InvalidHost(_))
        ));
    }
}
