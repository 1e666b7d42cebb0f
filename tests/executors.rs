//! Thread-per-core: connections spread over every executor, and idle connections cost no
//! threads.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};

use common::configs::{self, Relay, addr, doc_service};
use common::engine::Engine;
use common::netns::{D_VETH0, Topology};
use common::traffic::{connect, echo_server, round_trip, serve};
use common::{STEP_TIMEOUT, netns_available};

const ACCEPTED: &str = "connection accepted";

#[test]
fn two_executors_both_accept_among_64_connections() {
    if !netns_available("two_executors_both_accept_among_64_connections") {
        return;
    }
    let topology = Topology::doc();
    let target = addr(D_VETH0, 9000);
    let echo = echo_server(topology.d.name(), target, 64);
    let config = configs::direct(&topology, Relay::Splice, target);
    let args = ["--threads", "2", "--log-level", "debug"];
    let engine = Engine::start(&topology.d, &config, &args);

    let client = topology.ns1.spawn("client", || {
        let answers: Vec<_> = (0..64)
            .map(|n| {
                round_trip(
                    &mut connect(doc_service()),
                    format!("connection {n}").as_bytes(),
                )
            })
            .collect();
        answers
    });
    let answers = client.join(STEP_TIMEOUT);
    echo.join(STEP_TIMEOUT);
    engine.process().wait_for_count(ACCEPTED, 64, STEP_TIMEOUT);

    for (n, answer) in answers.iter().enumerate() {
        assert_eq!(answer, format!("connection {n}").as_bytes());
    }
    let log = engine.process().text(common::process::Stream::Stderr);
    let accepted: Vec<&str> = log.lines().filter(|line| line.contains(ACCEPTED)).collect();
    let mut per_executor = BTreeMap::new();
    for line in &accepted {
        let executor = line
            .split_once("executor=")
            .map(|(_, rest)| {
                rest.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .unwrap_or_else(|| panic!("no executor field in {line:?}"));
        *per_executor.entry(executor).or_insert(0) += 1;
    }
    assert_eq!(
        accepted.len(),
        64,
        "accepted lines:\n{}",
        accepted.join("\n")
    );
    let executors: Vec<&str> = per_executor.keys().map(String::as_str).collect();
    assert_eq!(
        executors,
        ["0", "1"],
        "connections per executor: {per_executor:?}"
    );
}

#[test]
fn thousand_idle_relayed_connections_add_no_threads_beyond_two_executors_and_helpers() {
    let test = "thousand_idle_relayed_connections_add_no_threads_beyond_two_executors_and_helpers";
    if !netns_available(test) {
        return;
    }
    const CONNECTIONS: usize = 1000;
    let topology = Topology::doc();
    let target = addr(D_VETH0, 9000);
    // Echoes one byte per connection and keeps every connection open.
    let holder = serve(topology.d.name(), target, CONNECTIONS, |mut stream, _| {
        let mut byte = [0];
        stream
            .read_exact(&mut byte)
            .expect("reading the connection's byte");
        stream
            .write_all(&byte)
            .expect("echoing the connection's byte");
        stream
    });
    let config = configs::direct(&topology, Relay::Splice, target);
    let engine = Engine::start(&topology.d, &config, &["--threads", "2"]);

    let client = topology.ns1.spawn("client", || {
        let streams: Vec<_> = (0..CONNECTIONS)
            .map(|n| {
                let mut stream = connect(doc_service());
                let byte = [n as u8];
                assert_eq!(round_trip(&mut stream, &byte), byte, "connection {n}");
                stream
            })
            .collect();
        streams
    });
    // Both ends stay open (held here) while the threads are counted.
    let _clients = client.join(STEP_TIMEOUT);
    let _targets = holder.join(STEP_TIMEOUT);

    let task_dir = format!("/proc/{}/task", engine.pid());
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", engine.pid())).unwrap();
    assert_eq!(comm.trim(), "uringgost", "{task_dir} is not the engine's");
    let names: Vec<String> = std::fs::read_dir(&task_dir)
        .unwrap_or_else(|error| panic!("reading {task_dir}: {error}"))
        .map(|task| {
            let task = task.expect("a task entry").path();
            std::fs::read_to_string(task.join("comm"))
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect();
    assert!(
        names.len() <= 4,
        "{} threads for 2 executors and at most 2 helpers: {names:?}",
        names.len()
    );
}
