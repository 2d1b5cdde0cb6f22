//! The CLI never shows its seams (issue 15): one test per seam found by trying it as a new
//! user would — no Rust debug text, each error said once with what to do, no panic when the
//! reader of its output goes away, `lab demo` safe to run again, endpoints listed across
//! networks.

use std::path::Path;
use std::process::{Command, Output};

use plexus_lab::{ControlPlane, Lab, LabConfig};

const PLEXUS: &str = env!("CARGO_BIN_EXE_plexus");

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn plexus(cp: &ControlPlane, args: &[&str]) -> Output {
    Command::new(PLEXUS).args(args).envs(cp.envs().expect("credentials")).output().expect("plexus")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_shows_no_seams() {
    let lab = Lab::up(&LabConfig::owned(&plexus_tests::unique_name('s'), 2)).expect("lab");
    let cp = lab.start_control_plane(Path::new(PLEXUS)).expect("control plane");

    // lab demo, twice on one lab: no debug text, and the second run replaces the first's
    // containers instead of failing on them.
    for run in 0..2 {
        let o = plexus(&cp, &["lab", "demo", "--name", &lab.name]);
        let t = text(&o);
        assert!(o.status.success(), "demo run {run}: {t}");
        assert!(!t.contains("Some(") && !t.contains(" { ") && !t.contains("Overlay"), "debug text in demo run {run}: {t}");
    }
    let api = cp.client().expect("client");
    assert_eq!(api.endpoints("demo").await.expect("endpoints").len(), 2, "each demo run leaves its two endpoints, no more");

    // An error is said once, with its cause.
    let taken = api.endpoints("demo").await.expect("endpoints")[0].ip.to_string();
    let h1 = lab.host("h1").expect("h1");
    let ns = format!("plx-{}-x1", lab.name);
    assert!(Command::new("ip").args(["netns", "add", &ns]).status().expect("ip").success());
    let attach = |netns_of_shell: Option<&str>, extra: &[&str]| {
        let mut c = match netns_of_shell {
            Some(s) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", s, PLEXUS]);
                c
            }
            None => Command::new(PLEXUS),
        };
        c.args(["attach", "--netns", &format!("/run/netns/{ns}"), "--network", "demo"])
            .args(extra)
            .envs(cp.envs().expect("credentials"))
            .env("PLEXUS_HOST", "h1")
            .env("PLEXUS_OVSDB", format!("unix:{}", h1.ovs.db_sock().display()))
            .output()
            .expect("plexus attach")
    };
    let o = attach(Some(&h1.netns), &["--ip", &taken]);
    let t = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success() && t.matches("already taken").count() == 1, "the refusal once: {t}");
    // attach from a shell outside the host's namespace: the reason and what to do, once.
    let o = attach(None, &[]);
    let t = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success() && t.matches("No such device").count() == 1 && t.contains("ip netns exec"), "a hint for the wrong namespace: {t}");
    assert_eq!(api.endpoints("demo").await.expect("endpoints").len(), 2, "a failed attach leaves no endpoint");

    // network delete refused: the hint names the CLI's flag.
    let o = plexus(&cp, &["network", "delete", "demo"]);
    assert!(!o.status.success() && text(&o).contains("--force"), "{}", text(&o));

    // Endpoints across networks.
    api.create_network(&plexus_api::NetworkSpec::overlay("other", "10.78.0.0/24")).await.expect("network");
    api.create_endpoint("other", &plexus_api::EndpointSpec::on("h2").id("o1")).await.expect("endpoint");
    let o = plexus(&cp, &["endpoint", "list"]);
    let t = text(&o);
    assert!(o.status.success() && t.contains("o1") && t.matches("demo").count() >= 2, "{t}");

    // JSON logs, one object per line, for log collectors.
    let o = Command::new(PLEXUS)
        .args(["--log-format", "json", "lab", "run", "--name", &lab.name, "--network", "other", "h1", "j1"])
        .envs(cp.envs().expect("credentials"))
        .output()
        .expect("plexus");
    let logs = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success() && !logs.trim().is_empty(), "{}", text(&o));
    for line in logs.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }

    // Shell completions that bash accepts.
    let script = format!("source <({PLEXUS} completion bash) && complete -p plexus");
    let o = Command::new("bash").args(["-c", &script]).output().expect("bash");
    assert!(o.status.success() && text(&o).contains("plexus"), "{}", text(&o));
    for shell in ["zsh", "fish"] {
        let o = Command::new(PLEXUS).args(["completion", shell]).output().expect("plexus");
        assert!(o.status.success() && text(&o).contains("router"), "{shell}: {}", text(&o));
    }

    // Output into a reader that has gone: a quiet stop, no panic.
    let script = format!("set -o pipefail; {PLEXUS} lab status --name {} -o json | (exec 0<&-; sleep 1)", lab.name);
    let o = Command::new("bash").args(["-c", &script]).envs(cp.envs().expect("credentials")).output().expect("bash");
    assert!(o.status.success() && !text(&o).contains("panicked"), "a closed pipe: {}", text(&o));
}
