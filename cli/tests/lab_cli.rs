//! `plexus lab up | status | down` as a user runs them.

use std::process::Command;

fn plexus(args: &[&str]) -> (bool, String, String) {
    plexus_env(args, &[])
}

fn plexus_env(args: &[&str], envs: &[(String, String)]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plexus")).args(args).envs(envs.iter().cloned()).output().expect("run plexus");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// CLI labs are not owned by the process that made them: take them down even if the test
/// fails half way.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_plexus")).args(["lab", "down", "--name", &self.0]).output();
    }
}

#[test]
fn lab_up_status_down_leave_nothing_behind() {
    let name = format!("cli{}", std::process::id() % 1_000_000);
    let _down = Down(name.clone());
    let (ok, up, err) = plexus(&["lab", "up", "--hosts", "2", "--name", &name]);
    assert!(ok, "lab up failed: {err}");
    assert!(up.contains("h2") && up.contains("running"), "{up}");
    let (ok, out, err) = plexus(&["lab", "status", "--name", &name, "-o", "json"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("status -o json is JSON");
    assert_eq!(v["hosts"].as_array().map(Vec::len), Some(2));
    assert!(v["hosts"].as_array().unwrap().iter().all(|h| h["running"] == true));
    let api = v["api"].as_str().expect("lab up starts a controller by default").to_string();
    assert!(api.starts_with("https://"), "the lab's API is HTTPS: {api}");
    // `lab up` printed what a shell needs: the API, its CA and an admin token.
    let envs: Vec<(String, String)> =
        up.lines().filter_map(|l| l.strip_prefix("export ")).filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let keys: Vec<&str> = envs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["PLEXUS_API", "PLEXUS_CA", "PLEXUS_TOKEN"], "{up}");
    let (ok, _, err) = plexus(&["cluster", "status", "--api", &api]);
    assert!(!ok && err.contains("CA"), "an https API without its CA is refused clearly: {err}");
    let no_token: Vec<(String, String)> = envs.iter().filter(|(k, _)| k != "PLEXUS_TOKEN").cloned().collect();
    let (ok, _, err) = plexus_env(&["cluster", "status"], &no_token);
    assert!(!ok && err.contains("401") && err.contains("Bearer"), "no token, no answer: {err}");
    let (ok, out, err) = plexus_env(&["cluster", "status"], &envs);
    assert!(ok && out.contains("Leader"), "the lab's controller answers from the root namespace: {out} {err}");
    let (ok, _, err) = plexus_env(&["network", "create", "red", "--subnet", "10.10.0.0/24"], &envs);
    assert!(ok, "{err}");
    for (h, c) in [("h1", "web"), ("h2", "db")] {
        let (ok, out, err) = plexus(&["lab", "run", h, c, "--network", "red", "--name", &name]);
        assert!(ok, "lab run {c}: {err}");
        assert!(out.contains("10.10.0."), "{out}");
    }
    let (ok, _, err) = plexus(&["lab", "run", "h2", "db2", "--network", "red", "--ip", "10.10.0.2", "--name", &name]);
    assert!(!ok && err.contains("already taken"), "a taken address is refused: {err}");
    let (ok, out, _) = plexus(&["lab", "status", "--name", &name, "-o", "json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["containers"], serde_json::json!(["db", "web"]), "the refused container left nothing");
    // web reaches db by its address, through the controller's flows.
    let mut reached = false;
    for _ in 0..40 {
        let (ok, _, _) = plexus(&["lab", "exec", "web", "--name", &name, "--", "ping", "-c", "1", "-W", "1", "10.10.0.3"]);
        if ok {
            reached = true;
            break;
        }
    }
    assert!(reached, "lab exec web -- ping db");
    let (ok, _, _) = plexus(&["lab", "exec", "nope", "--name", &name, "--", "true"]);
    assert!(!ok);
    let (ok, _, err) = plexus(&["lab", "up", "--hosts", "1", "--name", &name]);
    assert!(!ok && err.contains("already exists"), "a second up is refused clearly: {err}");
    let (ok, _, err) = plexus(&["lab", "down", "--name", &name]);
    assert!(ok, "{err}");
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&ns.stdout).contains(&format!("plx-{name}-")), "namespaces left");
    assert!(!std::path::Path::new("/run/plexus").join(&name).exists());
    let links = Command::new("ip").args(["-o", "link", "show"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&links.stdout).contains(&format!("pl-{name}")), "the underlay link is gone");
    let (ok, _, err) = plexus(&["lab", "status", "--name", &name]);
    assert!(!ok && err.contains("no lab named"), "{err}");
    let (ok, _, err) = plexus(&["lab", "up", "--hosts", "0", "--name", &name]);
    assert!(!ok && err.contains("hosts"), "{err}");
}
