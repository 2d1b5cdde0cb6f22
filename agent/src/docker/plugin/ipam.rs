//! Docker's IPAM driver calls: pools are Plexus networks' subnets, addresses come from the
//! controller's allocator (so Docker and Plexus never disagree on who has which address).

use super::*;

/// A pool id: `NAME@SUBNET` for a named Plexus network, `?NONCE@SUBNET` for one whose name
/// Docker has not told us yet.
fn split_pool(pool_id: &str) -> Result<(&str, &str), PluginError> {
    pool_id.split_once('@').ok_or_else(|| fail(format!("pool {pool_id:?} was not made by Plexus")))
}

fn cidr_len(subnet: &str) -> Result<u8, PluginError> {
    subnet.split_once('/').and_then(|(_, l)| l.parse().ok()).ok_or_else(|| fail(format!("{subnet:?} is not a subnet")))
}

fn first_host(subnet: &str) -> Result<Ipv4Addr, PluginError> {
    let (a, _) = subnet.split_once('/').ok_or_else(|| fail(format!("{subnet:?} is not a subnet")))?;
    let a: Ipv4Addr = a.parse().map_err(|_| fail(format!("{subnet:?} is not an IPv4 subnet")))?;
    Ok(Ipv4Addr::from(u32::from(a) + 1))
}

pub(super) async fn request_pool(p: &Plugin, r: RequestPool) -> Reply {
    let family = if r.v6 { "IPv6" } else { "IPv4" };
    if let Some(name) = r.options.get(NETWORK_OPTION) {
        let n = p.api.network(name).await.map_err(|e| api_err(&format!("network {name}"), e))?;
        let subnet = match (r.v6, &n.spec.subnet6) {
            (false, _) => n.spec.subnet.clone(),
            (true, Some(s6)) => s6.clone(),
            (true, None) => return Err(fail(format!("plexus: network {name} has no IPv6 subnet; leave out --ipv6 or give it a subnet6"))),
        };
        if !r.pool.is_empty() && r.pool != subnet {
            return Err(fail(format!("plexus: --subnet {} differs from network {name}'s {family} subnet {subnet}", r.pool)));
        }
        return ok(PoolResponse { pool_id: format!("{name}@{subnet}"), pool: subnet, data: BTreeMap::new() });
    }
    if r.pool.is_empty() {
        return Err(fail(format!("plexus: give the network an {family} --subnet (or --ipam-opt plexus.network=NAME for an existing Plexus network)")));
    }
    cidr_len(&r.pool)?;
    if r.pool.contains(':') != r.v6 {
        return Err(fail(format!("plexus: {} is not an {family} subnet", r.pool)));
    }
    let nonce = format!("{:016x}", plexus_api::ids::fnv1a(&format!("{}{:?}", r.pool, std::time::SystemTime::now())));
    let pool_id = format!("?{nonce}@{}", r.pool);
    p.state.update(|s| s.pools.insert(pool_id.clone(), None))?;
    ok(PoolResponse { pool_id, pool: r.pool, data: BTreeMap::new() })
}

pub(super) async fn release_pool(p: &Plugin, r: PoolRef) -> Reply {
    p.state.update(|s| s.pools.remove(&r.pool_id))?;
    Ok(json!({}))
}

/// The Plexus network behind a pool, once known.
fn pool_network(p: &Plugin, pool_id: &str) -> Result<String, PluginError> {
    let (name, _) = split_pool(pool_id)?;
    if !name.starts_with('?') {
        return Ok(name.to_string());
    }
    p.state.get().pools.get(pool_id).cloned().flatten().ok_or_else(|| fail("plexus: the network is still being set up; try again in a moment"))
}

pub(super) async fn request_address(p: &Plugin, r: AddressRequest) -> Reply {
    let (_, subnet) = split_pool(&r.pool_id)?;
    let len = cidr_len(subnet)?;
    if subnet.contains(':') {
        return request_address6(p, &r, subnet, len).await;
    }
    let wanted: Option<Ipv4Addr> = match r.address.as_str() {
        "" => None,
        a => Some(a.split('/').next().unwrap_or(a).parse().map_err(|_| fail(format!("plexus: {a:?} is not an IPv4 address")))?),
    };
    if r.options.get(REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY_REQUEST) {
        // The gateway is the Plexus network's; it answers ARP on every switch.
        let gw = match pool_network(p, &r.pool_id) {
            Ok(name) => p.api.network(&name).await.map_err(|e| api_err(&format!("network {name}"), e))?.spec.gateway.unwrap_or(first_host(subnet)?),
            Err(_) => wanted.unwrap_or(first_host(subnet)?),
        };
        if wanted.is_some_and(|w| w != gw) {
            return Err(fail(format!("plexus: the gateway of this network is {gw}")));
        }
        return ok(AddressResponse { address: format!("{gw}/{len}"), data: BTreeMap::new() });
    }
    let network = pool_network(p, &r.pool_id)?;
    let spec = EndpointSpec {
        id: None,
        host: p.host.clone(),
        ip: wanted,
        ip6: None,
        mac: r.options.get(MAC_OPTION).filter(|m| !m.is_empty()).cloned(),
        owner: Some(format!("docker ipam on {}", p.host)),
        labels: Default::default(),
        publish: Vec::new(),
    };
    let e = p.api.create_endpoint(&network, &spec).await.map_err(|e| api_err(&format!("an address in {network}"), e))?;
    ok(AddressResponse { address: format!("{}/{}", e.ip, e.prefix_len), data: BTreeMap::new() })
}

/// An IPv6 address: the gateway, the one wanted (`--ip6`; the endpoint takes it when it is
/// created, [`create_endpoint`]), or the IPv6 address of the oldest reservation of this host
/// that no Docker endpoint took yet (Docker asks for the IPv4 address first, which made the
/// reservation with both).
async fn request_address6(p: &Plugin, r: &AddressRequest, subnet: &str, len: u8) -> Reply {
    let pool = plexus_api::network::Cidr6::parse(subnet).map_err(|e| fail(format!("plexus: {e}")))?;
    let wanted: Option<Ipv6Addr> = match r.address.as_str() {
        "" => None,
        a => Some(a.split('/').next().unwrap_or(a).parse().map_err(|_| fail(format!("plexus: {a:?} is not an IPv6 address")))?),
    };
    if let Some(w) = wanted.filter(|w| !pool.contains(*w)) {
        return Err(fail(format!("plexus: {w} is outside {subnet}")));
    }
    let network = pool_network(p, &r.pool_id);
    if r.options.get(REQUEST_ADDRESS_TYPE).map(String::as_str) == Some(GATEWAY_REQUEST) {
        let first = Ipv6Addr::from(u128::from(pool.addr) + 1);
        let gw = match &network {
            Ok(name) => p.api.network(name).await.map_err(|e| api_err(&format!("network {name}"), e))?.spec.gateway6.unwrap_or(first),
            Err(_) => wanted.unwrap_or(first),
        };
        if wanted.is_some_and(|w| w != gw) {
            return Err(fail(format!("plexus: the IPv6 gateway of this network is {gw}")));
        }
        return ok(AddressResponse { address: format!("{gw}/{len}"), data: BTreeMap::new() });
    }
    if let Some(w) = wanted {
        return ok(AddressResponse { address: format!("{w}/{len}"), data: BTreeMap::new() });
    }
    let network = network?;
    let eps = p.api.endpoints(&network).await.map_err(|e| api_err(&format!("endpoints of {network}"), e))?;
    let claimed = p.state.update(|s| {
        // Reservations gone or linked to a Docker endpoint need no claim any more.
        let linked: std::collections::BTreeSet<&str> = s.endpoints.values().filter(|l| l.network == network).map(|l| l.id.as_str()).collect();
        let alive: std::collections::BTreeSet<&str> = eps.iter().map(|e| e.id.as_str()).collect();
        let before = s.claimed6.clone();
        s.claimed6.retain(|id| alive.contains(id.as_str()) && !linked.contains(id.as_str()));
        let mine = |e: &&plexus_api::Endpoint| e.host == p.host && e.owner.as_deref().is_some_and(|o| o.starts_with("docker ipam"));
        let free = eps.iter().filter(mine).filter(|e| !linked.contains(e.id.as_str()) && !before.contains(&e.id)).min_by_key(|e| e.revision);
        let found = free.and_then(|e| Some((e.id.clone(), e.ip6?)));
        if let Some((id, _)) = &found {
            s.claimed6.insert(id.clone());
        }
        found
    })?;
    let (_, ip6) =
        claimed.ok_or_else(|| fail(format!("plexus: no IPv4 reservation in {network} to pair an IPv6 address with (is the network dual stack?)")))?;
    ok(AddressResponse { address: format!("{ip6}/{len}"), data: BTreeMap::new() })
}

pub(super) async fn release_address(p: &Plugin, r: AddressRequest) -> Reply {
    if r.address.contains(':') {
        // An IPv6 address goes with its endpoint, which releasing the IPv4 one deletes.
        return Ok(json!({}));
    }
    let Ok(network) = pool_network(p, &r.pool_id) else { return Ok(json!({})) };
    let ip: Option<Ipv4Addr> = r.address.split('/').next().and_then(|a| a.parse().ok());
    let eps = match p.api.endpoints(&network).await {
        Ok(e) => e,
        Err(ClientError::Problem(pr)) if pr.status == 404 => return Ok(json!({})),
        Err(e) => return Err(api_err("releasing an address", e)),
    };
    for e in eps.iter().filter(|e| Some(e.ip) == ip && e.owner.as_deref().is_some_and(|o| o.starts_with("docker"))) {
        match p.api.delete_endpoint(&network, &e.id).await {
            Ok(()) => tracing::info!(%network, id = %e.id, ip = %e.ip, "address released"),
            Err(ClientError::Problem(pr)) if pr.status == 404 => {}
            Err(err) => return Err(api_err("releasing an address", err)),
        }
    }
    Ok(json!({}))
}
