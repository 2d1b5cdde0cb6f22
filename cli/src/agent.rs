//! `plexus agent`: run the host agent.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use plexus_agent::agent::{self, AgentConfig};
use plexus_api::Encap;

#[derive(Args)]
pub(crate) struct AgentCmd {
    /// This host's name (DNS label).
    #[arg(long)]
    name: String,
    /// Controller API URL(s), comma-separated.
    #[arg(long, env = "PLEXUS_API")]
    controller: String,
    /// This host's agent token (`plexus pki token --role agent:NAME`): it may register and
    /// heartbeat this host only. Default: agent.token in --pki-dir (where a bootstrap put it).
    #[arg(long, env = "PLEXUS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A bootstrap token (`plexus pki token --role bootstrap:NAME`): on first start, traded
    /// once for this host's agent token and switch certificate, kept in --pki-dir.
    #[arg(long, env = "PLEXUS_BOOTSTRAP_TOKEN", hide_env_values = true, requires = "pki_dir")]
    bootstrap_token: Option<String>,
    /// The cluster CA's certificate (default: ca.crt in --pki-dir).
    #[arg(long, env = "PLEXUS_CA")]
    ca: Option<std::path::PathBuf>,
    /// OpenFlow target of every controller node, e.g. ssl:10.0.0.1:6653 (repeat or comma-separate).
    #[arg(long = "openflow", value_delimiter = ',', required = true)]
    openflow: Vec<String>,
    /// Where this host's switch certificate (NAME.hosts.plexus.crt, .key) and the cluster's
    /// ca.crt are, for ssl: targets. With the CA's key there too (a lab), the certificate is
    /// issued on first start.
    #[arg(long, env = "PLEXUS_PKI_DIR")]
    pki_dir: Option<std::path::PathBuf>,
    /// This host's OVSDB: unix:PATH, tcp:IP:PORT, or ssl:IP:PORT (with this host's
    /// certificate from --pki-dir; the server's must be the cluster CA's, for that IP).
    #[arg(long, default_value = "unix:/var/run/openvswitch/db.sock")]
    ovsdb: String,
    /// Underlay address tunnels use, with its prefix length: 10.0.0.11/24.
    #[arg(long)]
    tunnel_ip: String,
    /// Datapath: system (kernel) or netdev (userspace).
    #[arg(long, default_value = "system", value_parser = ["system", "netdev"])]
    datapath_type: String,
    /// With netdev: the underlay interface to put on br-phy.
    #[arg(long)]
    underlay_iface: Option<String>,
    /// A physical network and the interface or OVS bridge that carries it on this host,
    /// PHYSNET=IFACE (repeat for more): where underlay networks' frames leave.
    #[arg(long = "bridge-mapping", value_name = "PHYSNET=IFACE")]
    bridge_mappings: Vec<String>,
    /// Encapsulation.
    #[arg(long, default_value = "vxlan", value_parser = ["vxlan", "geneve"])]
    encap: String,
    /// Heartbeat period, seconds.
    #[arg(long, default_value_t = 5)]
    heartbeat: u64,
    /// Serve Docker's network and IPAM plugin protocols, and show Plexus networks in the
    /// local Docker.
    #[arg(long)]
    docker: bool,
    /// Where Docker looks for plugin sockets.
    #[arg(long, default_value = "/run/docker/plugins")]
    docker_plugin_dir: std::path::PathBuf,
    /// The Docker engine's API socket.
    #[arg(long, default_value = "/var/run/docker.sock")]
    docker_socket: String,
    /// Where `/healthz` and `/metrics` answer ("none" to serve neither).
    #[arg(long, default_value = "127.0.0.1:6544")]
    listen: String,
    /// Where the agent keeps its state (the Docker plugin's links).
    #[arg(long, default_value = "/var/lib/plexus/agent")]
    state_dir: std::path::PathBuf,
    /// Do not answer containers' DNS on their gateways.
    #[arg(long)]
    no_dns: bool,
    /// A resolver for names outside Plexus, IP or IP:PORT (repeat for more; default: the
    /// nameservers of /etc/resolv.conf).
    #[arg(long = "dns-upstream", value_name = "ADDR", conflicts_with = "no_dns")]
    dns_upstreams: Vec<String>,
}

/// The resolvers for names outside Plexus: the ones given, else `/etc/resolv.conf`'s.
fn dns_upstreams(given: &[String]) -> anyhow::Result<Vec<std::net::SocketAddr>> {
    if given.is_empty() {
        let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        return Ok(plexus_agent::dns::resolv_conf_upstreams(&text));
    }
    given
        .iter()
        .map(|a| {
            a.parse::<std::net::SocketAddr>()
                .or_else(|_| a.parse::<std::net::IpAddr>().map(|ip| std::net::SocketAddr::new(ip, 53)))
                .map_err(|_| anyhow::anyhow!("--dns-upstream {a:?}: not an IP address or IP:PORT"))
        })
        .collect()
}

/// Where a bootstrapped agent keeps its token, in its PKI directory.
const AGENT_TOKEN: &str = "agent.token";

/// Trades the bootstrap token for this host's agent token and switch certificate, once: with
/// both already in `dir`, nothing is asked.
async fn bootstrap(c: &AgentCmd, token: &str, dir: &std::path::Path, ca: Option<&std::path::Path>) -> anyhow::Result<()> {
    let name = plexus_pki::host_cert_name(&c.name);
    if dir.join(AGENT_TOKEN).exists() && plexus_pki::Identity::load(dir, &name).is_ok() {
        return Ok(());
    }
    let ca = ca.context("a bootstrap needs the cluster CA's certificate: --ca, or ca.crt in --pki-dir")?;
    let creds = plexus_api::Credentials::from_files(Some(ca), Some(token)).context("--ca/--bootstrap-token")?;
    let http = creds.http()?.timeout(Duration::from_secs(30)).build()?;
    let mut last = String::new();
    for base in c.controller.split(',').map(|u| u.trim().trim_end_matches('/')) {
        match http.post(format!("{base}/v1/bootstrap/agent")).send().await {
            Ok(r) if r.status().is_success() => {
                let got: plexus_api::AgentCredentials = r.json().await.context("the bootstrap answer")?;
                if got.host != c.name {
                    bail!("the bootstrap token is for host {}, not {}", got.host, c.name);
                }
                std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
                let id = plexus_pki::Identity { cert_pem: got.certificate_pem, key_pem: got.private_key_pem, ca_pem: got.ca_pem.clone() };
                id.save(dir, &name)?;
                if !dir.join("ca.crt").exists() {
                    std::fs::write(dir.join("ca.crt"), &got.ca_pem)?;
                }
                plexus_pki::write_secret(&dir.join(AGENT_TOKEN), &got.token)?;
                tracing::info!(host = %c.name, dir = %dir.display(), "bootstrapped: agent token and switch certificate stored");
                return Ok(());
            }
            Ok(r) => last = format!("{base}: {} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(e) => last = format!("{base}: {e}"),
        }
    }
    bail!("the bootstrap failed: {last}")
}

pub(crate) async fn run(c: AgentCmd) -> anyhow::Result<()> {
    let (ip, len) = c.tunnel_ip.split_once('/').with_context(|| format!("--tunnel-ip {:?} needs a prefix length, e.g. 10.0.0.11/24", c.tunnel_ip))?;
    let tunnel_ip: Ipv4Addr = ip.parse().with_context(|| format!("--tunnel-ip: {ip:?} is not an IPv4 address"))?;
    let tunnel_prefix: u8 = len.parse().ok().filter(|l| *l <= 32).with_context(|| format!("--tunnel-ip: prefix length {len:?} is not 0..=32"))?;
    let ca = c.ca.clone().or_else(|| c.pki_dir.as_ref().map(|d| d.join("ca.crt")));
    if let (Some(bt), Some(dir)) = (&c.bootstrap_token, &c.pki_dir) {
        bootstrap(&c, bt, dir, ca.as_deref()).await?;
    }
    let switch_tls = if c.openflow.iter().any(|t| t.starts_with("ssl:")) {
        let dir = c.pki_dir.as_ref().context("ssl: OpenFlow targets need --pki-dir with this host's switch certificate and the cluster's CA")?;
        let name = plexus_pki::host_cert_name(&c.name);
        if plexus_pki::Identity::load(dir, &name).is_err() {
            // Only where the CA's key is (a lab) may the agent issue its own certificate;
            // elsewhere a missing one is an error, never a new CA made on the spot.
            if !dir.join("ca.key").exists() {
                bail!("no switch certificate {name} in {}: give --bootstrap-token, or issue one with `plexus pki issue --usage switch`", dir.display());
            }
            plexus_pki::Ca::identity_in(dir, &name, &[], plexus_pki::Usage::Client)
                .with_context(|| format!("the switch certificate {name} in {}", dir.display()))?;
        }
        let path = |f: String| dir.join(f).display().to_string();
        Some(plexus_agent::agent::SwitchTls {
            private_key: path(format!("{name}.key")),
            certificate: path(format!("{name}.crt")),
            ca_cert: path("ca.crt".into()),
        })
    } else {
        None
    };
    let token = match (&c.token, &c.pki_dir) {
        (Some(t), _) => t.clone(),
        (None, Some(dir)) => std::fs::read_to_string(dir.join(AGENT_TOKEN))
            .with_context(|| format!("no --token, and no {AGENT_TOKEN} in {} (give --token or --bootstrap-token)", dir.display()))?,
        (None, None) => bail!("the agent needs its token: give --token, or --bootstrap-token with --pki-dir"),
    };
    let credentials = plexus_api::Credentials::from_files(ca.as_deref(), Some(&token)).context("--ca/--token")?;
    // An ssl: OVSDB target is reached with the host's certificate, as the switch reaches the
    // controllers.
    let ovsdb_tls: Option<std::sync::Arc<dyn plexus_ovs::ovsdb::TlsConnector>> = if c.ovsdb.starts_with("ssl:") {
        let dir = c.pki_dir.as_ref().context("an ssl: OVSDB target needs --pki-dir with this host's certificate and the cluster's CA")?;
        let id = plexus_pki::Identity::load(dir, &plexus_pki::host_cert_name(&c.name)).context("this host's certificate, for the ssl: OVSDB target")?;
        Some(std::sync::Arc::new(plexus_agent::ovsdb_tls::RustlsConnector::new(&id)?))
    } else {
        None
    };
    let cfg = AgentConfig {
        ovsdb_tls,
        credentials,
        switch_tls,
        name: c.name,
        controller: c.controller,
        openflow: c.openflow,
        ovsdb: c.ovsdb.parse().context("--ovsdb")?,
        tunnel_ip,
        tunnel_prefix,
        datapath_type: c.datapath_type,
        encap: if c.encap == "geneve" { Encap::Geneve } else { Encap::Vxlan },
        underlay_iface: c.underlay_iface,
        bridge_mappings: bridge_mappings(&c.bridge_mappings)?,
        heartbeat: Duration::from_secs(c.heartbeat.max(1)),
        listen: if c.listen == "none" { None } else { Some(c.listen.parse().with_context(|| format!("--listen {:?}: not HOST:PORT (or none)", c.listen))?) },
        docker: c.docker.then(|| plexus_agent::docker::DockerConfig {
            plugin_dir: c.docker_plugin_dir,
            docker_socket: c.docker_socket,
            state_dir: c.state_dir,
            ..Default::default()
        }),
        dns_upstreams: if c.no_dns { None } else { Some(dns_upstreams(&c.dns_upstreams)?) },
    };
    agent::run(cfg).await?;
    Ok(())
}

/// `--bridge-mapping PHYSNET=IFACE` values, checked: a physical network named twice, or a name
/// that is not a DNS label, is refused before anything starts.
fn bridge_mappings(v: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for m in v {
        let (physnet, iface) = m.split_once('=').with_context(|| format!("--bridge-mapping {m:?}: not PHYSNET=IFACE"))?;
        plexus_api::network::check_name("--bridge-mapping", physnet).map_err(|e| anyhow::anyhow!("--bridge-mapping {m:?}: {}", e.reason))?;
        if iface.is_empty() || iface.len() > 15 || iface.contains(['/', ' ']) {
            bail!("--bridge-mapping {m:?}: {iface:?} is not an interface or bridge name (1 to 15 characters, no '/' or spaces)");
        }
        if out.insert(physnet.to_string(), iface.to_string()).is_some() {
            bail!("--bridge-mapping: {physnet} is mapped twice");
        }
    }
    Ok(out)
}
