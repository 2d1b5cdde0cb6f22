//! Endpoints (a container's interface on a network) and hosts.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use crate::ids::EndpointKey;
use crate::mac::Mac;
use crate::network::check_name;
use crate::problem::FieldError;

/// What a client sends to create an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// An id of the client's choosing (e.g. a container id prefix); generated if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$")]
    pub id: Option<String>,
    /// The host the endpoint lives on (a registered host's name).
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)]
    pub host: String,
    /// The address wanted (the Pipework case); allocated from the subnet if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Ipv4)]
    pub ip: Option<Ipv4Addr>,
    /// The IPv6 address wanted, on a dual-stack network; allocated from its `subnet6` if
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Ipv6)]
    pub ip6: Option<Ipv6Addr>,
    /// The MAC wanted (unicast, `aa:bb:cc:dd:ee:ff`); derived from the address if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$")]
    pub mac: Option<String>,
    /// Who owns it: a container id or a namespace path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Ports published on the host's addresses (its network must be on a router with
    /// `external`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PublishedPort>,
}

/// The transport of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PortProtocol {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl PortProtocol {
    /// Its name, as iptables and users write it.
    pub const fn as_str(self) -> &'static str {
        match self {
            PortProtocol::Tcp => "tcp",
            PortProtocol::Udp => "udp",
        }
    }
}

impl std::fmt::Display for PortProtocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A port of the endpoint's host forwarded to a port of the endpoint (Docker's `-p`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishedPort {
    /// The port on the host's addresses (1..=65535), unique per protocol on the host.
    #[schema(minimum = 1, maximum = 65535)]
    pub host_port: u32,
    /// The endpoint's port it reaches (1..=65535).
    #[schema(minimum = 1, maximum = 65535)]
    pub port: u32,
    /// `tcp` (the default) or `udp`.
    #[serde(default)]
    pub protocol: PortProtocol,
}

/// The most ports one endpoint may publish.
pub const MAX_PUBLISHED: usize = 256;

impl PublishedPort {
    /// Parses `HOST:PORT[/tcp|/udp]` (or `PORT[/proto]` for the same port on both sides),
    /// as `docker run -p` writes it; `field` names the flag in errors.
    pub fn parse(field: &str, text: &str) -> Result<PublishedPort, FieldError> {
        let (ports, protocol) = match text.rsplit_once('/') {
            Some((p, "tcp")) => (p, PortProtocol::Tcp),
            Some((p, "udp")) => (p, PortProtocol::Udp),
            Some((_, other)) => return Err(FieldError::new(field, format!("protocol {other:?} is neither tcp nor udp"))),
            None => (text, PortProtocol::Tcp),
        };
        let num = |s: &str| s.parse::<u32>().map_err(|_| FieldError::new(field, format!("{s:?} in {text:?} is not a port number")));
        let (host_port, port) = match ports.split_once(':') {
            Some((h, c)) => (num(h)?, num(c)?),
            None => (num(ports)?, num(ports)?),
        };
        PublishedPort { host_port, port, protocol }.checked(field)
    }

    fn checked(self, field: &str) -> Result<PublishedPort, FieldError> {
        for (name, p) in [("host_port", self.host_port), ("port", self.port)] {
            if !(1..=65535).contains(&p) {
                return Err(FieldError::new(format!("{field}.{name}"), format!("{p} is outside 1..=65535")));
            }
        }
        Ok(self)
    }
}

impl std::fmt::Display for PublishedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}/{}", self.host_port, self.port, self.protocol)
    }
}

/// Checks a list of published ports: each in range, none twice, not too many.
fn check_published(publish: &[PublishedPort]) -> Result<(), FieldError> {
    if publish.len() > MAX_PUBLISHED {
        return Err(FieldError::new("publish", format!("{} ports; at most {MAX_PUBLISHED}", publish.len())));
    }
    for (i, p) in publish.iter().enumerate() {
        p.checked(&format!("publish[{i}]"))?;
        if let Some(j) = publish[..i].iter().position(|q| q.host_port == p.host_port && q.protocol == p.protocol) {
            return Err(FieldError::new(format!("publish[{i}].host_port"), format!("{}/{} is published twice (publish[{j}] too)", p.host_port, p.protocol)));
        }
    }
    Ok(())
}

/// An endpoint's new published ports (they replace the old ones).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointPublish {
    /// The ports (none: publish nothing).
    pub publish: Vec<PublishedPort>,
}

impl EndpointPublish {
    /// Checks the ports.
    pub fn validated(self) -> Result<EndpointPublish, FieldError> {
        check_published(&self.publish)?;
        Ok(self)
    }
}

/// An endpoint's new labels (they replace the old ones): what policies select it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointLabels {
    /// The labels.
    pub labels: BTreeMap<String, String>,
}

impl EndpointLabels {
    /// Checks the labels' syntax.
    pub fn validated(self) -> Result<EndpointLabels, FieldError> {
        crate::policy::check_labels("labels", &self.labels)?;
        Ok(self)
    }
}

/// A stored endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Endpoint {
    /// Id, unique in the network.
    pub id: String,
    /// Network name.
    pub network: String,
    /// Host name.
    pub host: String,
    /// Address.
    #[schema(value_type = String, format = Ipv4)]
    pub ip: Ipv4Addr,
    /// Prefix length of the network's subnet.
    pub prefix_len: u8,
    /// Gateway of the network.
    #[schema(value_type = String, format = Ipv4)]
    pub gateway: Ipv4Addr,
    /// IPv6 address, on a dual-stack network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Ipv6)]
    pub ip6: Option<Ipv6Addr>,
    /// Prefix length of the network's IPv6 subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_len6: Option<u8>,
    /// IPv6 gateway of the network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Ipv6)]
    pub gateway6: Option<Ipv6Addr>,
    /// MAC address.
    pub mac: Mac,
    /// Owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Ports published on its host's addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<PublishedPort>,
    /// Store revision of the last change.
    pub revision: u64,
}

/// A host's lease of a block of a host-subnet network (Flannel-style).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Lease {
    /// Network name.
    pub network: String,
    /// Host name.
    pub host: String,
    /// The block, in CIDR form.
    pub block: String,
    /// When it expires unless the host heartbeats (ms since the epoch).
    pub expires_ms: u64,
}

/// Tunnel encapsulation of a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// VXLAN (UDP 4789).
    #[default]
    Vxlan,
    /// Geneve (UDP 6081).
    Geneve,
}

impl Encap {
    /// Every encapsulation.
    pub const ALL: [Encap; 2] = [Encap::Vxlan, Encap::Geneve];

    /// The name of the flow-based tunnel port the agent creates on `br-int` for it.
    pub const fn port_name(self) -> &'static str {
        match self {
            Encap::Vxlan => "vxlan0",
            Encap::Geneve => "geneve0",
        }
    }

    /// Bytes it adds to a container's frame over IPv4: outer Ethernet (14), IPv4 (20), UDP
    /// (8) and its own header (8; Geneve without options).
    pub const fn overhead(self) -> u32 {
        match self {
            Encap::Vxlan | Encap::Geneve => 50,
        }
    }

    /// The largest overhead of any encapsulation: what a container's MTU must leave room for
    /// when the encapsulation is not known.
    pub const MAX_OVERHEAD: u32 = 50;
}

/// What an agent sends to register its host (and, repeated, as its heartbeat).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Host name (DNS label).
    #[schema(pattern = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", max_length = 63)]
    pub name: String,
    /// Underlay address tunnels reach the host at.
    #[schema(value_type = String, format = Ipv4)]
    pub tunnel_ip: Ipv4Addr,
    /// Encapsulation.
    #[serde(default)]
    pub encap: Encap,
    /// MTU of the interface that holds `tunnel_ip`, as the agent found it (576..=65535); the
    /// controller refuses an overlay network whose MTU the tunnels could not carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 576, maximum = 65535)]
    pub underlay_mtu: Option<u32>,
    /// Physical networks the host maps to an interface (`--bridge-mapping`), sorted: where
    /// its underlay networks' endpoints can be.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub physical_networks: Vec<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A registered host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Host {
    /// What the agent registered.
    #[serde(flatten)]
    pub spec: HostSpec,
    /// OpenFlow datapath id of its `br-int`, stable for the host's name.
    pub datapath_id: String,
    /// Milliseconds since the epoch of the last heartbeat, as the controller saw it.
    pub last_seen_ms: u64,
    /// Store revision of the last change.
    pub revision: u64,
}

impl Endpoint {
    /// Its key in the model.
    pub fn key(&self) -> EndpointKey {
        EndpointKey::new(&self.network, &self.id)
    }
}

impl EndpointSpec {
    /// An endpoint on `host` with everything else left to the controller.
    pub fn on(host: &str) -> EndpointSpec {
        EndpointSpec { id: None, host: host.to_string(), ip: None, ip6: None, mac: None, owner: None, labels: BTreeMap::new(), publish: Vec::new() }
    }

    /// With this id.
    pub fn id(mut self, id: &str) -> EndpointSpec {
        self.id = Some(id.to_string());
        self
    }

    /// With this address.
    pub fn ip(mut self, ip: Ipv4Addr) -> EndpointSpec {
        self.ip = Some(ip);
        self
    }

    /// With this IPv6 address.
    pub fn ip6(mut self, ip: Ipv6Addr) -> EndpointSpec {
        self.ip6 = Some(ip);
        self
    }

    /// With this MAC.
    pub fn mac(mut self, mac: &str) -> EndpointSpec {
        self.mac = Some(mac.to_string());
        self
    }

    /// Checks what does not depend on the network.
    pub fn validated(mut self) -> Result<EndpointSpec, FieldError> {
        if let Some(id) = &self.id {
            if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
                return Err(FieldError::new("id", format!("{id:?} must be 1 to 64 letters, digits, '-', '_' or '.'")));
            }
        }
        check_name("host", &self.host)?;
        crate::policy::check_labels("labels", &self.labels)?;
        if let Some(m) = &self.mac {
            self.mac = Some(Mac::parse("mac", m)?.to_string());
        }
        check_published(&self.publish)?;
        Ok(self)
    }
}

impl HostSpec {
    /// Host `name` reached at `tunnel_ip` over VXLAN, without labels.
    pub fn new(name: &str, tunnel_ip: Ipv4Addr) -> HostSpec {
        HostSpec { name: name.to_string(), tunnel_ip, encap: Encap::default(), underlay_mtu: None, physical_networks: Vec::new(), labels: BTreeMap::new() }
    }

    /// Checks the registration.
    pub fn validated(mut self) -> Result<HostSpec, FieldError> {
        check_name("name", &self.name)?;
        if self.physical_networks.len() > 64 {
            return Err(FieldError::new("physical_networks", format!("{} names; at most 64", self.physical_networks.len())));
        }
        for (i, p) in self.physical_networks.iter().enumerate() {
            check_name(&format!("physical_networks[{i}]"), p)?;
        }
        self.physical_networks.sort();
        self.physical_networks.dedup();
        let ip = self.tunnel_ip;
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
            return Err(FieldError::new("tunnel_ip", format!("{ip} cannot carry tunnels")));
        }
        if let Some(m) = self.underlay_mtu {
            if !(576..=65535).contains(&m) {
                return Err(FieldError::new("underlay_mtu", format!("{m} is outside 576..=65535")));
            }
        }
        Ok(self)
    }
}
