//! The one test-support crate of the workspace: unique labs and names, controller clusters as
//! processes, `ovs-ofctl` and `ovs-vsctl` as independent witnesses of what a switch holds.
//! The end-to-end tests in `tests/tests` and the CLI's tests in `cli/tests` both use it.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use plexus_lab::{Lab, LabConfig, LabHost};
use plexus_ovs::openflow::{Connection, ConnectionOptions};
use plexus_ovs::ovsdb::{BridgeSpec, VSwitch};

pub mod api;
mod cluster;
pub mod linearizable;
mod loopfs;
pub mod switch;
pub use cluster::{identical_replicas, Cluster, Partition};
pub use loopfs::LoopFs;

/// Logs to the test's output (shown for failing tests).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt().with_env_filter("info,plexus=debug").with_test_writer().try_init();
}

/// A lab name no concurrent test uses: nextest runs each test in its own process.
pub fn unique_name(prefix: char) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}{}", std::process::id() % 10_000_000, N.fetch_add(1, Ordering::Relaxed))
}

/// A lab owned by this test: torn down when dropped, even if the test fails.
pub fn lab(prefix: char, hosts: usize) -> Lab {
    init_tracing();
    let cfg = LabConfig::owned(&unique_name(prefix), hosts);
    match Lab::up(&cfg) {
        Ok(l) => l,
        Err(e) => panic!("cannot build a lab: {e}"),
    }
}

/// Runs an Open vSwitch program and returns stdout; panics with stderr if it fails.
pub fn run(program: &str, args: &[&str]) -> String {
    run_from(program, args, "openvswitch-switch")
}

/// Runs a program of Debian package `package` and returns stdout; panics with stderr if it
/// fails, and with what to install if it cannot run.
pub fn run_from(program: &str, args: &[&str], package: &str) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} cannot run ({e}); install {package}"));
    assert!(out.status.success(), "{program} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ovs-vsctl` against a lab host's database.
pub fn vsctl(host: &LabHost, args: &[&str]) -> String {
    let db = format!("--db=unix:{}", host.ovs.db_sock().display());
    let mut all = vec![db.as_str(), "--timeout=10"];
    all.extend_from_slice(args);
    run("ovs-vsctl", &all)
}

/// The flows `ovs-ofctl dump-flows --no-stats` shows for a bridge (one per line, sorted).
pub fn dump_flows(host: &LabHost, bridge: &str) -> Vec<String> {
    let target = format!("unix:{}", host.ovs.mgmt_sock(bridge).display());
    let out = run("ovs-ofctl", &["-O", "OpenFlow13", "--no-stats", "dump-flows", &target]);
    let mut v: Vec<String> = out.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty() && !l.starts_with("OFPST_FLOW")).collect();
    v.sort();
    v
}

/// A netdev bridge with fail_mode secure speaking OpenFlow 1.3, ready for OpenFlow over its
/// management socket.
pub async fn bridge(host: &LabHost, name: &str) -> (VSwitch, Connection, plexus_ovs::openflow::Events) {
    let vs = plexus_lab::wire::vswitch(host).await.expect("connect to ovsdb-server");
    let spec = BridgeSpec {
        name: name.into(),
        datapath_type: "netdev".into(),
        fail_mode: Some("secure".into()),
        protocols: vec!["OpenFlow13".into()],
        datapath_id: Some(0xabc),
        ..Default::default()
    };
    vs.ensure_bridge(&spec).await.expect("create bridge");
    let sock = host.ovs.mgmt_sock(name);
    for _ in 0..200 {
        if let Ok((c, ev)) = Connection::connect_unix(&sock, ConnectionOptions::default()).await {
            return (vs, c, ev);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("bridge {name} never opened {}", sock.display());
}

/// Makes this test a controller of `bridge`: a unix listener in the host's run directory (OVS
/// refuses controller sockets elsewhere) set as the bridge's only target, and the session the
/// switch opens to it.
pub async fn controller(host: &LabHost, vs: &VSwitch, bridge: &str, opts: ConnectionOptions) -> (Connection, plexus_ovs::openflow::Events) {
    let sock = host.ovs.rundir.join(format!("{bridge}-ctl.sock"));
    let l = plexus_ovs::openflow::Listener::bind_unix(&sock).expect("bind controller socket");
    vs.set_controllers(bridge, &[format!("unix:{}", sock.display())]).await.expect("set controller");
    tokio::time::timeout(Duration::from_secs(10), l.accept(opts)).await.expect("the switch connects within 10 s").expect("handshake")
}
