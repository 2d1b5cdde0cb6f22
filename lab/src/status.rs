//! What `plexus lab status` reports.

use serde::{Deserialize, Serialize};

/// A lab host as `plexus lab status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabHostStatus {
    /// Host name inside the lab (`h1`, `h2`, …).
    pub name: String,
    /// Network namespace.
    pub netns: String,
    /// Underlay address with prefix length.
    pub underlay_ip: String,
    /// OVSDB socket (`unix:…`).
    pub ovsdb: String,
    /// Whether its ovsdb-server and ovs-vswitchd are running.
    pub running: bool,
}

/// A lab as `plexus lab status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabStatus {
    /// Lab name.
    pub name: String,
    /// State directory.
    pub dir: String,
    /// Hosts.
    pub hosts: Vec<LabHostStatus>,
    /// Container namespaces (`plx-LAB-NAME`), by NAME.
    #[serde(default)]
    pub containers: Vec<String>,
    /// The controller's API, if the lab runs a control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
}
