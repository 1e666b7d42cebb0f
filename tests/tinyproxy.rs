//! The doc's chain with tinyproxy, an HTTP proxy the engine did not write, as the hop in ns2.

mod common;

use std::time::Duration;

use common::configs::{self, addr, doc_proxy, doc_service, doc_target};
use common::engine::Engine;
use common::netns::{D_VETH2, NS1_VETH1, NS2_VETH3, Topology};
use common::proxy::Tinyproxy;
use common::traffic::{
    MIB, Pattern, connect, echo_server, exchange_open, read_until_closed, round_trip, serve,
};
use common::{STEP_TIMEOUT, netns_available, tinyproxy_binary};

const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn doc_chain_through_tinyproxy_relays_64_mib_each_way_at_once() {
    let test = "doc_chain_through_tinyproxy_relays_64_mib_each_way_at_once";
    if !netns_available(test) {
        return;
    }
    let Some(binary) = tinyproxy_binary(test) else {
        return;
    };
    let topology = Topology::doc();
    let (upload, download, len) = (Pattern::new(1), Pattern::new(2), 64 * MIB);
    let d = topology.d.name().to_owned();
    // tinyproxy closes both sides at the first FIN, so nobody closes before both are done.
    let target = serve(topology.d.name(), doc_target(), 1, move |stream, peer| {
        (peer, exchange_open(&stream, &d, download, len), stream)
    });
    let _tinyproxy = Tinyproxy::start(&binary, &topology.ns2, doc_proxy(), doc_target().port());
    let _engine = Engine::start(&topology.d, &configs::doc_chain_via(&topology), &[]);

    let ns1 = topology.ns1.name().to_owned();
    let client = topology.ns1.spawn("client", move || {
        let stream = connect(doc_service());
        (exchange_open(&stream, &ns1, upload, len), stream)
    });
    let (client, _client_stream) = client.join(TRANSFER_TIMEOUT);
    let (peer, target, _target_stream) = target.join(TRANSFER_TIMEOUT).pop().unwrap();

    assert_eq!(target.received, upload.digest(len), "upload arrived intact");
    assert_eq!(
        client.received,
        download.digest(len),
        "download arrived intact"
    );
    assert_eq!(peer.ip(), NS2_VETH3, "tinyproxy dialed the target from ns2");
}

#[test]
fn tinyproxy_refusing_connect_port_closes_client_without_data_and_other_service_works() {
    let test = "tinyproxy_refusing_connect_port_closes_client_without_data_and_other_service_works";
    if !netns_available(test) {
        return;
    }
    let Some(binary) = tinyproxy_binary(test) else {
        return;
    };
    let topology = Topology::doc();
    let target = echo_server(topology.d.name(), doc_target(), 1);
    // tinyproxy allows CONNECT to port 8000 only, so service-1's target on 9000 is refused.
    let _tinyproxy = Tinyproxy::start(&binary, &topology.ns2, doc_proxy(), doc_target().port());
    let (ns1, refused_service) = (topology.ns1.name(), addr(NS1_VETH1, 8001));
    let refused_target = addr(D_VETH2, 9000);
    let config = configs::doc_chain_via(&topology)
        + &configs::forward(
            "service-1",
            refused_service,
            ns1,
            None,
            Some("chain-0"),
            refused_target,
        );
    let _engine = Engine::start(&topology.d, &config, &[]);

    let client = topology.ns1.spawn("client", move || {
        let refused = read_until_closed(&mut connect(refused_service));
        let served = round_trip(&mut connect(doc_service()), b"port 8000 is allowed");
        (refused, served)
    });
    let ((refused_data, ending), served) = client.join(STEP_TIMEOUT);
    target.join(STEP_TIMEOUT);

    assert_eq!(
        refused_data, b"",
        "the refused client got bytes (ending {ending:?})"
    );
    assert_eq!(served, b"port 8000 is allowed");
}
