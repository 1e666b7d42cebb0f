//! The test fixture itself, without the engine: when these fail, the machine or the fixture
//! is at fault, not uringgost.

mod common;

use std::io::{Read, Write};

use common::configs::{addr, doc_proxy, doc_target};
use common::netns::{D_VETH0, D_VETH2, NS1_VETH1, NS2_VETH3, Netns, Topology};
use common::proxy::{Reply, Tinyproxy, fake_proxy};
use common::traffic::{MIB, Pattern, connect, echo_server, exchange, round_trip, serve};
use common::{STEP_TIMEOUT, netns_available, tinyproxy_binary};

#[test]
fn topology_links_d_to_ns1_and_ns2_but_not_ns1_to_ns2() {
    if !netns_available("topology_links_d_to_ns1_and_ns2_but_not_ns1_to_ns2") {
        return;
    }
    let topology = Topology::doc();
    let from_ns1 = echo_server(topology.d.name(), addr(D_VETH0, 9000), 1);
    let from_ns2 = echo_server(topology.d.name(), addr(D_VETH2, 9000), 1);

    let ns1 = topology.ns1.name().to_owned();
    let upload = Pattern::new(1);
    let client = topology.ns1.spawn("client ns1", move || {
        let exchanged = exchange(connect(addr(D_VETH0, 9000)), &ns1, upload, 8 * MIB);
        let unroutable = std::net::TcpStream::connect(addr(NS2_VETH3, 9000));
        (exchanged, unroutable.map_err(|error| error.raw_os_error()))
    });
    let (exchanged, unroutable) = client.join(STEP_TIMEOUT);
    let ns2 = topology.ns2.name().to_owned();
    let client = topology.ns2.spawn("client ns2", move || {
        exchange(connect(addr(D_VETH2, 9000)), &ns2, upload, 8 * MIB)
    });
    let exchanged_ns2 = client.join(STEP_TIMEOUT);

    assert_eq!(exchanged.received, upload.digest(8 * MIB));
    assert_eq!(exchanged_ns2.received, upload.digest(8 * MIB));
    assert_eq!(from_ns1.join(STEP_TIMEOUT)[0].0.ip(), NS1_VETH1);
    assert_eq!(from_ns2.join(STEP_TIMEOUT)[0].0.ip(), NS2_VETH3);
    assert_eq!(unroutable.err(), Some(Some(libc::ENETUNREACH)));
}

#[test]
fn namespace_is_deleted_on_drop() {
    if !netns_available("namespace_is_deleted_on_drop") {
        return;
    }
    let netns = Netns::create("gone");
    let path = netns.path();
    assert!(path.exists());
    drop(netns);
    assert!(!path.exists(), "{} still exists", path.display());
}

#[test]
fn fake_proxy_tunnels_and_sends_early_bytes_in_its_200_answer() {
    if !netns_available("fake_proxy_tunnels_and_sends_early_bytes_in_its_200_answer") {
        return;
    }
    let topology = Topology::doc();
    let target = echo_server(topology.d.name(), doc_target(), 1);
    let early = Reply::Tunnel {
        early: b"HELLO".to_vec(),
    };
    let proxy = fake_proxy(topology.ns2.name(), doc_proxy(), vec![early]);

    // From D both subnets are reachable, so D plays the engine's part here.
    let client = topology.d.spawn("client", || {
        let mut stream = connect(doc_proxy());
        stream
            .write_all(b"CONNECT 10.0.1.11:8000 HTTP/1.1\r\nHost: 10.0.1.11:8000\r\n\r\n")
            .unwrap();
        let mut answer = vec![0; b"HTTP/1.1 200 Connection established\r\n\r\nHELLO".len()];
        stream.read_exact(&mut answer).unwrap();
        (
            String::from_utf8(answer).unwrap(),
            round_trip(&mut stream, b"ping"),
        )
    });
    let (answer, echoed) = client.join(STEP_TIMEOUT);
    proxy.join(STEP_TIMEOUT);
    target.join(STEP_TIMEOUT);

    assert_eq!(answer, "HTTP/1.1 200 Connection established\r\n\r\nHELLO");
    assert_eq!(echoed, b"ping");
}

#[test]
fn tinyproxy_tunnels_connect_from_d_to_d() {
    if !netns_available("tinyproxy_tunnels_connect_from_d_to_d") {
        return;
    }
    let Some(binary) = tinyproxy_binary("tinyproxy_tunnels_connect_from_d_to_d") else {
        return;
    };
    let topology = Topology::doc();
    let target = serve(topology.d.name(), doc_target(), 1, |mut stream, peer| {
        stream.write_all(b"from target").unwrap();
        peer
    });
    let _tinyproxy = Tinyproxy::start(&binary, &topology.ns2, doc_proxy(), 8000);

    let client = topology.d.spawn("client", || {
        let mut stream = connect(doc_proxy());
        stream
            .write_all(b"CONNECT 10.0.1.11:8000 HTTP/1.1\r\nHost: 10.0.1.11:8000\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        String::from_utf8_lossy(&answer).into_owned()
    });
    let answer = client.join(STEP_TIMEOUT);
    let peer = target.join(STEP_TIMEOUT).pop().unwrap();

    assert!(
        answer.starts_with("HTTP/1.0 200 Connection established\r\n"),
        "{answer:?}"
    );
    assert!(answer.ends_with("\r\n\r\nfrom target"), "{answer:?}");
    assert_eq!(peer.ip(), NS2_VETH3);
}
