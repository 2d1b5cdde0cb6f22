//! Plexus in Docker: the agent serves Docker's remote network driver and remote IPAM driver
//! on a unix socket under `/run/docker/plugins/`, and mirrors every Plexus network into the
//! local Docker (and removes the mirror when the Plexus network goes), so that
//! `docker run --network NAME` works on every host without further steps.
//!
//! Networks and endpoints created through Docker are Plexus objects like any other: the IPAM
//! driver takes addresses from the controller, the network driver plugs containers into
//! `br-int` exactly as `plexus attach` does.

pub mod engine;
pub mod plugin;
pub mod protocol;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use plexus_api::Client;
use plexus_ovs::ovsdb::VSwitch;

use crate::agent::AgentError;

/// Where the Docker side lives.
#[derive(Debug, Clone)]
pub struct DockerConfig {
    /// Directory Docker discovers plugin sockets in.
    pub plugin_dir: PathBuf,
    /// The Docker engine's API socket.
    pub docker_socket: String,
    /// Where the plugin keeps its state file.
    pub state_dir: PathBuf,
    /// How often Plexus networks are mirrored into Docker.
    pub mirror_every: Duration,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            plugin_dir: "/run/docker/plugins".into(),
            docker_socket: "/var/run/docker.sock".into(),
            state_dir: "/var/lib/plexus/agent".into(),
            mirror_every: Duration::from_secs(2),
        }
    }
}

/// The socket Docker finds the plugin at in `plugin_dir`: named after the driver.
pub fn plugin_socket(plugin_dir: &std::path::Path) -> PathBuf {
    plugin_dir.join(format!("{}.sock", engine::DRIVER))
}

/// Serves the plugin and mirrors networks until the process ends.
pub async fn run(cfg: DockerConfig, host: String, api: Client, vs: VSwitch, mtu: u32, checksum_offload_off: bool) -> Result<(), AgentError> {
    let sys = |what: &str, e: &dyn std::fmt::Display| AgentError::System(format!("{what}: {e}"));
    let engine = engine::Engine::connect(&cfg.docker_socket).map_err(|e| sys("docker", &e))?;
    let state = state::StateFile::open(cfg.state_dir.join("docker.json")).map_err(|e| sys("plugin state", &e))?;
    let plugin = Arc::new(plugin::Plugin {
        api: api.clone(),
        vs,
        host: host.clone(),
        mtu,
        checksum_offload_off,
        state,
        engine: engine.clone(),
        removing: Default::default(),
    });
    std::fs::create_dir_all(&cfg.plugin_dir).map_err(|e| sys(&cfg.plugin_dir.display().to_string(), &e))?;
    let sock = plugin_socket(&cfg.plugin_dir);
    // A socket left by an earlier agent: nobody listens on it any more.
    let _ = std::fs::remove_file(&sock);
    let listener = tokio::net::UnixListener::bind(&sock).map_err(|e| sys(&sock.display().to_string(), &e))?;
    tracing::info!(socket = %sock.display(), "serving Docker's network and IPAM driver protocols");
    let app = plugin::router(plugin);
    tokio::spawn(mirror(engine, api, host, cfg.mirror_every));
    axum::serve(listener, app).await.map_err(|e| sys("plugin server", &e))
}

/// Keeps the local Docker's networks in step with Plexus's overlays.
async fn mirror(engine: engine::Engine, api: Client, host: String, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(e) = mirror_once(&engine, &api, &host).await {
            tracing::debug!(error = %e, "mirroring networks into Docker failed; will retry");
        }
    }
}

async fn mirror_once(engine: &engine::Engine, api: &Client, host: &str) -> Result<(), String> {
    let nets = api.networks().await.map_err(|e| e.to_string())?;
    let docker = engine.networks().await.map_err(|e| e.to_string())?;
    // Overlays, and underlays too: an endpoint on a host that does not map an underlay's
    // physical network is refused by the controller with the reason.
    for n in &nets {
        match docker.iter().find(|d| d.name == n.spec.name) {
            Some(d) if d.driver != engine::DRIVER => {
                tracing::warn!(network = %n.spec.name, driver = %d.driver, "a Docker network of that name with another driver hides the Plexus network")
            }
            Some(_) => {}
            None => match engine.create_mirror(&n.spec, host).await {
                Ok(()) => tracing::info!(network = %n.spec.name, "Plexus network now shows in Docker"),
                Err(e) => tracing::warn!(network = %n.spec.name, error = %e, "cannot create the Docker network"),
            },
        }
    }
    for d in docker.iter().filter(|d| d.driver == engine::DRIVER && d.labels.contains_key(engine::MIRROR_LABEL)) {
        if nets.iter().any(|n| n.spec.name == d.name) {
            continue;
        }
        let containers = engine.containers(&d.id).await.map_err(|e| e.to_string())?;
        if containers > 0 {
            tracing::warn!(network = %d.name, containers, "the Plexus network is gone but containers still use its Docker network");
            continue;
        }
        match engine.remove_network(&d.id).await {
            Ok(()) => tracing::info!(network = %d.name, "Plexus network gone; its Docker network removed"),
            Err(e) => tracing::warn!(network = %d.name, error = %e, "cannot remove the Docker network"),
        }
    }
    Ok(())
}
