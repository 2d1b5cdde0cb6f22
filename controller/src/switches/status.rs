//! What the switch manager reports of each switch and of its last passes.

use serde::Serialize;

use crate::held::HeldStats;

/// What the manager knows of one switch (`GET /v1/hosts/{name}/flows`).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SwitchStatus {
    /// Datapath id, hex.
    pub datapath_id: String,
    /// The host it belongs to, if a registered host has that datapath id.
    pub host: Option<String>,
    /// Whether a session is up.
    pub connected: bool,
    /// Sessions this node has served the switch since it started (a rising count on a
    /// stable network is a flapping switch).
    pub sessions: u64,
    /// Whether its flows equal the desired flows as of the last pass.
    pub in_sync: bool,
    /// Flows desired for it.
    pub desired_flows: usize,
    /// Full passes that found the switch holding something else than it should (a new
    /// session, tampering undone by the audit).
    pub corrections: u64,
    /// The last error, if the last pass failed.
    pub last_error: Option<String>,
    /// The model revision its flows reflect.
    pub revision: u64,
    /// Local endpoints whose port the switch has.
    pub plugged: usize,
    /// The last pass that changed something.
    pub last_pass: Option<PassStats>,
    /// The last full pass (connect or audit), changes or not.
    pub last_full: Option<PassStats>,
    /// This node's OpenFlow role on the switch: `master` (with the generation id), `slave`,
    /// or `equal` for a node outside a cluster.
    pub role: String,
    /// Packets the switch held for flows not yet installed, in its current session.
    pub held: HeldStats,
    /// Packet-ins dropped before they were read (the session fell behind), in its current
    /// session.
    pub packet_ins_dropped: u64,
    /// Passes that failed (the switch refused a flow change, or the session broke mid-pass).
    pub failed_passes: u64,
}

/// What one pass over a switch did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct PassStats {
    /// Everything was compiled and the switch's flows read back (connect, audit, or a change
    /// the change log cannot narrow down); otherwise only the touched units were compiled and
    /// their difference sent.
    pub full: bool,
    /// Units compiled.
    pub units: usize,
    /// Microseconds until the flows were compiled: reading the model, matching endpoints to
    /// the switch's ports, compiling.
    pub compile_us: u64,
    /// Flow changes sent.
    pub flows_sent: usize,
    /// Milliseconds the whole pass took, including the switch's answer.
    pub ms: f64,
    /// The model revision it brought the switch to.
    pub revision: u64,
}
