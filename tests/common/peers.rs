//! Peers of the proxy tests: curl and microsocks (software we did not write), servers that
//! accept until stopped, a scripted hop that refuses on cue, and clients with a chosen source.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use super::netns::{Netns, Worker, spawn_in};
use super::process::ChildProcess;
use super::traffic::{IO_TIMEOUT, echo, serve};
use super::{Deadline, STEP_TIMEOUT, skip};

/// How often an idle [`Server`] looks for a new connection or the order to stop.
const ACCEPT_POLL: Duration = Duration::from_millis(2);

/// The first of `candidates` that is a file, or `None` after printing `SKIP` (a failure
/// under [`super::REQUIRE_ENV`]); `package` is what `apt-get install` would add.
fn installed(test: &str, candidates: &[&str], package: &str) -> Option<PathBuf> {
    let found = candidates
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file());
    found.or_else(|| {
        let reason = format!("{package} is not installed (apt-get install {package})");
        skip(test, &reason);
        None
    })
}

/// The curl binary, or `None` after printing `SKIP`.
pub fn curl_binary(test: &str) -> Option<PathBuf> {
    installed(test, &["/usr/bin/curl", "/usr/local/bin/curl"], "curl")
}

/// The microsocks binary, or `None` after printing `SKIP`.
pub fn microsocks_binary(test: &str) -> Option<PathBuf> {
    installed(
        test,
        &["/usr/bin/microsocks", "/usr/local/bin/microsocks"],
        "microsocks",
    )
}

/// What one curl run left behind.
#[derive(Debug)]
pub struct CurlRun {
    /// curl's exit code (0: the transfer worked; 97: the SOCKS5 proxy refused).
    pub exit: Option<i32>,
    /// The body it wrote, or what `--write-out` printed.
    pub stdout: Vec<u8>,
    /// Its error message, if any.
    pub stderr: String,
}

impl CurlRun {
    /// The body as text, for comparing with the origin's.
    pub fn body(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `curl ARGS...` inside `netns`, with no .curlrc and no proxy from the environment, at
/// most 30 seconds.
pub fn curl(binary: &Path, netns: &Netns, args: &[&str]) -> CurlRun {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", netns.name()]).arg(binary);
    command.args(["-q", "--silent", "--show-error", "--max-time", "30"]);
    command.args(args);
    for variable in ["http_proxy", "https_proxy", "all_proxy", "no_proxy"] {
        command.env_remove(variable);
        command.env_remove(variable.to_uppercase());
    }
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("running {command:?}: {error}"));
    CurlRun {
        exit: output.status.code(),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// microsocks, a SOCKS5 proxy we did not write, inside a namespace; killed on drop.
pub struct Microsocks {
    process: ChildProcess,
}

impl Microsocks {
    /// Starts `binary` in `netns` on `addr`, requiring `auth` if given, and returns once it
    /// accepts connections (it prints nothing when ready, so this tries to connect).
    pub fn start(
        binary: &Path,
        netns: &Netns,
        addr: SocketAddr,
        auth: Option<(&str, &str)>,
    ) -> Microsocks {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", netns.name()]).arg(binary);
        command.arg("-i").arg(addr.ip().to_string());
        command.arg("-p").arg(addr.port().to_string());
        if let Some((user, password)) = auth {
            command.args(["-u", user, "-P", password]);
        }
        let process = ChildProcess::spawn("microsocks", command);
        let listening = netns.spawn("microsocks probe", move || {
            let deadline = Deadline::after(STEP_TIMEOUT);
            while TcpStream::connect(addr).is_err() {
                assert!(
                    deadline.remaining().is_some(),
                    "microsocks did not listen on {addr}"
                );
                thread::sleep(Duration::from_millis(10));
            }
        });
        listening.join(STEP_TIMEOUT);
        Microsocks { process }
    }

    /// microsocks's captured output.
    pub fn process(&self) -> &ChildProcess {
        &self.process
    }
}

/// A TCP server on a thread inside a namespace that hands every connection it accepts to a
/// handler, one after the other, until [`Server::stop`]; dropping it stops it too.
///
/// Unlike `traffic::serve` it needs no count in advance, so a test can assert how many
/// connections arrived, including none.
pub struct Server<T> {
    stopping: Arc<AtomicBool>,
    worker: Option<Worker<Vec<T>>>,
}

impl<T: Send + 'static> Server<T> {
    /// Binds `addr` inside `netns` before returning and starts accepting.
    pub fn start<F>(netns: &str, addr: SocketAddr, mut handler: F) -> Server<T>
    where
        F: FnMut(TcpStream, SocketAddr) -> T + Send + 'static,
    {
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let (bound, is_bound) = mpsc::channel();
        let worker = spawn_in(netns, &format!("server {addr}"), move || {
            let listener =
                TcpListener::bind(addr).unwrap_or_else(|error| panic!("binding {addr}: {error}"));
            listener
                .set_nonblocking(true)
                .expect("making the listener non-blocking");
            // The test may have stopped waiting already; then nobody needs the signal.
            let _ = bound.send(());
            let mut results = Vec::new();
            loop {
                // Read before accepting, so that what was queued before the stop is served.
                let stop_requested = stop.load(Ordering::SeqCst);
                match listener.accept() {
                    Ok((stream, peer)) => {
                        stream.set_nonblocking(false).expect("a blocking socket");
                        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                        results.push(handler(stream, peer));
                    }
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {
                        if stop_requested {
                            return results;
                        }
                        thread::sleep(ACCEPT_POLL);
                    }
                    Err(error) => panic!("accepting on {addr}: {error}"),
                }
            }
        });
        if is_bound.recv_timeout(STEP_TIMEOUT).is_err() {
            // The thread panicked before binding; joining re-raises its message.
            worker.join(STEP_TIMEOUT);
            unreachable!("a server that never bound returned");
        }
        Server {
            stopping,
            worker: Some(worker),
        }
    }

    /// Serves what has already arrived, stops, and returns the handler's results in accept
    /// order.
    pub fn stop(mut self) -> Vec<T> {
        self.stopping.store(true, Ordering::SeqCst);
        let worker = self.worker.take().expect("a server is stopped once");
        worker.join(STEP_TIMEOUT)
    }
}

impl<T> Drop for Server<T> {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::SeqCst);
    }
}

/// A target that sends `label` to every client and closes; each result is the client's
/// address as the target saw it.
pub fn labelled_target(netns: &str, addr: SocketAddr, label: &'static str) -> Server<SocketAddr> {
    Server::start(netns, addr, move |mut stream, peer| {
        // A client that is already gone changes nothing: the tests count labels they read.
        let _ = stream.write_all(label.as_bytes());
        peer
    })
}

/// An HTTP origin that answers every request with `200` and `body`, then closes; each result
/// is the request head it received, up to the blank line.
pub fn http_origin(netns: &str, addr: SocketAddr, body: &'static str) -> Server<String> {
    Server::start(netns, addr, move |mut stream, _peer| {
        let head = read_head(&mut stream).expect("reading a request head");
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(answer.as_bytes())
            .expect("writing the response");
        head
    })
}

/// Reads up to and including the first blank line, one byte at a time, so that nothing after
/// it is consumed.
fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0];
    loop {
        stream.read_exact(&mut byte)?;
        head.push(byte[0]);
        if head.ends_with(b"\r\n\r\n") {
            return Ok(String::from_utf8_lossy(&head).into_owned());
        }
    }
}

/// The protocol a [`scripted_hop`] speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HopProtocol {
    /// HTTP CONNECT.
    Http,
    /// SOCKS5 CONNECT without authentication.
    Socks5,
}

/// What a [`scripted_hop`] does with one connection.
#[derive(Clone, Debug)]
pub enum HopAnswer {
    /// HTTP: answers `HTTP/1.1 {code} {reason}`; SOCKS5: replies to CONNECT with `code`.
    Refuse {
        /// The HTTP status or SOCKS5 reply code.
        code: u16,
        /// The HTTP reason phrase (unused for SOCKS5).
        reason: &'static str,
    },
    /// Answers the first request (HTTP head, or SOCKS5 greeting) with [`GARBAGE`].
    Garbage,
    /// Reads the first request and answers nothing.
    Silence,
    /// Opens the tunnel and echoes everything through it, standing in for the target too.
    Tunnel,
}

/// Neither HTTP nor SOCKS5: the first byte is no HTTP version and no SOCKS version.
pub const GARBAGE: &[u8] = b"\x00\x13 this is not a proxy answer \xff\r\n\r\n";

/// A proxy on a thread inside `netns` that answers the n-th connection with `answers[n]`.
///
/// After any answer but `Tunnel` it waits for the engine to close the connection, and fails
/// if the engine sends anything more. `join` gives what each connection asked for: the HTTP
/// request line, or the SOCKS5 CONNECT destination (empty if it was not asked).
pub fn scripted_hop(
    netns: &str,
    addr: SocketAddr,
    protocol: HopProtocol,
    answers: Vec<HopAnswer>,
) -> Worker<Vec<String>> {
    let mut script = answers.clone().into_iter();
    serve(netns, addr, answers.len(), move |mut stream, _peer| {
        let answer = script.next().expect("one answer per connection");
        let asked = match protocol {
            HopProtocol::Http => answer_http(&mut stream, &answer),
            HopProtocol::Socks5 => answer_socks5(&mut stream, &answer),
        };
        if let HopAnswer::Tunnel = answer {
            echo(&mut stream);
        } else {
            let mut rest = Vec::new();
            let closed = match stream.read_to_end(&mut rest) {
                Ok(_) => Ok(()),
                // The engine may close without reading all the hop sent; a reset is a close.
                Err(error) if error.kind() == ErrorKind::ConnectionReset => Ok(()),
                Err(error) => Err(error),
            };
            assert!(
                closed.is_ok() && rest.is_empty(),
                "after {answer:?} the engine sent {rest:?} to the hop and did not close it: \
                 {closed:?}"
            );
        }
        asked
    })
}

fn answer_http(stream: &mut TcpStream, answer: &HopAnswer) -> String {
    let head = read_head(stream).expect("reading the CONNECT request");
    let reply = match answer {
        HopAnswer::Refuse { code, reason } => {
            format!("HTTP/1.1 {code} {reason}\r\nContent-Length: 0\r\n\r\n").into_bytes()
        }
        HopAnswer::Garbage => GARBAGE.to_vec(),
        HopAnswer::Silence => Vec::new(),
        HopAnswer::Tunnel => b"HTTP/1.1 200 Connection established\r\n\r\n".to_vec(),
    };
    stream.write_all(&reply).expect("answering the CONNECT");
    head.lines().next().unwrap_or_default().to_owned()
}

fn answer_socks5(stream: &mut TcpStream, answer: &HopAnswer) -> String {
    let mut greeting = [0; 2];
    stream
        .read_exact(&mut greeting)
        .expect("reading the greeting");
    let mut methods = vec![0; usize::from(greeting[1])];
    stream
        .read_exact(&mut methods)
        .expect("reading the methods");
    assert_eq!(greeting[0], 5, "a SOCKS5 greeting");
    assert!(
        methods.contains(&0),
        "no-authentication offered: {methods:?}"
    );
    match answer {
        HopAnswer::Garbage => {
            stream.write_all(GARBAGE).expect("answering garbage");
            return String::new();
        }
        HopAnswer::Silence => return String::new(),
        HopAnswer::Refuse { .. } | HopAnswer::Tunnel => {}
    }
    stream
        .write_all(&[5, 0])
        .expect("choosing no authentication");
    let destination = read_socks5_connect(stream);
    let code = match answer {
        HopAnswer::Refuse { code, .. } => u8::try_from(*code).expect("a SOCKS5 reply code"),
        _ => 0,
    };
    stream
        .write_all(&[5, code, 0, 1, 0, 0, 0, 0, 0, 0])
        .expect("replying to CONNECT");
    destination
}

/// Reads a SOCKS5 CONNECT request and returns its destination as `host:port`.
fn read_socks5_connect(stream: &mut TcpStream) -> String {
    let mut head = [0; 4];
    stream.read_exact(&mut head).expect("reading the request");
    assert_eq!(head[..2], [5, 1], "a SOCKS5 CONNECT request");
    let host = match head[3] {
        1 => {
            let mut octets = [0; 4];
            stream
                .read_exact(&mut octets)
                .expect("reading an IPv4 address");
            IpAddr::from(octets).to_string()
        }
        3 => {
            let mut length = [0];
            stream
                .read_exact(&mut length)
                .expect("reading a name length");
            let mut name = vec![0; usize::from(length[0])];
            stream.read_exact(&mut name).expect("reading a name");
            String::from_utf8_lossy(&name).into_owned()
        }
        other => panic!("address type {other} in a CONNECT request"),
    };
    let mut port = [0; 2];
    stream.read_exact(&mut port).expect("reading the port");
    format!("{host}:{}", u16::from_be_bytes(port))
}

/// Connects to `addr` from source address `source` (any port), from the calling thread's
/// namespace, with the fixture's I/O timeouts.
pub fn connect_from(source: IpAddr, addr: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)
        .expect("creating a client socket");
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .unwrap_or_else(|error| panic!("binding a client to {source}: {error}"));
    socket
        .connect_timeout(&addr.into(), IO_TIMEOUT)
        .unwrap_or_else(|error| panic!("connecting from {source} to {addr}: {error}"));
    let stream = TcpStream::from(socket);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}
