//! The doc's "Using Chain" topology: a client in ns1 reaches a target in the default namespace
//! through an HTTP proxy node in ns2, with the engine serving both the service and the node.

mod common;

use std::time::Duration;

use common::configs::{self, Relay, doc_proxy, doc_service, doc_target};
use common::engine::Engine;
use common::netns::{NS2_VETH3, Topology};
use common::proxy::{Reply, fake_proxy};
use common::traffic::{MIB, Pattern, connect, echo_server, exchange, serve};
use common::{STEP_TIMEOUT, netns_available};

/// Generous bound for 64 MiB each way on a debug build sharing two cores.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn doc_chain_relays_64_mib_each_way_at_once_with_splice() {
    if netns_available("doc_chain_relays_64_mib_each_way_at_once_with_splice") {
        doc_chain_relays_both_ways_at_once(Relay::Splice, 64 * MIB);
    }
}

#[test]
fn doc_chain_relays_64_mib_each_way_at_once_buffered() {
    if netns_available("doc_chain_relays_64_mib_each_way_at_once_buffered") {
        doc_chain_relays_both_ways_at_once(Relay::Buffered, 64 * MIB);
    }
}

/// Client in ns1 and target in D each send `len` bytes and read until EOF, at the same time.
fn doc_chain_relays_both_ways_at_once(relay: Relay, len: u64) {
    let topology = Topology::doc();
    let (upload, download) = (Pattern::new(1), Pattern::new(2));
    let d = topology.d.name().to_owned();
    let target = serve(topology.d.name(), doc_target(), 1, move |stream, peer| {
        (peer, exchange(stream, &d, download, len))
    });
    let _engine = Engine::start(&topology.d, &configs::doc_chain(&topology, relay), &[]);

    let ns1 = topology.ns1.name().to_owned();
    let client = topology.ns1.spawn("client", move || {
        exchange(connect(doc_service()), &ns1, upload, len)
    });
    let client = client.join(TRANSFER_TIMEOUT);
    let (peer, target) = target.join(TRANSFER_TIMEOUT).pop().unwrap();

    assert_eq!(client.sent, upload.digest(len));
    assert_eq!(target.received, upload.digest(len), "upload arrived intact");
    assert_eq!(target.sent, download.digest(len));
    assert_eq!(
        client.received,
        download.digest(len),
        "download arrived intact"
    );
    assert_eq!(
        peer.ip(),
        NS2_VETH3,
        "the proxy node dialed the target from ns2"
    );
}

#[test]
fn doc_chain_accepts_namespace_paths_instead_of_names() {
    if !netns_available("doc_chain_accepts_namespace_paths_instead_of_names") {
        return;
    }
    let topology = Topology::doc();
    let target = echo_server(topology.d.name(), doc_target(), 1);
    let ns1 = topology.ns1.path().display().to_string();
    let ns2 = topology.ns2.path().display().to_string();
    let config = configs::doc_chain_service(&ns1, &ns2, None)
        + &configs::http_proxy("proxy-0", doc_proxy(), &ns2);
    let _engine = Engine::start(&topology.d, &config, &[]);

    let ns1 = topology.ns1.name().to_owned();
    let upload = Pattern::new(3);
    let client = topology.ns1.spawn("client", move || {
        exchange(connect(doc_service()), &ns1, upload, 256 * 1024)
    });
    let client = client.join(STEP_TIMEOUT);
    let (peer, echoed) = target.join(STEP_TIMEOUT).pop().unwrap();

    assert_eq!(client.received, upload.digest(256 * 1024));
    assert_eq!(echoed, 256 * 1024);
    assert_eq!(peer.ip(), NS2_VETH3);
}

#[test]
fn chain_node_with_auth_sends_basic_proxy_authorization() {
    if !netns_available("chain_node_with_auth_sends_basic_proxy_authorization") {
        return;
    }
    let topology = Topology::doc();
    let target = echo_server(topology.d.name(), doc_target(), 1);
    let proxy = fake_proxy(topology.ns2.name(), doc_proxy(), vec![Reply::tunnel()]);
    let ns1 = topology.ns1.name();
    let config = configs::doc_chain_service(ns1, topology.ns2.name(), Some(("u", "p")));
    let _engine = Engine::start(&topology.d, &config, &[]);

    let ns1 = ns1.to_owned();
    let upload = Pattern::new(4);
    let client = topology.ns1.spawn("client", move || {
        exchange(connect(doc_service()), &ns1, upload, 4096)
    });
    let client = client.join(STEP_TIMEOUT);
    let heads = proxy.join(STEP_TIMEOUT);
    target.join(STEP_TIMEOUT);

    assert_eq!(client.received, upload.digest(4096));
    let head = &heads[0];
    assert!(
        head.starts_with("CONNECT 10.0.1.11:8000 HTTP/1.1\r\n"),
        "request head: {head:?}"
    );
    // base64("u:p") is "dTpw".
    assert!(
        head.contains("\r\nProxy-Authorization: Basic dTpw\r\n"),
        "request head: {head:?}"
    );
}
