//! socat, forking one process per connection; it has no thread setting.

use std::net::SocketAddr;

use super::{DaemonCommand, Recipe};

/// Command for socat listening on `listen` and forwarding to `target`.
///
/// `backlog=4096` matches the other contenders' listen queues (socat's default is 5, which
/// drops SYNs under the connection-rate load); `nodelay` matches their TCP_NODELAY, which
/// HAProxy and nginx set by default.
pub fn recipe(listen: SocketAddr, target: SocketAddr) -> Recipe {
    let listen_address = format!(
        "TCP-LISTEN:{port},bind={ip},fork,reuseaddr,backlog=4096,nodelay",
        port = listen.port(),
        ip = listen.ip()
    );
    let target_address = format!("TCP:{}:{},nodelay", target.ip(), target.port());
    Recipe {
        config: None,
        command: DaemonCommand {
            program: "socat".into(),
            args: vec![listen_address, target_address],
            netns: None,
            ready_line: None,
        },
    }
}
