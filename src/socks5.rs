//! SOCKS5 wire constants (RFC 1928, RFC 1929), shared by the connector and the handler.

/// Protocol version.
pub const VERSION: u8 = 5;
/// Username/password subnegotiation version.
pub const AUTH_VERSION: u8 = 1;
/// Method: no authentication.
pub const NO_AUTH: u8 = 0;
/// Method: username/password.
pub const USER_PASSWORD: u8 = 2;
/// Method reply: none of the offered methods is acceptable.
pub const NO_ACCEPTABLE: u8 = 0xff;
/// Command: CONNECT.
pub const CONNECT: u8 = 1;
/// Address type: IPv4.
pub const IPV4: u8 = 1;
/// Address type: domain name.
pub const DOMAIN: u8 = 3;
/// Address type: IPv6.
pub const IPV6: u8 = 4;
/// Reply: succeeded.
pub const SUCCEEDED: u8 = 0;
/// Reply: general failure.
pub const GENERAL_FAILURE: u8 = 1;
/// Reply: host unreachable.
pub const HOST_UNREACHABLE: u8 = 4;
/// Reply: connection refused.
pub const CONNECTION_REFUSED: u8 = 5;
/// Reply: TTL expired (used for timeouts).
pub const TTL_EXPIRED: u8 = 6;
/// Reply: command not supported.
pub const COMMAND_NOT_SUPPORTED: u8 = 7;
/// Reply: address type not supported.
pub const ADDRESS_NOT_SUPPORTED: u8 = 8;

/// What a reply code means, for logs.
pub fn reply_text(code: u8) -> &'static str {
    match code {
        SUCCEEDED => "succeeded",
        GENERAL_FAILURE => "general failure",
        2 => "connection not allowed by ruleset",
        3 => "network unreachable",
        HOST_UNREACHABLE => "host unreachable",
        CONNECTION_REFUSED => "connection refused",
        TTL_EXPIRED => "TTL expired",
        COMMAND_NOT_SUPPORTED => "command not supported",
        ADDRESS_NOT_SUPPORTED => "address type not supported",
        _ => "unassigned code",
    }
}
