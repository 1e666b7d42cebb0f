//! Refusals at a hop: a proxy that answers 403, 407 or 502, a SOCKS5 failure code, garbage,
//! or nothing at all. Each closes only that client, without data, logs a warning naming the
//! service, hop, node and reason, and the next connection through the same hop is served.
//!
//! Everything runs on the loopback of one namespace per test, so ports cannot collide.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use common::engine::Engine;
use common::netns::Netns;
use common::peers::{HopAnswer, HopProtocol, Microsocks, microsocks_binary, scripted_hop};
use common::traffic::{connect, echo_server, read_until_closed, round_trip};
use common::{STEP_TIMEOUT, netns_available};

const SERVICE: SocketAddr = loopback(8000);
const HOP: SocketAddr = loopback(8080);
const TARGET: SocketAddr = loopback(9000);

const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// Service `name` on `listen` forwarding to [`TARGET`] through chain `name`, whose one hop
/// `hop-0` has the one node `node-0` at `node` with `connector` (an inline TOML table).
/// A silent hop is given up after one second.
fn through_hop(name: &str, listen: SocketAddr, node: SocketAddr, connector: &str) -> String {
    format!(
        "[[services]]\n\
         name = \"{name}\"\n\
         addr = \"{listen}\"\n\
         handler = {{ type = \"tcp\", chain = \"{name}\" }}\n\
         metadata = {{ handshakeTimeout = \"1s\" }}\n\
         [[services.forwarder.nodes]]\n\
         name = \"target-0\"\n\
         addr = \"{TARGET}\"\n\
         [[chains]]\n\
         name = \"{name}\"\n\
         [[chains.hops]]\n\
         name = \"hop-0\"\n\
         [[chains.hops.nodes]]\n\
         name = \"node-0\"\n\
         addr = \"{node}\"\n\
         connector = {connector}\n\n"
    )
}

/// The scripted hop answers `refusal` to the first connection and tunnels the second. Checks
/// that the first client got no byte, that the warning names the service, hop, node and
/// `reason`, that the second client is served, and what the hop was asked each time.
fn refused_then_served(protocol: HopProtocol, refusal: HopAnswer, reason: &str, asked: [&str; 2]) {
    let netns = Netns::create("ref");
    let hop = scripted_hop(
        netns.name(),
        HOP,
        protocol,
        vec![refusal, HopAnswer::Tunnel],
    );
    let connector = match protocol {
        HopProtocol::Http => "{ type = \"http\" }",
        HopProtocol::Socks5 => "{ type = \"socks5\" }",
    };
    let config = through_hop("refused", SERVICE, HOP, connector);
    let engine = Engine::start(&netns, &config, &["--threads", "1"]);

    let refused = netns.spawn("refused client", || {
        read_until_closed(&mut connect(SERVICE))
    });
    let (refused_data, ending) = refused.join(STEP_TIMEOUT);
    let warning = engine
        .process()
        .wait_for_line("connection failed", STEP_TIMEOUT);
    let served = netns.spawn("next client", || {
        round_trip(&mut connect(SERVICE), b"the next connection")
    });
    let served = served.join(STEP_TIMEOUT);
    let asked_hop = hop.join(STEP_TIMEOUT);

    assert_eq!(
        refused_data, b"",
        "the refused client got bytes (ending {ending:?})"
    );
    for expected in [
        " WARN ",
        "service=refused",
        "target target-0: hop hop-0 node node-0: connect to 127.0.0.1:9000",
        reason,
    ] {
        assert!(
            warning.contains(expected),
            "the warning lacks {expected:?}: {warning}"
        );
    }
    assert_eq!(served, b"the next connection");
    assert_eq!(asked_hop, asked, "what the hop was asked");
    assert_eq!(
        engine.process().count_lines("connection failed"),
        1,
        "only the refused connection failed"
    );
}

const HTTP_CONNECT: &str = "CONNECT 127.0.0.1:9000 HTTP/1.1";

#[test]
fn http_hop_answering_403_closes_client_without_data_logs_it_and_serves_the_next() {
    let test = "http_hop_answering_403_closes_client_without_data_logs_it_and_serves_the_next";
    if netns_available(test) {
        let refusal = HopAnswer::Refuse {
            code: 403,
            reason: "Forbidden",
        };
        let reason = "refused: 403 Forbidden";
        refused_then_served(HopProtocol::Http, refusal, reason, [HTTP_CONNECT; 2]);
    }
}

#[test]
fn http_hop_answering_407_closes_client_without_data_logs_it_and_serves_the_next() {
    let test = "http_hop_answering_407_closes_client_without_data_logs_it_and_serves_the_next";
    if netns_available(test) {
        let refusal = HopAnswer::Refuse {
            code: 407,
            reason: "Proxy Authentication Required",
        };
        let reason = "authentication failed: 407 Proxy Authentication Required";
        refused_then_served(HopProtocol::Http, refusal, reason, [HTTP_CONNECT; 2]);
    }
}

#[test]
fn http_hop_answering_502_closes_client_without_data_logs_it_and_serves_the_next() {
    let test = "http_hop_answering_502_closes_client_without_data_logs_it_and_serves_the_next";
    if netns_available(test) {
        let refusal = HopAnswer::Refuse {
            code: 502,
            reason: "Bad Gateway",
        };
        let reason = "refused: 502 Bad Gateway";
        refused_then_served(HopProtocol::Http, refusal, reason, [HTTP_CONNECT; 2]);
    }
}

#[test]
fn socks5_hop_replying_code_5_closes_client_without_data_logs_it_and_serves_the_next() {
    let test = "socks5_hop_replying_code_5_closes_client_without_data_logs_it_and_serves_the_next";
    if netns_available(test) {
        let refusal = HopAnswer::Refuse {
            code: 5,
            reason: "",
        };
        let reason = "refused: 5 (connection refused)";
        let asked = ["127.0.0.1:9000"; 2];
        refused_then_served(HopProtocol::Socks5, refusal, reason, asked);
    }
}

#[test]
fn http_hop_answering_garbage_closes_client_without_data_logs_it_and_serves_the_next() {
    let test = "http_hop_answering_garbage_closes_client_without_data_logs_it_and_serves_the_next";
    if netns_available(test) {
        let reason = "malformed HTTP header";
        refused_then_served(
            HopProtocol::Http,
            HopAnswer::Garbage,
            reason,
            [HTTP_CONNECT; 2],
        );
    }
}

#[test]
fn socks5_hop_answering_garbage_closes_client_without_data_logs_it_and_serves_the_next() {
    let test =
        "socks5_hop_answering_garbage_closes_client_without_data_logs_it_and_serves_the_next";
    if netns_available(test) {
        let reason = "bad answer: version 0 in the method reply";
        let asked = ["", "127.0.0.1:9000"];
        refused_then_served(HopProtocol::Socks5, HopAnswer::Garbage, reason, asked);
    }
}

#[test]
fn silent_http_hop_is_given_up_after_handshake_timeout_and_the_next_is_served() {
    let test = "silent_http_hop_is_given_up_after_handshake_timeout_and_the_next_is_served";
    if netns_available(test) {
        let reason = "no answer within 1s";
        refused_then_served(
            HopProtocol::Http,
            HopAnswer::Silence,
            reason,
            [HTTP_CONNECT; 2],
        );
    }
}

#[test]
fn silent_socks5_hop_is_given_up_after_handshake_timeout_and_the_next_is_served() {
    let test = "silent_socks5_hop_is_given_up_after_handshake_timeout_and_the_next_is_served";
    if netns_available(test) {
        let reason = "no answer within 1s";
        let asked = ["", "127.0.0.1:9000"];
        refused_then_served(HopProtocol::Socks5, HopAnswer::Silence, reason, asked);
    }
}

#[test]
fn microsocks_rejecting_the_hops_password_closes_client_without_data_and_logs_it() {
    let test = "microsocks_rejecting_the_hops_password_closes_client_without_data_and_logs_it";
    if !netns_available(test) {
        return;
    }
    let Some(binary) = microsocks_binary(test) else {
        return;
    };
    let netns = Netns::create("msa");
    let target = echo_server(netns.name(), TARGET, 1);
    let _microsocks = Microsocks::start(&binary, &netns, HOP, Some(("user", "right")));
    let connector = |password| {
        format!(
            "{{ type = \"socks5\", auth = {{ username = \"user\", password = \"{password}\" }} }}"
        )
    };
    let refused_service = loopback(8001);
    let config = through_hop("wrong", refused_service, HOP, &connector("wrong"))
        + &through_hop("right", SERVICE, HOP, &connector("right"));
    let engine = Engine::start(&netns, &config, &["--threads", "1"]);

    let client = netns.spawn("clients", move || {
        let refused = read_until_closed(&mut connect(refused_service));
        let served = round_trip(&mut connect(SERVICE), b"with the right password");
        (refused, served)
    });
    let ((refused_data, ending), served) = client.join(STEP_TIMEOUT);
    let warning = engine
        .process()
        .wait_for_line("connection failed", STEP_TIMEOUT);
    target.join(STEP_TIMEOUT);

    assert_eq!(
        refused_data, b"",
        "the refused client got bytes (ending {ending:?})"
    );
    for expected in [
        " WARN ",
        "service=wrong",
        "hop hop-0 node node-0",
        "authentication failed: username/password refused",
    ] {
        assert!(
            warning.contains(expected),
            "the warning lacks {expected:?}: {warning}"
        );
    }
    assert_eq!(served, b"with the right password");
}
