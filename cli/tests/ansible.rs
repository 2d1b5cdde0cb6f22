//! The Ansible collection `plexus.network` (issue 15) with real `ansible-core` against a lab
//! controller: a playbook of every module changes things the first time and nothing the
//! second; check mode changes nothing; a bad parameter fails with the API's message.

use std::path::Path;
use std::process::Command;

use plexus_lab::{ControlPlane, Lab, LabConfig};

const PLAYBOOK: &str = r#"
- hosts: localhost
  connection: local
  gather_facts: false
  collections: [plexus.network]
  vars:
    mtu: 1400
    subnet: 10.81.0.0/24
  tasks:
    - plexus_network: {name: red, subnet: "{{ subnet }}", mtu: "{{ mtu }}", labels: {team: net}}
    - plexus_network: {name: blue, subnet: 10.82.0.0/24}
    - plexus_router: {name: core, networks: [red, blue], external: true}
    - plexus_policy:
        name: db-only
        network: blue
        select: app=db
        ingress:
          - {action: allow, peers: [{select: app=web, network: red}], protocol: tcp, ports: [5432]}
    - plexus_endpoint: {network: red, id: web1, host: h1, labels: {app: web}, publish: ["8080:80/tcp"]}
    - plexus_apply: {src: "{{ playbook_dir }}/extra.yaml", plexus: "{{ plexus_bin }}"}
"#;

const EXTRA: &str = "kind: network\nspec: {name: green, kind: {type: overlay}, subnet: 10.83.0.0/24}\n";

fn playbook(cp: &ControlPlane, dir: &Path, extra: &[&str]) -> (bool, String) {
    let collections = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/ansible");
    let out = Command::new("ansible-playbook")
        .args(["-i", "localhost,", "playbook.yml", "-e", &format!("plexus_bin={}", env!("CARGO_BIN_EXE_plexus"))])
        .args(extra)
        .current_dir(dir)
        .envs(cp.envs().expect("credentials"))
        .env("ANSIBLE_COLLECTIONS_PATH", collections)
        .env("ANSIBLE_LOCALHOST_WARNING", "false")
        .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "false")
        .env("ANSIBLE_PYTHON_INTERPRETER", "/usr/bin/python3")
        .output()
        .expect("ansible-playbook (install ansible-core)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The `changed=N` of the play recap.
fn changed(out: &str) -> Option<u32> {
    out.split("changed=").nth(1)?.split_whitespace().next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_playbook_of_every_module_is_idempotent_and_check_mode_changes_nothing() {
    let lab = Lab::up(&LabConfig::owned(&plexus_tests::unique_name('n'), 1)).expect("lab");
    let cp = lab.start_control_plane(Path::new(env!("CARGO_BIN_EXE_plexus"))).expect("control plane");
    let api = cp.client().expect("client");
    let dir = lab.dir.join("ansible");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("playbook.yml"), PLAYBOOK).expect("playbook");
    std::fs::write(dir.join("extra.yaml"), EXTRA).expect("extra");

    // Check mode first: it would change all six, and changes nothing.
    let (ok, out) = playbook(&cp, &dir, &["--check"]);
    assert!(ok, "{out}");
    assert_eq!(changed(&out), Some(6), "{out}");
    assert!(api.networks().await.expect("networks").is_empty(), "check mode changed nothing");

    let (ok, out) = playbook(&cp, &dir, &[]);
    assert!(ok && changed(&out) == Some(6), "first run: {out}");
    let red = api.network("red").await.expect("red");
    assert_eq!((red.spec.mtu, red.spec.labels.get("team").map(String::as_str)), (Some(1400), Some("net")));
    assert!(api.router("core").await.expect("core").spec.external);
    assert_eq!(api.policy("db-only").await.expect("policy").spec.network, "blue");
    let web1 = api.endpoints("red").await.expect("endpoints").into_iter().find(|e| e.id == "web1").expect("web1");
    assert_eq!(web1.publish.len(), 1);
    assert!(api.network("green").await.is_ok(), "plexus_apply applied the file");

    let (ok, out) = playbook(&cp, &dir, &[]);
    assert!(ok && changed(&out) == Some(0), "second run: {out}");

    // A change in check mode with --diff shows it and changes nothing; then it applies.
    let (ok, out) = playbook(&cp, &dir, &["--check", "--diff", "-e", "mtu=1300"]);
    assert!(ok && changed(&out) == Some(1) && out.contains("1300"), "{out}");
    assert_eq!(api.network("red").await.expect("red").spec.mtu, Some(1400));
    let (ok, out) = playbook(&cp, &dir, &["-e", "mtu=1300"]);
    assert!(ok && changed(&out) == Some(1), "{out}");
    assert_eq!(api.network("red").await.expect("red").spec.mtu, Some(1300));

    // A bad parameter fails with the API's message, naming the field.
    let (ok, out) = playbook(&cp, &dir, &["-e", "subnet=10.81.0.0/33"]);
    assert!(!ok && out.contains("field subnet"), "{out}");
}
