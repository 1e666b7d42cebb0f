//! Relay limits: `idleTimeout` closes a connection that moved no byte for that long, and
//! `halfCloseTimeout` closes one whose other direction goes on too long after the first
//! ended. Without them a relay lasts as long as its peers keep it open (see half_close.rs).
//!
//! Loopback only: no namespace or root needed.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use common::STEP_TIMEOUT;
use common::engine::Engine;

/// A target on loopback that gives each connection to `handler` on a thread of its own.
fn target(handler: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding the target");
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || handler(stream));
        }
    });
    addr
}

/// Echoes until the engine closes.
fn echo(mut stream: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(read @ 1..) = stream.read(&mut buf) {
        if stream.write_all(&buf[..read]).is_err() {
            break;
        }
    }
}

/// Reads to the client's end of stream and then neither answers nor closes: a peer that
/// ignores a FIN. Holds the connection for longer than any test waits.
fn ignore_fin(mut stream: TcpStream) {
    let _ = stream.read_to_end(&mut Vec::new());
    thread::sleep(STEP_TIMEOUT);
    drop(stream);
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("finding a free port");
    listener.local_addr().unwrap()
}

/// A `tcp` service on a free loopback port forwarding to `target` with `metadata`.
fn forward(target: SocketAddr, metadata: &str) -> (SocketAddr, String) {
    let listen = free_port();
    let config = format!(
        "[[services]]\n\
         name = \"limited\"\n\
         addr = \"{listen}\"\n\
         handler = {{ type = \"tcp\" }}\n\
         metadata = {metadata}\n\
         [[services.forwarder.nodes]]\n\
         name = \"target\"\n\
         addr = \"{target}\"\n"
    );
    (listen, config)
}

fn client(service: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(service).expect("connecting to the service");
    stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    stream
}

/// Reads until the engine closes; an error (or the read timeout) fails the test.
fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    match stream.read_to_end(&mut received) {
        Ok(_) => received,
        Err(error) if error.kind() == ErrorKind::ConnectionReset => received,
        Err(error) => panic!("the engine did not close the connection: {error}"),
    }
}

#[test]
fn half_close_timeout_closes_a_relay_whose_target_ignores_the_clients_fin() {
    let (service, config) = forward(target(ignore_fin), "{ halfCloseTimeout = \"1s\" }");
    let engine = Engine::start_here(&config, &["--log-level", "debug"]);

    let mut stream = client(service);
    stream.write_all(b"request").unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let received = read_until_closed(&mut stream);

    assert_eq!(received, b"", "the target sent nothing");
    let line = engine
        .process()
        .wait_for_line("connection aborted", STEP_TIMEOUT);
    assert!(
        line.contains("closed 1s after one direction ended (halfCloseTimeout)"),
        "{line}"
    );
}

#[test]
fn idle_timeout_closes_a_silent_relay_and_spares_one_that_keeps_moving_bytes() {
    let (service, config) = forward(target(echo), "{ idleTimeout = \"1s\" }");
    let engine = Engine::start_here(&config, &["--log-level", "debug"]);

    let mut silent = client(service);
    silent.write_all(b"hello").unwrap();
    let mut greeting = [0u8; 5];
    silent.read_exact(&mut greeting).unwrap();
    let mut busy = client(service);
    // Twelve round trips a quarter of a second apart: never a second without a byte.
    for round in 0..12u8 {
        busy.write_all(&[round]).unwrap();
        let mut echoed = [0u8; 1];
        busy.read_exact(&mut echoed)
            .expect("the busy relay was closed");
        assert_eq!(echoed, [round]);
        thread::sleep(Duration::from_millis(250));
    }
    let silent_after = read_until_closed(&mut silent);

    assert_eq!(&greeting, b"hello");
    assert_eq!(silent_after, b"", "nothing after the greeting");
    assert_eq!(
        engine
            .process()
            .count_lines("without a byte either way (idleTimeout)"),
        1,
        "only the silent relay was closed:\n{}",
        engine.process().dump()
    );
}

/// Reads a request head and then neither answers nor closes: a hung origin.
fn hung_origin(mut stream: TcpStream) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    thread::sleep(STEP_TIMEOUT);
    drop(stream);
}

#[test]
fn idle_timeout_closes_a_plain_http_request_whose_origin_never_answers() {
    let origin = target(hung_origin);
    let listen = free_port();
    let config = format!(
        "[[services]]\n\
         name = \"limited\"\n\
         addr = \"{listen}\"\n\
         handler = {{ type = \"http\" }}\n\
         metadata = {{ idleTimeout = \"1s\" }}\n"
    );
    let engine = Engine::start_here(&config, &["--log-level", "debug"]);

    let mut stream = client(listen);
    let request = format!("GET http://{origin}/slow HTTP/1.1\r\nHost: {origin}\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let received = read_until_closed(&mut stream);

    assert_eq!(received, b"", "the origin sent nothing");
    let line = engine
        .process()
        .wait_for_line("connection aborted", STEP_TIMEOUT);
    assert!(line.contains("(idleTimeout)"), "{line}");
}
