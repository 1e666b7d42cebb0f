//! Handler `tcp`: port forwarding to the service's targets, chosen by the forwarder's
//! selector, with failover to another target when one cannot be reached.

use std::net::SocketAddr;
use std::time::Instant;

use monoio::net::TcpStream;

use super::ServeError;
use crate::egress;
use crate::executor::Core;
use crate::relay::{Transfer, relay};
use crate::route::{Egress, Service, Target};
use crate::selector::{Group, Tried};
use crate::stream::write_all;

pub(super) async fn serve(
    core: &Core,
    service: &Service,
    targets: &Group<Target>,
    egress: &Egress,
    attempts: u32,
    client: &TcpStream,
    peer: SocketAddr,
) -> Result<Transfer, ServeError> {
    let mut failures = Vec::new();
    let mut tried_targets = Tried::default();
    let mut tried_hop_nodes = Tried::default();
    // A target is kept for the next attempt when the failure was not its own: the attempt
    // then goes to the same target through another first-hop node.
    let mut keep_target = None;
    for _ in 0..attempts {
        let index = match keep_target.take() {
            Some(index) => index,
            None => {
                let index = targets
                    .pick(peer.ip(), &tried_targets, Instant::now())
                    .expect("targets exist");
                tried_targets.add(index);
                index
            }
        };
        let target = &targets.nodes[index];
        // Boxed: the setup's state is freed before the relay, which is what an idle
        // connection keeps.
        let opened = Box::pin(egress::open(
            &core.pools,
            egress,
            &target.address,
            target.socket_addr,
            peer.ip(),
            &mut tried_hop_nodes,
            service.timeouts,
        ))
        .await;
        let upstream = match opened {
            Ok(upstream) => upstream,
            Err(error) if error.out_of_resources() => {
                // Local: another target or node would fail the same way.
                failures.push(format!("target {}: {error}", target.name));
                return Err(ServeError::Exhausted(failures.join("; ")));
            }
            Err(error) => {
                if error.destination_failed() {
                    targets.failed(index, Instant::now());
                } else {
                    keep_target = Some(index);
                }
                tracing::debug!(
                    service = %service.name, %peer, target = %target.name, %error,
                    "attempt failed"
                );
                failures.push(format!("target {}: {error}", target.name));
                continue;
            }
        };
        targets.succeeded(index);
        if !failures.is_empty() {
            tracing::warn!(
                service = %service.name, %peer, target = %target.name,
                failed = %failures.join("; "), "connected after failed attempts"
            );
        }
        tracing::debug!(service = %service.name, %peer, target = %target.name, "forwarding");
        if !upstream.pending.is_empty() {
            write_all(client, &upstream.pending)
                .await
                .map_err(|error| ServeError::Setup(format!("writing to the client: {error}")))?;
        }
        let mut transfer = relay(
            client,
            &upstream.stream,
            service.relay,
            service.relay_limits(),
        )
        .await?;
        transfer.received += upstream.pending.len() as u64;
        return Ok(transfer);
    }
    Err(ServeError::Setup(failures.join("; ")))
}
