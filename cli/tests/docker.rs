//! Plexus as Docker's network and IPAM plugin, against a real dockerd: a lab of two namespace
//! hosts plus this machine's Docker as a third host.
//!
//! Needs a running dockerd (`scripts/test` starts one) and Debian's busybox-static (for the
//! test image, made with `docker import`). Only one lab at a time can serve Docker (the plugin
//! socket is the machine's), so these tests run one at a time (`.config/nextest.toml`).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use plexus_api::NetworkSpec;
use plexus_lab::{probe, Lab, LabConfig};

const PLEXUS: &str = env!("CARGO_BIN_EXE_plexus");
const IMAGE: &str = plexus_lab::control::TEST_IMAGE;

fn docker(args: &[&str]) -> Output {
    plexus_lab::control::docker_client().args(args).output().expect("running docker (install docker.io)")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(o.status.success(), "docker {args:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Makes sure a Docker engine answers and the test image exists (built from busybox-static).
pub fn prerequisites() {
    let v = docker(&["version", "--format", "{{.Server.Version}}"]);
    assert!(v.status.success(), "no Docker engine answers: {} — start dockerd (scripts/dockerd start)", text(&v));
    plexus_lab::control::ensure_test_image().expect("the test image");
}

/// Removes the containers it names when dropped, even when the test fails.
struct Containers(Vec<String>);

impl Containers {
    fn run(&mut self, name: &str, args: &[&str]) -> String {
        self.0.push(name.to_string());
        let mut a = vec!["run", "-d", "--name", name];
        a.extend_from_slice(args);
        a.extend_from_slice(&[IMAGE, "sleep", "100000"]);
        ok(&a)
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = docker(&["rm", "-f", c]);
        }
    }
}

fn ip_of(c: &str, net: &str) -> Ipv4Addr {
    ok(&["inspect", "-f", &format!("{{{{.NetworkSettings.Networks.{net}.IPAddress}}}}"), c]).parse().unwrap_or_else(|_| panic!("{c} has no address on {net}"))
}

fn ping(c: &str, to: Ipv4Addr) -> bool {
    // A few tries: the first may race the flows of an endpoint made a moment ago.
    (0..10).any(|_| docker(&["exec", c, "ping", "-c", "1", "-W", "1", &to.to_string()]).status.success())
}

fn no_ping(c: &str, to: Ipv4Addr) -> bool {
    !docker(&["exec", c, "ping", "-c", "2", "-W", "1", &to.to_string()]).status.success()
}

async fn wait_docker_network(name: &str) {
    let t = Instant::now();
    while !docker(&["network", "inspect", name]).status.success() {
        assert!(t.elapsed() < Duration::from_secs(20), "Docker never showed network {name}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn leftovers(lab: &Lab) -> (Vec<String>, Vec<String>) {
    let h = lab.docker_host().unwrap();
    let ports = Command::new("ovs-vsctl").arg(format!("--db=unix:{}", h.ovs.db_sock().display())).args(["list-ports", "br-int"]).output().unwrap();
    let ports: Vec<String> = String::from_utf8_lossy(&ports.stdout).lines().filter(|p| *p != "vxlan0" && !p.starts_with("plx-")).map(str::to_string).collect();
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let veths: Vec<String> = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().split('@').next().unwrap_or("").to_string()))
        .filter(|n| n.len() == 12 && (n.starts_with('p') || n.starts_with('t')) && n[1..].bytes().all(|b| b.is_ascii_hexdigit()))
        .collect();
    (ports, veths)
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_containers_join_plexus_networks_across_hosts() {
    prerequisites();
    let name = plexus_tests::unique_name('d');
    let lab = Lab::up(&LabConfig { docker: true, ..LabConfig::owned(&name, 2) }).expect("lab");
    let cp = lab.start_control_plane(Path::new(PLEXUS)).expect("control plane with a Docker host");
    let api = cp.client().unwrap();
    let t = Instant::now();
    while api.hosts().await.map(|h| h.len()).unwrap_or(0) < 3 {
        assert!(t.elapsed() < Duration::from_secs(20), "hosts did not register (logs in {})", lab.dir.display());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The Docker host is one of the lab's hosts in its status, as in `plexus host list`.
    assert!(lab.status().hosts.iter().any(|h| h.name == "docker" && h.running), "{:?}", lab.status().hosts);
    let tag = &name;
    let mut cs = Containers(Vec::new());
    let (c1, c2, c3, c4) = (format!("{tag}c1"), format!("{tag}c2"), format!("{tag}c3"), format!("{tag}c4"));

    // A network made through the API shows in Docker by itself; containers on it and a
    // namespace container on h1 all talk; --ip is honoured.
    api.create_network(&NetworkSpec::overlay("red", "10.20.0.0/24")).await.unwrap();
    wait_docker_network("red").await;
    cs.run(&c1, &["--network", "red", "--label", "app=web", "--label", "note=has a space"]);
    cs.run(&c2, &["--network", "red", "--ip", "10.20.0.50", "--mac-address", "02:00:00:aa:bb:cc"]);
    assert_eq!(ip_of(&c2, "red"), Ipv4Addr::new(10, 20, 0, 50));
    assert_eq!(ok(&["exec", &c2, "cat", "/sys/class/net/eth0/address"]), "02:00:00:aa:bb:cc");
    let e = api.create_endpoint("red", &plexus_api::EndpointSpec::on("h1").id("n1")).await.unwrap();
    let n1 = lab.attach(&e, "n1", 1450).await.unwrap();
    let (ip1, ip2) = (ip_of(&c1, "red"), ip_of(&c2, "red"));
    assert!(ping(&c1, ip2), "c1 -> c2 on the Docker host");
    assert!(ping(&c1, n1.ip), "c1 (Docker) -> n1 (h1)");
    let ns = n1.netns.clone();
    let r = tokio::task::spawn_blocking(move || probe::wait_ping(&ns, ip2, Duration::from_secs(10))).await.unwrap();
    assert!(r.is_ok(), "n1 (h1) -> c2 (Docker): {r:?}");
    // The path's MTU inside the container (what the veth was made with before Docker moved
    // it), and a packet of exactly that size crosses hosts.
    assert_eq!(ok(&["exec", &c1, "cat", "/sys/class/net/eth0/mtu"]), "1450");
    let full = docker(&["exec", &c1, "ping", "-c", "1", "-W", "2", "-s", "1422", &n1.ip.to_string()]);
    assert!(full.status.success(), "a 1450-byte packet from c1 to n1: {}", text(&full));
    let docker_eps: Vec<_> = api.endpoints("red").await.unwrap().into_iter().filter(|e| e.host == "docker").collect();
    assert_eq!(docker_eps.len(), 2, "Docker's containers are Plexus endpoints: {docker_eps:?}");
    assert!(docker_eps.iter().any(|e| e.ip == ip2 && e.mac.to_string() == "02:00:00:aa:bb:cc"), "{docker_eps:?}");

    // The container's labels become its endpoint's (one Plexus cannot hold is left out), and
    // a policy selects the container by them: closed to everyone, while c2 stays open.
    let t = Instant::now();
    let labelled = loop {
        let eps = api.endpoints("red").await.unwrap();
        if let Some(e) = eps.into_iter().find(|e| e.ip == ip1 && !e.labels.is_empty()) {
            break e;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "c1's labels did not reach its endpoint (logs in {})", lab.dir.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Its labels, and its name as the `name` label (its DNS name).
    assert_eq!(labelled.labels.get("app").map(String::as_str), Some("web"), "{labelled:?}");
    assert_eq!(labelled.labels.get("name"), Some(&c1), "the container's name is not its endpoint's name: {labelled:?}");
    assert_eq!(labelled.labels.len(), 2, "{labelled:?}");
    let closed = plexus_api::PolicySpec {
        name: "web-closed".into(),
        network: "red".into(),
        select: "app=web".into(),
        ingress: Some(vec![]),
        egress: None,
        labels: Default::default(),
    };
    api.create_policy(&closed).await.unwrap();
    let ns = n1.netns.clone();
    let cut = tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if probe::ping(&ns, ip1, 1, Duration::from_millis(200)).unwrap_or(1) == 0 {
                return true;
            }
        }
        false
    });
    assert!(cut.await.unwrap(), "the policy selecting c1 by its Docker label closes it");
    let ns = n1.netns.clone();
    assert_eq!(tokio::task::spawn_blocking(move || probe::ping(&ns, ip2, 2, Duration::from_millis(200)).unwrap_or(0)).await.unwrap(), 2, "c2 stays open");
    api.delete_policy("web-closed").await.unwrap();

    // A network made through Docker becomes a Plexus network; same subnet, kept apart.
    ok(&["network", "create", "-d", "plexus", "--ipam-driver", "plexus", "--subnet", "10.20.0.0/24", "blue"]);
    let t = Instant::now();
    while api.network("blue").await.is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "docker network create did not make a Plexus network");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cs.run(&c3, &["--network", "blue", "--ip", "10.20.0.60"]);
    // Addresses red does not use, so that a reply could only come from red.
    cs.run(&c4, &["--network", "blue", "--ip", "10.20.0.61"]);
    assert!(ping(&c3, ip_of(&c4, "blue")), "blue containers talk");
    assert!(no_ping(&c3, ip2) && no_ping(&c3, ip1) && no_ping(&c3, n1.ip), "blue reaches no red endpoint");

    // A dual-stack network made through Docker: --ip6 is honoured, and containers talk IPv6
    // to each other and to a namespace container on h1 (through the tunnel).
    ok(&["network", "create", "-d", "plexus", "--ipam-driver", "plexus", "--ipv6", "--subnet", "10.21.0.0/24", "--subnet", "fd00:21::/64", "dual"]);
    let t = Instant::now();
    while api.network("dual").await.map(|n| n.spec.subnet6).ok().flatten().as_deref() != Some("fd00:21::/64") {
        assert!(t.elapsed() < Duration::from_secs(10), "docker network create --ipv6 did not make a dual-stack Plexus network");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (c5, c6) = (format!("{tag}c5"), format!("{tag}c6"));
    cs.run(&c5, &["--network", "dual", "--ip6", "fd00:21::99"]);
    cs.run(&c6, &["--network", "dual"]);
    let v6_of = |c: &str| ok(&["inspect", "-f", "{{.NetworkSettings.Networks.dual.GlobalIPv6Address}}", c]);
    assert_eq!(v6_of(&c5), "fd00:21::99", "--ip6 was not honoured");
    let dual_eps = api.endpoints("dual").await.unwrap();
    assert!(dual_eps.iter().any(|e| e.host == "docker" && e.ip6.map(|a| a.to_string()).as_deref() == Some("fd00:21::99")), "{dual_eps:?}");
    let c6_v6 = v6_of(&c6);
    assert!(dual_eps.iter().any(|e| e.ip6.map(|a| a.to_string()) == Some(c6_v6.clone())), "c6's {c6_v6} is its endpoint's: {dual_eps:?}");
    let e = api.create_endpoint("dual", &plexus_api::EndpointSpec::on("h1").id("n6")).await.unwrap();
    let _n6 = lab.attach(&e, "n6", 1450).await.unwrap();
    let ping6 = |from: &str, to: &str| (0..10).any(|_| docker(&["exec", from, "ping", "-6", "-c", "1", "-W", "1", to]).status.success());
    assert!(ping6(&c5, &c6_v6), "c5 -> c6 over IPv6");
    assert!(ping6(&c5, &e.ip6.expect("n6's IPv6 address").to_string()), "c5 (Docker) -> n6 (h1) over IPv6");

    // docker network connect: a working second interface; disconnect removes it and its flows.
    api.create_network(&NetworkSpec { mtu: Some(1300), ..NetworkSpec::overlay("green", "10.30.0.0/24") }).await.unwrap();
    wait_docker_network("green").await;
    let e = api.create_endpoint("green", &plexus_api::EndpointSpec::on("h2").id("n2")).await.unwrap();
    let n2 = lab.attach(&e, "n2", 1450).await.unwrap();
    ok(&["network", "connect", "green", &c1]);
    let g1 = ip_of(&c1, "green");
    assert!(ok(&["exec", &c1, "ip", "-o", "-4", "addr"]).contains(&format!("{g1}/24")));
    assert!(ping(&c1, n2.ip), "c1's second interface reaches n2 on h2");
    assert_eq!(ok(&["exec", &c1, "cat", "/sys/class/net/eth1/mtu"]), "1300", "green's own MTU");
    ok(&["network", "disconnect", "green", &c1]);
    assert!(!ok(&["exec", &c1, "ip", "-o", "-4", "addr"]).contains(&g1.to_string()));
    assert!(api.endpoints("green").await.unwrap().iter().all(|e| e.host != "docker"), "the endpoint went with the disconnect");
    let ns = n2.netns.clone();
    assert_eq!(tokio::task::spawn_blocking(move || probe::ping(&ns, g1, 2, Duration::from_millis(200)).unwrap_or(9)).await.unwrap(), 0);

    // docker rm -f of every container leaves no veth, port, endpoint or address behind.
    drop(cs);
    let t = Instant::now();
    loop {
        let (ports, veths) = leftovers(&lab);
        let mut eps = Vec::new();
        for n in ["red", "blue", "green", "dual"] {
            eps.extend(api.endpoints(n).await.unwrap().into_iter().filter(|e| e.host == "docker"));
        }
        if ports.is_empty() && veths.is_empty() && eps.is_empty() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "left behind: ports {ports:?}, veths {veths:?}, endpoints {eps:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Taking the lab down gives Docker back as it was.
    drop(lab);
    let nets = ok(&["network", "ls", "--filter", "driver=plexus", "-q"]);
    assert!(nets.is_empty(), "Docker networks left: {nets}");
    assert!(!Path::new("/run/docker/plugins/plexus.sock").exists());
}

/// Starts `docker run` and returns its result once it ends.
fn docker_run_bg(args: Vec<String>) -> std::thread::JoinHandle<Output> {
    std::thread::spawn(move || plexus_lab::control::docker_client().args(&args).output().expect("docker"))
}

fn docker_leftovers_gone(lab: &Lab, what: &str) {
    let (ports, veths) = leftovers(lab);
    assert!(ports.is_empty() && veths.is_empty(), "{what}: left ports {ports:?}, veths {veths:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_sees_clear_errors_and_a_failed_start_leaks_nothing() {
    prerequisites();
    let name = plexus_tests::unique_name('e');
    let lab = Lab::up(&LabConfig { docker: true, ..LabConfig::owned(&name, 1) }).expect("lab");
    let cp = lab.start_control_plane(Path::new(PLEXUS)).expect("control plane with a Docker host");
    let api = cp.client().unwrap();
    api.create_network(&NetworkSpec::overlay("red", "10.20.0.0/24")).await.unwrap();
    wait_docker_network("red").await;
    let mut cs = Containers(Vec::new());
    let (c1, c2, c3) = (format!("{name}c1"), format!("{name}c2"), format!("{name}c3"));
    cs.run(&c1, &["--network", "red", "--ip", "10.20.0.50"]);
    let docker_eps = || async { api.endpoints("red").await.unwrap().into_iter().filter(|e| e.host == "docker").count() };

    // An address that is taken: Docker shows the controller's reason, nothing is left.
    cs.0.push(c2.clone());
    let o = docker(&["run", "-d", "--name", &c2, "--network", "red", "--ip", "10.20.0.50", IMAGE, "sleep", "100000"]);
    assert!(!o.status.success() && text(&o).contains("10.20.0.50 is already taken in red"), "{}", text(&o));
    assert_eq!(docker_eps().await, 1);
    let _ = docker(&["rm", "-f", &c2]);

    // The controller down: a clear error; back up, the same command works.
    assert!(lab.signal_process("controller", libc::SIGKILL));
    let o = docker(&["run", "-d", "--name", &c2, "--network", "red", IMAGE, "sleep", "100000"]);
    assert!(!o.status.success() && text(&o).contains("Plexus controller is unreachable"), "{}", text(&o));
    lab.start_controller(Path::new(PLEXUS)).unwrap();
    let _ = docker(&["rm", "-f", &c2]);
    cs.run(&c2, &["--network", "red"]);
    assert!(ping(&c2, Ipv4Addr::new(10, 20, 0, 50)));

    // The agent dies while Docker waits on it to start a container: the start fails, and
    // nothing of that container is left; with the agent back the same command works.
    let (ports, veths) = leftovers(&lab);
    assert!(lab.signal_process("agent-docker", libc::SIGSTOP));
    cs.0.push(c3.clone());
    let run: Vec<String> = ["run", "-d", "--name", &c3, "--network", "red", IMAGE, "sleep", "100000"].iter().map(|s| s.to_string()).collect();
    let pending = docker_run_bg(run.clone());
    std::thread::sleep(Duration::from_secs(1));
    assert!(lab.signal_process("agent-docker", libc::SIGKILL));
    let o = tokio::task::spawn_blocking(move || pending.join().unwrap()).await.unwrap();
    assert!(!o.status.success(), "the start should fail without the plugin: {}", text(&o));
    assert!(text(&o).contains("plexus"), "the error names the plugin: {}", text(&o));
    assert_eq!(leftovers(&lab), (ports, veths), "a failed start left something");
    assert_eq!(docker_eps().await, 2, "a failed start left an endpoint");
    lab.start_docker_agent(Path::new(PLEXUS)).unwrap();
    let _ = docker(&["rm", "-f", &c3]);
    let o = docker(&run.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "with the agent back: {}", text(&o));
    assert!(ping(&c3, Ipv4Addr::new(10, 20, 0, 50)));
    drop(cs);
    let t = Instant::now();
    while !leftovers(&lab).0.is_empty() || docker_eps().await > 0 {
        assert!(t.elapsed() < Duration::from_secs(10), "left after rm -f: {:?}", leftovers(&lab));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    docker_leftovers_gone(&lab, "after rm -f");
}

/// `docker run -p HOST:PORT` on a network whose router has external access publishes the
/// port on the Docker host's address, as Docker's bridge would; what Plexus cannot do as
/// asked (a port Docker would choose) fails the container with the reason. Docker containers
/// join underlay networks too, with the link's whole MTU.
#[tokio::test(flavor = "multi_thread")]
async fn docker_publishes_ports_and_joins_underlay_networks() {
    use std::io::{Read, Write};
    prerequisites();
    let name = plexus_tests::unique_name('p');
    let lab = Lab::up(&LabConfig { docker: true, ..LabConfig::owned(&name, 1) }).expect("lab");
    let cp = lab.start_control_plane(Path::new(PLEXUS)).expect("control plane with a Docker host");
    let api = cp.client().unwrap();
    api.create_network(&NetworkSpec::overlay("web", "10.21.0.0/24")).await.unwrap();
    let router =
        plexus_api::RouterSpec { name: "out".into(), networks: vec!["web".into()], external: true, external_gateway: None, labels: Default::default() };
    api.create_router(&router).await.unwrap();
    wait_docker_network("web").await;
    let mut cs = Containers(Vec::new());
    let c1 = format!("{name}c1");
    cs.run(&c1, &["--network", "web", "-p", "8080:80"]);
    ok(&["exec", &c1, "sh", "-c", "mkdir -p /www && echo plexus-web > /www/index.html"]);
    ok(&["exec", "-d", &c1, "/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"]);
    let e = api.endpoints("web").await.unwrap().into_iter().find(|e| e.host == "docker").expect("c1's endpoint");
    assert_eq!(e.publish.iter().map(|p| p.to_string()).collect::<Vec<_>>(), ["8080:80/tcp"]);
    // From a machine on the underlay that is not a Plexus host, to the Docker host's address.
    let outsider = lab.add_outsider("o", 200).expect("outsider");
    let docker_ip = lab.docker_host().expect("docker host").underlay_ip;
    let to = std::net::SocketAddr::new(docker_ip.into(), 8080);
    let t = Instant::now();
    let page = loop {
        let got = plexus_agent::netns::connect_tcp(&outsider.netns, to).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
            s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n").ok()?;
            let mut body = String::new();
            s.read_to_string(&mut body).ok()?;
            Some(body)
        });
        match got {
            Some(b) if b.contains("plexus-web") => break b,
            other => assert!(t.elapsed() < Duration::from_secs(20), "docker-host:8080 never served c1's page: {other:?} (logs in {})", lab.dir.display()),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(page.starts_with("HTTP/1."), "{page}");
    // A host port left to Docker's choice is refused with the reason; the container does not run.
    let c2 = format!("{name}c2");
    cs.0.push(c2.clone());
    let o = docker(&["run", "-d", "--name", &c2, "--network", "web", "-p", "80", IMAGE, "sleep", "100000"]);
    assert!(!o.status.success() && text(&o).contains("give the host port"), "{}", text(&o));
    // The same host port twice on one host is refused too.
    let c3 = format!("{name}c3");
    cs.0.push(c3.clone());
    let o = docker(&["run", "-d", "--name", &c3, "--network", "web", "-p", "8080:81", IMAGE, "sleep", "100000"]);
    assert!(!o.status.success() && text(&o).contains("already published"), "{}", text(&o));
    assert_eq!(api.endpoints("web").await.unwrap().iter().filter(|e| !e.publish.is_empty()).count(), 1, "only c1 publishes");

    // An underlay network shows in Docker too, and its containers get the link's whole MTU
    // (no tunnel headers): a 1500-byte DF packet crosses from h1 to the Docker host and back.
    let mut flat = NetworkSpec::overlay("uflat", "10.22.0.0/24");
    flat.kind = plexus_api::NetworkKind::Underlay { physical_network: "physnet1".into(), vlan: None };
    api.create_network(&flat).await.unwrap();
    wait_docker_network("uflat").await;
    let c4 = format!("{name}c4");
    cs.run(&c4, &["--network", "uflat"]);
    assert_eq!(ok(&["exec", &c4, "cat", "/sys/class/net/eth0/mtu"]), "1500", "the Docker container's MTU on an underlay network");
    let e = api.create_endpoint("uflat", &plexus_api::EndpointSpec::on("h1").id("u1")).await.unwrap();
    let u1 = lab.attach(&e, "u1", 1500).await.unwrap();
    let to = ip_of(&c4, "uflat");
    let ns = u1.netns.clone();
    let r = tokio::task::spawn_blocking(move || probe::wait_ping(&ns, to, Duration::from_secs(10))).await.unwrap();
    assert!(r.is_ok(), "h1 -> the Docker container on the flat network: {r:?}");
    let out = plexus_agent::netns::exec(&u1.netns, &["ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1472", &to.to_string()]).unwrap();
    assert!(out.status.success(), "1500-byte DF ping h1 -> Docker on the underlay: {}", String::from_utf8_lossy(&out.stdout));
}

#[tokio::test(flavor = "multi_thread")]
async fn connectivity_comes_back_after_dockerd_restarts() {
    prerequisites();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/dockerd");
    assert!(
        Path::new("/run/plexus-test-dockerd.pid").exists(),
        "this test restarts dockerd, so it must have been started by `scripts/dockerd start` (scripts/test does)"
    );
    let name = plexus_tests::unique_name('r');
    let lab = Lab::up(&LabConfig { docker: true, ..LabConfig::owned(&name, 1) }).expect("lab");
    let cp = lab.start_control_plane(Path::new(PLEXUS)).expect("control plane with a Docker host");
    let api = cp.client().unwrap();
    api.create_network(&NetworkSpec::overlay("red", "10.20.0.0/24")).await.unwrap();
    wait_docker_network("red").await;
    let e = api.create_endpoint("red", &plexus_api::EndpointSpec::on("h1").id("n1")).await.unwrap();
    let n1 = lab.attach(&e, "n1", 1450).await.unwrap();
    let mut cs = Containers(Vec::new());
    let c1 = format!("{name}c1");
    cs.run(&c1, &["--network", "red", "--restart", "always"]);
    assert!(ping(&c1, n1.ip), "before the restart");
    let o = Command::new(&script).arg("restart").output().unwrap();
    assert!(o.status.success(), "scripts/dockerd restart: {}", text(&o));
    let t = Instant::now();
    while ok(&["inspect", "-f", "{{.State.Running}}", &c1]) != "true" {
        assert!(t.elapsed() < Duration::from_secs(30), "{c1} did not come back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !ping(&c1, n1.ip) {
        let log = std::fs::read_to_string(lab.dir.join("agent-docker.log")).unwrap_or_default();
        panic!(
            "connectivity is not back after dockerd restarted: {}\n{:?}\n{:?}\nagent log tail:\n{}",
            text(&docker(&["exec", &c1, "ip", "-o", "addr"])),
            leftovers(&lab),
            api.endpoints("red").await.unwrap(),
            log.lines().rev().take(15).collect::<Vec<_>>().join("\n")
        );
    }
    // The container's old endpoint went; only its new one is left.
    let t = Instant::now();
    while leftovers(&lab).0.len() != 1 || api.endpoints("red").await.unwrap().iter().filter(|e| e.host == "docker").count() != 1 {
        assert!(t.elapsed() < Duration::from_secs(10), "stale pieces after the restart: {:?}", leftovers(&lab));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_runs_as_a_sidecar_container() {
    prerequisites();
    let name = plexus_tests::unique_name('s');
    let tag = format!("plexus-agent:{name}");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/agent-image");
    let o = Command::new(&script).args([PLEXUS, &tag]).output().unwrap();
    assert!(o.status.success(), "scripts/agent-image: {}", text(&o));
    struct Image(String);
    impl Drop for Image {
        fn drop(&mut self) {
            let _ = docker(&["rmi", "-f", &self.0]);
        }
    }
    let _image = Image(tag.clone());
    let lab = Lab::up(&LabConfig { docker: true, ..LabConfig::owned(&name, 1) }).expect("lab");
    let cp = lab.start_control_plane(Path::new(PLEXUS)).expect("control plane with a Docker host");
    let api = cp.client().unwrap();
    // The Docker host's agent moves from a process into a container on the same host: host
    // network and pid namespace, the OVS, plugin and Docker sockets mounted.
    assert!(lab.signal_process("agent-docker", libc::SIGTERM));
    let mut cs = Containers(Vec::new());
    let agent = format!("{name}agent");
    cs.0.push(agent.clone());
    let mut run = vec![
        "run".to_string(),
        "-d".into(),
        "--name".into(),
        agent.clone(),
        "--network".into(),
        "host".into(),
        "--pid".into(),
        "host".into(),
        "--cap-add".into(),
        "NET_ADMIN".into(),
        "--cap-add".into(),
        "SYS_ADMIN".into(),
        "-v".into(),
        "/run/plexus:/run/plexus".into(),
        "-v".into(),
        "/run/docker/plugins:/run/docker/plugins".into(),
        "-v".into(),
        "/var/run/docker.sock:/var/run/docker.sock".into(),
        tag.clone(),
    ];
    run.extend(lab.docker_agent_args().unwrap().into_iter().skip(1));
    let o = docker(&run.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    lab.wait_plugin().unwrap_or_else(|e| panic!("{e}: {}", text(&docker(&["logs", &agent]))));
    api.create_network(&NetworkSpec::overlay("red", "10.20.0.0/24")).await.unwrap();
    wait_docker_network("red").await;
    let e = api.create_endpoint("red", &plexus_api::EndpointSpec::on("h1").id("n1")).await.unwrap();
    let n1 = lab.attach(&e, "n1", 1450).await.unwrap();
    let c1 = format!("{name}c1");
    cs.run(&c1, &["--network", "red"]);
    assert!(ping(&c1, n1.ip), "a container plugged in by the containerized agent reaches h1");
    let _ = docker(&["rm", "-f", &c1]);
    drop(cs);
}
