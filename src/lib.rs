//! uringgost: port forwarding and proxy chains on io_uring, thread-per-core, across Linux
//! network namespaces, configured in GOST's vocabulary.
//!
//! The data path, in the order a connection meets it: [`config`] is parsed and [`route`]
//! compiles it; [`netns`] opens namespaces and creates sockets in them; [`executor`] accepts
//! on each core; a [`handler`] serves the connection, reaching its destination through
//! [`egress`] ([`dialer`] and [`connector`]); [`relay`] moves the bytes. Datagrams take
//! their own path: [`udp`] keeps a session per client and forwards them in batches.

pub mod config;
pub mod connector;
pub mod dialer;
pub mod egress;
pub mod executor;
pub mod handler;
pub mod http;
pub mod netns;
pub mod relay;
pub mod route;
pub mod selector;
pub mod server;
pub mod socks5;
pub mod stream;
pub mod udp;
