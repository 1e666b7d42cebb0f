//! Handler `udp`: a session per client address, replies to that client only, datagrams of
//! every size intact or dropped whole, sessions closed after `ttl`, across namespaces.
//!
//! The loopback tests run the engine in the test's own namespace and need no root; the
//! namespace test follows the fixture's skip policy.

mod common;

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::configs::addr;
use common::engine::{Engine, check};
use common::netns::{D_VETH2, NS1_VETH1, NS2_VETH3, Netns, Topology, enter};
use common::process::ChildProcess;
use common::traffic::{IO_TIMEOUT, Pattern};
use common::{Deadline, STEP_TIMEOUT, netns_available};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LARGEST_IPV4_DATAGRAM: usize = 65_507;

/// A `udp` service on `listen` forwarding to `targets`, with extra `metadata` entries.
fn udp_service(listen: SocketAddr, targets: &[SocketAddr], metadata: &str) -> String {
    let mut config = format!(
        "[[services]]\n\
         name = \"udp-0\"\n\
         addr = \"{listen}\"\n\
         handler = {{ type = \"udp\" }}\n\
         listener = {{ type = \"udp\" }}\n\
         metadata = {{ {metadata} }}\n"
    );
    for (index, target) in targets.iter().enumerate() {
        config += &format!(
            "[[services.forwarder.nodes]]\nname = \"target-{index}\"\naddr = \"{target}\"\n"
        );
    }
    config
}

/// An address on `ip` that nothing listens on now, for the engine to bind.
fn free_address(ip: IpAddr) -> SocketAddr {
    UdpSocket::bind(SocketAddr::new(ip, 0))
        .and_then(|socket| socket.local_addr())
        .expect("finding a free UDP port")
}

/// A client socket on `ip`, its reads bounded by [`IO_TIMEOUT`].
fn client(ip: IpAddr) -> UdpSocket {
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).expect("binding a client socket");
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    socket
}

/// Receives one datagram of up to 64 KiB.
fn receive(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0; 65_536];
    let len = socket.recv(&mut buf).expect("receiving a datagram");
    buf.truncate(len);
    buf
}

/// Sends `payload` to `to` and returns the one datagram that comes back.
fn exchange(socket: &UdpSocket, to: SocketAddr, payload: &[u8]) -> Vec<u8> {
    socket.send_to(payload, to).expect("sending a datagram");
    receive(socket)
}

/// True when no datagram is waiting on `socket`.
fn nothing_more(socket: &UdpSocket) -> bool {
    socket.set_nonblocking(true).unwrap();
    let mut buf = [0; 16];
    let empty = matches!(socket.recv(&mut buf), Err(e) if e.kind() == ErrorKind::WouldBlock);
    socket.set_nonblocking(false).unwrap();
    empty
}

/// A UDP server on a thread, optionally inside a namespace, serving a fixed number of
/// datagrams and reporting where each came from.
struct Server {
    addr: SocketAddr,
    done: mpsc::Receiver<Vec<SocketAddr>>,
}

impl Server {
    /// Echoes `count` datagrams back to their senders.
    fn echo(bind: SocketAddr, netns: Option<&str>, count: usize) -> Server {
        Server::start(bind, netns, move |socket| {
            let mut buf = vec![0; 65_536];
            (0..count)
                .map(|_| {
                    let (len, from) = socket.recv_from(&mut buf).expect("echo server receive");
                    socket.send_to(&buf[..len], from).expect("echo server send");
                    from
                })
                .collect()
        })
    }

    /// Answers the first datagram, then sends `pushes` more to its sender, one every
    /// `interval`, unasked.
    fn pushing(bind: SocketAddr, pushes: usize, interval: Duration) -> Server {
        Server::start(bind, None, move |socket| {
            let mut buf = vec![0; 65_536];
            let (len, from) = socket.recv_from(&mut buf).expect("push server receive");
            socket
                .send_to(&buf[..len], from)
                .expect("push server answer");
            for push in 1..=pushes {
                thread::sleep(interval);
                let text = format!("push {push}");
                socket
                    .send_to(text.as_bytes(), from)
                    .expect("push server push");
            }
            vec![from]
        })
    }

    fn start(
        bind: SocketAddr,
        netns: Option<&str>,
        serve: impl FnOnce(&UdpSocket) -> Vec<SocketAddr> + Send + 'static,
    ) -> Server {
        let (bound, bound_at) = mpsc::channel();
        let (finished, done) = mpsc::channel();
        let netns = netns.map(str::to_owned);
        thread::Builder::new()
            .name("udp server".to_owned())
            .spawn(move || {
                if let Some(netns) = netns {
                    enter(&netns);
                }
                let socket = UdpSocket::bind(bind).expect("binding the UDP server");
                socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                bound.send(socket.local_addr().unwrap()).unwrap();
                // The test may have failed and stopped listening; nothing is owed to it then.
                let _ = finished.send(serve(&socket));
            })
            .expect("spawning the UDP server");
        let addr = bound_at
            .recv_timeout(STEP_TIMEOUT)
            .expect("the UDP server did not bind");
        Server { addr, done }
    }

    /// The senders of the datagrams it served, once it has served them all.
    fn join(self) -> Vec<SocketAddr> {
        self.done
            .recv_timeout(STEP_TIMEOUT)
            .expect("the UDP server did not finish")
    }
}

/// The number of descriptors `pid` holds.
fn descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("reading the engine's descriptors")
        .count()
}

fn wait_for_descriptors(engine: &ChildProcess, pid: u32, expected: usize) {
    let deadline = Deadline::after(STEP_TIMEOUT);
    let mut now = descriptors(pid);
    while now != expected {
        if deadline.remaining().is_none() {
            panic!(
                "the engine holds {now} descriptors, {expected} before the sessions\n{}",
                engine.dump()
            );
        }
        thread::sleep(Duration::from_millis(100));
        now = descriptors(pid);
    }
}

#[test]
fn two_interleaving_clients_each_receive_only_their_own_echoes_in_order() {
    let echo = Server::echo(addr(Ipv4Addr::LOCALHOST, 0), None, 20);
    let service = free_address(LOCALHOST);
    let engine = Engine::start_here(&udp_service(service, &[echo.addr], ""), &["--threads", "2"]);

    let (a, b) = (client(LOCALHOST), client(LOCALHOST));
    let mut received = (Vec::new(), Vec::new());
    for n in 0..10 {
        a.send_to(format!("a{n}").as_bytes(), service).unwrap();
        b.send_to(format!("b{n}").as_bytes(), service).unwrap();
        received.0.push(String::from_utf8(receive(&a)).unwrap());
        received.1.push(String::from_utf8(receive(&b)).unwrap());
    }

    let expected = |client: &str| (0..10).map(|n| format!("{client}{n}")).collect::<Vec<_>>();
    assert_eq!(received.0, expected("a"));
    assert_eq!(received.1, expected("b"));
    assert!(nothing_more(&a) && nothing_more(&b));
    let senders = echo.join();
    let mut distinct = senders.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        2,
        "one upstream socket per client: {senders:?}"
    );
    drop(engine);
}

#[test]
fn a_server_pushing_every_two_seconds_keeps_reaching_its_client_while_the_session_lives() {
    let server = Server::pushing(addr(Ipv4Addr::LOCALHOST, 0), 3, Duration::from_secs(2));
    let service = free_address(LOCALHOST);
    let config = udp_service(service, &[server.addr], "ttl = \"5s\", keepAlive = false");
    let _engine = Engine::start_here(&config, &[]);

    let socket = client(LOCALHOST);
    let mut received = vec![exchange(&socket, service, b"hello")];
    received.extend((0..3).map(|_| receive(&socket)));

    let received: Vec<String> = received
        .into_iter()
        .map(|datagram| String::from_utf8(datagram).unwrap())
        .collect();
    assert_eq!(received, ["hello", "push 1", "push 2", "push 3"]);
    server.join();
}

#[test]
fn datagrams_of_1_1472_4000_32828_and_65507_bytes_arrive_byte_for_byte_both_ways() {
    let sizes = [1, 1472, 4000, 32_828, LARGEST_IPV4_DATAGRAM];
    let echo = Server::echo(addr(Ipv4Addr::LOCALHOST, 0), None, sizes.len());
    let service = free_address(LOCALHOST);
    let _engine = Engine::start_here(&udp_service(service, &[echo.addr], ""), &[]);

    let socket = client(LOCALHOST);
    for (seed, size) in sizes.into_iter().enumerate() {
        let payload = Pattern::new(seed as u64).bytes(size as u64);
        let answer = exchange(&socket, service, &payload);
        assert_eq!(answer.len(), size);
        assert!(
            answer == payload,
            "the {size}-byte datagram came back altered"
        );
    }
    echo.join();
}

#[test]
fn a_datagram_larger_than_buffer_size_is_dropped_whole_and_counted() {
    let echo = Server::echo(addr(Ipv4Addr::LOCALHOST, 0), None, 2);
    let service = free_address(LOCALHOST);
    let config = udp_service(service, &[echo.addr], "bufferSize = 2000, ttl = \"1s\"");
    let engine = Engine::start_here(&config, &["--log-level", "debug"]);

    let socket = client(LOCALHOST);
    assert_eq!(exchange(&socket, service, &[6; 10]), [6; 10]);
    socket.send_to(&[7; 4000], service).unwrap();
    let answer = exchange(&socket, service, &[8; 2000]);

    assert_eq!(answer, [8; 2000]);
    let dropped = engine
        .process()
        .wait_for_line("larger than bufferSize", STEP_TIMEOUT);
    assert!(dropped.contains("size=4000"), "{dropped}");
    let closed = engine
        .process()
        .wait_for_line("udp session closed", STEP_TIMEOUT);
    assert!(
        closed.contains("to_target=2 from_target=2 dropped=1"),
        "{closed}"
    );
    assert_eq!(echo.join().len(), 2);
}

#[test]
fn sessions_idle_for_ttl_close_and_descriptors_return_to_baseline_after_2000_sessions() {
    const SESSIONS: usize = 2000;
    let echo = Server::echo(addr(Ipv4Addr::LOCALHOST, 0), None, SESSIONS);
    let service = free_address(LOCALHOST);
    let config = udp_service(service, &[echo.addr], "ttl = \"1s\"");
    let engine = Engine::start_here(&config, &["--threads", "2", "--log-level", "debug"]);
    let pid = engine.process().pid();
    let baseline = descriptors(pid);

    for n in 0..SESSIONS {
        // A source address of its own for each client: a closed client's port may be reused
        // by the next one, which would then share its session.
        let source = IpAddr::V4(Ipv4Addr::new(127, 1, (n / 250) as u8, (n % 250 + 1) as u8));
        let payload = format!("session {n}");
        let answer = exchange(&client(source), service, payload.as_bytes());
        assert_eq!(answer, payload.as_bytes());
    }

    let closed = "reason=\"idle for ttl\"";
    engine
        .process()
        .wait_for_count(closed, SESSIONS, STEP_TIMEOUT);
    wait_for_descriptors(engine.process(), pid, baseline);
    assert_eq!(engine.process().count_lines("udp session opened"), SESSIONS);
    echo.join();
}

#[test]
fn the_session_idle_the_longest_is_evicted_when_max_sessions_is_reached() {
    let echo = Server::echo(addr(Ipv4Addr::LOCALHOST, 0), None, 4);
    let service = free_address(LOCALHOST);
    let config = udp_service(service, &[echo.addr], "maxSessions = 2");
    let engine = Engine::start_here(&config, &["--threads", "1", "--log-level", "debug"]);

    let clients = [client(LOCALHOST), client(LOCALHOST), client(LOCALHOST)];
    for socket in &clients {
        assert_eq!(exchange(socket, service, b"ping"), b"ping");
    }
    // The first client's session was evicted; it gets a new one and still its answers.
    assert_eq!(exchange(&clients[0], service, b"again"), b"again");

    let evicted = engine
        .process()
        .wait_for_line("evicted: maxSessions reached", STEP_TIMEOUT);
    let first = clients[0].local_addr().unwrap();
    assert!(evicted.contains(&format!("peer={first}")), "{evicted}");
    // The log is read by another thread: wait for the line before counting exactly.
    engine
        .process()
        .wait_for_count("udp session opened", 4, STEP_TIMEOUT);
    assert_eq!(engine.process().count_lines("udp session opened"), 4);
    echo.join();
}

#[test]
fn ipv6_listen_and_target_on_loopback_work() {
    let ipv6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let echo = Server::echo(SocketAddr::new(ipv6, 0), None, 2);
    let service = free_address(ipv6);
    let _engine = Engine::start_here(&udp_service(service, &[echo.addr], ""), &[]);

    let socket = client(ipv6);
    assert_eq!(exchange(&socket, service, b"over ::1"), b"over ::1");
    let large = Pattern::new(6).bytes(65_000);
    assert!(exchange(&socket, service, &large) == large);
    echo.join();
}

#[test]
fn an_ipv6_address_without_brackets_is_a_config_error_that_says_so() {
    let config = udp_service(
        "127.0.0.1:10053".parse().unwrap(),
        &["127.0.0.1:53".parse().unwrap()],
        "",
    )
    .replace("127.0.0.1:10053", "::1:10053");

    let checked = check(&config);

    assert!(!checked.status.success());
    assert!(
        checked.stderr.contains(
            "service \"udp-0\": addr: \"::1:10053\" looks like an IPv6 address without \
             brackets; write it as \"[::1]:10053\""
        ),
        "{}",
        checked.stderr
    );
}

#[test]
fn a_udp_service_with_a_chain_is_a_config_error_that_says_so() {
    let config = udp_service(
        "127.0.0.1:10053".parse().unwrap(),
        &["127.0.0.1:53".parse().unwrap()],
        "",
    )
    .replace(
        "{ type = \"udp\" }\nlistener",
        "{ type = \"udp\", chain = \"c\" }\nlistener",
    );

    let checked = check(&config);

    assert!(!checked.status.success());
    assert!(
        checked.stderr.contains(
            "service \"udp-0\": handler.chain: handler udp cannot go through a chain (UDP over \
             proxies is not supported)"
        ),
        "{}",
        checked.stderr
    );
}

#[test]
fn check_prints_udp_services_with_their_session_settings() {
    let config = r#"
        [[services]]
        name = "dns"
        addr = "127.0.0.1:10053"
        handler = { type = "udp" }
        listener = { type = "udp" }
        metadata = { ttl = "30s", maxSessions = 100 }
        [services.forwarder]
        selector = { strategy = "hash" }
        [[services.forwarder.nodes]]
        name = "dns-4"
        addr = "127.0.0.1:53"
        [[services.forwarder.nodes]]
        name = "dns-6"
        addr = "[::1]:53"
    "#;

    let checked = check(config);

    assert!(checked.status.success(), "{}", checked.stderr);
    let expected = "service dns: handler udp, listens on 127.0.0.1:10053 in the process's netns\n  \
         sessions: ttl 30s, keepAlive false (kept until ttl either way), bufferSize 65535, \
         maxSessions 100 per executor\n  \
         selector: strategy hash, maxFails 1, failTimeout 10s\n  \
         target dns-4: 127.0.0.1:53 (127.0.0.1:53)\n  \
         target dns-6: [::1]:53 ([::1]:53)\n  \
         sends from the process's netns\n";
    assert!(checked.stdout.starts_with(expected), "{}", checked.stdout);
}

#[test]
fn a_service_listening_in_ns1_sends_from_ns2_to_a_target_across_the_link() {
    let test = "a_service_listening_in_ns1_sends_from_ns2_to_a_target_across_the_link";
    if !netns_available(test) {
        return;
    }
    let topology = Topology::doc();
    let sizes = [1, 1472, LARGEST_IPV4_DATAGRAM];
    let target = addr(D_VETH2, 9000);
    let echo = Server::echo(target, Some(topology.d.name()), 2 * sizes.len());
    let service = addr(NS1_VETH1, 8000);
    let metadata = format!(
        "netns = \"{}\", \"netns.out\" = \"{}\"",
        topology.ns1.name(),
        topology.ns2.name()
    );
    let _engine = Engine::start(
        &topology.d,
        &udp_service(service, &[target], &metadata),
        &["--threads", "2"],
    );

    let clients = topology.ns1.spawn("udp clients", move || {
        let sockets = [client(IpAddr::V4(NS1_VETH1)), client(IpAddr::V4(NS1_VETH1))];
        let mut intact = Vec::new();
        for size in sizes {
            for (seed, socket) in sockets.iter().enumerate() {
                let payload = Pattern::new(seed as u64).bytes(size as u64);
                intact.push(exchange(socket, service, &payload) == payload);
            }
        }
        intact
    });

    assert_eq!(clients.join(STEP_TIMEOUT), [true; 6]);
    let senders = echo.join();
    assert!(
        senders.iter().all(|sender| sender.ip() == NS2_VETH3),
        "every datagram must leave from ns2's address {NS2_VETH3}: {senders:?}"
    );
}

#[test]
fn on_a_wildcard_address_replies_leave_from_the_address_the_client_sent_to() {
    let test = "on_a_wildcard_address_replies_leave_from_the_address_the_client_sent_to";
    if !netns_available(test) {
        return;
    }
    // A namespace of its own, with a second IPv6 address beside ::1 on its loopback
    // (127.0.0.0/8 already gives IPv4 more than one).
    let netns = Netns::create("udp-wild");
    netns.ip(&["addr", "add", "fd00:75::2/128", "dev", "lo"]);
    let second_v6 = IpAddr::V6("fd00:75::2".parse().unwrap());
    let echo_v4 = Server::echo(addr(Ipv4Addr::LOCALHOST, 0), Some(netns.name()), 2);
    let echo_v6 = Server::echo(
        SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 0),
        Some(netns.name()),
        2,
    );
    let config = udp_service(addr(Ipv4Addr::UNSPECIFIED, 7000), &[echo_v4.addr], "")
        + &udp_service(
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 7000),
            &[echo_v6.addr],
            "",
        )
        .replace("udp-0", "udp-1");
    let _engine = Engine::start(&netns, &config, &[]);

    // Each client is connected to the address it sends to, so the kernel hands it only
    // replies from exactly that address and port; the route back to the client would pick
    // 127.0.0.1 or ::1 as the source.
    let answers = netns.spawn("udp clients", move || {
        let to = [
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), 7000),
            SocketAddr::new(second_v6, 7000),
        ];
        to.map(|to| {
            let local = if to.is_ipv6() {
                IpAddr::V6(Ipv6Addr::LOCALHOST)
            } else {
                LOCALHOST
            };
            let socket = client(local);
            socket
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            socket.connect(to).expect("connecting the client socket");
            (0..2)
                .map(|n| {
                    let payload = format!("to {to}, {n}");
                    socket.send(payload.as_bytes()).expect("sending");
                    let mut buf = [0; 128];
                    match socket.recv(&mut buf) {
                        Ok(len) => buf[..len] == *payload.as_bytes(),
                        Err(_) => false,
                    }
                })
                .collect::<Vec<_>>()
        })
    });
    let answers = answers.join(STEP_TIMEOUT);
    assert_eq!(
        answers,
        [vec![true, true], vec![true, true]],
        "replies must come from 127.0.0.2:7000 and [fd00:75::2]:7000"
    );
    echo_v4.join();
    echo_v6.join();
}
