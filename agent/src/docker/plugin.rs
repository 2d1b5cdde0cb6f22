//! The plugin's handlers: Docker's network and IPAM driver calls turned into Plexus API calls
//! and host plumbing. Every handler checks its request before it changes anything, and a
//! failed `Join` removes what it made.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use plexus_api::{Client, ClientError, EndpointSpec, NetworkSpec, PortProtocol, PublishedPort};
use plexus_ovs::ovsdb::{InterfaceType, PortSpec, VSwitch};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

use super::engine::Engine;
use super::protocol::*;
use super::state::{EndpointLink, NetworkLink, StateFile, Wiring};
use crate::agent::BR_INT;
use crate::attach::ENDPOINT_KEY;
use crate::plumb;
use ipam::{release_address, release_pool, request_address, request_pool};

mod ipam;

/// The `external_ids` key naming a port's Docker endpoint.
pub const DOCKER_ENDPOINT_KEY: &str = "plexus-docker-endpoint";

/// What the handlers share.
#[derive(Debug)]
pub struct Plugin {
    /// The controller.
    pub api: Client,
    /// This host's switch.
    pub vs: VSwitch,
    /// This host's registered name.
    pub host: String,
    /// MTU of container interfaces.
    pub mtu: u32,
    /// The userspace datapath needs TX checksum offload off on veths.
    pub checksum_offload_off: bool,
    /// What is remembered.
    pub state: StateFile,
    /// The local Docker engine.
    pub engine: Engine,
    /// Veths being removed after a Leave, by port name: a Join of the same endpoint waits
    /// for its removal first.
    pub removing: std::sync::Mutex<std::collections::HashMap<String, tokio::task::JoinHandle<()>>>,
}

/// A failure shown to the Docker user.
#[derive(Debug)]
pub struct PluginError(String);

impl<E: std::fmt::Display> From<E> for PluginError {
    fn from(e: E) -> Self {
        PluginError(e.to_string())
    }
}

fn fail(msg: impl Into<String>) -> PluginError {
    PluginError(msg.into())
}

/// What the controller said, in words for `docker`'s user.
fn api_err(what: &str, e: ClientError) -> PluginError {
    match e {
        ClientError::Problem(p) => fail(format!("plexus: {what}: {}", p.detail)),
        other => fail(format!("plexus: {what}: the Plexus controller is unreachable ({other})")),
    }
}

type Reply = Result<serde_json::Value, PluginError>;

fn reply(r: Reply) -> Response {
    let body = match r {
        Ok(v) => v,
        Err(PluginError(e)) => {
            tracing::warn!(error = %e, "plugin call refused");
            serde_json::to_value(ErrorResponse { error: e.clone(), err: e }).unwrap_or_default()
        }
    };
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body.to_string()).into_response()
}

fn parse<T: DeserializeOwned>(method: &str, body: &Bytes) -> Result<T, PluginError> {
    // Docker sends an empty body for calls without arguments.
    let body: &[u8] = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| fail(format!("{method}: invalid request: {e}")))
}

fn ok<T: Serialize>(v: T) -> Reply {
    Ok(serde_json::to_value(v)?)
}

macro_rules! handler {
    ($name:literal, $f:ident) => {
        post(|AxState(p): AxState<Arc<Plugin>>, body: Bytes| async move {
            tracing::debug!(method = $name, body = %String::from_utf8_lossy(&body), "plugin call");
            let t = std::time::Instant::now();
            let res = async { $f(&p, parse($name, &body)?).await }.await;
            let result = if res.is_ok() { "ok" } else { "failed" };
            crate::agent::health::PLUGIN_CALLS.observe(format!("method=\"{}\",result=\"{result}\"", $name), t.elapsed());
            let r = reply(res);
            // Docker waits on each of these: their time is the network's share of `docker run`.
            tracing::info!(method = $name, ms = format!("{:.1}", t.elapsed().as_secs_f64() * 1e3), "plugin call served");
            r
        })
    };
}

/// The routes Docker calls.
pub fn router(p: Arc<Plugin>) -> Router {
    Router::new()
        .route("/Plugin.Activate", post(|| async { reply(ok(Activate { implements: vec!["NetworkDriver", "IpamDriver"] })) }))
        .route("/NetworkDriver.GetCapabilities", post(|| async { reply(ok(Capabilities { scope: "local", connectivity_scope: "global" })) }))
        .route("/NetworkDriver.CreateNetwork", handler!("CreateNetwork", create_network))
        .route("/NetworkDriver.DeleteNetwork", handler!("DeleteNetwork", delete_network))
        .route("/NetworkDriver.CreateEndpoint", handler!("CreateEndpoint", create_endpoint))
        .route("/NetworkDriver.EndpointOperInfo", post(|| async { reply(Ok(json!({"Value": {}}))) }))
        .route("/NetworkDriver.DeleteEndpoint", handler!("DeleteEndpoint", delete_endpoint))
        .route("/NetworkDriver.Join", handler!("Join", join))
        .route("/NetworkDriver.Leave", handler!("Leave", leave))
        .route("/NetworkDriver.DiscoverNew", post(|| async { reply(Ok(json!({}))) }))
        .route("/NetworkDriver.DiscoverDelete", post(|| async { reply(Ok(json!({}))) }))
        .route("/NetworkDriver.ProgramExternalConnectivity", post(|| async { reply(Ok(json!({}))) }))
        .route("/NetworkDriver.RevokeExternalConnectivity", post(|| async { reply(Ok(json!({}))) }))
        .route("/NetworkDriver.AllocateNetwork", post(|| async { reply(Ok(json!({}))) }))
        .route("/NetworkDriver.FreeNetwork", post(|| async { reply(Ok(json!({}))) }))
        // No MAC from Docker by default: an endpoint then gets the MAC its address maps to, so an
        // address used again (a container restarted) keeps its MAC and its peers' ARP caches
        // stay right. A MAC asked for with --mac-address still reaches CreateEndpoint.
        .route("/IpamDriver.GetCapabilities", post(|| async { reply(Ok(json!({"RequiresMACAddress": false, "RequiresRequestReplay": false}))) }))
        .route("/IpamDriver.GetDefaultAddressSpaces", post(|| async { reply(ok(AddressSpaces { local: "plexus", global: "plexus-global" })) }))
        .route("/IpamDriver.RequestPool", handler!("RequestPool", request_pool))
        .route("/IpamDriver.ReleasePool", handler!("ReleasePool", release_pool))
        .route("/IpamDriver.RequestAddress", handler!("RequestAddress", request_address))
        .route("/IpamDriver.ReleaseAddress", handler!("ReleaseAddress", release_address))
        .with_state(p)
}

async fn create_network(p: &Arc<Plugin>, r: CreateNetwork) -> Reply {
    let v4 = r.ipv4_data.first().cloned().unwrap_or_default();
    let v6 = r.ipv6_data.first().cloned().filter(|d| !d.pool.is_empty());
    let subnet6 = v6.as_ref().map(|d| d.pool.clone());
    let gateway6 = v6.as_ref().and_then(|d| d.gateway.split('/').next().and_then(|g| g.parse::<Ipv6Addr>().ok()));
    if let Some(name) = named_network(&r.options) {
        let origin = match p.api.network(&name).await {
            Ok(_) => false,
            Err(ClientError::Problem(pr)) if pr.status == 404 => {
                if v4.pool.is_empty() {
                    return Err(fail(format!("plexus: no network {name}; give --subnet to create it")));
                }
                let spec = NetworkSpec { subnet6: subnet6.clone(), gateway6, ..NetworkSpec::overlay(&name, &v4.pool) };
                p.api.create_network(&spec).await.map_err(|e| api_err(&format!("creating network {name}"), e))?;
                true
            }
            Err(e) => return Err(api_err(&format!("network {name}"), e)),
        };
        p.state.update(|s| s.networks.insert(r.network_id.clone(), NetworkLink { plexus: name, origin }))?;
        return Ok(json!({}));
    }
    if v4.pool.is_empty() {
        return Err(fail("plexus: give the network a --subnet"));
    }
    // Docker names the network only after this call returns: learn the name from it then,
    // and make the Plexus network of that name.
    let network_id = r.network_id.clone();
    let pool = v4.pool.clone();
    let gw = v4.gateway.split('/').next().and_then(|g| g.parse::<Ipv4Addr>().ok());
    let pending: Vec<String> = p
        .state
        .get()
        .pools
        .iter()
        .filter(|(id, n)| n.is_none() && (id.ends_with(&format!("@{pool}")) || subnet6.as_ref().is_some_and(|s6| id.ends_with(&format!("@{s6}")))))
        .map(|(id, _)| id.clone())
        .collect();
    let p = p.clone();
    tokio::spawn(async move {
        let Some(name) = p.engine.wait_network_name(&network_id, Duration::from_secs(10)).await else {
            tracing::warn!(%network_id, "Docker never showed the network; no Plexus network made for it");
            return;
        };
        let spec = NetworkSpec { gateway: gw, subnet6, gateway6, ..NetworkSpec::overlay(&name, &pool) };
        match p.api.create_network(&spec).await {
            Ok(_) => tracing::info!(%name, %pool, "Plexus network created for a Docker network"),
            Err(ClientError::Problem(pr)) if pr.status == 409 => tracing::info!(%name, "a Plexus network of that name exists; using it"),
            Err(e) => {
                tracing::warn!(%name, error = %e, "cannot create the Plexus network");
                return;
            }
        }
        let _ = p.state.update(|s| {
            s.networks.insert(network_id, NetworkLink { plexus: name.clone(), origin: true });
            for pid in pending {
                s.pools.insert(pid, Some(name.clone()));
            }
        });
    });
    Ok(json!({}))
}

async fn delete_network(p: &Plugin, r: NetworkRef) -> Reply {
    let link = p.state.update(|s| s.networks.remove(&r.network_id))?;
    if let Some(NetworkLink { plexus, origin: true }) = link {
        match p.api.delete_network(&plexus, false).await {
            Ok(()) => tracing::info!(network = %plexus, "Plexus network removed with its Docker network"),
            Err(ClientError::Problem(pr)) if pr.status == 404 => {}
            Err(e) => tracing::warn!(network = %plexus, error = %e, "the Plexus network stays"),
        }
    }
    Ok(json!({}))
}

fn network_of(p: &Plugin, network_id: &str) -> Result<String, PluginError> {
    p.state
        .get()
        .networks
        .get(network_id)
        .map(|l| l.plexus.clone())
        .ok_or_else(|| fail(format!("plexus: unknown network {network_id}; is it a Plexus network?")))
}

/// `docker run -p`'s bindings as Plexus published ports; what Plexus cannot do as asked (a
/// port Docker would choose, a range, one host address) is refused, not half done.
fn published_ports(options: Option<&serde_json::Map<String, serde_json::Value>>) -> Result<Vec<PublishedPort>, PluginError> {
    let Some(raw) = options.and_then(|o| o.get(PORT_MAP_OPTION)).filter(|v| !v.is_null()) else { return Ok(Vec::new()) };
    let bindings: Vec<PortBinding> = serde_json::from_value(raw.clone()).map_err(|e| fail(format!("plexus: unreadable port bindings: {e}")))?;
    bindings
        .iter()
        .map(|b| {
            let protocol = match b.proto {
                6 => PortProtocol::Tcp,
                17 => PortProtocol::Udp,
                n => return Err(fail(format!("plexus: publishing IP protocol {n} is not supported (tcp and udp are)"))),
            };
            if b.host_port == 0 {
                return Err(fail(format!("plexus: -p {}: give the host port too (-p HOST_PORT:{}); Plexus does not choose one", b.port, b.port)));
            }
            if b.host_port_end != 0 && b.host_port_end != b.host_port {
                return Err(fail(format!("plexus: -p {}-{}: host port ranges are not supported; publish one port each", b.host_port, b.host_port_end)));
            }
            if b.host_ip.as_deref().is_some_and(|ip| !matches!(ip, "" | "0.0.0.0" | "::")) {
                return Err(fail(format!(
                    "plexus: -p {}:…: Plexus publishes on all of the host's addresses; leave the address out",
                    b.host_ip.as_deref().unwrap_or_default()
                )));
            }
            PublishedPort::parse("-p", &format!("{}:{}/{protocol}", b.host_port, b.port)).map_err(|e| fail(format!("plexus: {e}")))
        })
        .collect()
}

async fn create_endpoint(p: &Plugin, r: CreateEndpoint) -> Reply {
    let network = network_of(p, &r.network_id)?;
    let publish = published_ports(r.options.as_ref())?;
    let iface = r.interface.unwrap_or_default();
    let ip: Ipv4Addr = iface
        .address
        .split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| fail("plexus: the endpoint has no IPv4 address (create the network with --ipam-driver plexus)"))?;
    let ip6: Option<Ipv6Addr> = match iface.address_ipv6.split('/').next().filter(|a| !a.is_empty()) {
        Some(a) => Some(a.parse().map_err(|_| fail(format!("plexus: {a:?} is not an IPv6 address")))?),
        None => None,
    };
    let eps = p.api.endpoints(&network).await.map_err(|e| api_err(&format!("endpoints of {network}"), e))?;
    let asked_mac = Some(iface.mac_address.clone()).filter(|m| !m.is_empty());
    let create = |owner: String| {
        let spec = EndpointSpec {
            id: None,
            host: p.host.clone(),
            ip: Some(ip),
            ip6,
            mac: asked_mac.clone(),
            owner: Some(owner),
            labels: Default::default(),
            publish: Vec::new(),
        };
        let (api, network) = (p.api.clone(), network.clone());
        async move { api.create_endpoint(&network, &spec).await.map_err(|e| api_err(&format!("an endpoint in {network}"), e)) }
    };
    let (e, ipam) = match eps.into_iter().find(|e| e.ip == ip) {
        Some(e) if e.host == p.host && e.owner.as_deref().is_some_and(|o| o.starts_with("docker ipam")) => {
            let other_mac = asked_mac.as_deref().is_some_and(|m| !m.eq_ignore_ascii_case(&e.mac.to_string()));
            if other_mac || (ip6.is_some() && ip6 != e.ip6) {
                // Our own reservation, made before the MAC or the wanted IPv6 address was
                // known: make it again with them.
                p.api.delete_endpoint(&network, &e.id).await.map_err(|err| api_err("re-creating the endpoint", err))?;
                (create(format!("docker ipam on {}", p.host)).await?, true)
            } else {
                (e, true)
            }
        }
        Some(e) => return Err(fail(format!("plexus: {ip} is already taken in {network} (endpoint {} on {})", e.id, e.host))),
        None => (create(format!("docker on {}", p.host)).await?, false),
    };
    if !publish.is_empty() {
        if let Err(err) = p.api.set_endpoint_publish(&network, &e.id, &publish).await {
            if !ipam {
                // Made for this container, which will not start: leave nothing behind.
                let _ = p.api.delete_endpoint(&network, &e.id).await;
            }
            return Err(api_err("publishing the container's ports", err));
        }
        tracing::info!(%network, id = %e.id, ports = publish.len(), "ports published");
    }
    let net = p.api.network(&network).await.map_err(|err| api_err(&format!("network {network}"), err))?;
    let wiring = Some(Wiring::of(&net, e.mac, e.gateway));
    p.state.update(|s| {
        s.claimed6.remove(&e.id);
        s.endpoints.insert(r.endpoint_id.clone(), EndpointLink { network, id: e.id.clone(), ipam, wiring })
    })?;
    let mac = if iface.mac_address.is_empty() { e.mac.to_string() } else { String::new() };
    Ok(json!({"Interface": Interface { mac_address: mac, ..Default::default() }}))
}

fn endpoint_of(p: &Plugin, endpoint_id: &str) -> Result<EndpointLink, PluginError> {
    p.state.get().endpoints.get(endpoint_id).cloned().ok_or_else(|| fail(format!("plexus: unknown endpoint {endpoint_id}")))
}

/// Names of the veth pair of an endpoint: the OVS port and the end Docker moves.
fn veth_names(l: &EndpointLink) -> (String, String) {
    let port = plexus_api::ids::port_name(&l.network, &l.id);
    let peer = format!("t{}", &port[1..]);
    (port, peer)
}

async fn unplug(p: &Plugin, port: &str) -> Result<(), PluginError> {
    // A Leave may still be removing this veth: let it finish rather than race it.
    let removing = p.removing.lock().unwrap_or_else(|e| e.into_inner()).remove(port);
    if let Some(task) = removing {
        let _ = task.await;
    }
    p.vs.delete_port(BR_INT, port).await?;
    let port = port.to_string();
    tokio::task::spawn_blocking(move || plumb::unplumb(None, &port)).await??;
    Ok(())
}

async fn join(p: &Plugin, r: Join) -> Reply {
    let link = endpoint_of(p, &r.endpoint_id)?;
    let wiring = match link.wiring {
        Some(w) => w,
        None => {
            let eps = p.api.endpoints(&link.network).await.map_err(|e| api_err(&format!("endpoints of {}", link.network), e))?;
            let e = eps.into_iter().find(|e| e.id == link.id).ok_or_else(|| fail(format!("plexus: endpoint {} of {} is gone", link.id, link.network)))?;
            let net = p.api.network(&link.network).await.map_err(|err| api_err(&format!("network {}", link.network), err))?;
            Wiring::of(&net, e.mac, e.gateway)
        }
    };
    let mac = wiring.mac.octets();
    let (port, peer) = veth_names(&link);
    // The same endpoint joining again right after it left: its old veth must be gone first.
    let removing = p.removing.lock().unwrap_or_else(|e| e.into_inner()).remove(&port);
    if let Some(task) = removing {
        let _ = task.await;
    }
    let mtu = wiring.mtu(p.mtu);
    let (pp, pe, off) = (port.clone(), peer.clone(), p.checksum_offload_off);
    tokio::task::spawn_blocking(move || plumb::veth_pair(&pp, &pe, mac, mtu, off)).await??;
    let spec = PortSpec::new(&port, InterfaceType::System)
        .external_id(ENDPOINT_KEY, &format!("{}/{}", link.network, link.id))
        .external_id(DOCKER_ENDPOINT_KEY, &r.endpoint_id);
    let plugged = async {
        p.vs.add_port(BR_INT, &spec).await?;
        p.vs.wait_ofport(&port, Duration::from_secs(10)).await?;
        Ok::<_, PluginError>(())
    };
    if let Err(err) = plugged.await {
        let _ = unplug(p, &port).await;
        return Err(err);
    }
    tracing::info!(network = %link.network, id = %link.id, %port, sandbox = %r.sandbox_key, "joined");
    // The container's labels, which Docker does not tell network drivers, become the
    // endpoint's once Docker shows which container this is (just after it starts).
    let (api, engine, docker_net) = (p.api.clone(), p.engine.clone(), r.network_id.clone());
    let (docker_ep, network, id) = (r.endpoint_id.clone(), link.network.clone(), link.id.clone());
    tokio::spawn(async move { copy_labels(&api, &engine, &docker_net, &docker_ep, &network, &id).await });
    ok(JoinResponse {
        interface_name: InterfaceName { src_name: peer, dst_prefix: "eth".into() },
        gateway: wiring.gateway.to_string(),
        gateway_ipv6: wiring.gateway6.map(|g| g.to_string()).unwrap_or_default(),
    })
}

/// Copies a container's labels to its endpoint, and its name as the `name` label (its DNS
/// name) unless a label of its own says otherwise. Labels Plexus cannot hold (a value with a
/// space, say) are left out and named in the log.
async fn copy_labels(api: &Client, engine: &Engine, docker_net: &str, docker_ep: &str, network: &str, id: &str) {
    let Some((name, labels)) = engine.container_labels(docker_net, docker_ep, Duration::from_secs(30)).await else {
        tracing::warn!(%network, %id, "Docker did not show the container of this endpoint: its labels are not copied");
        return;
    };
    let mut kept = std::collections::BTreeMap::new();
    if let Some(n) = name.filter(|n| plexus_api::names::is_dns_label(n)) {
        kept.insert(plexus_api::names::NAME_LABEL.to_string(), n.to_ascii_lowercase());
    }
    for (k, v) in labels {
        let one = std::collections::BTreeMap::from([(k.clone(), v.clone())]);
        match plexus_api::policy::check_labels("labels", &one) {
            Ok(()) => {
                kept.insert(k, v);
            }
            Err(e) => tracing::warn!(%network, %id, label = %k, reason = %e, "a container label Plexus cannot hold is left out"),
        }
    }
    if kept.is_empty() {
        return;
    }
    match api.set_endpoint_labels(network, id, &kept).await {
        Ok(_) => tracing::info!(%network, %id, labels = ?kept, "the container's labels are the endpoint's"),
        Err(e) => tracing::warn!(%network, %id, error = %e, "could not copy the container's labels"),
    }
}

async fn leave(p: &Plugin, r: EndpointRef) -> Reply {
    let link = endpoint_of(p, &r.endpoint_id)?;
    let port = veth_names(&link).0;
    p.vs.delete_port(BR_INT, &port).await?;
    // Deleting a veth waits for the kernel (a dozen milliseconds), and `docker run --rm`
    // waits for Leave: the switch no longer has the port, so the veth goes in the background.
    let name = port.clone();
    let task = tokio::spawn(async move {
        let gone = tokio::task::spawn_blocking(move || plumb::unplumb(None, &name)).await;
        if let Ok(Err(e)) = gone {
            tracing::warn!(error = %e, "removing a left endpoint's veth failed");
        }
    });
    let mut removing = p.removing.lock().unwrap_or_else(|e| e.into_inner());
    // Removals that finished are forgotten here, so the map holds only those under way.
    removing.retain(|_, t| !t.is_finished());
    removing.insert(port, task);
    Ok(json!({}))
}

async fn delete_endpoint(p: &Plugin, r: EndpointRef) -> Reply {
    let Some(link) = p.state.get().endpoints.get(&r.endpoint_id).cloned() else { return Ok(json!({})) };
    let port = veth_names(&link).0;
    // Leave normally unplugged it and is removing the veth in the background: nothing to
    // wait for (`docker run --rm` waits for this call). After a crash Leave may not have run.
    let leaving = p.removing.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&port);
    if !leaving {
        unplug(p, &port).await?;
    }
    if !link.ipam {
        match p.api.delete_endpoint(&link.network, &link.id).await {
            Ok(()) => {}
            Err(ClientError::Problem(pr)) if pr.status == 404 => {}
            Err(e) => return Err(api_err("deleting the endpoint", e)),
        }
    }
    p.state.update(|s| s.endpoints.remove(&r.endpoint_id))?;
    Ok(json!({}))
}
