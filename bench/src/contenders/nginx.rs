//! nginx's stream module as a plain TCP forwarder, with every path inside the run's workdir.

use std::net::SocketAddr;

use super::{DaemonCommand, LaunchSpec, Recipe};

/// Where Debian installs the dynamic stream module (package libnginx-mod-stream).
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// Configuration and command for nginx listening on `listen` and forwarding to `target`.
pub fn recipe(spec: &LaunchSpec<'_>, listen: SocketAddr, target: SocketAddr) -> Recipe {
    let workdir = spec.workdir.display();
    // Each relayed connection takes two of a worker's connections (client and upstream).
    let wanted = 2 * u64::from(spec.max_connections) + 200;
    let connections = wanted.min(spec.nofile_limit.saturating_sub(100));
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
        listen {listen} backlog=4096;
        proxy_pass {target};
        proxy_connect_timeout 5s;
        proxy_timeout 10m;
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
