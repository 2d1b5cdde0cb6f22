//! Typed helpers for the `Open_vSwitch` database: bridges, ports, interfaces, controllers.
//! Every helper is idempotent: asking for what already exists changes it to match, and
//! deleting what is gone is not an error.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::client::Client;
use super::error::OvsdbError;
use super::monitor::Row;
use super::ops::{Condition, Mutation, Operation};
use super::value::{named_uuid, set, string_map, uuid};

const DB: &str = "Open_vSwitch";

/// A bridge as it should be.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BridgeSpec {
    /// Name (at most 15 bytes: it becomes a network device).
    pub name: String,
    /// `system` (kernel) or `netdev` (userspace).
    pub datapath_type: String,
    /// `secure` (no flows without a controller) or `standalone`; None leaves OVS's default.
    pub fail_mode: Option<String>,
    /// OpenFlow versions, e.g. `OpenFlow13`.
    pub protocols: Vec<String>,
    /// Fixed datapath id (`other_config:datapath-id`).
    pub datapath_id: Option<u64>,
    /// Further `other_config` keys.
    pub other_config: BTreeMap<String, String>,
    /// `external_ids`.
    pub external_ids: BTreeMap<String, String>,
}

/// Interface types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterfaceType {
    /// An existing network device (type "").
    System,
    /// A device OVS creates for the bridge.
    Internal,
    /// A patch to another bridge (`options:peer`).
    Patch,
    /// VXLAN tunnel.
    Vxlan,
    /// Geneve tunnel.
    Geneve,
    /// A dummy interface (`ovs-vswitchd --enable-dummy`).
    Dummy,
    /// Another type.
    Other(String),
}

impl InterfaceType {
    /// The `type` column value.
    pub fn as_str(&self) -> &str {
        match self {
            InterfaceType::System => "",
            InterfaceType::Internal => "internal",
            InterfaceType::Patch => "patch",
            InterfaceType::Vxlan => "vxlan",
            InterfaceType::Geneve => "geneve",
            InterfaceType::Dummy => "dummy",
            InterfaceType::Other(s) => s,
        }
    }
}

/// A port with one interface of the same name.
#[derive(Debug, Clone, PartialEq)]
pub struct PortSpec {
    /// Port and interface name.
    pub name: String,
    /// Interface type.
    pub kind: InterfaceType,
    /// Interface `options` (e.g. `remote_ip=flow`, `key=flow`, `peer=`).
    pub options: BTreeMap<String, String>,
    /// Interface and port `external_ids`.
    pub external_ids: BTreeMap<String, String>,
    /// Requested OpenFlow port number.
    pub ofport_request: Option<u16>,
}

impl PortSpec {
    /// A port of `kind` with no options.
    pub fn new(name: &str, kind: InterfaceType) -> PortSpec {
        PortSpec { name: name.into(), kind, options: BTreeMap::new(), external_ids: BTreeMap::new(), ofport_request: None }
    }

    /// Adds an interface option.
    pub fn option(mut self, k: &str, v: &str) -> Self {
        self.options.insert(k.into(), v.into());
        self
    }

    /// Adds an external id.
    pub fn external_id(mut self, k: &str, v: &str) -> Self {
        self.external_ids.insert(k.into(), v.into());
        self
    }
}

fn check_name(field: &'static str, name: &str) -> Result<(), OvsdbError> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) || name == "." || name == ".." {
        return Err(OvsdbError::Invalid { field, reason: format!("{name:?} must be 1 to 15 bytes without '/' or spaces (it names a network device)") });
    }
    Ok(())
}

/// Typed access to the `Open_vSwitch` database.
#[derive(Debug, Clone)]
pub struct VSwitch {
    client: Client,
}

impl VSwitch {
    /// Wraps a client connected to an `ovsdb-server` holding `Open_vSwitch`.
    pub fn new(client: Client) -> VSwitch {
        VSwitch { client }
    }

    /// The underlying client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    async fn select(&self, table: &str, cond: Vec<Condition>, columns: &[&str]) -> Result<Vec<Row>, OvsdbError> {
        let op = Operation::Select { table: table.into(), conditions: cond, columns: Some(columns.iter().map(|c| c.to_string()).collect()) };
        let mut r = self.client.transact(DB, &[op]).await?;
        Ok(r.pop().map(|r| r.rows.into_iter().map(Row).collect()).unwrap_or_default())
    }

    async fn uuid_by_name(&self, table: &str, name: &str) -> Result<Option<String>, OvsdbError> {
        Ok(self.select(table, vec![Condition::eq("name", name)], &["_uuid"]).await?.first().and_then(|r| r.uuids("_uuid").pop()))
    }

    /// Makes sure the root `Open_vSwitch` row exists (what `ovs-vsctl init` does).
    pub async fn init(&self) -> Result<(), OvsdbError> {
        if self.select("Open_vSwitch", vec![], &["_uuid"]).await?.is_empty() {
            self.client.transact(DB, &[Operation::Insert { table: "Open_vSwitch".into(), row: Map::new(), uuid_name: None }]).await?;
        }
        Ok(())
    }

    fn bridge_row(spec: &BridgeSpec) -> Map<String, Value> {
        let mut other = spec.other_config.clone();
        if let Some(id) = spec.datapath_id {
            other.insert("datapath-id".into(), format!("{id:016x}"));
        }
        let mut row = Map::new();
        row.insert("name".into(), json!(spec.name));
        row.insert("datapath_type".into(), json!(spec.datapath_type));
        row.insert("fail_mode".into(), set(spec.fail_mode.iter().map(|f| json!(f))));
        row.insert("protocols".into(), set(spec.protocols.iter().map(|p| json!(p))));
        row.insert("other_config".into(), string_map(&other));
        row.insert("external_ids".into(), string_map(&spec.external_ids));
        row
    }

    /// Creates the bridge, or brings an existing one to the spec. Returns its uuid.
    pub async fn ensure_bridge(&self, spec: &BridgeSpec) -> Result<String, OvsdbError> {
        check_name("bridge name", &spec.name)?;
        if let Some(f) = &spec.fail_mode {
            if f != "secure" && f != "standalone" {
                return Err(OvsdbError::Invalid { field: "fail_mode", reason: format!("{f:?} is neither secure nor standalone") });
            }
        }
        if let Some(u) = self.uuid_by_name("Bridge", &spec.name).await? {
            let mut row = Self::bridge_row(spec);
            row.remove("name"); // immutable
            let op = Operation::Update { table: "Bridge".into(), conditions: vec![Condition::uuid(&u)], row };
            self.client.transact(DB, &[op]).await?;
            return Ok(u);
        }
        self.init().await?;
        let mut row = Self::bridge_row(spec);
        row.insert("ports".into(), set([named_uuid("port")]));
        let ops = [
            Operation::Insert { table: "Interface".into(), row: json_map(json!({"name": spec.name, "type": "internal"})), uuid_name: Some("iface".into()) },
            Operation::Insert {
                table: "Port".into(),
                row: json_map(json!({"name": spec.name, "interfaces": named_uuid("iface")})),
                uuid_name: Some("port".into()),
            },
            Operation::Insert { table: "Bridge".into(), row, uuid_name: Some("br".into()) },
            Operation::Mutate { table: "Open_vSwitch".into(), conditions: vec![], mutations: vec![Mutation::insert("bridges", set([named_uuid("br")]))] },
            Operation::Comment(format!("plexus: ensure bridge {}", spec.name)),
        ];
        let r = self.client.transact(DB, &ops).await?;
        r.get(2).and_then(|x| x.uuid.clone()).ok_or_else(|| OvsdbError::Protocol("insert returned no uuid".into()))
    }

    /// Deletes a bridge with its ports. Returns whether it existed.
    pub async fn delete_bridge(&self, name: &str) -> Result<bool, OvsdbError> {
        let Some(u) = self.uuid_by_name("Bridge", name).await? else { return Ok(false) };
        let op = Operation::Mutate { table: "Open_vSwitch".into(), conditions: vec![], mutations: vec![Mutation::delete("bridges", set([uuid(&u)]))] };
        self.client.transact(DB, &[op]).await?;
        Ok(true)
    }

    /// Names of all bridges.
    pub async fn bridges(&self) -> Result<Vec<String>, OvsdbError> {
        Ok(self.select("Bridge", vec![], &["name"]).await?.iter().filter_map(|r| r.str("name")).collect())
    }

    /// A bridge's datapath type (`system`, `netdev`; empty means `system`), `None` when there
    /// is no such bridge.
    pub async fn datapath_type(&self, bridge: &str) -> Result<Option<String>, OvsdbError> {
        Ok(self.select("Bridge", vec![Condition::eq("name", bridge)], &["datapath_type"]).await?.first().map(|r| r.str("datapath_type").unwrap_or_default()))
    }

    fn iface_row(spec: &PortSpec) -> Map<String, Value> {
        let mut row = Map::new();
        row.insert("name".into(), json!(spec.name));
        row.insert("type".into(), json!(spec.kind.as_str()));
        row.insert("options".into(), string_map(&spec.options));
        row.insert("external_ids".into(), string_map(&spec.external_ids));
        row.insert("ofport_request".into(), set(spec.ofport_request.iter().map(|p| json!(p))));
        row
    }

    /// Adds a port (with one interface) to a bridge, or brings an existing one to the spec.
    /// Fails with [`OvsdbError::NotFound`] if the bridge does not exist.
    pub async fn add_port(&self, bridge: &str, spec: &PortSpec) -> Result<(), OvsdbError> {
        check_name("port name", &spec.name)?;
        if spec.kind == InterfaceType::Patch && !spec.options.contains_key("peer") {
            return Err(OvsdbError::Invalid { field: "options", reason: "a patch port needs options:peer".into() });
        }
        if self.uuid_by_name("Port", &spec.name).await?.is_some() {
            let mut row = Self::iface_row(spec);
            row.remove("name"); // immutable
            let ops = [
                Operation::Update { table: "Interface".into(), conditions: vec![Condition::eq("name", spec.name.as_str())], row },
                Operation::Update {
                    table: "Port".into(),
                    conditions: vec![Condition::eq("name", spec.name.as_str())],
                    row: json_map(json!({"external_ids": string_map(&spec.external_ids)})),
                },
            ];
            self.client.transact(DB, &ops).await?;
            return Ok(());
        }
        self.insert_ports(bridge, std::slice::from_ref(spec)).await
    }

    /// Adds many new ports to a bridge in one transaction (ports that exist already are left
    /// as they are). Fails with [`OvsdbError::NotFound`] if the bridge does not exist.
    pub async fn add_ports(&self, bridge: &str, specs: &[PortSpec]) -> Result<(), OvsdbError> {
        for s in specs {
            check_name("port name", &s.name)?;
        }
        let existing: std::collections::HashSet<String> = self.select("Port", vec![], &["name"]).await?.iter().filter_map(|r| r.str("name")).collect();
        let new: Vec<PortSpec> = specs.iter().filter(|s| !existing.contains(&s.name)).cloned().collect();
        if new.is_empty() {
            return Ok(());
        }
        self.insert_ports(bridge, &new).await
    }

    async fn insert_ports(&self, bridge: &str, specs: &[PortSpec]) -> Result<(), OvsdbError> {
        // The wait fails the whole transaction if the bridge is missing, instead of inserting
        // ports nothing refers to (which the server would silently collect).
        let mut ops = vec![Operation::Wait {
            table: "Bridge".into(),
            conditions: vec![Condition::eq("name", bridge)],
            columns: vec!["name".into()],
            until: "==",
            rows: vec![json_map(json!({"name": bridge}))],
            timeout_ms: Some(0),
        }];
        for (i, spec) in specs.iter().enumerate() {
            ops.push(Operation::Insert { table: "Interface".into(), row: Self::iface_row(spec), uuid_name: Some(format!("iface{i}")) });
            ops.push(Operation::Insert {
                table: "Port".into(),
                row: json_map(json!({"name": spec.name, "interfaces": named_uuid(&format!("iface{i}")), "external_ids": string_map(&spec.external_ids)})),
                uuid_name: Some(format!("port{i}")),
            });
        }
        ops.push(Operation::Mutate {
            table: "Bridge".into(),
            conditions: vec![Condition::eq("name", bridge)],
            mutations: vec![Mutation::insert("ports", set((0..specs.len()).map(|i| named_uuid(&format!("port{i}")))))],
        });
        match self.client.transact(DB, &ops).await {
            Err(OvsdbError::Transaction { op_index: Some(0), .. }) => Err(OvsdbError::NotFound(format!("bridge {bridge} does not exist"))),
            other => other.map(|_| ()),
        }
    }

    /// Removes a port from a bridge. Returns whether it existed.
    pub async fn delete_port(&self, bridge: &str, name: &str) -> Result<bool, OvsdbError> {
        let Some(u) = self.uuid_by_name("Port", name).await? else { return Ok(false) };
        let op = Operation::Mutate {
            table: "Bridge".into(),
            conditions: vec![Condition::eq("name", bridge)],
            mutations: vec![Mutation::delete("ports", set([uuid(&u)]))],
        };
        let r = self.client.transact(DB, &[op]).await?;
        Ok(r.first().and_then(|x| x.count).unwrap_or(0) > 0)
    }

    /// Names of a bridge's ports.
    pub async fn ports(&self, bridge: &str) -> Result<Vec<String>, OvsdbError> {
        let rows = self.select("Bridge", vec![Condition::eq("name", bridge)], &["ports"]).await?;
        let Some(b) = rows.first() else { return Err(OvsdbError::NotFound(format!("bridge {bridge} does not exist"))) };
        // One select of every port, not one per port: bridges can have thousands.
        let mine: std::collections::BTreeSet<String> = b.uuids("ports").into_iter().collect();
        let all = self.select("Port", vec![], &["_uuid", "name"]).await?;
        let mut names: Vec<String> = all.iter().filter(|r| r.uuids("_uuid").iter().any(|u| mine.contains(u))).filter_map(|r| r.str("name")).collect();
        names.sort();
        Ok(names)
    }

    /// Sets the bridge's OpenFlow controller targets (replacing any others). Controllers
    /// reconnect within a second, so a failed-over controller is picked up quickly.
    pub async fn set_controllers(&self, bridge: &str, targets: &[String]) -> Result<(), OvsdbError> {
        // Replacing identical rows would still be a change every monitor reports: skip it.
        if let Some(b) = self.select("Bridge", vec![Condition::eq("name", bridge)], &["controller"]).await?.first() {
            let mine: std::collections::BTreeSet<String> = b.uuids("controller").into_iter().collect();
            let all = self.select("Controller", vec![], &["_uuid", "target"]).await?;
            let mut have: Vec<String> = all.iter().filter(|r| r.uuids("_uuid").iter().any(|u| mine.contains(u))).filter_map(|r| r.str("target")).collect();
            let mut want = targets.to_vec();
            have.sort();
            want.sort();
            if have == want {
                return Ok(());
            }
        }
        let mut ops: Vec<Operation> = targets
            .iter()
            .enumerate()
            .map(|(i, t)| Operation::Insert {
                table: "Controller".into(),
                row: json_map(json!({"target": t, "max_backoff": 1000})),
                uuid_name: Some(format!("ctl{i}")),
            })
            .collect();
        ops.push(Operation::Update {
            table: "Bridge".into(),
            conditions: vec![Condition::eq("name", bridge)],
            row: json_map(json!({"controller": set((0..targets.len()).map(|i| named_uuid(&format!("ctl{i}"))))})),
        });
        let r = self.client.transact(DB, &ops).await?;
        if r.get(targets.len()).and_then(|x| x.count) == Some(0) {
            return Err(OvsdbError::NotFound(format!("bridge {bridge} does not exist")));
        }
        Ok(())
    }

    /// Sets the one identity `ovs-vswitchd` uses for `ssl:` targets (like `ovs-vsctl set-ssl`):
    /// its private key, its certificate, and the CA a controller's certificate must chain to.
    /// Paths are as `ovs-vswitchd` sees them. Idempotent.
    pub async fn set_ssl(&self, private_key: &str, certificate: &str, ca_cert: &str) -> Result<(), OvsdbError> {
        let want = json!({"private_key": private_key, "certificate": certificate, "ca_cert": ca_cert});
        let rows = self.select("SSL", vec![], &["private_key", "certificate", "ca_cert"]).await?;
        let same = |r: &Row| {
            r.str("private_key").as_deref() == Some(private_key)
                && r.str("certificate").as_deref() == Some(certificate)
                && r.str("ca_cert").as_deref() == Some(ca_cert)
        };
        if rows.len() == 1 && rows.iter().all(same) {
            return Ok(());
        }
        let ops = vec![
            Operation::Insert { table: "SSL".into(), row: json_map(want), uuid_name: Some("ssl".into()) },
            Operation::Update { table: "Open_vSwitch".into(), conditions: vec![], row: json_map(json!({"ssl": named_uuid("ssl")})) },
        ];
        self.client.transact(DB, &ops).await.map(|_| ())
    }

    /// The OpenFlow port number of an interface: `None` while OVS has not assigned one yet,
    /// `Some(-1)` if OVS failed to open it.
    pub async fn ofport(&self, iface: &str) -> Result<Option<i64>, OvsdbError> {
        let rows = self.select("Interface", vec![Condition::eq("name", iface)], &["ofport"]).await?;
        let Some(r) = rows.first() else { return Err(OvsdbError::NotFound(format!("interface {iface} does not exist"))) };
        Ok(r.int("ofport"))
    }

    /// Waits until OVS has given the interface a port number.
    pub async fn wait_ofport(&self, iface: &str, timeout: Duration) -> Result<u32, OvsdbError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // ovs-vswitchd usually numbers a new port within a few milliseconds: look again soon,
        // then less and less often (a fixed 50 ms cost every `docker run` 50 ms).
        let mut wait = Duration::from_millis(1);
        loop {
            match self.ofport(iface).await? {
                Some(p) if p > 0 => return Ok(p as u32),
                Some(-1) => {
                    let rows = self.select("Interface", vec![Condition::eq("name", iface)], &["error"]).await?;
                    let err = rows.first().and_then(|r| r.str("error")).unwrap_or_default();
                    return Err(OvsdbError::NotFound(format!("OVS could not open interface {iface}: {err}")));
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(OvsdbError::Timeout(timeout));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(50));
        }
    }
}

fn json_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}
