//! HAProxy in TCP mode, splicing when it pays (`option splice-auto`), run in the foreground.

use std::net::SocketAddr;

use super::{DaemonCommand, LaunchSpec, Recipe};

/// Configuration and command for HAProxy listening on `listen` and forwarding to `target`.
pub fn recipe(spec: &LaunchSpec<'_>, listen: SocketAddr, target: SocketAddr) -> Recipe {
    // Each relayed connection is one session holding two sockets, and haproxy refuses to
    // start when maxconn's sockets plus its splice pipes (by default maxconn/4 of them, two
    // fds each) exceed the fd limit. Pipes are only held while data is in flight, so a fixed
    // pool is enough.
    let maxpipes = 512;
    let fits = spec.nofile_limit.saturating_sub(2 * maxpipes + 200) / 2;
    let maxconn = u64::from(spec.max_connections + 200).min(fits);
    let config = format!(
        "global
    nbthread {threads}
    maxconn {maxconn}
    maxpipes {maxpipes}

defaults
    mode tcp
    maxconn {maxconn}
    timeout connect 5s
    timeout client 10m
    timeout server 10m
    option splice-auto

frontend relay
    bind {listen} backlog 4096
    default_backend sink

backend sink
    server sink {target}
",
        threads = spec.threads,
    );
    let path = spec.workdir.join("haproxy.cfg");
    Recipe {
        config: Some(("haproxy.cfg", config)),
        command: DaemonCommand {
            program: "haproxy".into(),
            args: vec!["-f".into(), path.display().to_string(), "-db".into()],
            netns: None,
            ready_line: None,
        },
    }
}
