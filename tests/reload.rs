//! SIGHUP reloads the configuration file: new connections follow the new routes while
//! relayed ones finish on the routes they started with, removed services stop listening,
//! unchanged UDP services keep their sessions, and a configuration that cannot be served
//! changes nothing.
//!
//! Everything stays on loopback in the test's own namespace, so these tests need no root.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

use common::engine::Engine;
use common::netns::Netns;
use common::traffic::{IO_TIMEOUT, connect, round_trip};
use common::{Deadline, STEP_TIMEOUT, netns_available};

/// A TCP target on loopback that greets each client with `label` and a newline, then
/// echoes; it serves until the test process ends.
fn labelled_echo(label: &'static str) -> SocketAddr {
    labelled_echo_on(
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a target"),
        label,
    )
}

/// [`labelled_echo`] on loopback inside `netns`.
fn labelled_echo_in(netns: &Netns, label: &'static str) -> SocketAddr {
    let listener = netns
        .spawn("binding a target", || {
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        })
        .join(STEP_TIMEOUT)
        .expect("binding a target in a namespace");
    labelled_echo_on(listener, label)
}

fn labelled_echo_on(listener: TcpListener, label: &'static str) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                if stream.write_all(format!("{label}\n").as_bytes()).is_err() {
                    return;
                }
                let mut buf = [0; 4096];
                while let Ok(count) = stream.read(&mut buf) {
                    if count == 0 || stream.write_all(&buf[..count]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// A UDP target that answers every datagram with the address it came from, which for a
/// relayed datagram is the engine's session socket.
fn source_reporter() -> SocketAddr {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a UDP target");
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0; 2048];
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(from.to_string().as_bytes(), from);
        }
    });
    addr
}

/// Connects through `service` from inside `netns` and returns the target's label.
fn greeted_from(netns: &Netns, service: SocketAddr) -> String {
    netns
        .spawn("client", move || greeted(service).1)
        .join(STEP_TIMEOUT)
}

/// A loopback port nothing listens on now, for the engine to bind.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("finding a free port");
    let addr = listener.local_addr().unwrap();
    let udp_free = UdpSocket::bind(addr).is_ok();
    if udp_free { addr } else { free_port() }
}

fn tcp_service(name: &str, listen: SocketAddr, target: SocketAddr) -> String {
    format!(
        "[[services]]\n\
         name = \"{name}\"\n\
         addr = \"{listen}\"\n\
         handler = {{ type = \"tcp\" }}\n\
         listener = {{ type = \"tcp\" }}\n\
         [[services.forwarder.nodes]]\n\
         name = \"{name}-target\"\n\
         addr = \"{target}\"\n"
    )
}

fn udp_service(name: &str, listen: SocketAddr, target: SocketAddr, ttl: &str) -> String {
    format!(
        "[[services]]\n\
         name = \"{name}\"\n\
         addr = \"{listen}\"\n\
         handler = {{ type = \"udp\" }}\n\
         listener = {{ type = \"udp\" }}\n\
         metadata = {{ ttl = \"{ttl}\" }}\n\
         [[services.forwarder.nodes]]\n\
         name = \"{name}-target\"\n\
         addr = \"{target}\"\n"
    )
}

/// Connects through `service` and returns the stream and the label its target greeted with.
fn greeted(service: SocketAddr) -> (TcpStream, String) {
    let mut stream = connect(service);
    let mut label = Vec::new();
    let mut byte = [0; 1];
    while label.len() < 64 {
        stream
            .read_exact(&mut byte)
            .unwrap_or_else(|error| panic!("reading the greeting through {service}: {error}"));
        if byte[0] == b'\n' {
            break;
        }
        label.push(byte[0]);
    }
    (stream, String::from_utf8(label).expect("a text label"))
}

/// Asks through the UDP service which session socket the target sees.
fn session_source(client: &UdpSocket, service: SocketAddr) -> String {
    client.send_to(b"who", service).expect("sending a datagram");
    let mut buf = [0; 128];
    let len = client
        .recv(&mut buf)
        .expect("receiving the target's answer");
    String::from_utf8(buf[..len].to_vec()).expect("a text address")
}

/// Reloads `engine` with `config` and returns the line that says it was reloaded.
fn reloaded(engine: &Engine, config: &str) -> String {
    let ending = engine.wait_reloaded(engine.reload(config));
    assert!(ending.contains("configuration reloaded"), "{ending}");
    ending
}

/// Reloads `engine` with `config` and returns the line that says the reload failed.
fn refused(engine: &Engine, config: &str) -> String {
    let ending = engine.wait_reloaded(engine.reload(config));
    assert!(ending.contains("reload failed"), "{ending}");
    ending
}

/// Waits until connecting to `addr` is refused: the listener is closed.
fn wait_refused(addr: SocketAddr) {
    let deadline = Deadline::after(Duration::from_secs(10));
    loop {
        match TcpStream::connect_timeout(&addr, IO_TIMEOUT) {
            Err(error) if error.kind() == ErrorKind::ConnectionRefused => return,
            _ if deadline.remaining().is_none() => panic!("{addr} still accepts connections"),
            _ => thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[test]
fn new_connections_follow_the_new_routes_and_relayed_ones_finish_on_the_old() {
    let (one, two) = (labelled_echo("one"), labelled_echo("two"));
    let (s1, s2) = (free_port(), free_port());
    let engine = Engine::start_here(&tcp_service("s1", s1, one), &["--threads", "2"]);

    let (mut relayed, label) = greeted(s1);
    assert_eq!(label, "one");

    let config = tcp_service("s1", s1, two) + &tcp_service("s2", s2, one);
    reloaded(&engine, &config);

    // Several connections, so that both executors' accept loops are seen to have switched.
    for _ in 0..8 {
        assert_eq!(greeted(s1).1, "two", "s1 after the reload");
    }
    assert_eq!(greeted(s2).1, "one", "s2, added by the reload");
    // The connection relayed before the reload is untouched by it.
    assert_eq!(round_trip(&mut relayed, b"still here"), b"still here");

    reloaded(&engine, &tcp_service("s2", s2, two));
    wait_refused(s1);
    assert_eq!(greeted(s2).1, "two");
    assert_eq!(round_trip(&mut relayed, b"and still"), b"and still");
    let log = engine.process().text(common::process::Stream::Stderr);
    assert!(
        log.lines()
            .any(|line| line.contains("service stopped listening") && line.contains("s1")),
        "no line about s1 stopping:\n{log}"
    );
}

#[test]
fn a_configuration_that_cannot_be_served_changes_nothing() {
    let one = labelled_echo("one");
    let s1 = free_port();
    let config = tcp_service("s1", s1, one);
    let engine = Engine::start_here(&config, &[]);

    // Invalid: the service names a chain that does not exist.
    let broken = config.replace(
        "type = \"tcp\" }\nlistener",
        "type = \"tcp\", chain = \"nope\" }\nlistener",
    );
    assert_ne!(broken, config, "the test's edit did not apply");
    let ending = refused(&engine, &broken);
    assert!(
        ending.contains("nope"),
        "the error does not name the chain: {ending}"
    );
    assert_eq!(greeted(s1).1, "one");

    // Valid, but a new service's address is taken by another process.
    let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding a blocker");
    let blocked = config.clone() + &tcp_service("s2", taken.local_addr().unwrap(), one);
    let ending = refused(&engine, &blocked);
    assert!(
        ending.contains("s2"),
        "the error does not name the service: {ending}"
    );
    assert_eq!(greeted(s1).1, "one");

    // A valid one still applies afterwards.
    let two = labelled_echo("two");
    reloaded(&engine, &tcp_service("s1", s1, two));
    assert_eq!(greeted(s1).1, "two");
}

#[test]
fn an_unchanged_udp_service_keeps_its_sessions_and_a_changed_one_starts_afresh() {
    let target = source_reporter();
    let (u1, s1) = (free_port(), free_port());
    let one = labelled_echo("one");
    let udp = udp_service("u1", u1, target, "60s");
    let engine = Engine::start_here(&(udp.clone() + &tcp_service("s1", s1, one)), &[]);

    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let first = session_source(&client, u1);

    // The TCP service goes; the UDP one is written the same and keeps its session.
    let ending = reloaded(&engine, &udp);
    assert!(ending.contains("udp_services_kept=1"), "{ending}");
    wait_refused(s1);
    assert_eq!(
        session_source(&client, u1),
        first,
        "the session was not kept"
    );

    // A changed setting restarts the service: its sessions close, a new one opens.
    let ending = reloaded(&engine, &udp_service("u1", u1, target, "30s"));
    assert!(ending.contains("udp_services_kept=0"), "{ending}");
    let second = session_source(&client, u1);
    assert_ne!(second, first, "the changed service kept the old session");
    assert_eq!(session_source(&client, u1), second);
}

#[test]
fn a_reload_opens_namespaces_again_and_follows_one_that_was_recreated() {
    if !netns_available("a_reload_opens_namespaces_again_and_follows_one_that_was_recreated") {
        return;
    }
    let (ns_a, ns_b) = (Netns::create("reload-a"), Netns::create("reload-b"));
    let one = labelled_echo("one");
    let two = labelled_echo_in(&ns_b, "two");
    let service = SocketAddr::from((Ipv4Addr::LOCALHOST, 8000));
    let in_a = tcp_service("s1", service, one).replace(
        "listener = { type = \"tcp\" }\n",
        &format!(
            "listener = {{ type = \"tcp\" }}\nmetadata = {{ netns = \"{}\" }}\n",
            ns_a.name()
        ),
    );
    assert_ne!(
        in_a,
        tcp_service("s1", service, one),
        "the test's edit did not apply"
    );
    let engine = Engine::start_here(&in_a, &["--threads", "2"]);
    assert_eq!(greeted_from(&ns_a, service), "one");

    // A namespace the running configuration does not use: listen and dial there.
    let in_b = tcp_service("s2", service, two).replace(
        "listener = { type = \"tcp\" }\n",
        &format!(
            "listener = {{ type = \"tcp\" }}\n\
             metadata = {{ netns = \"{0}\", \"netns.out\" = \"{0}\" }}\n",
            ns_b.name()
        ),
    );
    reloaded(&engine, &(in_a.clone() + &in_b));
    assert_eq!(greeted_from(&ns_b, service), "two");
    assert_eq!(greeted_from(&ns_a, service), "one");

    // The name now refers to a new namespace: the same configuration listens in it.
    ns_a.recreate();
    reloaded(&engine, &(in_a + &in_b));
    assert_eq!(greeted_from(&ns_a, service), "one");
    assert_eq!(greeted_from(&ns_b, service), "two");
}
