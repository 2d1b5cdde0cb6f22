//! No packet lost to a race with the controller (issue 17): a packet that meets no flow
//! because its endpoint's flows are not in yet is held and delivered once they are, and a
//! flood of packets nobody can place costs the controller no more than the switch's hold
//! meter lets through.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plexus_api::{Endpoint, EndpointSpec, Mac, NetworkSpec};
use plexus_lab::{probe, wire, ControlPlane, Lab, LabConfig};

const HOLD_RATE: u64 = plexus_controller::flows::pipeline::HOLD_RATE as u64;
const HOLD_BURST: u64 = plexus_controller::flows::pipeline::HOLD_BURST as u64;
/// Packets a second of the flood.
const FLOOD_RATE: u64 = 100 * HOLD_RATE;
/// One-second windows of flood (as many quiet ones alternate with them).
const FLOOD_WINDOWS: u64 = 10;

fn lab(tag: char) -> (Lab, ControlPlane) {
    let lab = Lab::up(&LabConfig::owned(&plexus_tests::unique_name(tag), 2)).expect("lab");
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    (lab, cp)
}

/// An endpoint with a chosen address and MAC, for a container plugged in before the endpoint
/// exists (what a runtime does before it asks for the network).
fn planned(id: &str, host: &str, ip: Ipv4Addr) -> (EndpointSpec, Endpoint) {
    let o = ip.octets();
    let mac = format!("02:17:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]);
    let spec = EndpointSpec {
        id: Some(id.into()),
        host: host.into(),
        ip: Some(ip),
        ip6: None,
        mac: Some(mac.clone()),
        owner: None,
        labels: Default::default(),
        publish: Vec::new(),
    };
    let e = Endpoint {
        id: id.into(),
        network: "red".into(),
        host: host.into(),
        ip,
        prefix_len: 24,
        gateway: Ipv4Addr::new(10, 17, 0, 1),
        ip6: None,
        prefix_len6: None,
        gateway6: None,
        mac: Mac::parse("mac", &mac).expect("mac"),
        owner: None,
        labels: Default::default(),
        publish: Vec::new(),
        revision: 0,
    };
    (spec, e)
}

async fn switch_status(cp: &ControlPlane, host: &str) -> serde_json::Value {
    cp.http().expect("client").get(format!("{}/v1/hosts/{host}/flows", cp.api)).send().await.expect("status").json().await.expect("json")
}

/// A container that sends before its endpoint exists, to a peer whose endpoint does not exist
/// either: its ARP request meets no flow on its own switch (the port is not classified yet),
/// and its ping then meets none on the peer's. Both are held and go through once the flows are
/// in, long before the kernel's one-second ARP retry.
#[tokio::test(flavor = "multi_thread")]
async fn a_packet_sent_before_its_flows_exist_arrives_once_they_do() {
    let (lab, cp) = lab('k');
    let api = cp.client().expect("client");
    api.create_network(&NetworkSpec::overlay("red", "10.17.0.0/24")).await.expect("network");
    // A third endpoint on each host, so both switches already carry the network.
    for h in ["h1", "h2"] {
        let e = api.create_endpoint("red", &EndpointSpec::on(h)).await.expect("endpoint");
        lab.attach(&e, &format!("o{h}"), wire::CONTAINER_MTU).await.expect("attach");
    }
    let ((sa, ea), (sb, eb)) = (planned("a", "h1", Ipv4Addr::new(10, 17, 0, 50)), planned("b", "h2", Ipv4Addr::new(10, 17, 0, 60)));
    let a = lab.attach_with(&ea, "a", wire::CONTAINER_MTU, false).await.expect("plug a");
    lab.attach_with(&eb, "b", wire::CONTAINER_MTU, false).await.expect("plug b");
    let ns = a.netns.clone();
    let ping = std::thread::spawn(move || probe::one_ping_rtt(&ns, Ipv4Addr::new(10, 17, 0, 60), Duration::from_secs(5)));
    // The ARP request leaves now and finds no flow for a's port.
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.create_endpoint("red", &sa).await.expect("endpoint a");
    api.create_endpoint("red", &sb).await.expect("endpoint b");
    let rtt = ping.join().expect("ping thread").expect("the held ping is answered");
    eprintln!("the ping sent 300 ms before its endpoints existed was answered after {rtt:?}");
    // Without holding, the ARP request is lost and the kernel asks again only after 1 s.
    assert!(rtt < Duration::from_millis(900), "the first ping took {rtt:?}: it waited for a retry (logs in {})", lab.dir.display());
    let h1 = switch_status(&cp, "h1").await;
    let replayed = h1["held"]["reinjected"].as_u64().unwrap_or(0);
    assert!(replayed >= 1, "h1 replayed no held packet: {h1}");
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0)
}

fn p99(sorted: &[f64]) -> f64 {
    sorted.get((sorted.len() * 99 / 100).min(sorted.len().saturating_sub(1))).copied().unwrap_or(f64::NAN)
}

/// Ten seconds of UDP to a MAC no endpoint has, at 100 times the hold meter's rate: every
/// packet misses the L2 table and is sent to be held. The switch's hold meter passes at most
/// its rate to the controller, the controller keeps answering the API as fast as without the
/// flood, and traffic between known endpoints still flows. The flood runs in one-second
/// windows alternating with quiet ones, and the API's latency is compared between the two
/// kinds, so that other load on the machine falls on both alike.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_unknown_packets_is_held_to_the_meter_rate_and_the_controller_stays_responsive() {
    let (lab, cp) = lab('q');
    let api = cp.client().expect("client");
    api.create_network(&NetworkSpec::overlay("red", "10.17.0.0/24")).await.expect("network");
    let mut cs = Vec::new();
    for h in ["h1", "h2"] {
        let e = api.create_endpoint("red", &EndpointSpec::on(h)).await.expect("endpoint");
        cs.push(lab.attach(&e, &format!("c{h}"), wire::CONTAINER_MTU).await.expect("attach"));
    }
    let (src, peer) = (cs[0].netns.clone(), cs[1].ip);
    // The flood's target: an address in the subnet with a MAC no endpoint has.
    let target = Ipv4Addr::new(10, 17, 0, 200);
    let out =
        plexus_agent::netns::exec(&src, &["ip", "neigh", "replace", &target.to_string(), "lladdr", "02:17:de:ad:00:01", "dev", "eth0", "nud", "permanent"])
            .expect("ip (install iproute2)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pid: u32 = std::fs::read_to_string(lab.dir.join("controller.pid")).expect("controller pid").trim().parse().expect("pid");
    let rss_before = rss_kib(pid);
    let held_before = switch_status(&cp, "h1").await["held"]["received"].as_u64().unwrap_or(0);
    let (met_before, dropped_before) = meter_counts(&lab);

    let sock = plexus_agent::netns::run_in(&src, || UdpSocket::bind("0.0.0.0:0")).expect("enter the container").expect("udp socket");
    let (on, stop, sent) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let flood = {
        let (on, stop, sent) = (on.clone(), stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let dst = SocketAddr::from((target, 9));
            let payload = [0u8; 64];
            // Paced at FLOOD_RATE, 100 times the meter's rate: a flood to the controller, yet
            // one that leaves this 2-core machine some CPU, so that what the API's latency
            // shows is the controller's load, not the flooding thread's.
            let (mut start, mut base) = (Instant::now(), 0);
            while !stop.load(Ordering::Relaxed) {
                if !on.load(Ordering::Relaxed) {
                    (start, base) = (Instant::now(), sent.load(Ordering::Relaxed));
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let due = base + (start.elapsed().as_secs_f64() * FLOOD_RATE as f64) as u64;
                while sent.load(Ordering::Relaxed) < due {
                    if sock.send_to(&payload, dst).is_ok() {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let (mut quiet, mut flooded) = (Vec::new(), Vec::new());
    let mut flood_secs = 0.0;
    for window in 0..2 * FLOOD_WINDOWS {
        let flooding = window % 2 == 1;
        on.store(flooding, Ordering::Relaxed);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(1) {
            let q = Instant::now();
            api.hosts().await.expect("the API answers");
            let ms = q.elapsed().as_secs_f64() * 1e3;
            if flooding {
                flooded.push(ms)
            } else {
                quiet.push(ms)
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if flooding {
            flood_secs += t.elapsed().as_secs_f64();
        }
    }
    // Traffic the switch knows is not starved by the flood.
    on.store(true, Ordering::Relaxed);
    let ns = src.clone();
    // A ping lost to the flood's own queue in the userspace datapath (the box busy with other
    // tests) is not starvation; one that never gets through quickly is. Up to three tries.
    let pings = tokio::task::spawn_blocking(move || {
        let mut tries = Vec::new();
        while tries.len() < 3 {
            let r = probe::one_ping_rtt(&ns, peer, Duration::from_secs(5));
            let fast = r.as_ref().is_ok_and(|d| *d < Duration::from_millis(500));
            tries.push(r);
            if fast {
                break;
            }
        }
        tries
    })
    .await
    .expect("ping task");
    let ping = pings.last().map(|r| r.as_ref().map(|d| *d).map_err(|e| e.to_string())).expect("one ping at least");
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("flood thread");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = switch_status(&cp, "h1").await["held"]["received"].as_u64().unwrap_or(0) - held_before;
    let (met, dropped) = meter_counts(&lab);
    let (met, dropped) = (met - met_before, dropped - dropped_before);
    let sent = sent.load(Ordering::Relaxed);
    let rss_after = rss_kib(pid);
    quiet.sort_by(f64::total_cmp);
    flooded.sort_by(f64::total_cmp);
    let (q99, f99) = (p99(&quiet), p99(&flooded));
    eprintln!(
        "flood: {sent} packets in {flood_secs:.1} s ({:.0}/s); {met} reached the hold meter, which dropped {dropped}; the controller got {held} ({:.0}/s, meter {HOLD_RATE}/s + {HOLD_BURST}); \
         API p99 {q99:.2} ms quiet, {f99:.2} ms flooded ({:.2}x; {} and {} samples); controller RSS {rss_before} -> {rss_after} KiB; ping during the flood {ping:?}",
        sent as f64 / flood_secs,
        held as f64 / flood_secs,
        f99 / q99,
        quiet.len(),
        flooded.len()
    );
    assert!(sent as f64 > 50.0 * HOLD_RATE as f64 * flood_secs, "the flood was too weak to test the meter: {sent} packets in {flood_secs:.1} s");
    assert!(met > 20 * held.max(1), "only {met} packets reached the hold meter ({held} passed): not a flood");
    assert!(dropped + held >= met * 9 / 10, "the meter saw {met} packets, dropped {dropped} and {held} reached the controller: some went elsewhere");
    // Each flooded window may start with a full burst (the bucket refills in the quiet ones);
    // 15% for the meter's own accounting.
    let allowed = ((HOLD_RATE as f64 * (flood_secs + 1.0) + (HOLD_BURST * (FLOOD_WINDOWS + 1)) as f64) * 1.15) as u64;
    assert!(held <= allowed, "the controller was sent {held} packets to hold in {flood_secs:.1} s of flood; the meter allows {allowed}");
    assert!(held > 0, "no packet reached the controller: the hold flow is missing");
    // 2x, with 2 ms for timer noise on a figure of a millisecond or two.
    assert!(f99 <= 2.0 * q99 + 2.0, "API p99 rose from {q99:.2} ms to {f99:.2} ms under the flood");
    assert!(rss_after < rss_before + 64 * 1024, "the controller grew from {rss_before} to {rss_after} KiB under the flood");
    let rtt = ping.expect("a ping between known endpoints passes during the flood");
    assert!(rtt < Duration::from_millis(500), "pings between known endpoints during the flood, none under 500 ms: {pings:?}");
}

/// Packets that reached h1's hold meter so far, and those its drop band dropped.
fn meter_counts(lab: &Lab) -> (u64, u64) {
    let h1 = &lab.hosts[0];
    let target = format!("unix:{}", h1.ovs.mgmt_sock(wire::BR_INT).display());
    let out =
        std::process::Command::new("ovs-ofctl").args(["-O", "OpenFlow13", "meter-stats", &target]).output().expect("ovs-ofctl (install openvswitch-common)");
    let text = String::from_utf8_lossy(&out.stdout);
    // "meter:1 flow_count:3 packet_in_count:N byte_in_count:… bands:\n0: packet_count:N byte_count:…"
    let count = |s: Option<&str>, key: &str| s.and_then(|s| s.split(key).nth(1)).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok());
    let (meter, bands) = text.split_once("bands:").unwrap_or_else(|| panic!("no hold meter in h1's meter stats: {text}"));
    match (count(Some(meter), "packet_in_count:"), count(Some(bands), "packet_count:")) {
        (Some(i), Some(d)) => (i, d),
        _ => panic!("cannot read h1's meter stats: {text}"),
    }
}
