//! `uringgost check`: a valid config prints its compiled routes and exits 0; a mistaken one
//! exits non-zero with an error naming the service or hop, the key and the bad value.
//! Nothing here opens a socket or a namespace, so no root is needed.

mod common;

use std::path::Path;

use common::engine::{Checked, check, check_file};

/// A loopback forward the tests change one key of at a time.
const VALID: &str = r#"
[[services]]
name = "service-0"
addr = "127.0.0.1:18000"
handler = { type = "tcp" }
listener = { type = "tcp" }
[[services.forwarder.nodes]]
name = "target-0"
addr = "127.0.0.1:19000"
"#;

/// A chain of one HTTP hop on loopback.
const CHAIN: &str = r#"
[[chains]]
name = "chain-0"
[[chains.hops]]
name = "hop-0"
[[chains.hops.nodes]]
name = "node-0"
addr = "127.0.0.1:18080"
connector = { type = "http" }
dialer = { type = "tcp" }
"#;

/// [`VALID`] with its handler line replaced.
fn with_handler(handler: &str) -> String {
    VALID.replace("handler = { type = \"tcp\" }", handler)
}

fn assert_rejected(checked: &Checked, expected: &[&str]) {
    assert!(
        !checked.status.success(),
        "check accepted the config; stdout:\n{}stderr:\n{}",
        checked.stdout,
        checked.stderr
    );
    for text in expected {
        assert!(
            checked.stderr.contains(text),
            "stderr lacks {text:?}:\n{}",
            checked.stderr
        );
    }
}

#[test]
fn check_accepts_a_loopback_forward_and_prints_its_route() {
    let checked = check(VALID);

    assert!(checked.status.success(), "stderr:\n{}", checked.stderr);
    assert!(
        checked.stdout.contains("service-0"),
        "stdout:\n{}",
        checked.stdout
    );
    assert!(
        checked.stdout.contains("127.0.0.1:19000"),
        "stdout:\n{}",
        checked.stdout
    );
}

#[test]
fn check_accepts_the_bundled_loopback_routes() {
    let routes = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/routes.toml");

    let checked = check_file(&routes);

    assert!(
        checked.status.success(),
        "{}:\n{}",
        routes.display(),
        checked.stderr
    );
}

#[test]
fn check_rejects_a_duplicate_service_name_naming_it_and_the_key() {
    let checked = check(&format!("{VALID}{}", VALID.replace("18000", "18001")));

    assert_rejected(&checked, &["service-0", "name"]);
}

#[test]
fn check_rejects_an_ipv6_address_without_brackets_naming_service_key_and_value() {
    let checked = check(&VALID.replace("127.0.0.1:18000", "::1:8000"));

    assert_rejected(&checked, &["service-0", "addr", "::1:8000"]);
}

#[test]
fn check_rejects_an_unknown_handler_type_naming_service_key_and_value() {
    let checked = check(&VALID.replace(
        "handler = { type = \"tcp\" }",
        "handler = { type = \"socks9\" }",
    ));

    assert_rejected(&checked, &["service-0", "handler.type", "socks9"]);
}

#[test]
fn check_rejects_an_unknown_connector_type_naming_hop_key_and_value() {
    let with_chain = with_handler("handler = { type = \"tcp\", chain = \"chain-0\" }");
    let config = with_chain + &CHAIN.replace("type = \"http\"", "type = \"socks9\"");

    let checked = check(&config);

    assert_rejected(&checked, &["hop-0", "connector.type", "socks9"]);
}

#[test]
fn check_rejects_an_unknown_chain_naming_service_key_and_value() {
    let checked = check(&with_handler(
        "handler = { type = \"tcp\", chain = \"chain-x\" }",
    ));

    assert_rejected(&checked, &["service-0", "handler.chain", "chain-x"]);
}

#[test]
fn check_rejects_an_unknown_service_relay_naming_service_key_and_value() {
    let handler_and_relay = "handler = { type = \"tcp\" }\nmetadata = { relay = \"zerocopy\" }";

    let checked = check(&with_handler(handler_and_relay));

    assert_rejected(&checked, &["service-0", "metadata.relay", "zerocopy"]);
}

#[test]
fn check_rejects_an_unknown_default_relay_naming_key_and_value() {
    let checked = check(&format!("relay = \"zerocopy\"\n{VALID}"));

    assert_rejected(&checked, &["relay", "zerocopy"]);
}

#[test]
fn check_rejects_two_services_on_one_address_naming_both() {
    let second = VALID
        .replace("service-0", "service-1")
        .replace("19000", "19001");
    let checked = check(&format!("{VALID}{second}"));
    assert_rejected(
        &checked,
        &[
            "service \"service-1\": addr: 127.0.0.1:18000 (tcp) is also the address of service \
             \"service-0\"",
        ],
    );
}

#[test]
fn check_rejects_a_target_that_is_the_services_own_address() {
    let checked = check(&VALID.replace("127.0.0.1:19000", "127.0.0.1:18000"));
    assert_rejected(
        &checked,
        &[
            "service \"service-0\": forwarder.nodes \"target-0\".addr: 127.0.0.1:18000 is where \
           this service listens",
        ],
    );
}

#[test]
fn a_log_level_that_is_not_a_level_is_refused_instead_of_silencing_logs() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_uringgost"))
        .args([
            "--log-level",
            "warning",
            "check",
            "--config",
            "/nonexistent.toml",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--log-level \"warning\" is not a level"),
        "{stderr}"
    );
}

#[test]
fn check_rejects_a_namespace_on_a_later_hop_which_is_never_dialed() {
    let with_chain = with_handler("handler = { type = \"tcp\", chain = \"chain-0\" }");
    let second_hop = "[[chains.hops]]\n\
                      name = \"hop-1\"\n\
                      metadata = { netns = \"ns2\" }\n\
                      [[chains.hops.nodes]]\n\
                      name = \"node-1\"\n\
                      addr = \"127.0.0.1:18081\"\n\
                      connector = { type = \"http\" }\n";
    let config = with_chain + CHAIN + second_hop;

    let checked = check(&config);

    assert_rejected(
        &checked,
        &[
            "hop \"hop-1\": metadata.netns",
            "hop 2 of the chain is reached through the tunnel",
            "set netns on the first hop",
        ],
    );
}

#[test]
fn check_rejects_socks5_credentials_that_rfc_1929_cannot_carry() {
    let long = "u".repeat(256);
    let handler = format!(
        "handler = {{ type = \"socks5\", auth = {{ username = \"{long}\", password = \"\" }} }}"
    );

    let checked = check(&with_handler(&handler).replace(
        "[[services.forwarder.nodes]]\nname = \"target-0\"\naddr = \"127.0.0.1:19000\"\n",
        "",
    ));

    assert_rejected(
        &checked,
        &[
            "handler.auth.username: 256 bytes; SOCKS5 username/password authentication \
             (RFC 1929) carries 1 to 255",
            "handler.auth.password: 0 bytes",
        ],
    );
}

#[test]
fn check_rejects_an_empty_user_name_and_one_with_a_colon_for_http() {
    let connector =
        "connector = { type = \"http\", auth = { username = \"a:b\", password = \"p\" } }";
    let with_chain = with_handler("handler = { type = \"tcp\", chain = \"chain-0\" }");
    let config = with_chain + &CHAIN.replace("connector = { type = \"http\" }", connector);
    let http = "handler = { type = \"http\", auth = { username = \"\", password = \"p\" } }";
    let proxy = with_handler(http).replace(
        "[[services.forwarder.nodes]]\nname = \"target-0\"\naddr = \"127.0.0.1:19000\"\n",
        "",
    );

    assert_rejected(
        &check(&config),
        &["node \"node-0\": connector.auth.username: contains ':'"],
    );
    assert_rejected(
        &check(&proxy),
        &["handler.auth.username: must not be empty"],
    );
}
