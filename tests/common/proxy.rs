//! Stand-ins for the HTTP proxy a chain's hop goes through: a scripted fake written here, and
//! tinyproxy as an independent real one.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;

use super::netns::{Netns, Worker, spawn_in};
use super::process::ChildProcess;
use super::traffic::{connect, serve};
use super::{STEP_TIMEOUT, TempDir};

/// What the fake proxy does with one CONNECT request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Answers `HTTP/1.1 {status} {reason}` with [`REFUSAL_BODY`] and waits for the engine to
    /// close the connection.
    Refuse {
        /// The status code, e.g. 403.
        status: u16,
        /// The reason phrase, e.g. `Forbidden`.
        reason: &'static str,
    },
    /// Dials the requested target, answers 200 followed by `early` in the same write, then
    /// relays both ways until each side has sent FIN.
    Tunnel {
        /// Bytes sent to the client right after the 200 header, before anything relayed.
        early: Vec<u8>,
    },
}

impl Reply {
    /// A 200 tunnel with nothing sent early.
    pub fn tunnel() -> Reply {
        Reply::Tunnel { early: Vec::new() }
    }
}

/// The body of every refusal: a client that receives any of it got the proxy's error page
/// relayed as if it were the target's data.
pub const REFUSAL_BODY: &str = "refused by the fake proxy\n";

/// A scripted HTTP CONNECT proxy on a thread inside `netns`: the n-th connection it accepts
/// gets `replies[n]`. `join` on the result gives each request head (up to the blank line).
pub fn fake_proxy(netns: &str, addr: SocketAddr, replies: Vec<Reply>) -> Worker<Vec<String>> {
    let mut script = replies.clone().into_iter();
    let netns_name = netns.to_owned();
    serve(netns, addr, replies.len(), move |mut client, _peer| {
        let head = read_request_head(&mut client).expect("reading the CONNECT request");
        match script.next().expect("one reply per connection") {
            Reply::Refuse { status, reason } => {
                let challenge = if status == 407 {
                    "Proxy-Authenticate: Basic realm=\"uringgost-test\"\r\n"
                } else {
                    ""
                };
                let answer = format!(
                    "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\n{challenge}\r\n{}",
                    REFUSAL_BODY.len(),
                    REFUSAL_BODY
                );
                client
                    .write_all(answer.as_bytes())
                    .expect("writing the refusal");
                // The engine, not the proxy, must end the connection; a reset is fine, as
                // the engine may close without reading the body.
                let mut rest = Vec::new();
                let failure = match client.read_to_end(&mut rest) {
                    Ok(_) => None,
                    Err(error) if error.kind() == io::ErrorKind::ConnectionReset => None,
                    Err(error) => Some(error),
                };
                assert!(
                    failure.is_none() && rest.is_empty(),
                    "after a {status}, the engine sent {rest:?} to the hop and did not close it: \
                     {failure:?}"
                );
            }
            Reply::Tunnel { early } => {
                let target = connect_target(&head);
                let mut answer = b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec();
                answer.extend_from_slice(&early);
                // One write, so that the header and the early bytes arrive together.
                client.write_all(&answer).expect("writing the 200 answer");
                relay(client, target, &netns_name);
            }
        }
        head
    })
}

/// Reads byte by byte up to the blank line, so that no tunnelled byte is consumed.
fn read_request_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn connect_target(head: &str) -> TcpStream {
    let authority = head
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("not a CONNECT request: {head:?}"));
    let addr = authority
        .parse()
        .unwrap_or_else(|_| panic!("CONNECT target {authority:?}"));
    connect(addr)
}

/// Copies both ways; a FIN from one side becomes a shutdown(SHUT_WR) towards the other.
fn relay(client: TcpStream, target: TcpStream, netns: &str) {
    let (client_in, target_out) = (client.try_clone().unwrap(), target.try_clone().unwrap());
    let upstream = spawn_in(netns, "fake proxy upstream", move || {
        pipe(client_in, target_out)
    });
    pipe(target, client);
    upstream.join(STEP_TIMEOUT);
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    // A reset ends the copy like a FIN does; the test's assertions see what arrived.
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

/// The line tinyproxy logs once it accepts connections.
const TINYPROXY_READY: &str = "Accepting connections";

/// tinyproxy in the foreground inside a namespace with its own config; killed on drop.
pub struct Tinyproxy {
    process: ChildProcess,
    _dir: TempDir,
}

impl Tinyproxy {
    /// Starts `binary` in `netns` listening on `addr`, allowing clients from 10.0.0.0/8 and
    /// CONNECT only to `connect_port`; returns once it accepts connections.
    pub fn start(binary: &Path, netns: &Netns, addr: SocketAddr, connect_port: u16) -> Tinyproxy {
        let dir = TempDir::new();
        // No User: it stays root inside the test namespace. No LogFile or PidFile: it logs to
        // stderr in the foreground and writes no files outside the temp dir.
        let config = format!(
            "Port {port}\nListen {ip}\nTimeout 60\nMaxClients 16\nAllow 10.0.0.0/8\n\
             ConnectPort {connect_port}\nLogLevel Info\n",
            port = addr.port(),
            ip = addr.ip(),
        );
        let config_file = dir.write("tinyproxy.conf", &config);
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns.name()]).arg(binary);
        command.arg("-d").arg("-c").arg(&config_file);
        let process = ChildProcess::spawn("tinyproxy", command);
        process.wait_for_line(TINYPROXY_READY, STEP_TIMEOUT);
        Tinyproxy { process, _dir: dir }
    }

    /// tinyproxy's captured log.
    pub fn process(&self) -> &ChildProcess {
        &self.process
    }
}
