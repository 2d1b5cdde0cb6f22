//! The few Docker Engine API calls the agent makes (through bollard): reading networks, and
//! creating and removing the Docker networks that mirror Plexus networks.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::Docker;

use super::protocol::NETWORK_OPTION;

/// Label on Docker networks the agent made to mirror a Plexus network.
pub const MIRROR_LABEL: &str = "plexus.mirror";
/// The plugin's name: Docker's driver and IPAM driver name.
pub const DRIVER: &str = "plexus";

/// A Docker network, as far as the agent cares.
#[derive(Debug, Clone)]
pub struct DockerNetwork {
    /// Docker's id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Driver.
    pub driver: String,
    /// Labels.
    pub labels: HashMap<String, String>,
}

/// A handle on the local Docker engine.
#[derive(Debug, Clone)]
pub struct Engine {
    docker: Docker,
}

impl Engine {
    /// Connects to the engine's socket (`unix:///var/run/docker.sock` style paths).
    pub fn connect(socket: &str) -> Result<Engine, bollard::errors::Error> {
        // 1.41 (Docker 20.10, Debian 12's docker.io) is served by every engine since: newer
        // ones accept older versions down to 1.24, older ones refuse newer.
        let docker = Docker::connect_with_socket(socket, 30, &bollard::ClientVersion { major_version: 1, minor_version: 41 })?;
        Ok(Engine { docker })
    }

    /// Whether the engine answers.
    pub async fn ping(&self) -> Result<(), bollard::errors::Error> {
        self.docker.ping().await.map(|_| ())
    }

    /// Every network.
    pub async fn networks(&self) -> Result<Vec<DockerNetwork>, bollard::errors::Error> {
        let mut out = Vec::new();
        for n in self.docker.list_networks(None).await? {
            out.push(DockerNetwork {
                id: n.id.unwrap_or_default(),
                name: n.name.unwrap_or_default(),
                driver: n.driver.unwrap_or_default(),
                labels: n.labels.unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// The name (without Docker's leading `/`) and labels of the container that has Docker
    /// endpoint `endpoint_id` on network `network_id`, once Docker shows it (from the start of
    /// the container's start-up).
    pub async fn container_labels(&self, network_id: &str, endpoint_id: &str, timeout: Duration) -> Option<(Option<String>, HashMap<String, String>)> {
        let filters = HashMap::from([("network".to_string(), vec![network_id.to_string()])]);
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let t = Instant::now();
        while t.elapsed() < timeout {
            // Listing reads Docker's container index without taking a container's lock, so it
            // answers while the container is still starting.
            if let Ok(list) = self.docker.list_containers(Some(opts.clone())).await {
                let found = list.into_iter().find(|c| {
                    let nets = c.network_settings.as_ref().and_then(|n| n.networks.as_ref());
                    nets.is_some_and(|n| n.values().any(|e| e.endpoint_id.as_deref() == Some(endpoint_id)))
                });
                if let Some(c) = found {
                    let name = c.names.and_then(|n| n.into_iter().next()).map(|n| n.trim_start_matches('/').to_string());
                    return Some((name, c.labels.unwrap_or_default()));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// How many containers network `id` has (the list of networks leaves them out).
    pub async fn containers(&self, id: &str) -> Result<usize, bollard::errors::Error> {
        Ok(self.docker.inspect_network(id, None).await?.containers.map(|c| c.len()).unwrap_or(0))
    }

    /// The name of network `id`, once Docker shows it (it does only after the driver's
    /// `CreateNetwork` returned).
    pub async fn wait_network_name(&self, id: &str, timeout: Duration) -> Option<String> {
        let t = Instant::now();
        while t.elapsed() < timeout {
            if let Ok(n) = self.docker.inspect_network(id, None).await {
                if let Some(name) = n.name {
                    return Some(name);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// Creates the Docker network that stands for the Plexus network `spec` describes (dual
    /// stack when it has an IPv6 subnet).
    pub async fn create_mirror(&self, spec: &plexus_api::NetworkSpec, host: &str) -> Result<(), bollard::errors::Error> {
        let name = &spec.name;
        let opts = HashMap::from([(NETWORK_OPTION.to_string(), name.to_string())]);
        let mut config = vec![IpamConfig { subnet: Some(spec.subnet.clone()), gateway: spec.gateway.map(|g| g.to_string()), ..Default::default() }];
        if let Some(s6) = &spec.subnet6 {
            config.push(IpamConfig { subnet: Some(s6.clone()), gateway: spec.gateway6.map(|g| g.to_string()), ..Default::default() });
        }
        let req = NetworkCreateRequest {
            name: name.to_string(),
            driver: Some(DRIVER.into()),
            ipam: Some(Ipam { driver: Some(DRIVER.into()), config: Some(config), options: Some(opts.clone()) }),
            options: Some(opts),
            labels: Some(HashMap::from([(MIRROR_LABEL.to_string(), host.to_string())])),
            enable_ipv6: Some(spec.subnet6.is_some()),
            ..Default::default()
        };
        self.docker.create_network(req).await.map(|_| ())
    }

    /// Removes a network.
    pub async fn remove_network(&self, id: &str) -> Result<(), bollard::errors::Error> {
        self.docker.remove_network(id).await
    }
}
