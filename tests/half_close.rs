//! Half-close: a FIN from one side becomes shutdown(SHUT_WR) on the other, and the other
//! direction keeps flowing until it ends by itself.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;

use common::configs::{self, Relay, doc_service, doc_target};
use common::engine::Engine;
use common::netns::Topology;
use common::traffic::{MIB, Pattern, connect, receive_to_end, send_pattern, serve};
use common::{STEP_TIMEOUT, netns_available};

const REQUEST: &[u8] = b"GET /one-mebibyte after my FIN\n";
const GREETING: &[u8] = b"greeting, then my FIN\n";

#[test]
fn client_fin_through_doc_chain_with_splice_still_delivers_the_1_mib_answer() {
    let test = "client_fin_through_doc_chain_with_splice_still_delivers_the_1_mib_answer";
    if netns_available(test) {
        client_fin_then_answer(Route::DocChain, Relay::Splice);
    }
}

#[test]
fn client_fin_through_doc_chain_buffered_still_delivers_the_1_mib_answer() {
    let test = "client_fin_through_doc_chain_buffered_still_delivers_the_1_mib_answer";
    if netns_available(test) {
        client_fin_then_answer(Route::DocChain, Relay::Buffered);
    }
}

#[test]
fn client_fin_direct_with_splice_still_delivers_the_1_mib_answer() {
    if netns_available("client_fin_direct_with_splice_still_delivers_the_1_mib_answer") {
        client_fin_then_answer(Route::Direct, Relay::Splice);
    }
}

#[test]
fn client_fin_direct_buffered_still_delivers_the_1_mib_answer() {
    if netns_available("client_fin_direct_buffered_still_delivers_the_1_mib_answer") {
        client_fin_then_answer(Route::Direct, Relay::Buffered);
    }
}

#[test]
fn target_fin_through_doc_chain_still_accepts_a_1_mib_upload() {
    if netns_available("target_fin_through_doc_chain_still_accepts_a_1_mib_upload") {
        target_fin_then_upload(Route::DocChain, Relay::Splice);
    }
}

#[test]
fn target_fin_direct_buffered_still_accepts_a_1_mib_upload() {
    if netns_available("target_fin_direct_buffered_still_accepts_a_1_mib_upload") {
        target_fin_then_upload(Route::Direct, Relay::Buffered);
    }
}

/// The path between the client in ns1 and the target at 10.0.1.11:8000 in D.
enum Route {
    /// Through the engine's own HTTP proxy node in ns2, as in the doc.
    DocChain,
    /// service-0 dials the target from D.
    Direct,
}

fn start(topology: &Topology, route: Route, relay: Relay) -> Engine {
    let config = match route {
        Route::DocChain => configs::doc_chain(topology, relay),
        Route::Direct => configs::direct(topology, relay, doc_target()),
    };
    Engine::start(&topology.d, &config, &[])
}

/// The client sends a request and shuts down its write side; the target reads to EOF and
/// only then answers 1 MiB, which the client reads to EOF.
fn client_fin_then_answer(route: Route, relay: Relay) {
    let topology = Topology::doc();
    let answer = Pattern::new(7);
    let target = serve(topology.d.name(), doc_target(), 1, move |mut stream, _| {
        let mut request = Vec::new();
        stream
            .read_to_end(&mut request)
            .expect("target reading the request to EOF");
        let sent = send_pattern(&mut stream, answer, MIB).expect("target answering");
        (request, sent)
    });
    let _engine = start(&topology, route, relay);

    let client = topology.ns1.spawn("client", || {
        let mut stream = connect(doc_service());
        stream
            .write_all(REQUEST)
            .expect("client writing the request");
        stream
            .shutdown(Shutdown::Write)
            .expect("client shutting down its write side");
        receive_to_end(&mut stream).expect("client reading the answer to EOF")
    });
    let received = client.join(STEP_TIMEOUT);
    let (request, sent) = target.join(STEP_TIMEOUT).pop().unwrap();

    assert_eq!(request, REQUEST);
    assert_eq!(sent, answer.digest(MIB));
    assert_eq!(received, answer.digest(MIB));
}

/// The target greets and shuts down its write side; the client reads the greeting to EOF and
/// only then uploads 1 MiB, which the target reads to EOF.
fn target_fin_then_upload(route: Route, relay: Relay) {
    let topology = Topology::doc();
    let target = serve(topology.d.name(), doc_target(), 1, |mut stream, _| {
        stream.write_all(GREETING).expect("target greeting");
        stream
            .shutdown(Shutdown::Write)
            .expect("target shutting down its write side");
        receive_to_end(&mut stream).expect("target reading the upload to EOF")
    });
    let _engine = start(&topology, route, relay);

    let upload = Pattern::new(8);
    let client = topology.ns1.spawn("client", move || {
        let mut stream = connect(doc_service());
        let mut greeting = Vec::new();
        stream
            .read_to_end(&mut greeting)
            .expect("client reading the greeting to EOF");
        send_pattern(&mut stream, upload, MIB).expect("client uploading");
        greeting
    });
    let greeting = client.join(STEP_TIMEOUT);
    let received = target.join(STEP_TIMEOUT).pop().unwrap();

    assert_eq!(greeting, GREETING);
    assert_eq!(received, upload.digest(MIB));
}
