//! Health, readiness and metrics of a node.

use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::{unavailable, St};
/// Readiness: this node can serve reads and writes. Not ready (503, saying why) while its
/// Raft has stopped on a fatal error, no leader is known, it cannot prove it is in the
/// majority (a leader no majority answers, a follower the leader has not reached within the
/// lease), nothing is applied yet, or applying has not moved for [`APPLY_STUCK`] while the
/// log holds entries beyond it.
#[utoipa::path(get, path = "/readyz", tag = "cluster", responses((status = 200, description = "Ready: a leader reachable, state applied and applying", body = String), (status = 503, description = "Not ready, and why")))]
pub(super) async fn readyz(State(s): St) -> Response {
    let m = s.raft.metrics().borrow().clone();
    let applied = m.last_applied.map(|l| l.index);
    let why = if let Err(fatal) = &m.running_state {
        Some(format!("Raft stopped: {fatal}"))
    } else if m.current_leader.is_none() {
        Some("no leader known: this node cannot reach a majority of the cluster".to_string())
    } else if !s.lease.holds() {
        Some("this node cannot prove it is in the majority: the leader has not reached it, or no majority answers it".to_string())
    } else if applied.is_none() {
        Some("nothing applied yet".to_string())
    } else {
        s.apply_watch.stuck(applied, m.last_log_index).map(|secs| format!("applying has not moved for {secs} s with entries waiting in the log"))
    };
    match why {
        None => (StatusCode::OK, "ready").into_response(),
        Some(w) => unavailable(format!("not ready: {w}")),
    }
}

/// How long applying may stand still, with entries waiting, before the node is not ready.
const APPLY_STUCK: std::time::Duration = std::time::Duration::from_secs(5);

/// Remembers since when the applied index has not moved.
#[derive(Debug, Default)]
pub struct ApplyWatch {
    last: std::sync::Mutex<Option<(Option<u64>, std::time::Instant)>>,
}

impl ApplyWatch {
    /// Seconds applying has stood still with `last_log` beyond `applied`, once that is
    /// longer than [`APPLY_STUCK`].
    fn stuck(&self, applied: Option<u64>, last_log: Option<u64>) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let now = std::time::Instant::now();
        let since = match *last {
            Some((a, t)) if a == applied => t,
            _ => {
                *last = Some((applied, now));
                now
            }
        };
        let waiting = last_log > applied;
        let still = now.duration_since(since);
        (waiting && still > APPLY_STUCK).then_some(still.as_secs())
    }
}

/// Writes this node committed as leader.
pub(super) static WRITES: AtomicU64 = AtomicU64::new(0);
/// Writes the model refused.
pub(super) static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "cluster", responses((status = 200, description = "Alive", body = String)))]
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// Prometheus text exposition of the node's Raft and store state.
#[utoipa::path(get, path = "/metrics", tag = "cluster", responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub(super) async fn metrics(State(s): St) -> Response {
    use std::fmt::Write;
    let m = s.raft.metrics().borrow().clone();
    let st = s.state.read().await;
    let mut out = String::new();
    let mut g = |name: &str, help: &str, v: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    g("plexus_raft_term", "Current Raft term.", m.current_term);
    g("plexus_raft_is_leader", "1 if this node is the Raft leader.", (m.current_leader == Some(s.id)) as u64);
    g("plexus_raft_last_log_index", "Index of the last entry in this node's log.", m.last_log_index.unwrap_or(0));
    g("plexus_raft_applied_index", "Index of the last entry applied to the state machine.", m.last_applied.map(|l| l.index).unwrap_or(0));
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    g("plexus_raft_apply_lag", "Entries in the log not yet applied.", m.last_log_index.unwrap_or(0).saturating_sub(applied));
    g("plexus_store_revision", "Revision of the model.", st.model.revision);
    g("plexus_networks", "Networks in the model.", st.model.networks.len() as u64);
    g("plexus_endpoints", "Endpoints in the model.", st.model.all_endpoints().count() as u64);
    g("plexus_hosts", "Registered hosts.", st.model.hosts.len() as u64);
    let _ = writeln!(
        out,
        "# HELP plexus_api_writes_total Writes this node committed as leader.\n# TYPE plexus_api_writes_total counter\nplexus_api_writes_total {}",
        WRITES.load(std::sync::atomic::Ordering::Relaxed)
    );
    let _ = writeln!(
        out,
        "# HELP plexus_api_refused_total Writes the model refused.\n# TYPE plexus_api_refused_total counter\nplexus_api_refused_total {}",
        REFUSED.load(std::sync::atomic::Ordering::Relaxed)
    );
    for (name, help, v) in [
        ("plexus_raft_log_flushes_total", "Raft log transactions made durable (one fsync each).", &crate::store::FLUSHES),
        (
            "plexus_raft_log_commands_flushed_total",
            "Client writes those flushes carried (group commit: many per flush under load).",
            &crate::store::COMMANDS_FLUSHED,
        ),
        ("plexus_watch_answers_total", "Watch answers that carried changes.", &super::watch::ANSWERS),
        (
            "plexus_watch_encodings_total",
            "Encodings those answers needed (one per change and starting revision, however many watch).",
            &super::watch::ENCODINGS,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(std::sync::atomic::Ordering::Relaxed));
    }
    if let Some(sw) = &s.switches {
        let h = sw.held_totals();
        let dropped: u64 = sw.status().values().filter(|s| s.connected).map(|s| s.packet_ins_dropped).sum();
        for (name, help, v) in [
            ("plexus_held_packets_received_total", "Packets switches sent to be held for flows not yet installed (what passed their hold meter).", h.received),
            ("plexus_held_packets_reinjected_total", "Held packets sent through a switch's pipeline again.", h.reinjected),
            ("plexus_held_packets_expired_total", "Held packets dropped after waiting for their flows too long.", h.expired),
            ("plexus_held_packets_overflow_total", "Packets not held because a switch's buffer was full.", h.overflow),
            ("plexus_packet_ins_dropped_total", "Packet-ins dropped unread by live sessions that fell behind.", dropped),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        }
        switch_metrics(&sw.status(), st.model.revision, &mut out);
        let model = st.model.clone();
        drop(st);
        let stats = crate::counters::read(sw).await;
        crate::counters::metrics(&model, &stats, &mut out);
    }
    crate::metrics::render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// Per switch, labelled by host and datapath id: connected, master, in sync, desired flows,
/// revisions behind the model, an error standing, packets held.
fn switch_metrics(status: &std::collections::BTreeMap<String, crate::switches::SwitchStatus>, revision: u64, out: &mut String) {
    use std::fmt::Write;
    type Get = fn(&crate::switches::SwitchStatus, u64) -> u64;
    let series: [(&str, &str, &str, Get); 8] = [
        ("plexus_switch_connected", "gauge", "1 while the switch has a session with this node.", |s, _| s.connected as u64),
        ("plexus_switch_master", "gauge", "1 if this node is the switch's master.", |s, _| (s.role == "master") as u64),
        ("plexus_switch_in_sync", "gauge", "1 if the switch holds the flows of the revision it was last brought to.", |s, _| s.in_sync as u64),
        ("plexus_switch_desired_flows", "gauge", "Flows the switch should hold.", |s, _| s.desired_flows as u64),
        ("plexus_switch_revision_lag", "gauge", "Model revisions the switch's flows are behind.", |s, r| r.saturating_sub(s.revision)),
        ("plexus_switch_error", "gauge", "1 while the switch's last pass failed.", |s, _| s.last_error.is_some() as u64),
        ("plexus_switch_held_packets_total", "counter", "Packets the switch sent to be held.", |s, _| s.held.received),
        ("plexus_switch_failed_passes_total", "counter", "Passes the switch refused (an OpenFlow error) or broke off.", |s, _| s.failed_passes),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (dpid, s) in status {
            let host = s.host.as_deref().unwrap_or("");
            let _ = writeln!(out, "{name}{{host=\"{host}\",datapath_id=\"{dpid}\"}} {}", get(s, revision));
        }
    }
}
