//! What bad input, refused writes and slow clients get from a controller's REST API: a
//! problem document naming the field, nothing changed, nothing logged, nothing held.

use std::time::{Duration, Instant};

use plexus_tests::api::{net, Api};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_a_problem_document_naming_the_field_and_change_nothing() {
    let api = Api::start(env!("CARGO_BIN_EXE_plexus"), 5).await;
    api.ok("PUT", "/v1/hosts/h1", json!({"name": "h1", "tunnel_ip": "192.0.2.11"})).await;
    api.ok("POST", "/v1/networks", json!({"name": "red", "kind": {"type": "overlay", "vni": 500}, "subnet": "10.10.0.0/24"})).await;
    api.ok("POST", "/v1/networks/red/endpoints", json!({"id": "c1", "host": "h1", "ip": "10.10.0.42"})).await;
    api.ok("POST", "/v1/networks", net("wide", "10.10.0.0/16")).await;
    api.ok("POST", "/v1/networks", net("other", "10.12.0.0/24")).await;
    api.ok("POST", "/v1/routers", json!({"name": "r1", "networks": ["red", "other"]})).await;
    let before = api.snapshot().await;

    let big = format!("{{\"name\":\"x\",\"kind\":{{\"type\":\"overlay\"}},\"subnet\":\"10.9.0.0/24\",\"labels\":{{\"a\":\"{}\"}}}}", "x".repeat(100_000));
    let n = |v: Value| Some(v.to_string());
    // (method, path, body, headers, status, field named in the problem)
    type Case<'a> = (&'a str, &'a str, Option<String>, Vec<(&'a str, &'a str)>, u16, Option<&'a str>);
    let cases: Vec<Case<'_>> = vec![
        ("POST", "/v1/networks", Some("{\"name\":".into()), vec![], 400, None),
        ("POST", "/v1/networks", n(json!({"name": 5, "kind": {"type": "overlay"}, "subnet": "10.1.0.0/24"})), vec![], 400, None),
        ("POST", "/v1/networks", n(json!({"name": "a", "kind": {"type": "overlay"}, "subnet": "10.1.0.0/24", "colour": "red"})), vec![], 400, None),
        ("POST", "/v1/networks", n(json!({"name": "a", "kind": {"type": "overlay"}})), vec![], 400, None),
        ("POST", "/v1/networks", n(net("a", "10.1.0.0/33")), vec![], 422, Some("subnet")),
        ("POST", "/v1/networks", n(net("a", "10.1.0.1/24")), vec![], 422, Some("subnet")),
        ("POST", "/v1/networks", n(net("a", "banana")), vec![], 422, Some("subnet")),
        ("POST", "/v1/networks", n(net("a", "10.1.0.0/31")), vec![], 422, Some("subnet")),
        (
            "POST",
            "/v1/networks",
            n(json!({"name": "a", "kind": {"type": "overlay"}, "subnet": "10.1.0.0/24", "gateway": "10.2.0.1"})),
            vec![],
            422,
            Some("gateway"),
        ),
        (
            "POST",
            "/v1/networks",
            n(json!({"name": "a", "kind": {"type": "overlay"}, "subnet": "10.1.0.0/24", "gateway": "10.1.0.255"})),
            vec![],
            422,
            Some("gateway"),
        ),
        ("POST", "/v1/networks", n(net("Red_Net", "10.1.0.0/24")), vec![], 422, Some("name")),
        ("POST", "/v1/networks", n(net(&"a".repeat(64), "10.1.0.0/24")), vec![], 422, Some("name")),
        ("POST", "/v1/networks", n(net("red", "10.1.0.0/24")), vec![], 409, Some("name")),
        ("POST", "/v1/networks", n(json!({"name": "a", "kind": {"type": "overlay", "vni": 0}, "subnet": "10.1.0.0/24"})), vec![], 422, Some("kind.vni")),
        ("POST", "/v1/networks", n(json!({"name": "a", "kind": {"type": "overlay", "vni": 16777216}, "subnet": "10.1.0.0/24"})), vec![], 422, Some("kind.vni")),
        ("POST", "/v1/networks", n(json!({"name": "a", "kind": {"type": "overlay", "vni": 500}, "subnet": "10.1.0.0/24"})), vec![], 409, Some("kind.vni")),
        ("POST", "/v1/networks", n(json!({"name": "a", "kind": {"type": "overlay"}, "subnet": "10.1.0.0/24", "mtu": 100})), vec![], 422, Some("mtu")),
        (
            "POST",
            "/v1/networks",
            n(json!({"name": "a", "kind": {"type": "underlay", "physical_network": "phys", "vlan": 5000}, "subnet": "10.1.0.0/24"})),
            vec![],
            422,
            Some("kind.vlan"),
        ),
        (
            "POST",
            "/v1/networks",
            n(json!({"name": "a", "kind": {"type": "underlay", "physical_network": "Phys Net"}, "subnet": "10.1.0.0/24"})),
            vec![],
            422,
            Some("kind.physical_network"),
        ),
        ("POST", "/v1/networks", n(json!({"name": "a", "kind": {"type": "bridge"}, "subnet": "10.1.0.0/24"})), vec![], 400, None),
        ("POST", "/v1/networks", Some(big), vec![], 413, None),
        ("PUT", "/v1/networks/red", n(net("blue", "10.10.0.0/24")), vec![], 422, Some("name")),
        ("PUT", "/v1/networks/red", n(net("red", "10.10.0.0/24")), vec![("if-match", "\"999\"")], 412, None),
        ("PUT", "/v1/networks/red", n(net("red", "10.10.0.0/24")), vec![("if-match", "yesterday")], 400, Some("If-Match")),
        ("PUT", "/v1/networks/red", n(net("red", "10.11.0.0/24")), vec![], 409, Some("subnet")),
        ("DELETE", "/v1/networks/nope", None, vec![], 404, Some("name")),
        ("DELETE", "/v1/networks/red", None, vec![], 409, None),
        ("POST", "/v1/networks/red/endpoints", n(json!({"host": "h1", "ip": "10.99.0.5"})), vec![], 422, Some("ip")),
        ("POST", "/v1/networks/red/endpoints", n(json!({"host": "h1", "ip": "10.10.0.42"})), vec![], 409, Some("ip")),
        ("POST", "/v1/networks/red/endpoints", n(json!({"host": "h1", "ip": "10.10.0.1"})), vec![], 409, Some("ip")),
        ("POST", "/v1/networks/red/endpoints", n(json!({"host": "h1", "ip": "10.10.0.255"})), vec![], 422, Some("ip")),
        ("POST", "/v1/networks/red/endpoints", n(json!({"host": "h9"})), vec![], 422, Some("host")),
        ("POST", "/v1/networks/red/endpoints", n(json!({"host": "h1", "mac": "02:00:00:00:00"})), vec![], 422, Some("mac")),
        ("POST", "/v1/networks/red/endpoints", n(json!({"host": "h1", "mac": "01:00:5e:00:00:01"})), vec![], 422, Some("mac")),
        ("POST", "/v1/networks/red/endpoints", n(json!({"host": "h1", "id": "c1"})), vec![], 409, Some("id")),
        ("POST", "/v1/networks/red/endpoints", n(json!({"host": "h1", "id": "no spaces"})), vec![], 422, Some("id")),
        ("POST", "/v1/networks/nope/endpoints", n(json!({"host": "h1"})), vec![], 404, Some("network")),
        ("DELETE", "/v1/networks/red/endpoints/c9", None, vec![], 404, Some("id")),
        ("PUT", "/v1/hosts/h2", n(json!({"name": "h2", "tunnel_ip": "127.0.0.1"})), vec![], 422, Some("tunnel_ip")),
        ("PUT", "/v1/hosts/h2", n(json!({"name": "h3", "tunnel_ip": "192.0.2.13"})), vec![], 422, Some("name")),
        ("PUT", "/v1/hosts/h2", n(json!({"name": "h2", "tunnel_ip": "192.0.2.11"})), vec![], 409, Some("tunnel_ip")),
        ("GET", "/v1/nonsense", None, vec![], 404, None),
        ("POST", "/v1/routers", n(json!({"name": "r2", "networks": ["red", "wide"]})), vec![], 422, Some("networks")),
        ("PUT", "/v1/networks/other", n(net("other", "10.10.0.0/20")), vec![], 422, Some("subnet")),
        ("POST", "/v1/routers", n(json!({"name": "r2", "networks": ["red", "nope"]})), vec![], 422, Some("networks")),
        ("POST", "/v1/routers", n(json!({"name": "r2", "networks": ["red", "red"]})), vec![], 422, Some("networks")),
        ("POST", "/v1/routers", n(json!({"name": "r1", "networks": ["red"]})), vec![], 409, Some("name")),
        ("DELETE", "/v1/networks/other", None, vec![], 409, None),
        ("POST", "/v1/policies", n(json!({"name": "p2", "network": "nope", "ingress": []})), vec![], 422, Some("network")),
        ("POST", "/v1/policies", n(json!({"name": "p2", "network": "red"})), vec![], 422, Some("ingress")),
        ("POST", "/v1/policies", n(json!({"name": "p2", "network": "red", "select": "app=", "ingress": []})), vec![], 422, Some("select")),
        ("POST", "/v1/policies", n(json!({"name": "p2", "network": "red", "ingress": [{"ports": ["80"]}]})), vec![], 422, Some("ingress[0].ports")),
        (
            "POST",
            "/v1/policies",
            n(json!({"name": "p2", "network": "red", "egress": [{"protocol": "udp", "ports": ["53", "90-80"]}]})),
            vec![],
            422,
            Some("egress[0].ports[1]"),
        ),
        (
            "POST",
            "/v1/policies",
            n(json!({"name": "p2", "network": "red", "egress": [{"protocol": "tcp", "ports": ["65536"]}]})),
            vec![],
            422,
            Some("egress[0].ports[0]"),
        ),
        (
            "POST",
            "/v1/policies",
            n(json!({"name": "p2", "network": "red", "ingress": [{"peers": [{"cidr": "10.0.0.0"}]}]})),
            vec![],
            422,
            Some("ingress[0].peers[0].cidr"),
        ),
        (
            "POST",
            "/v1/policies",
            n(json!({"name": "p2", "network": "red", "ingress": [{"peers": [{"cidr": "10.0.0.0/8", "except": ["11.0.0.0/8"]}]}]})),
            vec![],
            422,
            Some("ingress[0].peers[0].except[0]"),
        ),
        (
            "POST",
            "/v1/policies",
            n(json!({"name": "p2", "network": "red", "ingress": [{"peers": [{"network": "nope"}]}]})),
            vec![],
            422,
            Some("ingress[0].peers[0].network"),
        ),
        ("POST", "/v1/policies", n(json!({"name": "p2", "network": "red", "ingress": [{"priority": 0}]})), vec![], 422, Some("ingress[0].priority")),
        ("POST", "/v1/policies", n(json!({"name": "p2", "network": "red", "ingress": [{"direction": "ingress"}]})), vec![], 400, None),
        ("POST", "/v1/policies", n(json!({"name": "p2", "network": "red", "ingress": [{"protocol": "sctp"}]})), vec![], 400, None),
        ("PUT", "/v1/networks/red/endpoints/c1/labels", n(json!({"labels": {"app": "a b"}})), vec![], 422, Some("labels.app")),
        ("POST", "/v1/trace", n(json!({"network": "red", "from": "nope", "to": "10.10.0.9"})), vec![], 422, Some("from")),
        ("POST", "/v1/trace", n(json!({"network": "red", "from": "c1", "to": "banana"})), vec![], 422, Some("to")),
        ("POST", "/v1/trace", n(json!({"network": "red", "from": "c1", "to": "red/nope"})), vec![], 422, Some("to")),
        ("POST", "/v1/trace", n(json!({"network": "red", "from": "c1", "to": "10.10.0.9", "protocol": "icmp", "port": 5})), vec![], 422, Some("port")),
        ("POST", "/v1/trace", n(json!({"network": "red", "from": "c1", "to": "10.10.0.9", "protocol": "tcp"})), vec![], 422, Some("port")),
        ("POST", "/v1/trace", n(json!({"network": "red", "from": "c1", "to": "10.10.0.9", "protocol": "sctp"})), vec![], 400, None),
        ("PUT", "/v1/networks/red/endpoints/c9/labels", n(json!({"labels": {"app": "db"}})), vec![], 404, Some("id")),
        ("PUT", "/v1/networks/red/endpoints/c1/labels", n(json!({"labels": {"app": "db"}})), vec![("if-match", "\"999\"")], 412, None),
        ("POST", "/v1/networks/red/endpoints", n(json!({"host": "h1", "labels": {"": "x"}})), vec![], 422, Some("labels.")),
        ("DELETE", "/v1/routers/nope", None, vec![], 404, Some("name")),
        // Beyond what the document says a revision is (int64); found by the fuzzer.
        ("GET", "/v1/watch?since=9223372036854775808&timeout=0", None, vec![], 400, Some("since")),
        ("GET", "/v1/watch?since=0&timeout=301", None, vec![], 400, Some("timeout")),
    ];
    assert!(cases.len() >= 25);
    for (method, path, body, headers, status, field) in cases {
        let shown = body.as_deref().map(|b| b.chars().take(80).collect::<String>()).unwrap_or_default();
        let (s, ct, p) = api.send(method, path, body, &headers).await;
        assert_eq!(s, status, "{method} {path} {shown}: {p}");
        assert_eq!(ct, "application/problem+json", "{method} {path} {shown}");
        assert_eq!(p["status"], status, "{p}");
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()), "a problem says what is wrong: {p}");
        if let Some(f) = field {
            assert_eq!(p["field"], f, "{method} {path} {shown}: {p}");
        }
    }
    assert_eq!(api.snapshot().await, before, "no refused request changed anything");
}
#[tokio::test(flavor = "multi_thread")]
async fn refused_writes_never_reach_the_log_and_every_error_is_a_problem() {
    let api = Api::start(env!("CARGO_BIN_EXE_plexus"), 11).await;
    api.ok("POST", "/v1/networks", json!({"name": "red", "kind": {"type": "overlay", "vni": 77}, "subnet": "10.70.0.0/24"})).await;
    let log_index = || api.log_index();
    let before = log_index().await;
    // Each is refused by the model; none costs a log entry (or an fsync on every node).
    let refused = [
        ("POST", "/v1/networks", json!({"name": "red", "kind": {"type": "overlay"}, "subnet": "10.71.0.0/24"}), 409),
        ("POST", "/v1/networks", json!({"name": "blue", "kind": {"type": "overlay", "vni": 77}, "subnet": "10.72.0.0/24"}), 409),
        ("POST", "/v1/networks/red/endpoints", json!({"host": "nobody"}), 422),
        ("POST", "/v1/networks/nope/endpoints", json!({"host": "h1"}), 404),
        ("POST", "/v1/routers", json!({"name": "r", "networks": ["red", "nope"]}), 422),
    ];
    for (method, path, body, status) in refused {
        let (s, ct, p) = api.send(method, path, Some(body.to_string()), &[]).await;
        assert_eq!((s, ct.as_str()), (status, "application/problem+json"), "{method} {path}: {p}");
    }
    let (s, _, _) = api.send("DELETE", "/v1/networks/nope", None, &[]).await;
    assert_eq!(s, 404);
    assert_eq!(log_index().await, before, "a refused write reached the Raft log");

    // Bodies must say they are JSON: 415, and nothing happens.
    let http = &api.c.http;
    let body = json!({"name": "green", "kind": {"type": "overlay"}, "subnet": "10.73.0.0/24"}).to_string();
    for ct in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut r = http.post(api.c.url(1, "/v1/networks")).body(body.clone());
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        let rct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let p: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!((status, rct.as_str()), (415, "application/problem+json"), "content-type {ct:?}: {p}");
        assert_eq!(p["field"], "Content-Type", "{p}");
    }
    assert!(api.c.get(1, "/v1/networks/green").await.is_none(), "a refused body created nothing");
    // A JSON content type with parameters is JSON.
    let r = http.post(api.c.url(1, "/v1/networks")).header("content-type", "application/json; charset=utf-8").body(body).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);

    // Errors axum itself raises come back as problem documents too.
    for (method, path, status) in [("PATCH", "/v1/networks/red", 405), ("GET", "/v1/watch?since=soon", 400), ("GET", "/v1/networks?local=perhaps", 400)] {
        let (s, ct, p) = api.send(method, path, None, &[]).await;
        assert_eq!((s, ct.as_str()), (status, "application/problem+json"), "{method} {path}: {p}");
        assert_eq!(p["status"], status, "{p}");
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()), "{p}");
    }
}

/// Slow clients hold nothing for long: connections that never finish their headers are
/// closed after the header deadline (they used to be held for a minute), and meanwhile the
/// API answers everyone else at once.
#[tokio::test(flavor = "multi_thread")]
async fn stalled_connections_are_dropped_and_block_no_one() {
    use std::io::{Read, Write};
    let api = Api::start(env!("CARGO_BIN_EXE_plexus"), 12).await;
    let addr = api.c.addrs[0].clone();
    let mut stalled: Vec<std::net::TcpStream> = (0..200)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /v1/cluster HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    let t = Instant::now();
    let (s, _, v) = api.send("GET", "/v1/cluster", None, &[]).await;
    assert_eq!(s, 200, "{v}");
    assert!(t.elapsed() < Duration::from_secs(5), "200 stalled connections delayed a request by {:?}", t.elapsed());
    // Each stalled connection is closed by the server, within the header deadline and a margin.
    let deadline = Instant::now() + Duration::from_secs(15);
    for (i, c) in stalled.iter_mut().enumerate() {
        let mut buf = [0u8; 256];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "stalled connection {i} was still held after 15 s");
            c.set_read_timeout(Some(left)).unwrap();
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
    }
}
