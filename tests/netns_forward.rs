//! The doc's two simpler forms: listening in ns1 and forwarding from the default namespace,
//! and listening in ns1 while forwarding from ns2 (`netns.out`).

mod common;

use common::configs::{self, addr, doc_service};
use common::engine::Engine;
use common::netns::{D_VETH0, D_VETH2, NS1_VETH1, NS2_VETH3, Topology};
use common::traffic::{Pattern, connect, echo_server, exchange};
use common::{STEP_TIMEOUT, netns_available};

const LEN: u64 = 1024 * 1024;

#[test]
fn service_in_ns1_forwards_to_targets_on_both_links_of_the_default_namespace() {
    let test = "service_in_ns1_forwards_to_targets_on_both_links_of_the_default_namespace";
    if !netns_available(test) {
        return;
    }
    let topology = Topology::doc();
    let (target_veth0, target_veth2) = (addr(D_VETH0, 9000), addr(D_VETH2, 9001));
    let on_veth0 = echo_server(topology.d.name(), target_veth0, 1);
    let on_veth2 = echo_server(topology.d.name(), target_veth2, 1);
    let ns1 = topology.ns1.name();
    let second_service = addr(NS1_VETH1, 8001);
    let config = configs::forward("service-0", doc_service(), ns1, None, None, target_veth0)
        + &configs::forward("service-1", second_service, ns1, None, None, target_veth2);
    let _engine = Engine::start(&topology.d, &config, &[]);

    let ns1 = ns1.to_owned();
    let (first, second) = (Pattern::new(1), Pattern::new(2));
    let client = topology.ns1.spawn("client", move || {
        let through_veth0 = exchange(connect(doc_service()), &ns1, first, LEN);
        let through_veth2 = exchange(connect(second_service), &ns1, second, LEN);
        (through_veth0, through_veth2)
    });
    let (through_veth0, through_veth2) = client.join(STEP_TIMEOUT);
    let (peer_veth0, echoed_veth0) = on_veth0.join(STEP_TIMEOUT)[0];
    let (peer_veth2, echoed_veth2) = on_veth2.join(STEP_TIMEOUT)[0];

    assert_eq!(through_veth0.received, first.digest(LEN));
    assert_eq!(through_veth2.received, second.digest(LEN));
    assert_eq!((echoed_veth0, echoed_veth2), (LEN, LEN));
    // Dialed from D: the source is D's own address on each link.
    assert_eq!(peer_veth0.ip(), D_VETH0);
    assert_eq!(peer_veth2.ip(), D_VETH2);
}

#[test]
fn netns_out_maps_port_8000_in_ns1_to_port_8000_in_ns2() {
    if !netns_available("netns_out_maps_port_8000_in_ns1_to_port_8000_in_ns2") {
        return;
    }
    let topology = Topology::doc();
    let target = addr(NS2_VETH3, 8000);
    let in_ns2 = echo_server(topology.ns2.name(), target, 1);
    let (ns1, ns2) = (topology.ns1.name(), topology.ns2.name());
    let config = configs::forward("service-0", doc_service(), ns1, Some(ns2), None, target);
    let _engine = Engine::start(&topology.d, &config, &[]);

    let ns1 = ns1.to_owned();
    let upload = Pattern::new(3);
    let client = topology.ns1.spawn("client", move || {
        exchange(connect(doc_service()), &ns1, upload, LEN)
    });
    let exchanged = client.join(STEP_TIMEOUT);
    let (peer, echoed) = in_ns2.join(STEP_TIMEOUT)[0];

    assert_eq!(exchanged.received, upload.digest(LEN));
    assert_eq!(echoed, LEN);
    // Dialed from inside ns2, the local address is the source; from D it would be 10.0.1.11.
    assert_eq!(peer.ip(), NS2_VETH3);
}

#[test]
fn dials_from_netns_out_keep_working_after_that_namespace_is_deleted() {
    let test = "dials_from_netns_out_keep_working_after_that_namespace_is_deleted";
    if !netns_available(test) {
        return;
    }
    // More connections than one pool batch holds, so sockets are created in the deleted
    // namespace after it is gone from /run/netns.
    const AFTER: usize = 40;
    let topology = Topology::doc();
    let target = addr(NS2_VETH3, 8000);
    let in_ns2 = echo_server(topology.ns2.name(), target, 1 + AFTER);
    let (ns1, ns2) = (topology.ns1.name(), topology.ns2.name());
    let config = configs::forward("service-0", doc_service(), ns1, Some(ns2), None, target);
    let _engine = Engine::start(&topology.d, &config, &[]);
    let ns1 = ns1.to_owned();
    let pattern = Pattern::new(4);
    let before = {
        let ns1 = ns1.clone();
        topology.ns1.spawn("client", move || {
            exchange(connect(doc_service()), &ns1, pattern, LEN)
        })
    };
    assert_eq!(before.join(STEP_TIMEOUT).received, pattern.digest(LEN));

    let deleted = std::process::Command::new("ip")
        .args(["netns", "del", ns2])
        .status()
        .unwrap();
    assert!(deleted.success());
    assert!(!topology.ns2.path().exists());

    let after = topology.ns1.spawn("client", move || {
        (0..AFTER)
            .map(|_| exchange(connect(doc_service()), &ns1, pattern, 4096).received)
            .collect::<Vec<_>>()
    });
    let received = after.join(STEP_TIMEOUT);
    assert_eq!(received, vec![pattern.digest(4096); AFTER]);
    assert_eq!(in_ns2.join(STEP_TIMEOUT).len(), 1 + AFTER);
}
