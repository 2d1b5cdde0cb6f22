//! The OVN baseline of `plexus bench scale`: the same endpoints, as logical switch ports of
//! one logical switch over three chassis, created in one northbound transaction (as OVN
//! takes a batch), timed from the start of the transaction and of the ports going into OVS
//! to every port's flows installed on its chassis and every chassis caught up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use plexus_lab::ovn::{Ovn, BRIDGE};
use plexus_lab::{wire, Lab, LabConfig};
use plexus_ovs::ovsdb::{value, Client, ClientOptions, Condition, InterfaceType, Mutation, Operation, PortSpec, Target, VSwitch};

/// How long OVN is given to bring every chassis in sync.
pub(super) const DEADLINE: Duration = Duration::from_secs(120);

/// How often the chassis are asked how far they are: often enough that it adds little to
/// OVN's time, seldom enough that asking costs their databases nothing worth counting.
const POLL: Duration = Duration::from_millis(50);

/// Ports whose flows `vs`'s chassis has installed (`ovn-installed` on the interface), asked
/// of its database with the filter in the request: a poll costs the chassis a few rows, not
/// a dump of thousands of interfaces (as `ovs-vsctl find` would, a process each time).
async fn installed_on(vs: &VSwitch) -> anyhow::Result<usize> {
    let installed = serde_json::json!(["map", [["ovn-installed", "true"]]]);
    let op = Operation::Select {
        table: "Interface".into(),
        conditions: vec![Condition("external_ids".into(), "includes", installed)],
        columns: Some(vec!["_uuid".into()]),
    };
    let r = vs.client().transact("Open_vSwitch", &[op]).await.context("asking a chassis which ports are installed")?;
    Ok(r.first().map_or(0, |r| r.rows.len()))
}

/// What one batch cost OVN.
pub(super) struct OvnBatch {
    /// OVN's version, as `ovn-nbctl --version` says.
    pub(super) version: String,
    /// From the start to every chassis in sync, if that came within [`DEADLINE`].
    pub(super) time: Option<Duration>,
    /// Ports whose flows were installed (all of them, when in sync).
    pub(super) installed: usize,
    /// The northbound transaction alone (until the database committed it).
    pub(super) transaction: Duration,
    /// OpenFlow flows on each chassis afterwards.
    pub(super) flows: BTreeMap<String, u64>,
}

/// `n` ports over a 3-host lab of its own, in one batch.
pub(super) async fn batch(n: usize) -> anyhow::Result<OvnBatch> {
    let name = format!("bo{}", std::process::id() % 10_000_000);
    let cfg = LabConfig { enable_dummy: true, ..LabConfig::owned(&name, 3) };
    let lab = tokio::task::spawn_blocking(move || Lab::up(&cfg)).await?.context("starting a 3-host lab for OVN")?;
    let (dir, hosts) = (lab.dir.join("ovn"), lab.hosts.clone());
    let ovn = tokio::task::spawn_blocking(move || Ovn::start(&dir, &hosts)).await?.context("starting OVN (northd, NB and SB, a controller per host)")?;
    let version = ovn.nbctl(&["--version"])?.lines().next().unwrap_or_default().to_string();
    ovn.nbctl(&["--wait=hv", "ls-add", "scale"])?;
    // The batch: every port with its MAC and address, as Plexus's endpoints get theirs, in
    // one transaction of the northbound database (as a CMS's IDL would send it; `ovn-nbctl`
    // spends seconds of its own building thousands of commands, and one argument cannot
    // carry them all).
    let mut ops: Vec<Operation> = (0..n)
        .map(|i| {
            let (hi, lo) = ((i / 250) as u8, (i % 250) as u8 + 2);
            let mut row = serde_json::Map::new();
            row.insert("name".into(), format!("p{i}").into());
            row.insert("addresses".into(), format!("02:00:00:00:{hi:02x}:{lo:02x} 10.96.{hi}.{lo}").into());
            Operation::Insert { table: "Logical_Switch_Port".into(), row, uuid_name: Some(format!("p{i}")) }
        })
        .collect();
    let ports = value::set((0..n).map(|i| value::named_uuid(&format!("p{i}"))));
    ops.push(Operation::Mutate {
        table: "Logical_Switch".into(),
        conditions: vec![Condition::eq("name", "scale")],
        mutations: vec![Mutation::insert("ports", ports)],
    });
    let nb = Client::connect(
        Target::Unix(ovn.sock("nb")),
        ClientOptions { request_timeout: Duration::from_secs(300), ..Default::default() },
        Duration::from_secs(10),
    )
    .await
    .context("connecting to OVN's northbound database")?;
    let count = lab.hosts.len();
    let mut plugged: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..n {
        *plugged.entry(lab.hosts[i % count].name.clone()).or_default() += 1;
    }
    let mut watch = Vec::new();
    for h in &lab.hosts {
        watch.push(wire::vswitch(h).await?);
    }
    let t0 = Instant::now();
    // The ports, one OVSDB transaction per host, while the northbound takes the batch.
    let mut port_tasks = Vec::new();
    for (k, h) in lab.hosts.iter().enumerate() {
        let h = h.clone();
        let specs: Vec<PortSpec> =
            (k..n).step_by(count).map(|i| PortSpec::new(&format!("op{i}"), InterfaceType::Dummy).external_id("iface-id", &format!("p{i}"))).collect();
        port_tasks.push(tokio::spawn(async move {
            let vs = wire::vswitch(&h).await?;
            vs.add_ports(BRIDGE, &specs).await.map_err(|e| anyhow::anyhow!("{}: adding ports: {e}", h.name))
        }));
    }
    let results = nb.transact("OVN_Northbound", &ops).await.context("the batch")?;
    if results.last().and_then(|r| r.count) != Some(1) {
        bail!("the batch's ports were not added to logical switch scale");
    }
    let transaction = t0.elapsed();
    for t in port_tasks {
        t.await??;
    }
    // Every port's flows installed where it is bound, then every chassis at the last change;
    // a baseline that does not get there within DEADLINE is reported as such, not waited on.
    let mut installed = 0;
    let mut in_sync = false;
    while t0.elapsed() < DEADLINE {
        installed = 0;
        for vs in &watch {
            installed += installed_on(vs).await?;
        }
        if installed >= n {
            in_sync = true;
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    if in_sync {
        let left = DEADLINE.saturating_sub(t0.elapsed()).as_secs().max(1);
        in_sync = tokio::task::block_in_place(|| ovn.nbctl(&[&format!("--timeout={left}"), "--wait=hv", "sync"])).is_ok();
    }
    let time = in_sync.then(|| t0.elapsed());
    let mut flows = BTreeMap::new();
    for h in &lab.hosts {
        let of = wire::openflow_to(h, BRIDGE).await?;
        flows.insert(h.name.clone(), u64::from(of.aggregate(Default::default()).await?.flow_count));
    }
    // The clients first: a database going away under one would be logged as a lost link.
    drop(watch);
    drop(nb);
    drop(ovn);
    drop(lab);
    Ok(OvnBatch { version, time, transaction, installed, flows })
}
