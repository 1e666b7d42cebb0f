//! Stopping: SIGTERM ends the process promptly, with a clean log and a clean exit status.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use common::engine::Engine;
use common::traffic::round_trip;

/// An echo server on loopback for one connection.
fn echo_once() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding the echo server");
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accepting the relayed connection");
        let mut buf = [0u8; 4096];
        while let Ok(read) = stream.read(&mut buf) {
            if read == 0 || stream.write_all(&buf[..read]).is_err() {
                break;
            }
        }
    });
    addr
}

fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("finding a free port");
    listener.local_addr().unwrap()
}

#[test]
fn sigterm_with_a_relayed_connection_open_exits_at_once_with_status_0_and_no_warning() {
    let target = echo_once();
    let (forward, proxy) = (free_port(), free_port());
    let config = format!(
        "[[services]]\n\
         name = \"forward\"\n\
         addr = \"{forward}\"\n\
         handler = {{ type = \"tcp\" }}\n\
         [[services.forwarder.nodes]]\n\
         name = \"echo\"\n\
         addr = \"{target}\"\n\
         [[services]]\n\
         name = \"proxy\"\n\
         addr = \"{proxy}\"\n\
         handler = {{ type = \"auto\" }}\n"
    );
    let engine = Engine::start_here(&config, &["--threads", "2"]);
    let mut relayed = TcpStream::connect(forward).expect("connecting to the forward");
    assert_eq!(
        round_trip(&mut relayed, b"before the stop"),
        b"before the stop"
    );

    // SAFETY: kill(2) with the pid of a child this test started and still holds.
    let sent = unsafe { libc::kill(engine.pid() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(sent, 0, "sending SIGTERM");
    let (status, log) = engine.wait_exit(Duration::from_secs(5));

    assert!(status.success(), "exit status {status}; log:\n{log}");
    assert!(log.contains("stopping"), "no line about stopping:\n{log}");
    let noisy: Vec<&str> = log
        .lines()
        .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
        .collect();
    assert!(noisy.is_empty(), "a clean stop logged warnings:\n{log}");
    drop(relayed);
}
