//! The CNI commands: `ADD`, `DEL`, `CHECK`, `VERSION`, on the host's switch and through the
//! controller with the host's agent credential.

use std::collections::HashMap;
use std::time::Duration;

use plexus_ovs::ovsdb::{Client as Ovsdb, ClientOptions, VSwitch};
use serde_json::Value;

use super::{code, CniError, Command, Env, NetConf};
use crate::attach::{self, AttachRequest};

/// Where the controller is, when the configuration does not say.
pub const DEFAULT_API: &str = "https://127.0.0.1:6543";
/// Where OVSDB is, when the configuration does not say.
pub const DEFAULT_OVSDB: &str = "unix:/var/run/openvswitch/db.sock";

/// Runs one invocation: the variables and stdin in, the JSON to print out. `Err` carries the
/// error object and the version to write it in.
pub async fn run(vars: &HashMap<String, String>, stdin: &[u8]) -> Result<Value, (CniError, String)> {
    // Errors before the version is known are written in the newest version.
    let env = Env::from_vars(vars).map_err(|e| (e, "1.0.0".to_string()))?;
    if env.command == Command::Version {
        let requested = serde_json::from_slice::<Value>(stdin).ok().and_then(|v| v.get("cniVersion").and_then(Value::as_str).map(str::to_string));
        return Ok(super::version_result(requested.as_deref().unwrap_or("1.0.0")));
    }
    let conf = NetConf::parse(stdin).map_err(|e| (e, "1.0.0".to_string()))?;
    let version = conf.cni_version.clone();
    let out = match env.command {
        Command::Add => add(&env, &conf).await,
        Command::Del => del(&env, &conf).await.map(|()| Value::Null),
        Command::Check => check(&env, &conf).await.map(|()| Value::Null),
        Command::Version => Ok(super::version_result(&version)),
    };
    out.map_err(|e| (e, version))
}

/// The controller and this host's switch, as the configuration names them.
async fn connect(conf: &NetConf) -> Result<(plexus_api::Client, VSwitch), CniError> {
    let pki = conf
        .pki_dir
        .clone()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "pki_dir: missing (the host agent's --pki-dir, which holds ca.crt and agent.token)"))?;
    let ca = pki.join("ca.crt");
    let token = std::fs::read_to_string(pki.join("agent.token")).map_err(|e| {
        CniError::new(code::INVALID_CONFIG, format!("pki_dir: no agent credential in {} ({e}): point it at the host agent's --pki-dir", pki.display()))
    })?;
    let creds = plexus_api::Credentials::from_files(ca.exists().then_some(ca.as_path()), Some(&token))
        .map_err(|e| CniError::new(code::INVALID_CONFIG, format!("pki_dir: {e}")))?;
    let api = conf.api.as_deref().unwrap_or(DEFAULT_API);
    let client = plexus_api::Client::new(api, &creds).map_err(|e| CniError::new(code::INVALID_CONFIG, format!("api: {e}")))?;
    let target_text = conf.ovsdb.as_deref().unwrap_or(DEFAULT_OVSDB);
    let target = target_text.parse().map_err(|e| CniError::new(code::INVALID_CONFIG, format!("ovsdb: {target_text:?}: {e}")))?;
    let db = Ovsdb::connect(target, ClientOptions::default(), Duration::from_secs(5))
        .await
        .map_err(|e| CniError::new(code::TRY_AGAIN, format!("ovsdb: cannot reach {target_text} ({e}): is Open vSwitch running?")))?;
    Ok((client, VSwitch::new(db)))
}

/// The container's name as its DNS name (the `name` label) when the runtime passes it
/// (`K8S_POD_NAME` in `CNI_ARGS`: podman's container name, Kubernetes' pod name) and it is a
/// DNS label; a `name` label from `args` wins.
fn with_name(mut labels: std::collections::BTreeMap<String, String>, env: &super::Env) -> std::collections::BTreeMap<String, String> {
    if let Some(n) = env.args.get("K8S_POD_NAME").filter(|n| plexus_api::names::is_dns_label(n)) {
        labels.entry(plexus_api::names::NAME_LABEL.to_string()).or_insert_with(|| n.to_ascii_lowercase());
    }
    labels
}

fn host_name(conf: &NetConf) -> Result<String, CniError> {
    if let Some(h) = &conf.host {
        return Ok(h.clone());
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .map_err(|e| CniError::new(code::IO, format!("host: reading the host name ({e}); set \"host\" in the configuration")))
}

async fn add(env: &Env, conf: &NetConf) -> Result<Value, CniError> {
    let network = conf.network()?.to_string();
    let netns = env.netns.clone().ok_or_else(|| CniError::new(code::INVALID_ENV, "CNI_NETNS: missing"))?;
    if !netns.exists() {
        return Err(CniError::new(code::UNKNOWN_CONTAINER, format!("CNI_NETNS: {} does not exist", netns.display())));
    }
    let mac = conf.runtime_config.mac.clone().or_else(|| env.args.get("MAC").cloned());
    let req = AttachRequest {
        network,
        host: host_name(conf)?,
        id: Some(env.endpoint_id()),
        ip: conf.wanted_ip(env)?,
        ip6: conf.wanted_ip6(env)?,
        mac,
        ifname: env.ifname.clone(),
        netns: netns.clone(),
        host_netns: conf.host_netns.clone(),
        mtu: conf.mtu,
        owner: format!("cni:{}", env.container_id),
        labels: with_name(conf.labels()?, env),
        publish: conf.published()?,
        mgmt: attach::mgmt_socket(conf.ovsdb.as_deref().unwrap_or(DEFAULT_OVSDB)),
    };
    let (api, vs) = connect(conf).await?;
    let a = attach::attach(&api, &vs, &req).await?;
    tracing::info!(container = %env.container_id, endpoint = %a.endpoint.id, ip = %a.endpoint.ip, "CNI ADD");
    Ok(super::add_result(&conf.cni_version, &a.port, &env.ifname, &netns, &a.endpoint, a.default_route))
}

async fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let network = conf.network()?;
    let (api, vs) = connect(conf).await?;
    let d = attach::detach(&api, &vs, conf.host_netns.as_deref(), network, &env.endpoint_id()).await?;
    tracing::info!(container = %env.container_id, ?d, "CNI DEL");
    Ok(())
}

async fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let network = conf.network()?;
    let failed = |msg: String| CniError::new(code::CHECK_FAILED, msg);
    let prev = conf.prev_result.as_ref().ok_or_else(|| CniError::new(code::INVALID_CONFIG, "prevResult: CHECK needs the result ADD returned"))?;
    let netns = env.netns.clone().ok_or_else(|| CniError::new(code::INVALID_ENV, "CNI_NETNS: missing"))?;
    if !netns.exists() {
        return Err(CniError::new(code::UNKNOWN_CONTAINER, format!("CNI_NETNS: {} does not exist", netns.display())));
    }
    let (api, vs) = connect(conf).await?;
    let id = env.endpoint_id();
    let e = match api.endpoint(network, &id).await {
        Ok(e) => e,
        Err(plexus_api::ClientError::Problem(p)) if p.status == 404 => return Err(failed(format!("endpoint {id} is no longer in network {network}"))),
        Err(err) => return Err(attach::AttachError::Api(err).into()),
    };
    let want = format!("{}/{}", e.ip, e.prefix_len);
    let in_prev = prev.get("ips").and_then(Value::as_array).into_iter().flatten().any(|ip| ip.get("address").and_then(Value::as_str) == Some(want.as_str()));
    if !in_prev {
        return Err(failed(format!("prevResult: does not hold the endpoint's address {want}")));
    }
    let port = plexus_api::ids::port_name(network, &id);
    match vs.ofport(&port).await {
        Ok(Some(n)) if n > 0 => {}
        Ok(_) | Err(plexus_ovs::ovsdb::OvsdbError::NotFound(_)) => {
            return Err(failed(format!("port {port} is not on {} (or has no OpenFlow port number)", crate::agent::BR_INT)))
        }
        Err(err) => return Err(attach::AttachError::Ovsdb(err).into()),
    }
    let (ns, ifname) = (netns.clone(), env.ifname.clone());
    let seen = tokio::task::spawn_blocking(move || crate::plumb::inspect(&ns, &ifname))
        .await
        .map_err(|err| CniError::new(code::IO, err.to_string()))?
        .map_err(|err| CniError::new(code::IO, err.to_string()))?
        .ok_or_else(|| failed(format!("the container has no interface {}", env.ifname)))?;
    if seen.mac != e.mac.octets() {
        return Err(failed(format!("{}: MAC {} is not the endpoint's {}", env.ifname, plexus_api::mac::format_mac(seen.mac), e.mac)));
    }
    if !seen.addrs.contains(&(e.ip, e.prefix_len)) {
        return Err(failed(format!("{}: does not hold {want}", env.ifname)));
    }
    if !seen.up {
        return Err(failed(format!("{} is down", env.ifname)));
    }
    Ok(())
}
