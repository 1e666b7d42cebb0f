//! Failures: a config that cannot start, and hops that refuse, are down, or answer early.
//! A refused connection is closed without data and the service goes on serving.

mod common;

use std::io::Read;

use common::configs::{self, doc_proxy, doc_service, doc_target};
use common::engine::Engine;
use common::netns::{Netns, Topology};
use common::proxy::{Reply, fake_proxy};
use common::traffic::{connect, echo_server, read_until_closed, round_trip};
use common::{STEP_TIMEOUT, netns_available, unique_name};

#[test]
fn missing_service_namespace_fails_start_naming_service_namespace_and_key() {
    let test = "missing_service_namespace_fails_start_naming_service_namespace_and_key";
    if !netns_available(test) {
        return;
    }
    let d = Netns::create("d");
    let missing = unique_name("missing");
    let config = configs::forward(
        "service-0",
        doc_service(),
        &missing,
        None,
        None,
        doc_target(),
    );

    assert_start_fails(&d, &config, &["service-0", &missing, "metadata.netns"]);
}

#[test]
fn missing_hop_namespace_fails_start_naming_hop_namespace_and_key() {
    if !netns_available("missing_hop_namespace_fails_start_naming_hop_namespace_and_key") {
        return;
    }
    let topology = Topology::doc();
    let missing = unique_name("missing");
    let ns1 = topology.ns1.name();
    let config = configs::doc_chain_service(ns1, &missing, None);

    assert_start_fails(&topology.d, &config, &["hop-0", &missing, "metadata.netns"]);
}

#[test]
fn unknown_chain_fails_start_naming_service_chain_and_key() {
    if !netns_available("unknown_chain_fails_start_naming_service_chain_and_key") {
        return;
    }
    let topology = Topology::doc();
    let ns1 = topology.ns1.name();
    let config = configs::forward(
        "service-0",
        doc_service(),
        ns1,
        None,
        Some("chain-x"),
        doc_target(),
    );

    assert_start_fails(
        &topology.d,
        &config,
        &["service-0", "chain-x", "handler.chain"],
    );
}

/// Starts the engine in `netns` and expects it to exit non-zero with every `expected` text
/// on stderr.
fn assert_start_fails(netns: &Netns, config: &str, expected: &[&str]) {
    let (status, stderr) = Engine::spawn(netns, config, &[]).wait_exit(STEP_TIMEOUT);

    assert!(!status.success(), "the engine started; stderr:\n{stderr}");
    for text in expected {
        assert!(stderr.contains(text), "stderr lacks {text:?}:\n{stderr}");
    }
}

#[test]
fn hop_answering_403_closes_client_without_data_then_next_connection_is_served() {
    let test = "hop_answering_403_closes_client_without_data_then_next_connection_is_served";
    if netns_available(test) {
        refused_then_served(Reply::Refuse {
            status: 403,
            reason: "Forbidden",
        });
    }
}

#[test]
fn hop_answering_407_closes_client_without_data_then_next_connection_is_served() {
    let test = "hop_answering_407_closes_client_without_data_then_next_connection_is_served";
    if netns_available(test) {
        let refusal = Reply::Refuse {
            status: 407,
            reason: "Proxy Authentication Required",
        };
        refused_then_served(refusal);
    }
}

/// The fake proxy in ns2 answers `refusal` to the first CONNECT and tunnels the second.
fn refused_then_served(refusal: Reply) {
    let topology = Topology::doc();
    let target = echo_server(topology.d.name(), doc_target(), 1);
    let proxy = fake_proxy(
        topology.ns2.name(),
        doc_proxy(),
        vec![refusal, Reply::tunnel()],
    );
    let _engine = Engine::start(&topology.d, &configs::doc_chain_via(&topology), &[]);

    let client = topology.ns1.spawn("client", || {
        let refused = read_until_closed(&mut connect(doc_service()));
        let served = round_trip(&mut connect(doc_service()), b"second connection");
        (refused, served)
    });
    let ((refused_data, ending), served) = client.join(STEP_TIMEOUT);
    let heads = proxy.join(STEP_TIMEOUT);
    let echoed = target.join(STEP_TIMEOUT);

    assert_eq!(
        refused_data, b"",
        "the refused client got bytes (ending {ending:?})"
    );
    assert_eq!(served, b"second connection");
    assert_eq!(heads.len(), 2);
    for head in &heads {
        assert!(
            head.starts_with("CONNECT 10.0.1.11:8000 HTTP/1.1\r\n"),
            "request head: {head:?}"
        );
    }
    assert_eq!(
        echoed.len(),
        1,
        "only the tunnelled connection reached the target"
    );
}

#[test]
fn hop_that_is_down_closes_client_without_data_then_serves_once_it_is_up() {
    let test = "hop_that_is_down_closes_client_without_data_then_serves_once_it_is_up";
    if !netns_available(test) {
        return;
    }
    let topology = Topology::doc();
    let target = echo_server(topology.d.name(), doc_target(), 1);
    let _engine = Engine::start(&topology.d, &configs::doc_chain_via(&topology), &[]);

    let client = topology.ns1.spawn("client while the hop is down", || {
        read_until_closed(&mut connect(doc_service()))
    });
    let (refused_data, ending) = client.join(STEP_TIMEOUT);
    let proxy = fake_proxy(topology.ns2.name(), doc_proxy(), vec![Reply::tunnel()]);
    let client = topology.ns1.spawn("client once the hop is up", || {
        round_trip(&mut connect(doc_service()), b"hop is up")
    });
    let served = client.join(STEP_TIMEOUT);
    proxy.join(STEP_TIMEOUT);
    target.join(STEP_TIMEOUT);

    assert_eq!(
        refused_data, b"",
        "the client got bytes while the hop was down ({ending:?})"
    );
    assert_eq!(served, b"hop is up");
}

#[test]
fn bytes_the_hop_sends_right_after_its_200_header_reach_the_client_first() {
    let test = "bytes_the_hop_sends_right_after_its_200_header_reach_the_client_first";
    if !netns_available(test) {
        return;
    }
    let topology = Topology::doc();
    let target = echo_server(topology.d.name(), doc_target(), 1);
    let early = Reply::Tunnel {
        early: b"HELLO".to_vec(),
    };
    let proxy = fake_proxy(topology.ns2.name(), doc_proxy(), vec![early]);
    let _engine = Engine::start(&topology.d, &configs::doc_chain_via(&topology), &[]);

    let client = topology.ns1.spawn("client", || {
        let mut stream = connect(doc_service());
        let mut first = [0; 5];
        stream
            .read_exact(&mut first)
            .expect("reading the bytes sent after the 200 header");
        (first, round_trip(&mut stream, b"after HELLO"))
    });
    let (first, echoed) = client.join(STEP_TIMEOUT);
    proxy.join(STEP_TIMEOUT);
    target.join(STEP_TIMEOUT);

    assert_eq!(&first, b"HELLO");
    assert_eq!(echoed, b"after HELLO");
}

#[test]
fn a_second_instance_on_the_same_address_fails_to_start_instead_of_sharing_it() {
    let test = "a_second_instance_on_the_same_address_fails_to_start_instead_of_sharing_it";
    if !netns_available(test) {
        return;
    }
    let netns = Netns::create("twice");
    let listen = configs::addr(std::net::Ipv4Addr::LOCALHOST, 18000);
    let target = configs::addr(std::net::Ipv4Addr::LOCALHOST, 19000);
    let config = configs::forward("service-0", listen, netns.name(), None, None, target);
    let _first = Engine::start(&netns, &config, &[]);

    assert_start_fails(
        &netns,
        &config,
        &[
            "service \"service-0\"",
            "127.0.0.1:18000",
            "already listens there",
        ],
    );
}
