//! socat, forking one process per connection (per client address for UDP); it has no thread
//! setting.

use std::net::SocketAddr;

use super::{DaemonCommand, Recipe};

/// Command for socat listening on `listen` and forwarding to `target`.
///
/// `backlog=4096` matches the other contenders' listen queues (socat's default is 5, which
/// drops SYNs under the connection-rate load); `nodelay` matches their TCP_NODELAY, which
/// HAProxy and nginx set by default.
///
/// For UDP, `UDP4-LISTEN:…,fork,reuseaddr` to `UDP4:…` forks one child per client address
/// (its socket connected to that client, the parent listening anew), and the child's
/// connected socket to the target carries the replies back: a session per client, like the
/// others. `UDP4-RECVFROM:…,fork` also relays replies, but forks a child for every datagram,
/// which a flood turns into thousands of processes.
pub fn recipe(listen: SocketAddr, target: SocketAddr, udp: bool) -> Recipe {
    if udp {
        let listen_address = format!(
            "UDP4-LISTEN:{port},bind={ip},fork,reuseaddr",
            port = listen.port(),
            ip = listen.ip()
        );
        let target_address = format!("UDP4:{}:{}", target.ip(), target.port());
        return Recipe {
            config: None,
            command: DaemonCommand {
                program: "socat".into(),
                args: vec!["-T".into(), "60".into(), listen_address, target_address],
                netns: None,
                ready_line: None,
            },
        };
    }
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
