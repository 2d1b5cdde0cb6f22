//! `plexus apply`, `diff` and `export` (issue 15) against a real controller: an example
//! topology (3 networks, a router, 2 policies, 6 endpoints) applied in one batch; a second
//! apply changes nothing; an edit changes exactly the edited object; `--prune` deletes what
//! the file no longer names and nothing else; `export | apply` changes nothing; a file with
//! one bad document changes nothing at all.

use std::path::{Path, PathBuf};
use std::process::Command;

use plexus_api::NetworkSpec;
use plexus_lab::{ControlPlane, Lab, LabConfig};

fn plexus(cp: &ControlPlane, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_plexus")).args(args).envs(cp.envs().expect("credentials")).output().expect("plexus");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

const TOPOLOGY: &str = r#"
kind: network
spec: {name: web, kind: {type: overlay}, subnet: 10.61.0.0/24}
---
kind: network
spec: {name: db, kind: {type: overlay}, subnet: 10.62.0.0/24}
---
kind: network
spec: {name: lab, kind: {type: overlay}, subnet: 10.63.0.0/24, mtu: 1400}
---
kind: router
spec: {name: core, networks: [web, db]}
---
kind: policy
spec:
  name: db-only
  network: db
  select: app=db
  ingress:
    - {action: allow, peers: [{select: app=web, network: web}], protocol: tcp, ports: ["5432"]}
---
kind: policy
spec:
  name: web-in
  network: web
  select: app=web
  ingress:
    - {action: allow, protocol: tcp, ports: ["80"]}
"#;

fn endpoints() -> String {
    let mut s = String::new();
    for (i, (net, host, app)) in
        [("web", "h1", "web"), ("web", "h2", "web"), ("db", "h1", "db"), ("db", "h2", "db"), ("lab", "h1", "x"), ("lab", "h2", "x")].iter().enumerate()
    {
        s.push_str(&format!("---\nkind: endpoint\nnetwork: {net}\nspec: {{id: e{i}, host: {host}, labels: {{app: {app}}}}}\n"));
    }
    s
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn apply_makes_the_cluster_match_the_files_and_changes_only_what_changed() {
    let lab = Lab::up(&LabConfig::owned(&plexus_tests::unique_name('a'), 2)).expect("lab");
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    let api = cp.client().expect("client");
    // Something the files never name, made by hand: no apply touches it.
    api.create_network(&NetworkSpec::overlay("manual", "10.69.0.0/24")).await.expect("network");
    let dir = lab.dir.join("apply");
    std::fs::create_dir_all(&dir).expect("dir");
    let f = write(&dir, "topology.yaml", &format!("{TOPOLOGY}{}", endpoints()));
    let fs = f.display().to_string();

    // diff shows the plan and changes nothing.
    let (ok, out) = plexus(&cp, &["diff", "-f", &fs]);
    assert!(ok && out.contains("+ network web") && out.contains("+ policy db-only") && out.contains("+ endpoint lab/e5"), "{out}");
    assert_eq!(api.networks().await.expect("networks").len(), 1, "diff changed nothing");

    // apply makes it all, in one batch; again: no changes.
    let (ok, out) = plexus(&cp, &["apply", "-f", &fs]);
    assert!(ok && out.contains("applied: 12 change(s)"), "{out}");
    assert_eq!(api.networks().await.expect("networks").len(), 4);
    assert_eq!(api.routers().await.expect("routers").len(), 1);
    assert_eq!(api.policies().await.expect("policies").len(), 2);
    for n in ["web", "db", "lab"] {
        assert_eq!(api.endpoints(n).await.expect("endpoints").len(), 2, "{n}'s endpoints");
    }
    let (ok, out) = plexus(&cp, &["apply", "-f", &fs]);
    assert!(ok && out.trim() == "no changes", "second apply: {out}");

    // An edit changes exactly the edited object: lab's MTU; the others keep their revisions.
    let before: Vec<(String, u64)> = api.networks().await.expect("networks").iter().map(|n| (n.spec.name.clone(), n.revision)).collect();
    let edited = TOPOLOGY.replace("mtu: 1400", "mtu: 1300");
    std::fs::write(&f, format!("{edited}{}", endpoints())).expect("write");
    let (ok, out) = plexus(&cp, &["diff", "-f", &fs]);
    assert!(
        ok && out.contains("~ network lab") && out.contains("mtu: 1400 -> 1300") && out.lines().filter(|l| l.starts_with(['+', '~', '-'])).count() == 1,
        "{out}"
    );
    let (ok, out) = plexus(&cp, &["apply", "-f", &fs]);
    assert!(ok && out.contains("applied: 1 change(s)"), "{out}");
    for n in api.networks().await.expect("networks") {
        let old = before.iter().find(|(name, _)| *name == n.spec.name).map(|(_, r)| *r);
        if n.spec.name == "lab" {
            assert_eq!(n.spec.mtu, Some(1300));
            assert_ne!(Some(n.revision), old, "lab changed");
        } else {
            assert_eq!(Some(n.revision), old, "{} untouched", n.spec.name);
        }
    }

    // Without lab (and its endpoints), --prune deletes them and only them.
    let pruned: String = edited.split("---").filter(|d| !d.contains("name: lab")).collect::<Vec<_>>().join("---");
    let eps: String = endpoints().split("---").filter(|d| !d.contains("network: lab")).collect::<Vec<_>>().join("---");
    std::fs::write(&f, format!("{pruned}{eps}")).expect("write");
    let (ok, out) = plexus(&cp, &["apply", "-f", &fs]);
    assert!(ok && out.trim() == "no changes", "without --prune nothing is deleted: {out}");
    let (ok, out) = plexus(&cp, &["apply", "-f", &fs, "--prune"]);
    assert!(ok && out.contains("- network lab") && out.contains("- endpoint lab/e4") && out.contains("applied: 3 change(s)"), "{out}");
    let names: Vec<String> = api.networks().await.expect("networks").into_iter().map(|n| n.spec.name).collect();
    assert_eq!(names, ["db", "manual", "web"], "lab went; manual, never applied, stays");

    // export | apply changes nothing.
    let (ok, exported) = plexus(&cp, &["export"]);
    assert!(ok && exported.contains("kind: router"), "{exported}");
    let e = write(&dir, "export.yaml", &exported);
    let (ok, out) = plexus(&cp, &["apply", "-f", &e.display().to_string()]);
    assert!(ok && out.trim() == "no changes", "export | apply: {out}");

    // Every listing speaks YAML too, and export JSON.
    let (ok, out) = plexus(&cp, &["network", "list", "-o", "yaml"]);
    assert!(ok && out.contains("name: web") && out.contains("subnet: 10.61.0.0/24"), "{out}");
    let (ok, out) = plexus(&cp, &["export", "-o", "json"]);
    let docs: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap_or_else(|e| panic!("export -o json: {e}: {out}"));
    assert!(ok && docs.iter().any(|d| d["kind"] == "policy" && d["spec"]["name"] == "db-only"), "{out}");

    // One bad document anywhere: nothing at all changes, and the error says where.
    for (bad, says) in [
        ("kind: network\nspec: {name: extra, kind: {type: overlay}, subnet: 10.70.0.0/24, colour: red}\n", "colour"),
        ("kind: switch\nspec: {name: x}\n", "switch"),
        ("kind: router\nspec: {name: r2, networks: [nowhere]}\n", "network nowhere"),
        ("kind: network\nspec: {name: web, kind: {type: overlay}, subnet: 10.61.0.0/24}\n", "named twice"),
    ] {
        let b = write(&dir, "bad.yaml", &format!("kind: network\nspec: {{name: fresh, kind: {{type: overlay}}, subnet: 10.71.0.0/24}}\n---\n{bad}"));
        let (ok, out) = plexus(&cp, &["apply", "-f", &fs, "-f", &b.display().to_string()]);
        assert!(!ok && out.contains(says), "{bad}: {out}");
        assert!(!api.networks().await.expect("networks").iter().any(|n| n.spec.name == "fresh"), "nothing applied: {out}");
    }
    // A document the controller refuses (an address outside the subnet) fails the whole batch.
    let b = write(&dir, "bad.yaml", "kind: network\nspec: {name: fresh, kind: {type: overlay}, subnet: 10.71.0.0/24}\n---\nkind: endpoint\nnetwork: fresh\nspec: {id: z, host: h1, ip: 10.99.0.5}\n");
    let (ok, out) = plexus(&cp, &["apply", "-f", &b.display().to_string()]);
    assert!(!ok && out.contains("outside") && out.contains("nothing was changed"), "{out}");
    assert!(!api.networks().await.expect("networks").iter().any(|n| n.spec.name == "fresh"));
    // Exit codes as documented: 2 for a wrong command line, 1 for a refusal, 0 for done.
    let code =
        |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_plexus")).args(args).envs(cp.envs().expect("credentials")).output().expect("plexus").status.code();
    assert_eq!(code(&["apply"]), Some(2), "no -f is a usage error");
    assert_eq!(code(&["apply", "-f", &b.display().to_string()]), Some(1), "a refused apply");
    assert_eq!(code(&["diff", "-f", &fs]), Some(0));
}
