//! The OVSDB client against a real ovsdb-server (and ovs-vswitchd, which fills in ofport).

use std::time::{Duration, Instant};

use plexus_lab::Daemon;
use plexus_ovs::ovsdb::value::{named_uuid, set, string_map_of};
use plexus_ovs::ovsdb::*;
use plexus_tests::*;
use serde_json::{json, Map, Value};

async fn client(host: &plexus_lab::LabHost, opts: ClientOptions) -> Client {
    Client::connect(host.ovsdb_target(), opts, Duration::from_secs(10)).await.expect("connect to ovsdb-server")
}

fn obj(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

fn netdev(name: &str) -> BridgeSpec {
    BridgeSpec {
        name: name.into(),
        datapath_type: "netdev".into(),
        fail_mode: Some("secure".into()),
        protocols: vec!["OpenFlow13".into()],
        datapath_id: Some(0x1234),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_monitor_sees_bridges_and_ports_appear_and_disappear() {
    let lab = lab('d', 1);
    let h = &lab.hosts[0];
    let c = client(h, ClientOptions::default()).await;
    assert!(c.list_dbs().await.unwrap().contains(&"Open_vSwitch".to_string()));
    let schema = c.get_schema("Open_vSwitch").await.unwrap();
    assert!(schema.tables["Bridge"]["ports"].max == u64::MAX);
    let mut mon = c.monitor("Open_vSwitch", vec![MonitorRequest::all("Bridge"), MonitorRequest::all("Port")]).await.unwrap();
    let initial = mon.next().await.unwrap();
    assert!(initial.iter().all(|u| u.table != "Bridge"), "no bridge yet: {initial:?}");

    let vs = VSwitch::new(c.clone());
    vs.ensure_bridge(&netdev("br0")).await.unwrap();
    vs.add_port("br0", &PortSpec::new("p1", InterfaceType::Internal)).await.unwrap();
    let bridge = mon.wait_for(Duration::from_secs(5), |u| u.table == "Bridge" && u.old.is_none()).await.unwrap();
    let new = bridge.new.unwrap();
    assert_eq!(new.str("name").as_deref(), Some("br0"));
    assert_eq!(new.str("datapath_type").as_deref(), Some("netdev"));
    assert_eq!(new.string_map("other_config").get("datapath-id").map(String::as_str), Some("0000000000001234"));
    let p1 = mon.wait_for(Duration::from_secs(5), |u| u.table == "Port" && u.new.as_ref().and_then(|r| r.str("name")).as_deref() == Some("p1")).await.unwrap();

    // Removed behind our back by ovs-vsctl: the monitor reports the delete, and applies the
    // update2 difference of Bridge.ports (a set losing one element).
    vsctl(h, &["del-port", "br0", "p1"]);
    let gone = mon.wait_for(Duration::from_secs(5), |u| u.table == "Port" && u.uuid == p1.uuid && u.new.is_none()).await.unwrap();
    assert_eq!(gone.old.unwrap().str("name").as_deref(), Some("p1"));
    let modified = mon.wait_for(Duration::from_secs(5), |u| u.table == "Bridge" && u.old.is_some() && u.new.is_some()).await.unwrap();
    let ports = modified.new.unwrap().uuids("ports");
    assert_eq!(ports.len(), 1, "only the bridge's own port remains: {ports:?}");
    assert!(!ports.contains(&p1.uuid));
    vsctl(h, &["del-br", "br0"]);
    mon.wait_for(Duration::from_secs(5), |u| u.table == "Bridge" && u.new.is_none()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_reconnects_after_ovsdb_server_restarts_and_the_monitor_resumes() {
    let lab = lab('d', 1);
    let h = &lab.hosts[0];
    let c = client(h, ClientOptions::default()).await;
    let mut mon = c.monitor("Open_vSwitch", vec![MonitorRequest { table: "Bridge".into(), columns: Some(vec!["name".into()]) }]).await.unwrap();
    mon.next().await.unwrap();
    assert!(h.ovs.signal(Daemon::OvsdbServer, libc::SIGKILL));
    let mut state = c.watch_state();
    tokio::time::timeout(Duration::from_secs(5), state.wait_for(|s| matches!(s, ConnState::Connecting { .. }))).await.unwrap().unwrap();
    assert!(matches!(c.list_dbs().await, Err(OvsdbError::NotConnected { .. })), "a request while down fails at once with a clear error");
    // Changed while our client is away (the database file survives the crash).
    h.ovs.start_daemon(Daemon::OvsdbServer).unwrap();
    vsctl(h, &["--no-wait", "add-br", "br9", "--", "set", "bridge", "br9", "datapath_type=netdev"]);
    assert!(c.wait_connected(Duration::from_secs(10)).await.unwrap() >= 2, "a new connection");
    let u = mon.wait_for(Duration::from_secs(5), |u| u.table == "Bridge").await.unwrap();
    assert_eq!(u.new.unwrap().str("name").as_deref(), Some("br9"));
    // And it keeps following changes after the reconnect.
    vsctl(h, &["--no-wait", "del-br", "br9"]);
    mon.wait_for(Duration::from_secs(5), |u| u.table == "Bridge" && u.new.is_none()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_schema_violation_is_the_servers_typed_error_and_changes_nothing() {
    let lab = lab('d', 1);
    let h = &lab.hosts[0];
    let c = client(h, ClientOptions::default()).await;
    let ops = [
        Operation::Insert { table: "Interface".into(), row: obj(json!({"name": "bad0", "ofport_request": 70000})), uuid_name: Some("i".into()) },
        Operation::Insert { table: "Port".into(), row: obj(json!({"name": "bad0", "interfaces": named_uuid("i")})), uuid_name: None },
    ];
    match c.transact("Open_vSwitch", &ops).await {
        Err(OvsdbError::Transaction { op_index: Some(0), error, details }) => {
            assert_eq!(error, "constraint violation");
            assert!(details.unwrap_or_default().contains("70000"));
        }
        other => panic!("expected a constraint violation at op 0, got {other:?}"),
    }
    match c.transact("Open_vSwitch", &[Operation::Insert { table: "Bridge".into(), row: obj(json!({"no_such_column": 1})), uuid_name: None }]).await {
        Err(OvsdbError::Transaction { error, .. }) => assert!(error.contains("unknown column") || error.contains("syntax"), "{error}"),
        other => panic!("expected an error, got {other:?}"),
    }
    assert!(vsctl(h, &["--columns=name", "list", "Interface"]).trim().is_empty(), "nothing was inserted");
    // A reference to a row that does not exist fails at commit, not at an operation.
    let dangling = Operation::Insert {
        table: "Port".into(),
        row: obj(json!({"name": "x", "interfaces": ["uuid", "11111111-2222-3333-4444-555555555555"]})),
        uuid_name: None,
    };
    match c.transact("Open_vSwitch", &[dangling]).await {
        Err(OvsdbError::Transaction { error, .. }) => assert!(error.contains("referential integrity"), "{error}"),
        other => panic!("expected a referential integrity error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn transact_carries_every_operation() {
    let lab = lab('d', 1);
    let h = &lab.hosts[0];
    let c = client(h, ClientOptions::default()).await;
    let db = "Open_vSwitch";
    let ins = [
        Operation::Comment("plexus test: insert".into()),
        Operation::Insert { table: "Interface".into(), row: obj(json!({"name": "t0", "type": "internal"})), uuid_name: Some("i".into()) },
        Operation::Insert { table: "Port".into(), row: obj(json!({"name": "t0", "interfaces": named_uuid("i")})), uuid_name: Some("p".into()) },
        Operation::Insert {
            table: "Bridge".into(),
            row: obj(json!({"name": "t0", "ports": set([named_uuid("p")]), "datapath_type": "netdev"})),
            uuid_name: Some("b".into()),
        },
        Operation::Mutate { table: "Open_vSwitch".into(), conditions: vec![], mutations: vec![Mutation::insert("bridges", set([named_uuid("b")]))] },
    ];
    let r = c.transact(db, &ins).await.unwrap();
    let bridge_uuid = r[3].uuid.clone().expect("insert returns the uuid");
    assert_eq!(vsctl(h, &["get", "bridge", "t0", "_uuid"]).trim(), bridge_uuid);

    let upd = [
        Operation::Update {
            table: "Bridge".into(),
            conditions: vec![Condition::eq("name", "t0")],
            row: obj(json!({"external_ids": ["map", [["owner", "plexus"]]]})),
        },
        Operation::Mutate {
            table: "Bridge".into(),
            conditions: vec![Condition::uuid(&bridge_uuid)],
            mutations: vec![Mutation::insert("other_config", json!(["map", [["a", "1"], ["b", "2"]]]))],
        },
        Operation::Mutate {
            table: "Bridge".into(),
            conditions: vec![Condition::eq("name", "t0")],
            mutations: vec![Mutation::delete("other_config", json!(["set", ["a"]]))],
        },
        Operation::Wait {
            table: "Bridge".into(),
            conditions: vec![Condition::eq("name", "t0")],
            columns: vec!["external_ids".into()],
            until: "==",
            rows: vec![obj(json!({"external_ids": ["map", [["owner", "plexus"]]]}))],
            timeout_ms: Some(0),
        },
        Operation::Select {
            table: "Bridge".into(),
            conditions: vec![Condition::eq("name", "t0")],
            columns: Some(vec!["other_config".into(), "external_ids".into()]),
        },
        Operation::Commit { durable: false },
    ];
    let r = c.transact(db, &upd).await.unwrap();
    assert_eq!(r[0].count, Some(1));
    let row = &r[4].rows[0];
    assert_eq!(string_map_of(&row["other_config"]).into_iter().collect::<Vec<_>>(), vec![("b".to_string(), "2".to_string())]);
    assert_eq!(vsctl(h, &["get", "bridge", "t0", "external_ids:owner"]).trim(), "plexus");

    // A wait that is not satisfied aborts the whole transaction, including the delete.
    let guarded = [
        Operation::Wait {
            table: "Bridge".into(),
            conditions: vec![Condition::eq("name", "t0")],
            columns: vec!["external_ids".into()],
            until: "==",
            rows: vec![obj(json!({"external_ids": ["map", [["owner", "someone-else"]]]}))],
            timeout_ms: Some(0),
        },
        Operation::Delete { table: "Bridge".into(), conditions: vec![Condition::eq("name", "t0")] },
    ];
    assert!(matches!(c.transact(db, &guarded).await, Err(OvsdbError::Transaction { op_index: Some(0), .. })));
    assert_eq!(vsctl(h, &["list-br"]).trim(), "t0");
    let del = [
        Operation::Mutate { table: "Open_vSwitch".into(), conditions: vec![], mutations: vec![Mutation::delete("bridges", set([value::uuid(&bridge_uuid)]))] },
        Operation::Delete { table: "Bridge".into(), conditions: vec![Condition::uuid(&bridge_uuid)] },
    ];
    let r = c.transact(db, &del).await.unwrap();
    assert_eq!(r[1].count, Some(1));
    assert_eq!(vsctl(h, &["list-br"]).trim(), "");
    let aborted = c.transact(db, &[Operation::Comment("nothing".into()), Operation::Abort]).await;
    assert!(matches!(aborted, Err(OvsdbError::Transaction { op_index: Some(1), ref error, .. }) if error == "aborted"), "{aborted:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn typed_helpers_build_what_ovs_vsctl_then_shows() {
    let lab = lab('d', 1);
    let h = &lab.hosts[0];
    let vs = VSwitch::new(client(h, ClientOptions::default()).await);
    vs.ensure_bridge(&netdev("br0")).await.unwrap();
    let again = vs.ensure_bridge(&netdev("br0")).await.unwrap();
    assert_eq!(vs.bridges().await.unwrap(), vec!["br0"], "idempotent");
    assert_eq!(vsctl(h, &["get", "bridge", "br0", "_uuid"]).trim(), again);
    assert_eq!(
        vsctl(h, &["get", "bridge", "br0", "datapath_type", "fail_mode", "protocols", "other_config:datapath-id"]).trim(),
        "netdev\nsecure\n[OpenFlow13]\n\"0000000000001234\""
    );
    vs.ensure_bridge(&netdev("br1")).await.unwrap();

    h.exec(&["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v0p"]).unwrap();
    let ports = [
        PortSpec::new("v0", InterfaceType::System).external_id("plexus-endpoint", "ep-1"),
        PortSpec::new("i0", InterfaceType::Internal),
        PortSpec { ofport_request: Some(77), ..PortSpec::new("vx0", InterfaceType::Vxlan).option("remote_ip", "flow").option("key", "flow") },
        PortSpec::new("gn0", InterfaceType::Geneve).option("remote_ip", "flow").option("key", "flow"),
        PortSpec::new("pa", InterfaceType::Patch).option("peer", "pb"),
    ];
    for p in &ports {
        vs.add_port("br0", p).await.unwrap();
    }
    vs.add_port("br1", &PortSpec::new("pb", InterfaceType::Patch).option("peer", "pa")).await.unwrap();
    vs.add_port("br0", &ports[0]).await.expect("adding an existing port again is fine");
    assert_eq!(vs.ports("br0").await.unwrap(), vec!["br0", "gn0", "i0", "pa", "v0", "vx0"]);
    for p in &ports {
        let n = vs.wait_ofport(&p.name, Duration::from_secs(10)).await.unwrap();
        assert_eq!(vsctl(h, &["get", "interface", &p.name, "ofport"]).trim(), n.to_string());
    }
    assert_eq!(vs.ofport("vx0").await.unwrap(), Some(77));
    assert_eq!(vsctl(h, &["get", "interface", "vx0", "type", "options"]).trim(), "vxlan\n{key=flow, remote_ip=flow}");
    assert_eq!(vsctl(h, &["get", "interface", "v0", "external_ids:plexus-endpoint"]).trim(), "ep-1");
    assert_eq!(vsctl(h, &["get", "interface", "pa", "options:peer"]).trim(), "pb");
    assert!(matches!(vs.add_port("nope", &PortSpec::new("x0", InterfaceType::Internal)).await, Err(OvsdbError::NotFound(ref m)) if m.contains("nope")));
    assert!(matches!(vs.add_port("br0", &PortSpec::new("pc", InterfaceType::Patch)).await, Err(OvsdbError::Invalid { field: "options", .. })));
    assert!(matches!(vs.add_port("br0", &PortSpec::new("a-name-that-is-too-long", InterfaceType::Internal)).await, Err(OvsdbError::Invalid { .. })));

    vs.set_controllers("br0", &["tcp:127.0.0.1:6653".into(), "tcp:127.0.0.2:6653".into()]).await.unwrap();
    let mut ctl: Vec<String> = vsctl(h, &["get-controller", "br0"]).lines().map(str::to_string).collect();
    ctl.sort();
    assert_eq!(ctl, vec!["tcp:127.0.0.1:6653", "tcp:127.0.0.2:6653"]);
    vs.set_controllers("br0", &["tcp:127.0.0.3:6653".into()]).await.unwrap();
    assert_eq!(vsctl(h, &["get-controller", "br0"]).trim(), "tcp:127.0.0.3:6653");
    assert_eq!(vsctl(h, &["--columns=target", "--bare", "list", "Controller"]).trim(), "tcp:127.0.0.3:6653", "the replaced controller rows are gone");

    assert!(vs.delete_port("br0", "i0").await.unwrap());
    assert!(!vs.delete_port("br0", "i0").await.unwrap(), "deleting twice is not an error");
    assert!(!vsctl(h, &["list-ports", "br0"]).contains("i0"));
    assert!(vs.delete_bridge("br1").await.unwrap());
    assert!(!vs.delete_bridge("br1").await.unwrap());
    assert_eq!(vsctl(h, &["list-br"]).trim(), "br0");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_session_survives_60s_and_a_dead_server_is_noticed() {
    let lab = lab('d', 1);
    let h = &lab.hosts[0];
    let opts = ClientOptions { probe_interval: Duration::from_secs(2), ..Default::default() };
    let c = client(h, opts).await;
    let mut mon = c.monitor("Open_vSwitch", vec![MonitorRequest::all("Bridge")]).await.unwrap();
    mon.next().await.unwrap();
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(c.state(), ConnState::Connected { generation: 1 }, "no reconnect was needed");
    vsctl(h, &["--no-wait", "add-br", "br5", "--", "set", "bridge", "br5", "datapath_type=netdev"]);
    mon.wait_for(Duration::from_secs(5), |u| u.table == "Bridge").await.expect("the monitor still delivers after 60 s idle");

    // A frozen server answers nothing: the client notices and says why.
    assert!(h.ovs.signal(Daemon::OvsdbServer, libc::SIGSTOP));
    let t = Instant::now();
    let mut state = c.watch_state();
    let s = tokio::time::timeout(Duration::from_secs(15), state.wait_for(|s| matches!(s, ConnState::Connecting { .. })))
        .await
        .expect("dead server noticed")
        .unwrap()
        .clone();
    assert!(matches!(&s, ConnState::Connecting { last_error, .. } if last_error.contains("server dead")), "{s:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "noticed after {:?}", t.elapsed());
    h.ovs.signal(Daemon::OvsdbServer, libc::SIGCONT);
    c.wait_connected(Duration::from_secs(10)).await.expect("reconnects once the server runs again");
}

#[test]
fn the_client_speaks_tcp_too() {
    let lab = lab('d', 1);
    let h = lab.hosts[0].clone();
    // The host's database also listens on its own loopback; the client runs inside the
    // host's namespace to reach it.
    let port = plexus_agent::netns::bind_tcp(&h.netns, "127.0.0.1:0".parse().unwrap()).unwrap().local_addr().unwrap().port();
    let ctl = format!("{}/ovsdb-server.ctl", h.ovs.rundir.display());
    run("ovs-appctl", &["-t", &ctl, "ovsdb-server/add-remote", &format!("ptcp:{port}:127.0.0.1")]);
    let names = plexus_agent::netns::run_in(&h.netns, move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let target: Target = format!("tcp:127.0.0.1:{port}").parse().unwrap();
            let mut last = None;
            for _ in 0..50 {
                match Client::connect(target.clone(), ClientOptions::default(), Duration::from_millis(200)).await {
                    Ok(c) => {
                        let vs = VSwitch::new(c);
                        vs.ensure_bridge(&netdev("brt")).await.unwrap();
                        return vs.bridges().await.unwrap();
                    }
                    Err(e) => last = Some(e),
                }
            }
            panic!("no TCP connection to ovsdb-server: {last:?}");
        })
    })
    .unwrap();
    assert_eq!(names, vec!["brt"]);
    assert_eq!(vsctl(&h, &["list-br"]).trim(), "brt");
    assert!("tcp:nonsense".parse::<Target>().is_err());
    assert!("udp:1.2.3.4:6640".parse::<Target>().is_err());
}
