//! The switch manager on real switches: they connect to it, and it keeps their flows equal
//! to what the model says, through model changes, new ports and tampering.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_api::ids::port_name;
use plexus_api::{EndpointKey, EndpointSpec, HostSpec, NetworkSpec, Valid};
use plexus_controller::flows::{unit_cookie, Table, Unit};
use plexus_controller::model::{Command, Object};
use plexus_controller::store::sm::SmData;
use plexus_controller::switches::SwitchManager;
use plexus_lab::{probe, wire, Container, Lab, LabHost};
use plexus_ovs::openflow::{Connection, Listener};
use plexus_tests::*;
use tokio::sync::{watch, RwLock};

struct World {
    state: Arc<RwLock<SmData>>,
    rev: watch::Sender<u64>,
}

impl World {
    async fn apply(&self, cmd: Command) -> Option<Object> {
        let mut st = self.state.write().await;
        let r = Arc::make_mut(&mut st.model).apply(cmd).expect("command applies");
        self.rev.send_replace(st.model.revision);
        r
    }
}

async fn endpoint(w: &World, lab: &Lab, host: &LabHost, id: &str) -> (Container, Ipv4Addr) {
    let spec = Valid::new(EndpointSpec::on(&host.name).id(id)).unwrap();
    let Some(Object::Endpoint(e)) = w.apply(Command::CreateEndpoint { network: "red".into(), spec, now_ms: 0 }).await else { panic!() };
    let c = lab.add_container_with(host, &port_name("red", id), e.ip, e.prefix_len, Some(&e.mac.to_string()), 1450).unwrap();
    wire::plug(&wire::vswitch(host).await.unwrap(), &c).await.unwrap();
    (c, e.ip)
}

async fn ping_ok(from: &Container, to: Ipv4Addr) -> bool {
    let ns = from.netns.clone();
    tokio::task::spawn_blocking(move || probe::wait_ping(&ns, to, Duration::from_secs(10)).is_ok()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn switches_are_kept_at_the_flows_the_model_asks_for() {
    let lab = lab('s', 2);
    let (h1, h2) = (&lab.hosts[0], &lab.hosts[1]);
    // The manager listens on the underlay, where every host's switch can reach it.
    let o = h1.underlay_ip.octets();
    let ctl_ip = Ipv4Addr::new(o[0], o[1], o[2], 1);
    run("ip", &["-n", &lab.underlay_netns(), "addr", "add", &format!("{ctl_ip}/24"), "dev", "br0"]);
    let l = plexus_agent::netns::bind_tcp(&lab.underlay_netns(), SocketAddr::new(ctl_ip.into(), 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let (rev, rx) = watch::channel(0);
    let w = World { state: Arc::new(RwLock::new(SmData::default())), rev };
    let mgr = SwitchManager::spawn(Listener::from_std(l).unwrap(), w.state.clone(), rx, Duration::from_secs(1), None, None);

    for h in [h1, h2] {
        w.apply(Command::PutHost { spec: Valid::new(HostSpec::new(&h.name, h.underlay_ip)).unwrap(), now_ms: 0 }).await;
    }
    let spec = Valid::new(NetworkSpec::overlay("red", "10.10.0.0/24")).unwrap();
    w.apply(Command::PutNetwork { spec, create: true, if_match: None }).await;
    for h in [h1, h2] {
        let vs = wire::vswitch(h).await.unwrap();
        wire::prepare_host(h, &vs).await.unwrap();
        vs.set_controllers(wire::BR_INT, &[format!("tcp:{ctl_ip}:{port}")]).await.unwrap();
    }
    let (e1, _) = endpoint(&w, &lab, h1, "e1").await;
    let (_e2, ip2) = endpoint(&w, &lab, h2, "e2").await;
    assert!(ping_ok(&e1, ip2).await, "the manager programmed both switches");
    let st = mgr.status();
    assert_eq!(st.len(), 2, "{st:?}");
    assert!(st.values().all(|s| s.connected && s.in_sync && s.host.is_some() && s.desired_flows > 0), "{st:#?}");

    // A new endpoint: its port appears (port status), the model changes, and it is reachable.
    let (_e3, ip3) = endpoint(&w, &lab, h2, "e3").await;
    assert!(ping_ok(&e1, ip3).await, "a new endpoint is reachable");

    // A deleted endpoint's flows leave every switch within a second.
    let conns = [wire::openflow(h1).await.unwrap(), wire::openflow(h2).await.unwrap()];
    let gone = unit_cookie(&Unit::Endpoint(EndpointKey::new("red", "e3")));
    let t = Instant::now();
    w.apply(Command::DeleteEndpoint { network: "red".into(), id: "e3".into(), on_host: None }).await;
    loop {
        let mut left = 0;
        for c in &conns {
            left += c.dump_flows(Default::default()).await.unwrap().iter().filter(|f| f.cookie == gone).count();
        }
        if left == 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(1), "{left} flows of e3 still there after {:?}", t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("endpoint flows gone from both switches after {:?}", t.elapsed());
    // It was recompiled incrementally: the endpoint's unit, its network's and its network's
    // policies' (none here), nothing more, and its difference sent without reading the switch
    // back.
    for s in mgr.status().values() {
        let p = s.last_pass.as_ref().expect("a pass that changed something");
        assert!(!p.full && p.units == 3, "{}: {p:?}", s.datapath_id);
    }

    // Tampering is undone by the audit.
    let mgmt = format!("unix:{}", h1.ovs.mgmt_sock(wire::BR_INT).display());
    let desired = count(&conns[0]).await;
    run("ovs-ofctl", &["-O", "OpenFlow13", "del-flows", &mgmt, &format!("table={}", Table::L2Lookup.id())]);
    run("ovs-ofctl", &["-O", "OpenFlow13", "add-flow", &mgmt, &format!("table={},priority=9,in_port=77,actions=drop", Table::Classify.id())]);
    let t = Instant::now();
    while count(&conns[0]).await != desired || dump_flows(h1, wire::BR_INT).iter().any(|f| f.contains("in_port=77")) {
        assert!(t.elapsed() < Duration::from_secs(5), "the audit did not restore h1's flows");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ping_ok(&e1, ip2).await, "traffic flows again");
    assert!(mgr.status().values().any(|s| s.corrections >= 1));

    // Tampering that keeps the count (a flow's actions changed in place) is not seen by the
    // cheap audits that compare counts, but by the full one every few audits.
    let output = format!("table={},", Table::Output.id());
    let tampered = || dump_flows(h1, wire::BR_INT).into_iter().filter(|f| f.contains(&output)).any(|f| f.contains("actions=drop"));
    run("ovs-ofctl", &["-O", "OpenFlow13", "mod-flows", &mgmt, &format!("table={},actions=drop", Table::Output.id())]);
    assert!(tampered(), "the output table was changed in place");
    let t = Instant::now();
    while tampered() {
        assert!(t.elapsed() < Duration::from_secs(15), "the full audit did not undo a modified flow");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(count(&conns[0]).await == desired && ping_ok(&e1, ip2).await, "restored");
}

async fn count(c: &Connection) -> usize {
    c.dump_flows(Default::default()).await.unwrap().len()
}

/// Peers that connect to the OpenFlow port and say nothing hold up no switch: each handshake
/// has a task and a deadline of its own. Before, the accept loop ran handshakes one at a time,
/// so three silent peers delayed a real switch by 30 s.
#[tokio::test(flavor = "multi_thread")]
async fn silent_peers_on_the_openflow_port_delay_no_switch() {
    use std::io::Read;
    let lab = lab('q', 1);
    let h1 = &lab.hosts[0];
    // OVS accepts unix controller targets only in its run directory.
    let sock = h1.ovs.rundir.join("mgr.sock");
    let (rev, rx) = watch::channel(0);
    let w = World { state: Arc::new(RwLock::new(SmData::default())), rev };
    let mgr = SwitchManager::spawn(Listener::bind_unix(&sock).unwrap(), w.state.clone(), rx, Duration::from_secs(10), None, None);
    w.apply(Command::PutHost { spec: Valid::new(HostSpec::new(&h1.name, h1.underlay_ip)).unwrap(), now_ms: 0 }).await;
    let vs = wire::vswitch(h1).await.unwrap();
    wire::prepare_host(h1, &vs).await.unwrap();
    let mut silent: Vec<std::os::unix::net::UnixStream> = (0..3).map(|_| std::os::unix::net::UnixStream::connect(&sock).unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t = Instant::now();
    vs.set_controllers(wire::BR_INT, &[format!("unix:{}", sock.display())]).await.unwrap();
    while !mgr.status().values().any(|s| s.connected) {
        assert!(t.elapsed() < Duration::from_secs(3), "the switch was held up behind silent peers: {:?}", mgr.status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("the real switch connected after {:?} with 3 silent peers pending", t.elapsed());
    // The silent peers themselves are dropped at their deadline.
    for s in &mut silent {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        // OVS-style peers would get a hello; whatever was sent, the connection then closes.
        let t = Instant::now();
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(9), "a silent peer was kept past its deadline");
    }
}

/// Posing as a switch takes a certificate of the cluster's CA that names the host whose
/// datapath id is claimed: without TLS, with another CA's certificate, or with a valid
/// certificate of another host, the controller closes the session and programs nothing.
#[tokio::test(flavor = "multi_thread")]
async fn only_a_switch_whose_certificate_names_its_host_is_served() {
    init_tracing();
    let dir = std::env::temp_dir().join(format!("plexus-of-tls-{}", unique_name('t')));
    let _ = std::fs::remove_dir_all(&dir);
    let node = plexus_pki::Ca::identity_in(&dir, "node-1", &["127.0.0.1".into()], plexus_pki::Usage::Node).unwrap();
    let ghost = plexus_pki::Ca::identity_in(&dir, &plexus_pki::host_cert_name("ghost"), &[], plexus_pki::Usage::Client).unwrap();
    let other = plexus_pki::Ca::identity_in(&dir, &plexus_pki::host_cert_name("other"), &[], plexus_pki::Usage::Client).unwrap();
    let stranger = plexus_pki::Ca::identity_in(&dir.join("elsewhere"), &plexus_pki::host_cert_name("ghost"), &[], plexus_pki::Usage::Client).unwrap();
    // The stranger trusts our CA for the server, but its own certificate is from another CA.
    let stranger = plexus_pki::Identity { ca_pem: node.ca_pem.clone(), ..stranger };

    let (rev, rx) = watch::channel(0);
    let w = World { state: Arc::new(RwLock::new(SmData::default())), rev };
    let l = Listener::bind_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let mgr = SwitchManager::spawn(l, w.state.clone(), rx, Duration::from_secs(10), None, Some(node.server_config(None).unwrap()));
    for h in ["ghost", "other"] {
        let spec = Valid::new(HostSpec::new(h, if h == "ghost" { Ipv4Addr::new(192, 0, 2, 50) } else { Ipv4Addr::new(192, 0, 2, 51) })).unwrap();
        w.apply(Command::PutHost { spec, now_ms: 0 }).await;
    }
    let dpid = plexus_api::ids::datapath_id("ghost");
    let key = format!("{dpid:016x}");
    let status = || mgr.status().get(&key).cloned();

    assert!(plexus_tests::switch::fake_switch(addr, None, dpid, Duration::from_secs(2)).await.is_err(), "OpenFlow in the clear is answered");
    let r = plexus_tests::switch::fake_switch(addr, Some(&stranger), dpid, Duration::from_secs(2)).await;
    assert!(r.is_err(), "another CA's certificate got a session: {r:?}");
    assert!(status().is_none_or(|s| !s.connected), "{:?}", status());
    let r = plexus_tests::switch::fake_switch(addr, Some(&other), dpid, Duration::from_secs(3)).await;
    assert!(r.as_ref().is_err_and(|e| e.contains("closed by the controller")), "a certificate of host other served ghost's switch: {r:?}");
    let st = status().expect("the refusal is recorded");
    assert!(!st.connected && st.last_error.as_deref().is_some_and(|e| e.contains("does not name host ghost")), "{st:?}");
    // Made-up datapath ids are refused without leaving anything behind.
    for made_up in 0xdead_0000u64..0xdead_0005 {
        let r = plexus_tests::switch::fake_switch(addr, Some(&ghost), made_up, Duration::from_secs(3)).await;
        assert!(r.as_ref().is_err_and(|e| e.contains("closed by the controller")), "{r:?}");
    }
    let recorded: Vec<String> = (0xdead_0000u64..0xdead_0005).map(|d| format!("{d:016x}")).filter(|k| mgr.status().contains_key(k)).collect();
    assert!(recorded.is_empty(), "refused made-up ids were recorded: {recorded:?}");
    // The right certificate is served.
    let served = tokio::spawn(async move { plexus_tests::switch::fake_switch(addr, Some(&ghost), dpid, Duration::from_secs(3)).await });
    let t = Instant::now();
    while !status().is_some_and(|s| s.connected) {
        assert!(t.elapsed() < Duration::from_secs(3), "ghost's own certificate was refused: {:?}", status());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = served.await;
    let _ = std::fs::remove_dir_all(&dir);
}
