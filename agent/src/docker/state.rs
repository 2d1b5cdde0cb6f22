//! What the plugin must remember across agent restarts: which Plexus network each Docker
//! network stands for, which Plexus endpoint each Docker endpoint is, and pools handed out
//! before their network was named. Kept in one JSON file, replaced atomically on every change.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// A Docker network's Plexus network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkLink {
    /// The Plexus network's name.
    pub plexus: String,
    /// The Plexus network was created through this host's Docker (and goes with it).
    pub origin: bool,
}

/// A Docker endpoint's Plexus endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointLink {
    /// Plexus network.
    pub network: String,
    /// Plexus endpoint id.
    pub id: String,
    /// Its address came from our IPAM driver (which releases it), not from Docker's.
    pub ipam: bool,
    /// Its MAC and gateway, as the controller gave them at creation, so that Join needs no
    /// round trip to the controller (absent in state written by an older agent: Join asks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wiring: Option<Wiring>,
}

/// What Join needs of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wiring {
    /// The endpoint's MAC.
    pub mac: plexus_api::Mac,
    /// Its network's gateway.
    pub gateway: std::net::Ipv4Addr,
    /// Its network's IPv6 gateway, on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// Its network's MTU, if the network sets one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Its network is an underlay network: no tunnel headers, the link's whole MTU.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub underlay: bool,
}

impl Wiring {
    /// How an endpoint of `network` with `mac` and `gateway` is wired.
    pub fn of(network: &plexus_api::Network, mac: plexus_api::Mac, gateway: std::net::Ipv4Addr) -> Wiring {
        Wiring { mac, gateway, gateway6: network.spec.gateway6, mtu: network.spec.mtu, underlay: network.underlay().is_some() }
    }

    /// Its MTU when an overlay's path carries `overlay_path`.
    pub fn mtu(&self, overlay_path: u32) -> u32 {
        let path = crate::attach::path_with_overhead(plexus_api::network::overhead(self.underlay), overlay_path);
        crate::attach::effective_mtu(self.mtu, path)
    }
}

/// Everything remembered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    /// By Docker network id.
    pub networks: BTreeMap<String, NetworkLink>,
    /// By Docker endpoint id.
    pub endpoints: BTreeMap<String, EndpointLink>,
    /// Pools requested without a network name, by pool id: the Plexus network once known.
    pub pools: BTreeMap<String, Option<String>>,
    /// Address reservations (Plexus endpoint ids) whose IPv6 address an IPv6 address request
    /// has handed out, and which no Docker endpoint links yet.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub claimed6: std::collections::BTreeSet<String>,
}

/// The state and the file it lives in.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    state: Mutex<State>,
}

impl StateFile {
    /// Loads the file, or starts empty if there is none.
    pub fn open(path: PathBuf) -> std::io::Result<StateFile> {
        let state = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        Ok(StateFile { path, state: Mutex::new(state) })
    }

    /// A copy of the state.
    pub fn get(&self) -> State {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes the state and writes it out before returning.
    pub fn update<T>(&self, f: impl FnOnce(&mut State) -> T) -> std::io::Result<T> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let out = f(&mut s);
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&*s).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(out)
    }
}
