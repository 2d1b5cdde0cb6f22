//! A lab with three controller nodes and real switches, attacked the way someone on the same
//! network would: switches faked without TLS, with another CA's certificate and with another
//! host's certificate, against every node; silent clients holding every node's OpenFlow port.
//! Each fails harmlessly: the real switches stay served, a real switch that reconnects does
//! so within a second, every node stays ready and every replica identical.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use plexus_lab::{wire, ControlPlane, Lab, LabConfig, API_PORT, OPENFLOW_PORT};
use plexus_tests::identical_replicas;
use plexus_tests::switch::fake_switch;

const PLEXUS: &str = env!("CARGO_BIN_EXE_plexus");

/// Each node's API base URL.
fn bases(lab: &Lab) -> Vec<String> {
    lab.controller_ips().iter().map(|ip| format!("https://{ip}:{API_PORT}")).collect()
}

/// Waits until `host`'s switch is connected and in sync under its master.
async fn served(lab: &Lab, cp: &ControlPlane, host: &str) {
    let http = cp.http().unwrap();
    let t = Instant::now();
    loop {
        let master = cp.client().unwrap().cluster().await.ok().and_then(|c| c.masters.into_iter().find(|m| m.host == host)).map(|m| m.node);
        if let Some(node) = master {
            let url = format!("{}/v1/hosts/{host}/flows", bases(lab)[node as usize - 1]);
            if let Ok(r) = http.get(&url).send().await {
                let st: serde_json::Value = r.json().await.unwrap_or_default();
                if st["connected"] == true && st["in_sync"] == true {
                    return;
                }
            }
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{host}'s switch is not served (logs in {})", lab.dir.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sessions each node has served `host`'s switch, and whether one is up now.
async fn sessions(lab: &Lab, http: &reqwest::Client, host: &str) -> Vec<(u64, bool)> {
    let mut out = Vec::new();
    for b in bases(lab) {
        let st: serde_json::Value = match http.get(format!("{b}/v1/hosts/{host}/flows")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        out.push((st["sessions"].as_u64().unwrap_or(0), st["connected"] == true));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn fake_and_silent_switches_fail_harmlessly_on_a_three_node_lab() {
    let name = plexus_tests::unique_name('k');
    let lab = Lab::up(&LabConfig { controllers: 3, ..LabConfig::owned(&name, 2) }).expect("lab");
    let cp = lab.start_control_plane(Path::new(PLEXUS)).expect("control plane");
    let http = cp.http().unwrap();
    served(&lab, &cp, "h1").await;
    served(&lab, &cp, "h2").await;
    let before = identical_replicas(&http, &bases(&lab)).await;

    // Fake switches claiming h1's datapath id, at every node.
    let pki = lab.pki_dir();
    let h2_cert = plexus_pki::Ca::identity_in(&pki, &plexus_pki::host_cert_name("h2"), &[], plexus_pki::Usage::Client).unwrap();
    let stranger = plexus_pki::Ca::identity_in(&lab.dir.join("stranger-pki"), &plexus_pki::host_cert_name("h1"), &[], plexus_pki::Usage::Client).unwrap();
    // The stranger trusts the lab's CA (so it gets as far as presenting its own certificate).
    let stranger = plexus_pki::Identity { ca_pem: h2_cert.ca_pem.clone(), ..stranger };
    let dpid = plexus_api::ids::datapath_id("h1");
    for ip in lab.controller_ips() {
        let addr = SocketAddr::new(ip.into(), OPENFLOW_PORT);
        let r = fake_switch(addr, None, dpid, Duration::from_secs(2)).await;
        assert!(r.is_err(), "{addr}: OpenFlow in the clear was answered");
        let r = fake_switch(addr, Some(&stranger), dpid, Duration::from_secs(2)).await;
        assert!(r.is_err(), "{addr}: another CA's certificate got a session: {r:?}");
        let r = fake_switch(addr, Some(&h2_cert), dpid, Duration::from_secs(3)).await;
        assert!(r.as_ref().is_err_and(|e| e.contains("closed")), "{addr}: h2's certificate was served as h1's switch: {r:?}");
    }
    served(&lab, &cp, "h1").await;
    let after = identical_replicas(&http, &bases(&lab)).await;
    assert_eq!(after.revision, before.revision, "the fakes wrote nothing");

    // Three silent clients on every node's OpenFlow port; then h1's switch reconnects.
    let mut silent = Vec::new();
    for ip in lab.controller_ips() {
        for _ in 0..3 {
            silent.push(std::net::TcpStream::connect((ip, OPENFLOW_PORT)).expect("a silent client connects"));
        }
    }
    let old = sessions(&lab, &http, "h1").await;
    assert!(old.iter().all(|(n, up)| *n >= 1 && *up), "every node serves h1's switch: {old:?}");
    // Take h1's controllers away; its agent puts them back at once (fresh sessions).
    let vs = wire::vswitch(&lab.hosts[0]).await.unwrap();
    vs.set_controllers("br-int", &[]).await.unwrap();
    let t = Instant::now();
    let took = loop {
        let now = sessions(&lab, &http, "h1").await;
        if now.iter().zip(&old).all(|((n, up), (was, _))| *up && n > was) {
            break t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(10), "h1's switch did not reconnect with 9 silent clients pending: {now:?} (was {old:?})");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("h1's switch had a new session with all three nodes after {took:?}, 3 silent clients pending on each");
    assert!(took < Duration::from_secs(1), "a real switch connects within 1 s despite silent clients: {took:?}");
    served(&lab, &cp, "h1").await;
    drop(silent);
    identical_replicas(&http, &bases(&lab)).await;
}
