//! The CNI plugin (spec 1.0.0): what runtimes that speak CNI (podman, containerd, CRI-O,
//! Kubernetes) call to put a container on a Plexus network. The runtime runs the plugin with
//! the network's configuration on stdin and `CNI_*` variables; the plugin answers one JSON
//! document on stdout — a result, or an error object with a code — and exits.
//!
//! `ADD` creates the endpoint through the controller and plumbs it exactly as `plexus attach`
//! does ([`crate::attach`]); `DEL` undoes whatever of that exists and succeeds when nothing
//! does; `CHECK` compares the endpoint, its switch port and the container's interface with
//! what `ADD` returned. This module is the protocol: variables, configuration, results and
//! errors; [`plugin`] runs the commands.

pub mod plugin;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{json, Value};

/// The versions whose results this plugin writes.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// CNI's well-known error codes (the spec's "Error" section); 100 and up are this plugin's.
pub mod code {
    /// The configuration's `cniVersion` is not one this plugin speaks.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// A field of the configuration is not supported.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// The container (its network namespace) does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// A required `CNI_*` variable is missing or invalid.
    pub const INVALID_ENV: u32 = 4;
    /// Reading or writing failed.
    pub const IO: u32 = 5;
    /// stdin is not the JSON the spec defines.
    pub const DECODE: u32 = 6;
    /// The network configuration is invalid.
    pub const INVALID_CONFIG: u32 = 7;
    /// Transient: the controller is unreachable; the runtime may retry.
    pub const TRY_AGAIN: u32 = 11;
    /// The controller refused the request (its reason is in the message).
    pub const REFUSED: u32 = 100;
    /// `CHECK` found the container's network not as `ADD` made it.
    pub const CHECK_FAILED: u32 = 101;
}

/// A CNI error object: printed on stdout, with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniError {
    /// The error code ([`code`]).
    pub code: u32,
    /// What went wrong, for people.
    pub msg: String,
    /// More detail, for people.
    pub details: String,
}

impl CniError {
    /// An error with `code` and `msg`.
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: String::new() }
    }

    /// The error object, in `version`'s shape.
    pub fn to_json(&self, version: &str) -> Value {
        json!({"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details})
    }
}

impl From<crate::attach::AttachError> for CniError {
    fn from(e: crate::attach::AttachError) -> Self {
        use crate::attach::AttachError as A;
        let c = match &e {
            A::Api(plexus_api::ClientError::Unreachable(_)) => code::TRY_AGAIN,
            A::Api(plexus_api::ClientError::Problem(p)) if p.status == 503 => code::TRY_AGAIN,
            A::Api(_) => code::REFUSED,
            A::Invalid { field: "netns", .. } => code::UNKNOWN_CONTAINER,
            A::Invalid { .. } => code::INVALID_CONFIG,
            A::Ovsdb(_) | A::Plumb(_) => code::IO,
        };
        CniError::new(c, e.to_string())
    }
}

/// The command the runtime asks for (`CNI_COMMAND`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Put the container on the network.
    Add,
    /// Take it off; succeeds for what is already gone.
    Del,
    /// Verify it is as `ADD` left it.
    Check,
    /// Report the versions spoken.
    Version,
}

/// The `CNI_*` variables.
#[derive(Debug, Clone)]
pub struct Env {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS` (may be absent on `DEL`).
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: String,
    /// `CNI_ARGS`, as `KEY=VALUE` pairs.
    pub args: BTreeMap<String, String>,
}

impl Env {
    /// Reads the variables from `vars` (the process environment, or a test's).
    pub fn from_vars(vars: &HashMap<String, String>) -> Result<Env, CniError> {
        let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let command = match get("CNI_COMMAND") {
            Some("ADD") => Command::Add,
            Some("DEL") => Command::Del,
            Some("CHECK") => Command::Check,
            Some("VERSION") => Command::Version,
            Some(other) => return Err(CniError::new(code::INVALID_ENV, format!("CNI_COMMAND: unknown command {other:?} (ADD, DEL, CHECK or VERSION)"))),
            None => return Err(CniError::new(code::INVALID_ENV, "CNI_COMMAND: missing (this is a CNI plugin: a container runtime runs it)")),
        };
        let mut args = BTreeMap::new();
        for pair in get("CNI_ARGS").unwrap_or_default().split(';').filter(|p| !p.is_empty()) {
            let Some((k, v)) = pair.split_once('=') else {
                return Err(CniError::new(code::INVALID_ENV, format!("CNI_ARGS: {pair:?} is not KEY=VALUE")));
            };
            args.insert(k.to_string(), v.to_string());
        }
        if command == Command::Version {
            return Ok(Env { command, container_id: String::new(), netns: None, ifname: String::new(), args });
        }
        let container_id = get("CNI_CONTAINERID").ok_or_else(|| CniError::new(code::INVALID_ENV, "CNI_CONTAINERID: missing"))?.to_string();
        let cid_ok = container_id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && container_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !cid_ok {
            return Err(CniError::new(code::INVALID_ENV, format!("CNI_CONTAINERID: {container_id:?} must be letters, digits, '_', '.' or '-'")));
        }
        let ifname = get("CNI_IFNAME").ok_or_else(|| CniError::new(code::INVALID_ENV, "CNI_IFNAME: missing"))?.to_string();
        if ifname.len() > 15 || ifname.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace()) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_IFNAME: {ifname:?} is not an interface name (at most 15 characters, no '/', ':' or spaces)"),
            ));
        }
        let netns = get("CNI_NETNS").map(PathBuf::from);
        if netns.is_none() && command != Command::Del {
            return Err(CniError::new(code::INVALID_ENV, "CNI_NETNS: missing"));
        }
        Ok(Env { command, container_id, netns, ifname, args })
    }

    /// The endpoint id for this container's interface: stable, so that `DEL` and `CHECK` find
    /// what `ADD` made, and within the API's 64 characters.
    pub fn endpoint_id(&self) -> String {
        let cid = &self.container_id[..self.container_id.len().min(40)];
        format!("{cid}-{:012x}", plexus_api::ids::fnv1a_parts(&[&self.container_id, &self.ifname]) & 0xffff_ffff_ffff)
    }
}

/// The network configuration on stdin: CNI's own fields and this plugin's.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// The CNI version the result is written in.
    pub cni_version: String,
    /// The runtime's name for this network configuration.
    #[serde(default)]
    pub name: String,
    /// The Plexus network the container joins.
    #[serde(default)]
    pub network: Option<String>,
    /// Controller API URL(s), comma-separated.
    #[serde(default)]
    pub api: Option<String>,
    /// This host's name as its agent registered it (default: the system's host name).
    #[serde(default)]
    pub host: Option<String>,
    /// This host's OVSDB (default: `unix:/var/run/openvswitch/db.sock`).
    #[serde(default)]
    pub ovsdb: Option<String>,
    /// The agent's PKI directory: `ca.crt` and `agent.token` (the host's credential).
    #[serde(default, rename = "pki_dir", alias = "pkiDir")]
    pub pki_dir: Option<PathBuf>,
    /// The namespace this host's Open vSwitch runs in, when not the runtime's.
    #[serde(default, rename = "host_netns", alias = "hostNetns")]
    pub host_netns: Option<PathBuf>,
    /// The interface's MTU (default: the network's, bounded by the tunnels').
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Conventional `args`: `args.cni.labels` ([{key, value}]) become the endpoint's labels,
    /// `args.cni.ips` a wanted address.
    #[serde(default)]
    pub args: Option<Value>,
    /// What the runtime passes per container: `ips`, `mac`, `portMappings`.
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// The result `ADD` returned (for `CHECK` and `DEL`).
    #[serde(default)]
    pub prev_result: Option<Value>,
}

/// `runtimeConfig`: the capabilities this plugin honours.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    /// Wanted addresses (`10.1.0.5/24` or `10.1.0.5`); the first IPv4 one is used.
    #[serde(default)]
    pub ips: Vec<String>,
    /// Wanted MAC address.
    #[serde(default)]
    pub mac: Option<String>,
    /// Ports to publish on the host's addresses.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

/// One `portMappings` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// Port on the host.
    pub host_port: u32,
    /// Port in the container.
    pub container_port: u32,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// A host address to bind: not supported (Plexus publishes on every host address).
    #[serde(default)]
    pub host_ip: Option<String>,
}

impl NetConf {
    /// Parses stdin, and checks the version before anything else.
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| CniError::new(code::DECODE, format!("the network configuration on stdin: {e}")))?;
        if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("cniVersion: {:?} is not supported (supported: {})", conf.cni_version, SUPPORTED_VERSIONS.join(", ")),
            ));
        }
        Ok(conf)
    }

    /// The Plexus network, or why there is none.
    pub fn network(&self) -> Result<&str, CniError> {
        match self.network.as_deref() {
            Some(n) if !n.is_empty() => Ok(n),
            _ => Err(CniError::new(code::INVALID_CONFIG, format!("network: missing (the Plexus network that {:?} puts containers on)", self.name))),
        }
    }

    /// The address wanted: `runtimeConfig.ips`, `args.cni.ips`, or `IP=` in `CNI_ARGS`.
    pub fn wanted_ip(&self, env: &Env) -> Result<Option<Ipv4Addr>, CniError> {
        self.wanted(env, false).map(|a| a.parse().map_err(|_| CniError::new(code::INVALID_CONFIG, format!("ips: {a:?} is not an IPv4 address")))).transpose()
    }

    /// The IPv6 address wanted, from the same places as [`Conf::wanted_ip`].
    pub fn wanted_ip6(&self, env: &Env) -> Result<Option<std::net::Ipv6Addr>, CniError> {
        self.wanted(env, true).map(|a| a.parse().map_err(|_| CniError::new(code::INVALID_CONFIG, format!("ips: {a:?} is not an IPv6 address")))).transpose()
    }

    /// The first wanted address of one family (IPv6 ones hold a ':'), without its prefix.
    fn wanted<'a>(&'a self, env: &'a Env, v6: bool) -> Option<&'a str> {
        let from_args = self.args.as_ref().and_then(|a| a.pointer("/cni/ips")).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str);
        let mut candidates = self.runtime_config.ips.iter().map(String::as_str).chain(from_args).chain(env.args.get("IP").map(String::as_str));
        candidates.find(|c| c.contains(':') == v6).map(|c| c.split('/').next().unwrap_or(c))
    }

    /// The labels in `args.cni.labels`.
    pub fn labels(&self) -> Result<BTreeMap<String, String>, CniError> {
        let mut out = BTreeMap::new();
        let Some(list) = self.args.as_ref().and_then(|a| a.pointer("/cni/labels")) else { return Ok(out) };
        let bad = || CniError::new(code::INVALID_CONFIG, "args.cni.labels: must be a list of {\"key\": ..., \"value\": ...}");
        for l in list.as_array().ok_or_else(bad)? {
            let (Some(k), Some(v)) = (l.get("key").and_then(Value::as_str), l.get("value").and_then(Value::as_str)) else { return Err(bad()) };
            out.insert(k.to_string(), v.to_string());
        }
        plexus_api::policy::check_labels("args.cni.labels", &out).map_err(|e| CniError::new(code::INVALID_CONFIG, e.to_string()))?;
        Ok(out)
    }

    /// `runtimeConfig.portMappings` as ports to publish.
    pub fn published(&self) -> Result<Vec<plexus_api::PublishedPort>, CniError> {
        let mut out = Vec::new();
        for (i, m) in self.runtime_config.port_mappings.iter().enumerate() {
            let field = format!("runtimeConfig.portMappings[{i}]");
            if m.host_ip.as_deref().is_some_and(|ip| !ip.is_empty() && ip != "0.0.0.0") {
                return Err(CniError::new(code::UNSUPPORTED_FIELD, format!("{field}.hostIP: Plexus publishes on every address of the host; leave it empty")));
            }
            let spec = format!("{}:{}/{}", m.host_port, m.container_port, m.protocol.as_deref().unwrap_or("tcp").to_ascii_lowercase());
            out.push(plexus_api::PublishedPort::parse(&field, &spec).map_err(|e| CniError::new(code::INVALID_CONFIG, e.to_string()))?);
        }
        Ok(out)
    }
}

/// The answer to `VERSION`.
pub fn version_result(requested: &str) -> Value {
    json!({"cniVersion": if SUPPORTED_VERSIONS.contains(&requested) { requested } else { "1.0.0" }, "supportedVersions": SUPPORTED_VERSIONS})
}

/// An `ADD` result in `version`'s shape: the host's end and the container's interface, its
/// address, the default route when the plugin added it, and the gateway as the DNS server.
pub fn add_result(version: &str, host_if: &str, ifname: &str, netns: &std::path::Path, e: &plexus_api::Endpoint, default_route: bool) -> Value {
    let mut ip = json!({"address": format!("{}/{}", e.ip, e.prefix_len), "gateway": e.gateway.to_string(), "interface": 1});
    if version != "1.0.0" {
        // Before 1.0.0 every address names its family.
        ip["version"] = json!("4");
    }
    let mut ips = vec![ip];
    let mut routes: Vec<Value> = if default_route { vec![json!({"dst": "0.0.0.0/0", "gw": e.gateway.to_string()})] } else { Vec::new() };
    if let (Some(ip6), Some(len), Some(gw6)) = (e.ip6, e.prefix_len6, e.gateway6) {
        let mut ip = json!({"address": format!("{ip6}/{len}"), "gateway": gw6.to_string(), "interface": 1});
        if version != "1.0.0" {
            ip["version"] = json!("6");
        }
        ips.push(ip);
        if default_route {
            routes.push(json!({"dst": "::/0", "gw": gw6.to_string()}));
        }
    }
    json!({
        "cniVersion": version,
        "interfaces": [
            {"name": host_if},
            {"name": ifname, "mac": e.mac.to_string(), "sandbox": netns.display().to_string()},
        ],
        "ips": ips,
        "routes": routes,
        // The gateway answers DNS (the host agent's responder): the network's names, and
        // the host's resolvers for the rest.
        "dns": {"nameservers": [e.gateway.to_string()], "search": [e.network]},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn env_names_what_is_missing_or_wrong() {
        let e = Env::from_vars(&vars(&[])).unwrap_err();
        assert_eq!((e.code, e.msg.starts_with("CNI_COMMAND")), (code::INVALID_ENV, true));
        let e = Env::from_vars(&vars(&[("CNI_COMMAND", "GC2")])).unwrap_err();
        assert!(e.msg.contains("unknown command"), "{e:?}");
        let e = Env::from_vars(&vars(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")])).unwrap_err();
        assert_eq!(e.msg, "CNI_NETNS: missing");
        // DEL without a namespace is legal: the runtime may have lost it already.
        let d = Env::from_vars(&vars(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")])).unwrap();
        assert!(d.netns.is_none());
        let e = Env::from_vars(&vars(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", "c/1"), ("CNI_IFNAME", "eth0")])).unwrap_err();
        assert!(e.msg.starts_with("CNI_CONTAINERID"), "{e:?}");
    }

    #[test]
    fn endpoint_ids_are_stable_distinct_and_short() {
        let env = |cid: &str, ifname: &str| Env::from_vars(&vars(&[("CNI_COMMAND", "DEL"), ("CNI_CONTAINERID", cid), ("CNI_IFNAME", ifname)])).unwrap();
        let long = "a".repeat(64);
        let (a, b) = (env(&long, "eth0").endpoint_id(), env(&long, "eth1").endpoint_id());
        assert_ne!(a, b);
        assert_eq!(a, env(&long, "eth0").endpoint_id());
        assert!(a.len() <= 64, "{a}");
        assert!(plexus_api::EndpointSpec::on("h").id(&a).validated().is_ok());
    }

    #[test]
    fn configuration_errors_name_the_field() {
        let e = NetConf::parse(br#"{"cniVersion":"9.9.9","name":"n","type":"plexus-cni"}"#).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        let e = NetConf::parse(b"{").unwrap_err();
        assert_eq!(e.code, code::DECODE);
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"plexus-cni"}"#).unwrap();
        assert!(c.network().unwrap_err().msg.starts_with("network: missing"));
        let c =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","network":"x","runtimeConfig":{"portMappings":[{"hostPort":0,"containerPort":80}]}}"#).unwrap();
        assert!(c.published().unwrap_err().msg.starts_with("runtimeConfig.portMappings[0]"));
    }

    #[test]
    fn a_dual_stack_endpoint_gets_both_families_in_its_result() {
        let c = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","network":"x","runtimeConfig":{"ips":["fd00::7/64","10.0.0.7/24"]}}"#).unwrap();
        let env = Env::from_vars(&vars(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "c1"), ("CNI_NETNS", "/x"), ("CNI_IFNAME", "eth0")])).unwrap();
        assert_eq!(c.wanted_ip(&env).unwrap(), Some("10.0.0.7".parse().unwrap()));
        assert_eq!(c.wanted_ip6(&env).unwrap(), Some("fd00::7".parse().unwrap()));
        let e = plexus_api::Endpoint {
            id: "e".into(),
            network: "x".into(),
            host: "h".into(),
            ip: "10.0.0.7".parse().unwrap(),
            prefix_len: 24,
            gateway: "10.0.0.1".parse().unwrap(),
            ip6: Some("fd00::7".parse().unwrap()),
            prefix_len6: Some(64),
            gateway6: Some("fd00::1".parse().unwrap()),
            mac: plexus_api::Mac::parse("mac", "0a:58:0a:00:00:07").unwrap(),
            owner: None,
            labels: Default::default(),
            publish: Vec::new(),
            revision: 1,
        };
        let r = add_result("1.0.0", "p1", "eth0", std::path::Path::new("/x"), &e, true);
        assert_eq!(r["ips"][1]["address"], "fd00::7/64");
        assert_eq!(r["ips"][1]["gateway"], "fd00::1");
        assert_eq!(r["routes"][1]["dst"], "::/0");
        let old = add_result("0.4.0", "p1", "eth0", std::path::Path::new("/x"), &e, false);
        assert_eq!((old["ips"][1]["version"].as_str(), old["routes"].as_array().map(Vec::len)), (Some("6"), Some(0)));
    }
}
