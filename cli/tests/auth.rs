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
        if method == "GET" {
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
    let before = api.snapshot().await;
    // Not another host, not by a body that names another, not the list of all hosts.
    for (m, path, body, want) in [
        ("PUT", "/v1/hosts/h2", Some(json!({"name": "h2", "tunnel_ip": "192.0.2.66"})), 403),
        ("PUT", "/v1/hosts/h1", Some(json!({"name": "h2", "tunnel_ip": "192.0.2.66"})), 422),
        ("GET", "/v1/hosts/h2", None, 403),
        ("GET", "/v1/hosts/h2/flows", None, 403),
        ("GET", "/v1/hosts", None, 403),
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
