//! Interoperation with software we did not write: curl as the client of the engine's `http`,
//! `socks5` and `auto` handlers, and tinyproxy and microsocks as the hops of its chains.
//!
//! The handler tests run on the loopback of one namespace each, so ports cannot collide; the
//! chain tests cross the namespaces of the doc's topology.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use common::configs::{addr, doc_proxy, doc_service, doc_target};
use common::engine::Engine;
use common::netns::{D_VETH0, D_VETH2, NS1_VETH1, NS2_VETH3, Netns, Topology};
use common::peers::{CurlRun, Microsocks, curl, curl_binary, http_origin, microsocks_binary};
use common::proxy::Tinyproxy;
use common::traffic::{
    MIB, Pattern, connect, echo_server, exchange_open, read_until_closed, round_trip, serve,
};
use common::{STEP_TIMEOUT, netns_available, tinyproxy_binary};

const PROXY: SocketAddr = loopback(8080);
const ORIGIN: SocketAddr = loopback(9000);
const BODY: &str = "served by the test's origin\n";

const fn loopback(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// A proxy service `KIND-PORT` of handler `kind` on `listen` that dials directly; `auth`
/// makes clients authenticate, `hosts` names a `[[hosts]]` table to resolve with.
fn proxy(
    kind: &str,
    listen: SocketAddr,
    auth: Option<(&str, &str)>,
    hosts: Option<&str>,
) -> String {
    let auth = auth
        .map(|(user, pass)| format!(", auth = {{ username = \"{user}\", password = \"{pass}\" }}"))
        .unwrap_or_default();
    let hosts = hosts
        .map(|hosts| format!("hosts = \"{hosts}\"\n"))
        .unwrap_or_default();
    format!(
        "[[services]]\n\
         name = \"{kind}-{port}\"\n\
         addr = \"{listen}\"\n\
         handler = {{ type = \"{kind}\"{auth} }}\n\
         {hosts}\n",
        port = listen.port()
    )
}

/// `[[hosts]]` table `test-hosts` mapping `web.test` to 127.0.0.1.
const TEST_HOSTS: &str = "[[hosts]]\n\
                          name = \"test-hosts\"\n\
                          [[hosts.mappings]]\n\
                          ip = \"127.0.0.1\"\n\
                          hostname = \"web.test\"\n\n";

/// The prerequisites of a curl test: namespaces and curl, else `None` after a `SKIP`.
fn curl_available(test: &str) -> Option<PathBuf> {
    if netns_available(test) {
        curl_binary(test)
    } else {
        None
    }
}

/// Asserts that curl fetched [`BODY`].
fn assert_fetched(run: &CurlRun, how: &str) {
    assert_eq!(
        (run.exit, run.body().as_str()),
        (Some(0), BODY),
        "{how}: {}",
        run.stderr
    );
}

#[test]
fn curl_through_http_handler_fetches_by_plain_request_and_by_connect() {
    let test = "curl_through_http_handler_fetches_by_plain_request_and_by_connect";
    let Some(curl_path) = curl_available(test) else {
        return;
    };
    let netns = Netns::create("http");
    let origin = http_origin(netns.name(), ORIGIN, BODY);
    let _engine = Engine::start(&netns, &proxy("http", PROXY, None, None), &[]);

    let via = format!("http://{PROXY}");
    let plain = curl(
        &curl_path,
        &netns,
        &["-x", &via, "http://127.0.0.1:9000/plain"],
    );
    let tunnelled = curl(
        &curl_path,
        &netns,
        &["-p", "-x", &via, "http://127.0.0.1:9000/tunnel"],
    );
    let heads = origin.stop();

    assert_fetched(&plain, "plain request");
    assert_fetched(&tunnelled, "CONNECT");
    assert_eq!(heads.len(), 2, "requests at the origin: {heads:?}");
    assert!(
        heads[0].starts_with("GET /plain HTTP/1.1\r\n") && heads[0].contains("Connection: close"),
        "the plain request goes on in origin form with Connection: close: {:?}",
        heads[0]
    );
    assert!(
        !heads[0].to_ascii_lowercase().contains("proxy-"),
        "proxy headers stay at the proxy: {:?}",
        heads[0]
    );
    assert!(
        heads[1].starts_with("GET /tunnel HTTP/1.1\r\n"),
        "{:?}",
        heads[1]
    );
}

#[test]
fn http_handler_with_auth_serves_right_credentials_and_answers_407_to_wrong_or_none() {
    let test = "http_handler_with_auth_serves_right_credentials_and_answers_407_to_wrong_or_none";
    let Some(curl_path) = curl_available(test) else {
        return;
    };
    let netns = Netns::create("hauth");
    let origin = http_origin(netns.name(), ORIGIN, BODY);
    let config = proxy("http", PROXY, Some(("user", "secret")), None);
    let _engine = Engine::start(&netns, &config, &[]);

    let via = format!("http://{PROXY}");
    let run = |args: &[&str]| curl(&curl_path, &netns, args);
    let url = "http://127.0.0.1:9000/";
    let status_of = ["-o", "/dev/null", "-w", "%{http_code}"];
    let plain = run(&["-x", &via, "-U", "user:secret", url]);
    let tunnelled = run(&["-p", "-x", &via, "-U", "user:secret", url]);
    let wrong = run(&[&status_of[..], &["-x", &via, "-U", "user:wrong", url]].concat());
    let none = run(&[&status_of[..], &["-x", &via, url]].concat());
    let wrong_tunnel = run(&["-p", "-x", &via, "-U", "user:wrong", url]);
    let heads = origin.stop();

    assert_fetched(&plain, "plain request with the right credentials");
    assert_fetched(&tunnelled, "CONNECT with the right credentials");
    assert_eq!(wrong.body(), "407", "wrong credentials: {}", wrong.stderr);
    assert_eq!(none.body(), "407", "no credentials: {}", none.stderr);
    assert_eq!(
        wrong_tunnel.exit,
        Some(56),
        "curl reports the refused CONNECT: {}",
        wrong_tunnel.stderr
    );
    assert!(
        wrong_tunnel.stderr.contains("407"),
        "{}",
        wrong_tunnel.stderr
    );
    assert_eq!(heads.len(), 2, "only the authenticated requests arrived");
}

#[test]
fn curl_through_socks5_handler_fetches_with_and_without_auth_and_wrong_auth_is_refused() {
    let test =
        "curl_through_socks5_handler_fetches_with_and_without_auth_and_wrong_auth_is_refused";
    let Some(curl_path) = curl_available(test) else {
        return;
    };
    let netns = Netns::create("socks");
    let origin = http_origin(netns.name(), ORIGIN, BODY);
    let authed = loopback(8081);
    let config = proxy("socks5", PROXY, None, None)
        + &proxy("socks5", authed, Some(("user", "secret")), None);
    let _engine = Engine::start(&netns, &config, &[]);

    let run = |proxy: String| {
        curl(
            &curl_path,
            &netns,
            &["-x", &proxy, "http://127.0.0.1:9000/"],
        )
    };
    let open = run(format!("socks5://{PROXY}"));
    let right = run(format!("socks5://user:secret@{authed}"));
    let wrong = run(format!("socks5://user:wrong@{authed}"));
    let none = run(format!("socks5://{authed}"));
    let heads = origin.stop();

    assert_fetched(&open, "no auth");
    assert_fetched(&right, "the right credentials");
    for (refused, how) in [(&wrong, "wrong credentials"), (&none, "no credentials")] {
        // 97: CURLE_PROXY, the proxy refused the handshake.
        assert_eq!(refused.exit, Some(97), "{how}: {}", refused.stderr);
        assert_eq!(refused.body(), "", "{how}");
    }
    assert_eq!(heads.len(), 2, "only the accepted requests arrived");
}

#[test]
fn wrong_socks5_credentials_get_the_rfc_1929_failure_status_and_nothing_is_forwarded() {
    let test = "wrong_socks5_credentials_get_the_rfc_1929_failure_status_and_nothing_is_forwarded";
    if !netns_available(test) {
        return;
    }
    let netns = Netns::create("s5raw");
    let origin = http_origin(netns.name(), ORIGIN, BODY);
    let config = proxy("socks5", PROXY, Some(("user", "secret")), None);
    let _engine = Engine::start(&netns, &config, &[]);

    let client = netns.spawn("client with a wrong password", || {
        let mut stream = connect(PROXY);
        let mut method = [0; 2];
        stream.write_all(&[5, 1, 2]).expect("greeting");
        stream.read_exact(&mut method).expect("method choice");
        let mut request = vec![1, 4];
        request.extend_from_slice(b"user");
        request.push(5);
        request.extend_from_slice(b"wrong");
        // The CONNECT request follows at once, as an eager client would send it.
        request.extend_from_slice(&[5, 1, 0, 1, 127, 0, 0, 1, 0x23, 0x28]);
        stream.write_all(&request).expect("credentials");
        let mut status = [0; 2];
        stream
            .read_exact(&mut status)
            .expect("authentication status");
        (method, status, read_until_closed(&mut stream))
    });
    let (method, status, (after, ending)) = client.join(STEP_TIMEOUT);
    let heads = origin.stop();

    assert_eq!(method, [5, 2], "username/password chosen");
    assert_eq!(status[0], 1, "the RFC 1929 version");
    assert_ne!(status[1], 0, "a failure status");
    assert_eq!(after, b"", "nothing after the failure (ending {ending:?})");
    assert_eq!(heads, Vec::<String>::new(), "nothing reached the origin");
}

#[test]
fn curl_through_auto_handler_speaks_http_and_socks5_on_one_port_with_auth() {
    let test = "curl_through_auto_handler_speaks_http_and_socks5_on_one_port_with_auth";
    let Some(curl_path) = curl_available(test) else {
        return;
    };
    let netns = Netns::create("auto");
    let origin = http_origin(netns.name(), ORIGIN, BODY);
    let open = loopback(8081);
    let config =
        proxy("auto", PROXY, Some(("user", "secret")), None) + &proxy("auto", open, None, None);
    let _engine = Engine::start(&netns, &config, &[]);

    let url = "http://127.0.0.1:9000/";
    let run = |args: &[&str]| curl(&curl_path, &netns, args);
    let (http, socks5) = (format!("http://{PROXY}"), format!("socks5://{PROXY}"));
    let runs = [
        ("http plain", run(&["-x", &http, "-U", "user:secret", url])),
        (
            "http CONNECT",
            run(&["-p", "-x", &http, "-U", "user:secret", url]),
        ),
        ("socks5", run(&["-x", &socks5, "-U", "user:secret", url])),
        ("open http", run(&["-x", &format!("http://{open}"), url])),
        (
            "open socks5",
            run(&["-x", &format!("socks5://{open}"), url]),
        ),
    ];
    let wrong_http = run(&["-w", "%{http_code}", "-o", "/dev/null", "-x", &http, url]);
    let wrong_socks5 = run(&["-x", &socks5, "-U", "user:wrong", url]);
    let heads = origin.stop();

    for (how, run) in &runs {
        assert_fetched(run, how);
    }
    assert_eq!(wrong_http.body(), "407", "{}", wrong_http.stderr);
    assert_eq!(wrong_socks5.exit, Some(97), "{}", wrong_socks5.stderr);
    assert_eq!(
        heads.len(),
        runs.len(),
        "only the accepted requests arrived"
    );
}

#[test]
fn socks5h_and_http_clients_reach_a_name_the_services_hosts_mapping_resolves() {
    let test = "socks5h_and_http_clients_reach_a_name_the_services_hosts_mapping_resolves";
    let Some(curl_path) = curl_available(test) else {
        return;
    };
    let netns = Netns::create("hosts");
    let origin = http_origin(netns.name(), ORIGIN, BODY);
    let config = proxy("auto", PROXY, None, Some("test-hosts")) + TEST_HOSTS;
    let _engine = Engine::start(&netns, &config, &[]);

    let url = "http://web.test:9000/named";
    let socks5h = curl(
        &curl_path,
        &netns,
        &["-x", &format!("socks5h://{PROXY}"), url],
    );
    let http = curl(&curl_path, &netns, &["-x", &format!("http://{PROXY}"), url]);
    let heads = origin.stop();

    assert_fetched(&socks5h, "socks5h");
    assert_fetched(&http, "http");
    assert_eq!(heads.len(), 2, "{heads:?}");
    for head in &heads {
        assert!(
            head.starts_with("GET /named HTTP/1.1\r\n") && head.contains("Host: web.test:9000"),
            "{head:?}"
        );
    }
}

#[test]
fn forwarder_target_named_in_the_services_hosts_mapping_is_reached() {
    let test = "forwarder_target_named_in_the_services_hosts_mapping_is_reached";
    if !netns_available(test) {
        return;
    }
    let netns = Netns::create("fhost");
    let target = echo_server(netns.name(), ORIGIN, 1);
    let config = format!(
        "[[services]]\n\
         name = \"forward\"\n\
         addr = \"{PROXY}\"\n\
         handler = {{ type = \"tcp\" }}\n\
         hosts = \"test-hosts\"\n\
         [[services.forwarder.nodes]]\n\
         name = \"web\"\n\
         addr = \"web.test:9000\"\n\n{TEST_HOSTS}"
    );
    let _engine = Engine::start(&netns, &config, &[]);

    let client = netns.spawn("client", || {
        round_trip(&mut connect(PROXY), b"to a mapped name")
    });
    let echoed = client.join(STEP_TIMEOUT);
    target.join(STEP_TIMEOUT);

    assert_eq!(echoed, b"to a mapped name");
}

/// Generous bound for 16 MiB each way through two proxies on a debug build sharing two cores.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);

/// microsocks listens on D's side of the ns2 link, where tinyproxy in ns2 can reach it.
fn microsocks_addr() -> SocketAddr {
    addr(D_VETH2, 1080)
}

/// A target in ns1 that only D can reach, over D's other link.
fn far_target() -> SocketAddr {
    addr(NS1_VETH1, 9000)
}

/// One hop of [`chain_service`]: its node's address and connector, dialed from `netns` when
/// it is the first hop.
struct Hop<'a> {
    netns: Option<&'a str>,
    node: SocketAddr,
    connector: &'a str,
}

/// service-0 on the doc's service address in ns1, forwarding to `target` through `hops`.
fn chain_service(ns1: &str, target: SocketAddr, hops: &[Hop]) -> String {
    let mut config = format!(
        "[[services]]\n\
         name = \"service-0\"\n\
         addr = \"{service}\"\n\
         handler = {{ type = \"tcp\", chain = \"chain-0\" }}\n\
         metadata = {{ netns = \"{ns1}\" }}\n\
         [[services.forwarder.nodes]]\n\
         name = \"target-0\"\n\
         addr = \"{target}\"\n\n\
         [[chains]]\n\
         name = \"chain-0\"\n",
        service = doc_service()
    );
    for (index, hop) in hops.iter().enumerate() {
        let netns = hop
            .netns
            .map(|netns| format!("metadata = {{ netns = \"{netns}\" }}\n"))
            .unwrap_or_default();
        config += &format!(
            "[[chains.hops]]\n\
             name = \"hop-{index}\"\n\
             {netns}\
             [[chains.hops.nodes]]\n\
             name = \"node-{index}\"\n\
             addr = \"{node}\"\n\
             connector = {connector}\n",
            node = hop.node,
            connector = hop.connector
        );
    }
    config
}

const MICROSOCKS_CONNECTOR: &str =
    "{ type = \"socks5\", auth = { username = \"user\", password = \"secret\" } }";

/// A client in ns1 and `target` in `target_netns` each send 16 MiB through the engine running
/// `config` in D, at once and without a FIN (tinyproxy and microsocks end a tunnel at the
/// first one). Returns the address the target saw the connection come from.
fn relays_16_mib_each_way(
    topology: &Topology,
    config: &str,
    target_netns: &Netns,
    target: SocketAddr,
) -> IpAddr {
    let (upload, download, len) = (Pattern::new(11), Pattern::new(12), 16 * MIB);
    let name = target_netns.name().to_owned();
    let target = serve(target_netns.name(), target, 1, move |stream, peer| {
        (peer, exchange_open(&stream, &name, download, len), stream)
    });
    let _engine = Engine::start(&topology.d, config, &["--threads", "1"]);

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
    peer.ip()
}

#[test]
fn tinyproxy_as_the_http_hop_relays_16_mib_each_way_intact() {
    let test = "tinyproxy_as_the_http_hop_relays_16_mib_each_way_intact";
    if !netns_available(test) {
        return;
    }
    let Some(tinyproxy) = tinyproxy_binary(test) else {
        return;
    };
    let topology = Topology::doc();
    let _tinyproxy = Tinyproxy::start(&tinyproxy, &topology.ns2, doc_proxy(), 8000);
    let hop = Hop {
        netns: Some(topology.d.name()),
        node: doc_proxy(),
        connector: "{ type = \"http\" }",
    };
    let config = chain_service(topology.ns1.name(), doc_target(), &[hop]);

    let peer = relays_16_mib_each_way(&topology, &config, &topology.d, doc_target());

    assert_eq!(peer, NS2_VETH3, "tinyproxy dialed the target from ns2");
}

#[test]
fn microsocks_with_auth_as_the_socks5_hop_relays_16_mib_each_way_intact() {
    let test = "microsocks_with_auth_as_the_socks5_hop_relays_16_mib_each_way_intact";
    if !netns_available(test) {
        return;
    }
    let Some(microsocks) = microsocks_binary(test) else {
        return;
    };
    let topology = Topology::doc();
    let auth = Some(("user", "secret"));
    let _microsocks = Microsocks::start(&microsocks, &topology.d, microsocks_addr(), auth);
    let hop = Hop {
        netns: Some(topology.ns2.name()),
        node: microsocks_addr(),
        connector: MICROSOCKS_CONNECTOR,
    };
    let config = chain_service(topology.ns1.name(), far_target(), &[hop]);

    let peer = relays_16_mib_each_way(&topology, &config, &topology.ns1, far_target());

    assert_eq!(peer, D_VETH0, "microsocks dialed the target from D");
}

#[test]
fn chain_engine_tinyproxy_microsocks_target_across_namespaces_relays_16_mib_each_way_intact() {
    let test =
        "chain_engine_tinyproxy_microsocks_target_across_namespaces_relays_16_mib_each_way_intact";
    if !netns_available(test) {
        return;
    }
    let (Some(tinyproxy), Some(microsocks)) = (tinyproxy_binary(test), microsocks_binary(test))
    else {
        return;
    };
    let topology = Topology::doc();
    // tinyproxy in ns2 may CONNECT only to microsocks's port; microsocks in D reaches ns1.
    let tinyproxy = Tinyproxy::start(
        &tinyproxy,
        &topology.ns2,
        doc_proxy(),
        microsocks_addr().port(),
    );
    let auth = Some(("user", "secret"));
    let _microsocks = Microsocks::start(&microsocks, &topology.d, microsocks_addr(), auth);
    let hops = [
        Hop {
            netns: Some(topology.d.name()),
            node: doc_proxy(),
            connector: "{ type = \"http\" }",
        },
        Hop {
            netns: None,
            node: microsocks_addr(),
            connector: MICROSOCKS_CONNECTOR,
        },
    ];
    let config = chain_service(topology.ns1.name(), far_target(), &hops);

    let peer = relays_16_mib_each_way(&topology, &config, &topology.ns1, far_target());

    assert_eq!(peer, D_VETH0, "microsocks dialed the target from D");
    let tinyproxy_log = tinyproxy.process().dump();
    assert!(
        tinyproxy_log.contains("CONNECT 10.0.1.11:1080"),
        "tinyproxy was asked for microsocks:\n{tinyproxy_log}"
    );
}

#[test]
fn a_plain_request_reaches_the_origin_with_the_uris_host_and_without_the_headers_connection_names()
{
    let test = "a_plain_request_reaches_the_origin_with_the_uris_host_and_without_the_headers_\
                connection_names";
    if !netns_available(test) {
        return;
    }
    let netns = Netns::create("hdr");
    let origin = http_origin(netns.name(), ORIGIN, BODY);
    let _engine = Engine::start(&netns, &proxy("http", PROXY, None, None), &[]);

    let client = netns.spawn("client", || {
        let mut stream = connect(PROXY);
        let request = "GET http://127.0.0.1:9000/p?q HTTP/1.1\r\nHost: elsewhere.test\r\n\
                       Connection: keep-alive, X-Hop-Secret\r\nX-Hop-Secret: 1\r\n\
                       X-End-To-End: 2\r\n\r\n";
        stream.write_all(request.as_bytes()).unwrap();
        read_until_closed(&mut stream).0
    });
    let response = String::from_utf8(client.join(STEP_TIMEOUT)).unwrap();
    let seen = origin.stop();

    assert!(response.ends_with(BODY), "{response:?}");
    assert_eq!(seen.len(), 1, "{seen:?}");
    let head = &seen[0];
    assert!(
        head.starts_with("GET /p?q HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n"),
        "{head:?}"
    );
    assert!(head.contains("\r\nX-End-To-End: 2\r\n"), "{head:?}");
    assert!(head.contains("\r\nConnection: close\r\n"), "{head:?}");
    for gone in ["elsewhere.test", "X-Hop-Secret", "keep-alive"] {
        assert!(!head.contains(gone), "{gone} reached the origin: {head:?}");
    }
}

#[test]
fn a_plain_request_goes_on_with_its_body_and_nothing_pipelined_after_it() {
    let test = "a_plain_request_goes_on_with_its_body_and_nothing_pipelined_after_it";
    if !netns_available(test) {
        return;
    }
    let netns = Netns::create("pipe");
    let origin = common::peers::Server::start(netns.name(), ORIGIN, |mut stream, _peer| {
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut received = Vec::new();
        let mut buf = [0; 4096];
        let complete = |received: &[u8]| {
            let text = String::from_utf8_lossy(received);
            text.find("\r\n\r\n")
                .is_some_and(|end| received.len() >= end + 4 + 5)
        };
        while !complete(&received) {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(read) => received.extend_from_slice(&buf[..read]),
            }
        }
        let answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
        stream.write_all(answer.as_bytes()).unwrap();
        // Whatever else the proxy sends on this connection, until it closes or goes quiet.
        while let Ok(read @ 1..) = stream.read(&mut buf) {
            received.extend_from_slice(&buf[..read]);
        }
        String::from_utf8_lossy(&received).into_owned()
    });
    let _engine = Engine::start(&netns, &proxy("http", PROXY, Some(("u", "p")), None), &[]);

    let client = netns.spawn("client", || {
        let mut stream = connect(PROXY);
        let auth = "Proxy-Authorization: Basic dTpw\r\n";
        let requests = format!(
            "POST http://127.0.0.1:9000/a HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n{auth}\
             Content-Length: 5\r\n\r\nhello\
             GET http://other.test/b HTTP/1.1\r\nHost: other.test\r\n{auth}\r\n"
        );
        stream.write_all(requests.as_bytes()).unwrap();
        read_until_closed(&mut stream).0
    });
    let response = String::from_utf8(client.join(STEP_TIMEOUT)).unwrap();
    let seen = origin.stop();

    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response:?}");
    assert!(response.ends_with("\r\n\r\nok"), "{response:?}");
    assert_eq!(seen.len(), 1, "{seen:?}");
    let request = &seen[0];
    assert!(request.starts_with("POST /a HTTP/1.1\r\n"), "{request:?}");
    assert!(
        request.ends_with("\r\n\r\nhello"),
        "exactly the body, nothing after: {request:?}"
    );
    assert!(
        !request.contains("other.test") && !request.contains("Proxy-"),
        "{request:?}"
    );
}
