//! Plain HTTP proxying (`GET http://host/path` to an `http` service) on loopback: the
//! client's end of stream reaches the origin, and a request whose body length is in doubt is
//! refused before anything is sent on.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;

use common::STEP_TIMEOUT;
use common::engine::Engine;

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("finding a free port");
    listener.local_addr().unwrap()
}

/// An origin for one connection that reads the request to the client's end of stream, then
/// answers `ok`; sends what it read.
fn answers_after_end_of_stream() -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding the origin");
    let addr = listener.local_addr().unwrap();
    let (sender, received) = mpsc::channel();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accepting the proxied request");
        stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
        let mut request = Vec::new();
        let _ = stream.read_to_end(&mut request);
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
        let _ = stream.write_all(answer);
        let _ = sender.send(request);
    });
    (addr, received)
}

fn http_proxy() -> (SocketAddr, Engine) {
    let listen = free_port();
    let config = format!(
        "[[services]]\n\
         name = \"proxy\"\n\
         addr = \"{listen}\"\n\
         handler = {{ type = \"http\" }}\n"
    );
    (listen, Engine::start_here(&config, &[]))
}

fn exchange(proxy: SocketAddr, request: &str, finish_sending: bool) -> String {
    let mut stream = TcpStream::connect(proxy).expect("connecting to the proxy");
    stream.set_read_timeout(Some(STEP_TIMEOUT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    if finish_sending {
        stream.shutdown(Shutdown::Write).unwrap();
    }
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .expect("the proxy did not close the connection");
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_clients_end_of_stream_after_a_plain_request_reaches_the_origin_which_then_answers() {
    let (origin, seen) = answers_after_end_of_stream();
    let (proxy, _engine) = http_proxy();

    let request = format!("GET http://{origin}/after-eof HTTP/1.0\r\n\r\n");
    let answer = exchange(proxy, &request, true);
    let request_seen = seen
        .recv_timeout(STEP_TIMEOUT)
        .expect("the origin got nothing");

    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer:?}");
    assert!(answer.ends_with("\r\n\r\nok"), "{answer:?}");
    let request_seen = String::from_utf8_lossy(&request_seen);
    assert!(
        request_seen.starts_with("GET /after-eof HTTP/1.0\r\n"),
        "{request_seen:?}"
    );
}

#[test]
fn a_plain_request_with_conflicting_content_lengths_is_refused_with_400() {
    let (origin, seen) = answers_after_end_of_stream();
    let (proxy, _engine) = http_proxy();

    let request = format!(
        "POST http://{origin}/two-lengths HTTP/1.1\r\nContent-Length: 5\r\n\
         Content-Length: 50\r\n\r\nhello"
    );
    let answer = exchange(proxy, &request, false);

    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer:?}"
    );
    assert!(answer.contains("conflicting Content-Length"), "{answer:?}");
    assert!(
        seen.recv_timeout(std::time::Duration::from_millis(300))
            .is_err(),
        "the request reached the origin"
    );
}
