//! nginx's stream module as a plain TCP or UDP forwarder, with every path inside the run's
//! workdir.

use std::net::SocketAddr;

use super::{DaemonCommand, LaunchSpec, Recipe};

/// Where Debian installs the dynamic stream module (package libnginx-mod-stream).
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// Configuration and command for nginx listening on `listen` and forwarding to `target`.
///
/// For UDP, each client address is a session that lives until 60 s without a datagram
/// (`proxy_timeout`, uringgost's `ttl` here). `proxy_responses` stays unset, so a session
/// takes any number of replies, as uringgost's does; a count would end one-way sessions at
/// their first datagram (0) or never matter (any other). `reuseport` gives each worker its
/// own socket, as uringgost gives each executor, so a client stays with one worker.
pub fn recipe(spec: &LaunchSpec<'_>, listen: SocketAddr, target: SocketAddr, udp: bool) -> Recipe {
    let workdir = spec.workdir.display();
    // Each relayed connection takes two of a worker's connections (client and upstream).
    let wanted = 2 * u64::from(spec.max_connections) + 200;
    let connections = wanted.min(spec.nofile_limit.saturating_sub(100));
    let server = if udp {
        format!(
            "listen {listen} udp reuseport;
        proxy_pass {target};
        proxy_timeout 60s;"
        )
    } else {
        format!(
            "listen {listen} backlog=4096;
        proxy_pass {target};
        proxy_connect_timeout 5s;
        proxy_timeout 10m;"
        )
    };
    let config = format!(
        "load_module {STREAM_MODULE};
worker_processes {threads};
worker_rlimit_nofile {files};
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;

events {{
    worker_connections {connections};
}}

stream {{
    server {{
        {server}
    }}
}}
",
        threads = spec.threads,
        files = spec.nofile_limit,
    );
    let path = spec.workdir.join("nginx.conf");
    Recipe {
        config: Some(("nginx.conf", config)),
        command: DaemonCommand {
            program: "nginx".into(),
            args: vec![
                "-p".into(),
                workdir.to_string(),
                "-e".into(),
                format!("{workdir}/nginx-error.log"),
                "-c".into(),
                path.display().to_string(),
                "-g".into(),
                "daemon off;".into(),
            ],
            netns: None,
            ready_line: None,
        },
    }
}
