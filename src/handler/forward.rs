//! Handler `tcp`: port forwarding to the service's targets, with failover between them.

use std::net::SocketAddr;

use monoio::net::TcpStream;

use super::ServeError;
use crate::egress::{self, EgressError};
use crate::executor::Core;
use crate::relay::{Transfer, relay};
use crate::route::{Egress, Service, Targets};
use crate::stream::write_all;

pub(super) async fn serve(
    core: &Core,
    service: &Service,
    targets: &Targets,
    egress: &Egress,
    client: &TcpStream,
    peer: SocketAddr,
) -> Result<Transfer, ServeError> {
    let mut failures: Vec<(String, EgressError)> = Vec::new();
    for target in targets.round() {
        let opened = egress::open(
            &core.pools,
            egress,
            &target.address,
            target.socket_addr,
            service.timeouts,
        )
        .await;
        let upstream = match opened {
            Ok(upstream) => upstream,
            Err(error) => {
                tracing::debug!(
                    service = %service.name, %peer, target = %target.name, %error,
                    "target unreachable"
                );
                failures.push((target.name.clone(), error));
                continue;
            }
        };
        if !failures.is_empty() {
            tracing::warn!(
                service = %service.name, %peer, target = %target.name,
                failed = failures.len(), "failed over to another target"
            );
        }
        if !upstream.pending.is_empty() {
            write_all(client, &upstream.pending)
                .await
                .map_err(|error| ServeError::Setup(format!("writing to the client: {error}")))?;
        }
        let mut transfer = relay(client, &upstream.stream, service.relay).await?;
        transfer.received += upstream.pending.len() as u64;
        return Ok(transfer);
    }
    let reasons: Vec<String> = failures
        .iter()
        .map(|(target, error)| format!("target {target}: {error}"))
        .collect();
    Err(ServeError::Setup(reasons.join("; ")))
}
