//! Selection among a forwarder's targets: round robin spreads exactly, hash keeps a client on
//! one target, and a dead target costs no connection and is tried again after failTimeout.
//!
//! Everything runs on the loopback of one namespace per test, so ports cannot collide.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::engine::Engine;
use common::netns::Netns;
use common::peers::{Server, connect_from, labelled_target};
use common::traffic::connect;
use common::{STEP_TIMEOUT, netns_available};

const SERVICE: SocketAddr = loopback(8000);

const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// A target: its name, which it sends as its label, its address and its weight.
type Target = (&'static str, SocketAddr, u32);

/// Targets a, b and c, of weight 1 each.
const THREE: [Target; 3] = [
    ("a", loopback(9001), 1),
    ("b", loopback(9002), 1),
    ("c", loopback(9003), 1),
];

/// A `tcp` service on [`SERVICE`] forwarding to `targets` with `selector`, an inline TOML
/// table.
fn balanced(selector: &str, targets: &[Target]) -> String {
    let mut config = format!(
        "[[services]]\n\
         name = \"balanced\"\n\
         addr = \"{SERVICE}\"\n\
         handler = {{ type = \"tcp\" }}\n\
         [services.forwarder]\n\
         selector = {selector}\n"
    );
    for (name, target, weight) in targets {
        config += &format!(
            "[[services.forwarder.nodes]]\n\
             name = \"{name}\"\n\
             addr = \"{target}\"\n\
             weight = {weight}\n"
        );
    }
    config
}

/// Starts a labelled target for each of `targets`, then the engine with `threads` executors
/// serving [`balanced`].
fn start_balanced(
    netns: &Netns,
    selector: &str,
    targets: &[Target],
    threads: u32,
) -> (Vec<Server<SocketAddr>>, Engine) {
    let servers = targets
        .iter()
        .map(|(name, target, _)| labelled_target(netns.name(), *target, name))
        .collect();
    let config = balanced(selector, targets);
    let engine = Engine::start(netns, &config, &["--threads", &threads.to_string()]);
    (servers, engine)
}

/// The label the target sent through the service on one new connection from `stream`.
fn label(mut stream: TcpStream) -> String {
    let mut label = String::new();
    stream
        .read_to_string(&mut label)
        .expect("reading the target's label");
    label
}

/// Opens `count` connections to [`SERVICE`] one after the other from inside `netns` and
/// returns how many times each label came back.
fn tally(netns: &Netns, count: usize) -> BTreeMap<String, usize> {
    let client = netns.spawn("client", move || {
        let mut tally = BTreeMap::new();
        for _ in 0..count {
            *tally.entry(label(connect(SERVICE))).or_insert(0) += 1;
        }
        tally
    });
    client.join(STEP_TIMEOUT)
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs
        .iter()
        .map(|(label, count)| (label.to_string(), *count))
        .collect()
}

#[test]
fn round_robin_over_three_targets_lands_exactly_100_of_300_connections_on_each() {
    let test = "round_robin_over_three_targets_lands_exactly_100_of_300_connections_on_each";
    if !netns_available(test) {
        return;
    }
    let netns = Netns::create("rr");
    let (servers, _engine) = start_balanced(&netns, "{ strategy = \"round\" }", &THREE, 1);

    let tally = tally(&netns, 300);
    let arrived: Vec<usize> = servers.into_iter().map(|s| s.stop().len()).collect();

    assert_eq!(tally, counts(&[("a", 100), ("b", 100), ("c", 100)]));
    assert_eq!(arrived, [100, 100, 100], "connections each target accepted");
}

#[test]
fn weighted_round_robin_gives_a_weight_2_target_twice_the_connections_of_a_weight_1_target() {
    let test =
        "weighted_round_robin_gives_a_weight_2_target_twice_the_connections_of_a_weight_1_target";
    if !netns_available(test) {
        return;
    }
    let netns = Netns::create("wrr");
    let targets = [("heavy", loopback(9001), 2), ("light", loopback(9002), 1)];
    let _running = start_balanced(&netns, "{ strategy = \"round\" }", &targets, 1);

    let tally = tally(&netns, 300);

    assert_eq!(tally, counts(&[("heavy", 200), ("light", 100)]));
}

#[test]
fn hash_keeps_each_client_ip_on_one_target_and_spreads_different_ips() {
    if !netns_available("hash_keeps_each_client_ip_on_one_target_and_spreads_different_ips") {
        return;
    }
    let netns = Netns::create("hash");
    // Both executors serve: the hash, unlike round robin, does not depend on the core.
    let (servers, _engine) = start_balanced(&netns, "{ strategy = \"hash\" }", &THREE, 2);

    let client = netns.spawn("clients from 16 addresses", || {
        let mut seen: BTreeMap<Ipv4Addr, BTreeSet<String>> = BTreeMap::new();
        for host in 10..26 {
            let source = Ipv4Addr::new(127, 0, 0, host);
            for _ in 0..4 {
                let label = label(connect_from(source.into(), SERVICE));
                seen.entry(source).or_default().insert(label);
            }
        }
        seen
    });
    let seen = client.join(STEP_TIMEOUT);
    let arrived: usize = servers.into_iter().map(|s| s.stop().len()).sum();

    for (source, labels) in &seen {
        assert_eq!(labels.len(), 1, "client {source} landed on {labels:?}");
    }
    let used: BTreeSet<&String> = seen.values().flatten().collect();
    assert!(used.len() > 1, "16 client addresses all hashed to {used:?}");
    assert_eq!(arrived, 64, "connections the targets accepted");
}

/// How long a failed target is skipped in the failover test; the connections of its first two
/// phases take a few milliseconds.
const FAIL_TIMEOUT: Duration = Duration::from_secs(5);

/// The debug line of one failed attempt at target `b`.
fn failed_attempts_at_b(engine: &Engine) -> usize {
    let log = engine.process().text(common::process::Stream::Stderr);
    log.lines()
        .filter(|line| line.contains("attempt failed") && line.contains("target=b"))
        .count()
}

#[test]
fn with_one_target_down_every_connection_succeeds_and_it_is_tried_again_only_after_fail_timeout() {
    let test = "with_one_target_down_every_connection_succeeds_and_it_is_tried_again_only_after_\
                fail_timeout";
    if !netns_available(test) {
        return;
    }
    let netns = Netns::create("fail");
    let (live, dead) = (loopback(9001), loopback(9002));
    let a = labelled_target(netns.name(), live, "a");
    let selector = format!(
        "{{ strategy = \"round\", maxFails = 1, failTimeout = \"{}s\" }}",
        FAIL_TIMEOUT.as_secs()
    );
    let config = balanced(&selector, &[("a", live, 1), ("b", dead, 1)]);
    let args = ["--threads", "1", "--log-level", "debug"];
    let engine = Engine::start(&netns, &config, &args);

    let started = Instant::now();
    let while_down = tally(&netns, 10);
    let first_phase_done = Instant::now();
    engine
        .process()
        .wait_for_count("attempt failed", 1, STEP_TIMEOUT);
    // b comes up, but it failed less than failTimeout ago, so it is not asked yet.
    let b = labelled_target(netns.name(), dead, "b");
    let while_skipped = tally(&netns, 10);
    let skipping_took = started.elapsed();
    let failed_while_skipped = failed_attempts_at_b(&engine);
    // b's failure happened before the first phase ended; wait until failTimeout has passed.
    let retry_at = first_phase_done + FAIL_TIMEOUT + Duration::from_millis(500);
    thread::sleep(retry_at.saturating_duration_since(Instant::now()));
    let after_timeout = tally(&netns, 2);

    assert!(
        skipping_took < FAIL_TIMEOUT,
        "premise: the first 20 connections took {skipping_took:?}, not under {FAIL_TIMEOUT:?}"
    );
    assert_eq!(
        while_down,
        counts(&[("a", 10)]),
        "every connection succeeded"
    );
    assert_eq!(failed_while_skipped, 1, "b was tried once while down");
    assert_eq!(while_skipped, counts(&[("a", 10)]), "b was skipped");
    assert_eq!(
        after_timeout,
        counts(&[("a", 1), ("b", 1)]),
        "b is back in turn"
    );
    assert_eq!(b.stop().len(), 1, "connections b accepted");
    assert_eq!(a.stop().len(), 21, "connections a accepted");
    assert_eq!(
        failed_attempts_at_b(&engine),
        1,
        "failed attempts at b overall"
    );
}

/// A hop node that accepts connections, reads what it is sent and never answers: a hung
/// proxy. Each result is the engine's address as the node saw it.
fn silent_proxy(netns: &str, addr: SocketAddr) -> Server<SocketAddr> {
    Server::start(netns, addr, |mut stream, peer| {
        // Ends when the engine gives up and closes, or at the read timeout.
        let _ = stream.read_to_end(&mut Vec::new());
        peer
    })
}

/// Service [`SERVICE`] forwarding to targets a and b (fifo: a first) through one hop whose
/// nodes, fifo too, are a silent proxy and then uringgost's own `protocol` proxy, which the
/// same configuration serves. Four connections one after the other; returns the labels they
/// got, the connections the silent node accepted and the failed attempts logged.
fn four_connections_past_a_silent_node(protocol: &str) -> (BTreeMap<String, usize>, usize, usize) {
    let netns = Netns::create("silent");
    let (silent, live) = (loopback(8080), loopback(8081));
    let (a, b) = (loopback(9001), loopback(9002));
    let _targets = [
        labelled_target(netns.name(), a, "a"),
        labelled_target(netns.name(), b, "b"),
    ];
    let hung = silent_proxy(netns.name(), silent);
    let config = format!(
        "[[services]]\n\
         name = \"chained\"\n\
         addr = \"{SERVICE}\"\n\
         handler = {{ type = \"tcp\", chain = \"c\" }}\n\
         metadata = {{ handshakeTimeout = \"1s\" }}\n\
         [services.forwarder]\n\
         selector = {{ strategy = \"fifo\" }}\n\
         [[services.forwarder.nodes]]\n\
         name = \"a\"\n\
         addr = \"{a}\"\n\
         [[services.forwarder.nodes]]\n\
         name = \"b\"\n\
         addr = \"{b}\"\n\
         [[services]]\n\
         name = \"proxy\"\n\
         addr = \"{live}\"\n\
         handler = {{ type = \"{protocol}\" }}\n\
         [[chains]]\n\
         name = \"c\"\n\
         [[chains.hops]]\n\
         name = \"hop-0\"\n\
         selector = {{ strategy = \"fifo\" }}\n\
         [[chains.hops.nodes]]\n\
         name = \"silent\"\n\
         addr = \"{silent}\"\n\
         connector = {{ type = \"{protocol}\" }}\n\
         [[chains.hops.nodes]]\n\
         name = \"live\"\n\
         addr = \"{live}\"\n\
         connector = {{ type = \"{protocol}\" }}\n"
    );
    let args = ["--threads", "1", "--log-level", "debug"];
    let engine = Engine::start(&netns, &config, &args);

    let labels = tally(&netns, 4);
    let accepted = hung.stop().len();
    let log = engine.process().text(common::process::Stream::Stderr);
    let failed = log
        .lines()
        .filter(|line| line.contains("attempt failed"))
        .count();
    (labels, accepted, failed)
}

#[test]
fn a_socks5_node_silent_at_the_greeting_is_marked_at_once_and_the_target_is_not() {
    let test = "a_socks5_node_silent_at_the_greeting_is_marked_at_once_and_the_target_is_not";
    if !netns_available(test) {
        return;
    }
    let (labels, accepted, failed) = four_connections_past_a_silent_node("socks5");

    // The greeting's answer depends on nothing but the proxy: only the proxy is at fault.
    assert_eq!(
        labels,
        counts(&[("a", 4)]),
        "the primary target kept serving"
    );
    assert_eq!(accepted, 1, "connections the silent node got");
    assert_eq!(failed, 1, "failed attempts");
}

#[test]
fn an_http_node_silent_after_connect_is_marked_at_once_along_with_the_target_asked_for() {
    let test =
        "an_http_node_silent_after_connect_is_marked_at_once_along_with_the_target_asked_for";
    if !netns_available(test) {
        return;
    }
    let (labels, accepted, failed) = four_connections_past_a_silent_node("http");

    // Silence after CONNECT may be the proxy's or the target's: both lose their turn, and
    // the first connection is retried with the other target through the other node.
    assert_eq!(labels, counts(&[("b", 4)]), "the standby target served");
    assert_eq!(accepted, 1, "connections the silent node got");
    assert_eq!(failed, 1, "failed attempts");
}
