//! Metrics operators can use (issue 15), scraped by a real Prometheus (Debian's
//! `prometheus`), started by the test inside a lab host's namespace with a scrape config for
//! the lab's controller (TLS with the cluster's CA, a bearer token) and that host's agent. One
//! series of each kind is then queried through Prometheus's HTTP API: Raft, a switch's state,
//! API latency, flow compile time, the agent.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use plexus_api::{EndpointSpec, NetworkSpec};
use plexus_lab::{wire, Lab, LabConfig};

/// The Prometheus process, ended (by its pid) when dropped, even when the test fails.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prometheus's answer to an instant query, run inside `ns` (where it listens).
fn query(ns: &str, q: &str) -> serde_json::Value {
    let url = format!("http://127.0.0.1:9090/api/v1/query?query={}", q.replace('{', "%7B").replace('}', "%7D").replace('"', "%22").replace('=', "%3D"));
    let out = Command::new("ip").args(["netns", "exec", ns, "curl", "-s", &url]).output().expect("curl (install curl)");
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_scrapes_the_controller_and_an_agent() {
    assert!(Command::new("prometheus").arg("--version").output().is_ok_and(|o| o.status.success()), "install prometheus (Debian: apt-get install prometheus)");
    let lab = Lab::up(&LabConfig::owned(&plexus_tests::unique_name('q'), 1)).expect("lab");
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    let api = cp.client().expect("client");
    // Something for the switch to do, so it has flows and a compile to time.
    api.create_network(&NetworkSpec::overlay("red", "10.91.0.0/24")).await.expect("network");
    let e = api.create_endpoint("red", &EndpointSpec::on("h1")).await.expect("endpoint");
    lab.attach(&e, "m1", wire::CONTAINER_MTU).await.expect("attach");

    let envs: std::collections::BTreeMap<&str, String> = cp.envs().expect("credentials").into_iter().collect();
    let target = cp.api.trim_start_matches("https://").to_string();
    let dir = lab.dir.join("prometheus");
    std::fs::create_dir_all(&dir).expect("dir");
    let config = format!(
        "global: {{scrape_interval: 1s}}\nscrape_configs:\n  - job_name: controller\n    scheme: https\n    tls_config: {{ca_file: {ca}}}\n    authorization: {{credentials: {token}}}\n    static_configs: [{{targets: ['{target}']}}]\n  - job_name: agent\n    static_configs: [{{targets: ['127.0.0.1:6544']}}]\n",
        ca = envs["PLEXUS_CA"],
        token = envs["PLEXUS_TOKEN"],
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("config");
    let h1 = lab.host("h1").expect("h1");
    let child = Command::new("ip")
        .args(["netns", "exec", &h1.netns, "prometheus", "--log.level=warn", "--web.listen-address=127.0.0.1:9090"])
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .stdout(std::fs::File::create(dir.join("prometheus.log")).expect("log"))
        .stderr(std::fs::File::create(dir.join("prometheus.err")).expect("log"))
        .spawn()
        .expect("prometheus");
    let _prometheus = Prometheus(child);

    for q in [
        "plexus_raft_term",
        "plexus_switch_in_sync{host=\"h1\"}",
        "plexus_switch_desired_flows{host=\"h1\"}",
        "plexus_api_request_duration_seconds_count{route=\"/v1/networks/{name}/endpoints\",method=\"POST\"}",
        "plexus_flow_compile_seconds_count",
        "plexus_switch_sync_seconds_count",
        "plexus_agent_heartbeats_total{result=\"ok\"}",
    ] {
        let t = Instant::now();
        let value = loop {
            let v = query(&h1.netns, q);
            if let Some(x) = v.pointer("/data/result/0/value/1").and_then(|x| x.as_str()).and_then(|x| x.parse::<f64>().ok()) {
                break x;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "Prometheus has no {q}: {v} (its log: {})",
                std::fs::read_to_string(dir.join("prometheus.err")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert!(value >= 1.0, "{q} = {value}");
    }

    // The Grafana dashboard asks only for series that exist.
    let controller = cp.http().expect("http").get(format!("{}/metrics", cp.api)).send().await.expect("metrics").text().await.expect("text");
    let agent = Command::new("ip").args(["netns", "exec", &h1.netns, "curl", "-s", "http://127.0.0.1:6544/metrics"]).output().expect("curl");
    let exposed = format!("{controller}{}", String::from_utf8_lossy(&agent.stdout));
    let dashboard = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/plexus.json")).expect("dashboard");
    let mut names: Vec<&str> = dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("plexus_")).collect();
    names.sort_unstable();
    names.dedup();
    assert!(names.len() >= 15, "{names:?}");
    for n in names {
        let base = ["_bucket", "_count", "_sum"].iter().find_map(|s| n.strip_suffix(s)).unwrap_or(n);
        assert!(exposed.contains(&format!("# TYPE {base} ")), "the dashboard asks for {n}, which nothing exposes");
    }
}
