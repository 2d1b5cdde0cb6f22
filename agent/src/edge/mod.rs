//! The host's edge: its own stack carries its containers' traffic out of Plexus (source NAT
//! to the host's address) and in (published ports). The controller says what the edge must
//! be (`GET /v1/hosts/{name}/edge`, long-polled); this task makes the host match — routes to
//! the switch through the external port ([`kernel`]) and NAT rules ([`nat`]) — and puts them
//! back when they drift (ovs-vswitchd made the port anew, someone flushed the rules).

use std::sync::Arc;
use std::time::Duration;

use plexus_api::network::Cidr;
use plexus_api::{Client, HostEdge};
use tokio::sync::{watch, Notify};

pub mod kernel;
pub mod nat;

/// How often the edge is applied again even when nothing changed: the repair of drift.
const REPAIR: Duration = Duration::from_secs(10);
/// How long one poll waits for a change.
const POLL_WAIT: u64 = 20;

/// Errors of applying an edge.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// Routes or the port.
    #[error("{0}")]
    Kernel(#[from] crate::plumb::PlumbError),
    /// NAT rules.
    #[error("{0}")]
    Nat(#[from] nat::NatError),
    /// A subnet the controller sent does not parse.
    #[error("subnet {0:?}: {1}")]
    Subnet(String, String),
}

/// Makes the host's stack what `edge` says. A host no external network reaches is left as it
/// is (no forwarding turned on, no firewall rule added); what an earlier edge added is taken
/// away.
pub fn apply(edge: &HostEdge) -> Result<(), EdgeError> {
    // Subnets the controller sent are checked before any of them reaches a route or a rule.
    let subnets = edge.external_subnets.iter().map(|s| Cidr::parse(s).map_err(|e| EdgeError::Subnet(s.clone(), e))).collect::<Result<Vec<Cidr>, _>>()?;
    if kernel::has_port()? {
        kernel::apply(&subnets)?;
    }
    let idle = subnets.is_empty() && edge.published.is_empty();
    if idle && !nat::present() {
        return Ok(());
    }
    Ok(nat::apply(edge)?)
}

/// Follows the controller's edge for `host` into `tx`, forever.
async fn follow(api: Client, host: String, tx: watch::Sender<Option<HostEdge>>) {
    let mut known: Option<String> = None;
    loop {
        match api.host_edge(&host, known.as_deref(), POLL_WAIT).await {
            Ok(edge) => {
                known = Some(edge.digest.clone());
                tx.send_if_modified(|cur| {
                    let changed = cur.as_ref().map(|c| &c.digest) != Some(&edge.digest);
                    *cur = Some(edge);
                    changed
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read this host's edge from the controller; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

/// Runs the edge of `host` forever: follows the controller's word and applies it, at once on
/// a change or a `nudge` (the switch changed), and every [`REPAIR`] otherwise.
pub async fn run(api: Client, host: String, nudge: Arc<Notify>, health: Arc<crate::agent::health::Health>) {
    let (tx, mut rx) = watch::channel(None);
    tokio::spawn(follow(api, host, tx));
    let mut repair = tokio::time::interval(REPAIR);
    loop {
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = nudge.notified() => {}
            _ = repair.tick() => {}
        }
        let Some(edge) = rx.borrow_and_update().clone() else { continue };
        let applied = tokio::task::spawn_blocking(move || apply(&edge).map(|()| edge)).await;
        match applied {
            Ok(Ok(edge)) => {
                health.edge(None, edge.published.len());
                tracing::debug!(subnets = edge.external_subnets.len(), published = edge.published.len(), "edge applied");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot apply this host's edge (external access, published ports); will retry");
                health.edge(Some(e.to_string()), 0);
            }
            Err(e) => tracing::error!(error = %e, "the edge worker failed"),
        }
    }
}
