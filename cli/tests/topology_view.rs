//! The topology view (issue 15) in real headless Chromium from Debian, driven by Selenium
//! (`cli/tests/ui/topology.py`): with a token the page shows the 3 hosts of a lab; an endpoint
//! created after the page loaded appears by itself, and its detail traces a packet from it; a
//! wrong token shows an error. The
//! screenshot is kept in the lab's directory.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use plexus_api::{EndpointSpec, NetworkSpec};
use plexus_lab::{Lab, LabConfig};

fn python() -> String {
    let venv = std::env::var("PLEXUS_FUZZ_VENV").unwrap_or_else(|_| "/var/tmp/plexus-venv".into());
    let py = format!("{venv}/bin/python");
    let ok = Command::new(&py).args(["-c", "import selenium"]).output().is_ok_and(|o| o.status.success());
    assert!(ok, "{py} has no selenium: run scripts/fuzz-api once (it installs schemathesis and selenium there), or pip install selenium");
    assert!(Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists(), "install chromium and chromium-driver (Debian)");
    py
}

#[tokio::test(flavor = "multi_thread")]
async fn the_topology_view_shows_hosts_and_follows_changes_in_chromium() {
    let py = python();
    let lab = Lab::up(&LabConfig::owned(&plexus_tests::unique_name('v'), 3)).expect("lab");
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    let api = cp.client().expect("client");
    api.create_network(&NetworkSpec::overlay("red", "10.95.0.0/24")).await.expect("network");
    // Every switch in sync first: an agent still setting its host up moves addresses, which
    // makes Chromium abandon a page load.
    let http = cp.http().expect("client");
    let t = std::time::Instant::now();
    for h in &lab.hosts {
        loop {
            let st: serde_json::Value = match http.get(format!("{}/v1/hosts/{}/flows", cp.api, h.name)).send().await {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
            if st["in_sync"].as_bool() == Some(true) {
                break;
            }
            assert!(t.elapsed() < std::time::Duration::from_secs(30), "{}'s switch never got in sync: {st}", h.name);
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let token = cp.envs().expect("credentials").into_iter().find(|(k, _)| *k == "PLEXUS_TOKEN").map(|(_, v)| v).expect("token");
    let shot = lab.dir.join("topology.png");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ui/topology.py");
    // Chromium runs in h1's namespace, which reaches the API over the lab's underlay: in the
    // root namespace, links that other tests add and remove meanwhile make it abandon the page
    // (ERR_NETWORK_CHANGED).
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.hosts[0].netns])
        .arg(&py)
        .arg(&script)
        .args([&format!("{}/ui", cp.api), &token, &shot.display().to_string(), "h1,h2,h3", "red/late", "10.95.0.1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let next = |lines: &mut Vec<String>| {
        let l = rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap_or_else(|_| format!("(nothing more; so far {lines:?})"));
        lines.push(l.clone());
        l
    };
    let first = next(&mut lines);
    assert!(first.starts_with("HOSTS h1,h2,h3"), "the page shows the lab's hosts: {first}");
    // After the load: the page must follow by itself.
    let late = api.create_endpoint("red", &EndpointSpec::on("h2").id("late")).await.expect("endpoint");
    lab.attach(&late, "late", plexus_lab::wire::CONTAINER_MTU).await.expect("attach");
    let second = next(&mut lines);
    assert!(second.starts_with("ENDPOINT red/late"), "the endpoint made after the load appears: {second}");
    // Its detail traces a ping to its gateway, which the switch answers.
    let traced = next(&mut lines);
    assert!(traced.starts_with("TRACE DELIVERED"), "a trace from the page: {traced}");
    let third = next(&mut lines);
    assert!(third.starts_with("ERROR") && third.contains("refused"), "a wrong token shows an error: {third}");
    let out = child.wait_with_output().expect("python");
    assert!(out.status.success(), "{lines:?} {}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 1000), "a screenshot in {}", shot.display());
}
