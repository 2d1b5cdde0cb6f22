//! Who may call what: every route of the API without a credential (401), with a forged or
//! foreign one (401), with a role that may not (403), with a body that is not JSON (415); and
//! an agent's credential confined to its own host. Each refusal changes nothing.

use std::time::Duration;

use plexus_tests::api::{net, Api};
use serde_json::{json, Value};

/// Every route the OpenAPI document lists, with its path parameters filled in.
async fn routes(api: &Api) -> Vec<(String, String)> {
    let doc = api.c.get(1, "/v1/openapi.json").await.expect("the OpenAPI document, as an admin");
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let path = path.replace("{name}", "red").replace("{id}", "c1");
        // A watch waits for changes: ask it not to.
        let path = if path == "/v1/watch" { format!("{path}?timeout=0") } else { path };
        for m in item.as_object().expect("methods").keys() {
            out.push((m.to_uppercase(), path.clone()));
        }
    }
    assert!(out.len() > 20, "the document lists the routes: {out:?}");
    out
}

/// Sends `method path` with `token` (none: no Authorization header) and a JSON body for
/// writes; the status, the content type and the answer.
async fn call(api: &Api, token: Option<&str>, method: &str, path: &str, content_type: &str) -> (u16, String, Value, bool) {
    let http = api.c.client_with(token);
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut r = http.request(m, api.c.url(1, path)).timeout(Duration::from_secs(10));
    if method == "POST" || method == "PUT" {
        r = r.header("content-type", content_type).body(net("zz", "10.99.0.0/24").to_string());
    }
    let resp = r.send().await.expect("an answer");
    let status = resp.status().as_u16();
    let challenge = resp.headers().contains_key("www-authenticate");
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let text = resp.text().await.unwrap_or_default();
    (status, ct, serde_json::from_str(&text).unwrap_or(Value::Null), challenge)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_needs_a_credential_and_the_role_that_may_call_it() {
    let api = Api::start(env!("CARGO_BIN_EXE_plexus"), 1).await;
    api.ok("PUT", "/v1/hosts/h1", json!({"name": "h1", "tunnel_ip": "192.0.2.11"})).await;
    api.ok("POST", "/v1/networks", net("red", "10.10.0.0/24")).await;
    api.ok("POST", "/v1/networks/red/endpoints", json!({"id": "c1", "host": "h1"})).await;
    let before = api.snapshot().await;

    let reader = api.c.token("reader");
    // A token of another cluster (another key), and one whose role was edited.
    let foreign = {
        let dir = api.c.dir.join("other-pki");
        plexus_pki::TokenKey::open_or_create(&dir).unwrap().issue(&plexus_pki::Role::Admin).unwrap()
    };
    let edited = reader.replacen("reader", "admin", 1);
    for (method, path) in routes(&api).await {
        if path == "/healthz" || path == "/readyz" {
            let (s, ..) = call(&api, None, &method, &path, "application/json").await;
            assert_eq!(s, 200, "{path} is a probe and needs no credential");
            continue;
        }
        for token in [None, Some("plx1.admin..00.00"), Some(foreign.as_str()), Some(edited.as_str()), Some("")] {
            let (s, ct, body, challenge) = call(&api, token, &method, &path, "application/json").await;
            assert_eq!(s, 401, "{method} {path} with {token:?}: {body}");
            assert!(ct.starts_with("application/problem+json") && challenge, "{method} {path}: a problem and a Bearer challenge");
        }
        let (s, _, body, _) = call(&api, Some(&reader), &method, &path, "application/json").await;
        // A trace changes nothing: a reader may run one.
        if method == "GET" || path == "/v1/trace" {
            assert!(s != 401 && s != 403, "a reader reads {path}: {s} {body}");
        } else {
            assert_eq!(s, 403, "a reader may not {method} {path}: {body}");
            assert!(body["detail"].as_str().is_some_and(|d| d.contains("reader")), "{body}");
        }
        if method == "POST" || method == "PUT" {
            let (s, _, body, _) = call(&api, Some(&api.c.admin_token), &method, &path, "text/plain").await;
            assert_eq!(s, 415, "{method} {path} with a text body: {body}");
        }
    }
    assert_eq!(api.snapshot().await, before, "no refused request changed anything");

    // Plain HTTP to the HTTPS port gets nothing.
    let plain = plexus_api::client::http_builder().build().unwrap();
    let r = plain.get(api.c.url(1, "/v1/networks").replace("https://", "http://")).timeout(Duration::from_secs(5)).send().await;
    assert!(r.map(|r| r.status().as_u16() >= 400).unwrap_or(true), "the API answers nothing over plain HTTP");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_credential_reaches_its_own_host_only() {
    let api = Api::start(env!("CARGO_BIN_EXE_plexus"), 2).await;
    api.ok("PUT", "/v1/hosts/h2", json!({"name": "h2", "tunnel_ip": "192.0.2.12"})).await;
    api.ok("POST", "/v1/networks", net("red", "10.10.0.0/24")).await;
    api.ok("POST", "/v1/networks/red/endpoints", json!({"id": "theirs", "host": "h2"})).await;
    let h1 = api.c.token("agent:h1");
    let agent = api.c.client_with(Some(&h1));
    let send = |m: &str, path: &str, body: Option<Value>| {
        let mut r = agent.request(reqwest::Method::from_bytes(m.as_bytes()).unwrap(), api.c.url(1, path));
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let resp = r.send().await.unwrap();
            let s = resp.status().as_u16();
            (s, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    // Its own host: register, heartbeat, read it.
    assert_eq!(send("PUT", "/v1/hosts/h1", Some(json!({"name": "h1", "tunnel_ip": "192.0.2.11"}))).await.0, 200);
    assert_eq!(send("PUT", "/v1/hosts/h1", Some(json!({"name": "h1", "tunnel_ip": "192.0.2.11"}))).await.0, 200);
    assert_eq!(send("GET", "/v1/hosts/h1", None).await.0, 200);
    // Its own trace jobs (none wait), and answering one nobody waits for.
    let (s, jobs) = send("GET", "/v1/hosts/h1/trace-jobs?wait=0", None).await;
    assert_eq!((s, jobs), (200, json!([])));
    assert_eq!(send("POST", "/v1/hosts/h1/trace-jobs/7", Some(json!({"output": "x"}))).await.0, 404);
    // The hosts' list, for its tunnels' far ends (its agent touches them before traffic).
    let (s, hosts) = send("GET", "/v1/hosts", None).await;
    assert_eq!(s, 200, "{hosts}");
    assert!(hosts.as_array().is_some_and(|a| a.iter().any(|h| h["name"] == "h2")), "{hosts}");
    let before = api.snapshot().await;
    // Not another host, not by a body that names another, not the list of all hosts.
    for (m, path, body, want) in [
        ("PUT", "/v1/hosts/h2", Some(json!({"name": "h2", "tunnel_ip": "192.0.2.66"})), 403),
        ("PUT", "/v1/hosts/h1", Some(json!({"name": "h2", "tunnel_ip": "192.0.2.66"})), 422),
        ("GET", "/v1/hosts/h2", None, 403),
        ("GET", "/v1/hosts/h2/flows", None, 403),
        ("GET", "/v1/hosts/h2/trace-jobs", None, 403),
        ("POST", "/v1/hosts/h2/trace-jobs/1", Some(json!({"output": "forged"})), 403),
        ("POST", "/v1/trace", Some(json!({"network": "red", "from": "a", "to": "10.0.0.1"})), 403),
        ("PUT", "/v1/networks/red/endpoints/theirs/labels", Some(json!({"labels": {}})), 403),
        ("PUT", "/v1/networks/red/endpoints/nope/labels", Some(json!({"labels": {"a": "b"}})), 404),
        ("GET", "/v1/networks/red/endpoints/theirs", None, 404),
        ("POST", "/v1/networks/red/endpoints", Some(json!({"host": "h2"})), 403),
        ("DELETE", "/v1/networks/red/endpoints/theirs", None, 403),
        ("DELETE", "/v1/networks/red", None, 403),
        ("DELETE", "/v1/networks/red?force=true", None, 403),
        ("PUT", "/v1/networks/red", Some(net("red", "10.10.0.0/24")), 403),
        ("POST", "/v1/routers", Some(json!({"name": "r", "networks": ["red"]})), 403),
        ("GET", "/metrics", None, 403),
        ("GET", "/v1/cluster", None, 403),
    ] {
        let (s, body) = send(m, path, body).await;
        assert_eq!(s, want, "agent:h1 {m} {path}: {body}");
    }
    assert_eq!(api.snapshot().await, before, "the refusals changed nothing");
    // What its Docker and attachments need: endpoints on h1, a network of its own.
    let (s, e) = send("POST", "/v1/networks/red/endpoints", Some(json!({"host": "h1"}))).await;
    assert_eq!(s, 201, "{e}");
    let id = e["id"].as_str().unwrap().to_string();
    let (_, listed) = send("GET", "/v1/networks/red/endpoints", None).await;
    assert_eq!(listed.as_array().map(|a| a.iter().map(|e| e["id"].clone()).collect::<Vec<_>>()), Some(vec![json!(id)]), "it lists its own endpoints only");
    assert_eq!(send("DELETE", &format!("/v1/networks/red/endpoints/{id}"), None).await.0, 204);
    let (s, n) = send("POST", "/v1/networks", Some(net("docker-made", "10.20.0.0/24"))).await;
    assert_eq!(s, 201, "{n}");
    assert_eq!(n["labels"]["plexus.io/made-by-host"], "h1", "{n}");
    // Another host's agent may not delete it; its own may.
    let h3 = api.c.client_with(Some(&api.c.token("agent:h3")));
    assert_eq!(h3.delete(api.c.url(1, "/v1/networks/docker-made")).send().await.unwrap().status().as_u16(), 403);
    assert_eq!(send("DELETE", "/v1/networks/docker-made", None).await.0, 204);
    // The endpoint of h2 is still there.
    assert!(api.c.get(1, "/v1/networks/red/endpoints/theirs").await.is_some());
}

/// Bootstrap and join tokens buy credentials once, through any node, and nothing else; an
/// expired one buys nothing. What a bootstrap buys is an agent's credential for its host.
#[tokio::test(flavor = "multi_thread")]
async fn one_time_tokens_buy_credentials_once_and_nothing_else() {
    let c = plexus_tests::Cluster::new(env!("CARGO_BIN_EXE_plexus"), 3, 3);
    c.leader(&[1, 2, 3]).await;
    let post = |node: usize, token: &str, path: &'static str| {
        let r = c.client_with(Some(token)).post(c.url(node, path)).timeout(Duration::from_secs(10)).send();
        async move {
            let r = r.await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let boot = c.token("bootstrap:h5");
    // Only the route that spends it.
    let (s, _) = post(2, &boot, "/v1/networks").await;
    assert_eq!(s, 403);
    assert_eq!(post(2, &boot, "/v1/bootstrap/node").await.0, 403, "a bootstrap token is no join token");
    assert_eq!(post(2, &c.admin_token, "/v1/bootstrap/agent").await.0, 403, "nor is an admin's");
    let (s, got) = post(2, &boot, "/v1/bootstrap/agent").await;
    assert_eq!(s, 200, "{got}");
    assert_eq!(got["host"], "h5");
    assert!(got["certificate_pem"].as_str().is_some_and(|p| p.contains("BEGIN CERTIFICATE")) && got["private_key_pem"].as_str().is_some());
    // Once: not again, through any node.
    for node in 1..=3 {
        let (s, p) = post(node, &boot, "/v1/bootstrap/agent").await;
        assert_eq!(s, 409, "node {node}: {p}");
    }
    // What it bought: an agent's credential for h5, and only h5.
    let agent = c.client_with(got["token"].as_str());
    let put = |h: &str| agent.put(c.url(3, &format!("/v1/hosts/{h}"))).json(&json!({"name": h, "tunnel_ip": "192.0.2.55"})).send();
    assert_eq!(put("h5").await.unwrap().status(), 200);
    assert_eq!(put("h6").await.unwrap().status(), 403);
    // The certificate names the host's switch and chains to the cluster's CA.
    let id = plexus_pki::Identity {
        cert_pem: got["certificate_pem"].as_str().unwrap().into(),
        key_pem: got["private_key_pem"].as_str().unwrap().into(),
        ca_pem: std::fs::read_to_string(c.pki_dir().join("ca.crt")).unwrap(),
    };
    assert!(id.client_config().is_ok());
    assert!(id.cert_pem != std::fs::read_to_string(c.pki_dir().join("ca.crt")).unwrap());
    // Expired tokens buy nothing.
    let key = plexus_pki::TokenKey::open(&c.pki_dir()).unwrap();
    let expired = key.issue_until(&plexus_pki::Role::Bootstrap("h7".into()), Some(1)).unwrap();
    let (s, p) = post(1, &expired, "/v1/bootstrap/agent").await;
    assert_eq!(s, 401, "{p}");
    c.identical(&[1, 2, 3]).await;
}

/// A new node joins with a join token alone: it fetches the cluster's CA and token key from
/// a member's API, issues itself a node certificate, joins over the cluster port, and serves
/// the same state; the token does not work twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_joins_with_a_join_token_and_no_copied_files() {
    let mut c = plexus_tests::Cluster::empty(env!("CARGO_BIN_EXE_plexus"), 2, 4);
    c.spawn(1, &[]);
    c.leader(&[1]).await;
    let s = c.http.post(c.url(1, "/v1/networks")).json(&net("before", "10.40.0.0/24")).send().await.unwrap().status();
    assert_eq!(s, 201);
    let join = c.token("join");
    let own = c.dir.join("node2-pki");
    let (a1, api1, ca) = (c.cluster_addrs[0].clone(), c.url(1, ""), c.pki_dir().join("ca.crt").display().to_string());
    assert!(!own.join("ca.key").exists());
    c.spawn_in(2, &own, &["--join", &a1, "--join-token", &join, "--join-api", &api1, "--ca", &ca]);
    let t = std::time::Instant::now();
    while c.get(1, "/v1/cluster").await.and_then(|v| v["members"].as_array().map(Vec::len)) != Some(2) {
        assert!(t.elapsed() < Duration::from_secs(20), "node 2 did not join (logs in {})", c.dir.display());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(own.join("ca.key").exists() && own.join("token.key").exists() && own.join("node-2.crt").exists(), "node 2 holds what the token bought");
    let digest = c.identical(&[1, 2]).await;
    assert!(digest.revision >= 1);
    // Node 2 checks the cluster's tokens with the same key: the admin's works there.
    assert!(c.get(2, "/v1/networks?local=true").await.is_some_and(|v| v[0]["name"] == "before"));
    // Spent.
    let r = c.client_with(Some(&join)).post(c.url(2, "/v1/bootstrap/node")).send().await.unwrap();
    assert_eq!(r.status(), 409);
}
