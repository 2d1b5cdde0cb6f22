//! The messages of Docker's plugin protocols: activation, the remote network driver
//! (`NetworkDriver.*`) and the remote IPAM driver (`IpamDriver.*`). JSON bodies with
//! Go-style field names; a failure is a body with `Err` set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The content type Docker's plugin client sends and expects.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// Network option naming the Plexus network a Docker network stands for (`-o` and
/// `--ipam-opt`).
pub const NETWORK_OPTION: &str = "plexus.network";
/// Docker's key for driver options (`-o`) inside `Options`.
pub const GENERIC: &str = "com.docker.network.generic";
/// IPAM option Docker sets when it asks for a network's gateway.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
/// Its value for the gateway.
pub const GATEWAY_REQUEST: &str = "com.docker.network.gateway";
/// IPAM option carrying the MAC a container asked for (`--mac-address`).
pub const MAC_OPTION: &str = "com.docker.network.endpoint.macaddress";

/// A failure as Docker reads it: the network driver API calls the field `Err`, the IPAM
/// API `Error`; both are set.
#[derive(Debug, Serialize)]
pub struct ErrorResponse {
    /// The message `docker` shows (network driver calls).
    #[serde(rename = "Err")]
    pub err: String,
    /// The same (IPAM calls).
    #[serde(rename = "Error")]
    pub error: String,
}

/// `/Plugin.Activate`.
#[derive(Debug, Serialize)]
pub struct Activate {
    /// Subsystems served.
    #[serde(rename = "Implements")]
    pub implements: Vec<&'static str>,
}

/// `NetworkDriver.GetCapabilities`.
#[derive(Debug, Serialize)]
pub struct Capabilities {
    /// `local`: Docker refuses `global` outside swarm mode.
    #[serde(rename = "Scope")]
    pub scope: &'static str,
    /// `global`: endpoints on different hosts reach each other.
    #[serde(rename = "ConnectivityScope")]
    pub connectivity_scope: &'static str,
}

/// One address family's data of a network.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpData {
    /// Address space.
    #[serde(default)]
    pub address_space: String,
    /// The pool, CIDR.
    #[serde(default)]
    pub pool: String,
    /// The gateway, CIDR.
    #[serde(default)]
    pub gateway: String,
}

/// `NetworkDriver.CreateNetwork`.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateNetwork {
    /// Docker's id of the network.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// Options, driver options under [`GENERIC`].
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, Value>,
    /// IPv4 data.
    #[serde(rename = "IPv4Data", default, deserialize_with = "null_as_default")]
    pub ipv4_data: Vec<IpData>,
    /// IPv6 data (`--ipv6`).
    #[serde(rename = "IPv6Data", default, deserialize_with = "null_as_default")]
    pub ipv6_data: Vec<IpData>,
}

/// Requests naming only a network.
#[derive(Debug, Clone, Deserialize)]
pub struct NetworkRef {
    /// Docker's id of the network.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// An endpoint's interface as Docker describes it.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Interface {
    /// IPv4 address, CIDR.
    #[serde(rename = "Address", default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// IPv6 address, CIDR.
    #[serde(rename = "AddressIPv6", default, skip_serializing_if = "String::is_empty")]
    pub address_ipv6: String,
    /// MAC address.
    #[serde(rename = "MacAddress", default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

/// `NetworkDriver.CreateEndpoint`.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateEndpoint {
    /// Docker's id of the network.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// Docker's id of the endpoint.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// What Docker decided already.
    #[serde(rename = "Interface", default)]
    pub interface: Option<Interface>,
    /// The endpoint's options: among them `docker run -p`'s port bindings
    /// ([`PORT_MAP_OPTION`]).
    #[serde(rename = "Options", default)]
    pub options: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The option in which libnetwork hands a driver the container's port bindings.
pub const PORT_MAP_OPTION: &str = "com.docker.network.portmap";

/// One port binding as libnetwork writes it (`types.PortBinding`).
#[derive(Debug, Clone, Deserialize)]
pub struct PortBinding {
    /// IP protocol number: 6 TCP, 17 UDP.
    #[serde(rename = "Proto")]
    pub proto: u8,
    /// The container's port.
    #[serde(rename = "Port")]
    pub port: u32,
    /// The host address to bind, if one ("" or unspecified: all).
    #[serde(rename = "HostIP", default)]
    pub host_ip: Option<String>,
    /// The host port (0: Docker's choice).
    #[serde(rename = "HostPort", default)]
    pub host_port: u32,
    /// The end of a host port range (0 or `HostPort`: one port).
    #[serde(rename = "HostPortEnd", default)]
    pub host_port_end: u32,
}

/// Requests naming an endpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct EndpointRef {
    /// Docker's id of the network.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// Docker's id of the endpoint.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// `NetworkDriver.Join`.
#[derive(Debug, Clone, Deserialize)]
pub struct Join {
    /// Docker's id of the network.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// Docker's id of the endpoint.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The container's network namespace.
    #[serde(rename = "SandboxKey", default)]
    pub sandbox_key: String,
}

/// The interface Docker moves into the container.
#[derive(Debug, Clone, Serialize)]
pub struct InterfaceName {
    /// Its name in the host's namespace.
    #[serde(rename = "SrcName")]
    pub src_name: String,
    /// Docker names it this and a number inside the container.
    #[serde(rename = "DstPrefix")]
    pub dst_prefix: String,
}

/// The answer to `Join`.
#[derive(Debug, Clone, Serialize)]
pub struct JoinResponse {
    /// The interface.
    #[serde(rename = "InterfaceName")]
    pub interface_name: InterfaceName,
    /// Default gateway.
    #[serde(rename = "Gateway")]
    pub gateway: String,
    /// IPv6 default gateway, on a dual-stack network.
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "String::is_empty")]
    pub gateway_ipv6: String,
}

/// `IpamDriver.GetDefaultAddressSpaces`.
#[derive(Debug, Serialize)]
pub struct AddressSpaces {
    /// For local networks.
    #[serde(rename = "LocalDefaultAddressSpace")]
    pub local: &'static str,
    /// For global networks.
    #[serde(rename = "GlobalDefaultAddressSpace")]
    pub global: &'static str,
}

/// `IpamDriver.RequestPool`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPool {
    /// The pool asked for (`--subnet`), CIDR; empty if none.
    #[serde(default)]
    pub pool: String,
    /// `--ipam-opt` options.
    #[serde(default, deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, String>,
    /// Whether this is the IPv6 pool.
    #[serde(default, rename = "V6")]
    pub v6: bool,
}

/// The answer to `RequestPool`.
#[derive(Debug, Clone, Serialize)]
pub struct PoolResponse {
    /// Our id of the pool.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The pool, CIDR.
    #[serde(rename = "Pool")]
    pub pool: String,
    /// Nothing.
    #[serde(rename = "Data")]
    pub data: BTreeMap<String, String>,
}

/// `IpamDriver.ReleasePool`.
#[derive(Debug, Clone, Deserialize)]
pub struct PoolRef {
    /// Our id of the pool.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

/// `IpamDriver.RequestAddress` and `ReleaseAddress`.
#[derive(Debug, Clone, Deserialize)]
pub struct AddressRequest {
    /// Our id of the pool.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The address wanted (`--ip`), or empty.
    #[serde(rename = "Address", default)]
    pub address: String,
    /// Options ([`REQUEST_ADDRESS_TYPE`], [`MAC_OPTION`]).
    #[serde(rename = "Options", default, deserialize_with = "null_as_default")]
    pub options: BTreeMap<String, String>,
}

/// The answer to `RequestAddress`.
#[derive(Debug, Clone, Serialize)]
pub struct AddressResponse {
    /// The address, CIDR.
    #[serde(rename = "Address")]
    pub address: String,
    /// Nothing.
    #[serde(rename = "Data")]
    pub data: BTreeMap<String, String>,
}

/// Go sends `null` for an empty map or list.
fn null_as_default<'de, D: serde::Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The Plexus network a set of Docker options names, if any: `-o plexus.network=NAME`.
pub fn named_network(options: &BTreeMap<String, Value>) -> Option<String> {
    options.get(GENERIC)?.get(NETWORK_OPTION)?.as_str().map(str::to_string)
}
