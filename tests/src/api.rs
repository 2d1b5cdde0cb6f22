//! A one-node controller and a client for its REST API, as the API's tests use them.

use std::time::Duration;

use serde_json::{json, Value};

use crate::Cluster;

/// A one-node controller process and requests to its API.
#[derive(Debug)]
pub struct Api {
    /// The controller.
    pub c: Cluster,
}

impl Api {
    /// Starts a one-node controller running `bin`; `tag` tells apart the controllers of one
    /// test process.
    pub async fn start(bin: &str, tag: u8) -> Api {
        let c = Cluster::new(bin, 1, tag);
        c.leader(&[1]).await;
        Api { c }
    }

    /// Sends a request (a body goes as JSON); the status, the content type and the JSON answer.
    pub async fn send(&self, method: &str, path: &str, body: Option<String>, headers: &[(&str, &str)]) -> (u16, String, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let mut r = self.c.http.request(m, self.c.url(1, path)).timeout(Duration::from_secs(10));
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b);
        }
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let text = resp.text().await.unwrap_or_default();
        (status, ct, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Sends a request that must succeed; its JSON answer.
    pub async fn ok(&self, method: &str, path: &str, body: Value) -> Value {
        let (s, _, v) = self.send(method, path, Some(body.to_string()), &[]).await;
        assert!((200..300).contains(&s), "{method} {path}: {s} {v}");
        v
    }

    /// The last Raft log index, read once the log is all applied: Raft's metrics trail the
    /// log a little under load, so it waits until they settle (everything applied, and the
    /// same a moment later).
    pub async fn log_index(&self) -> Option<u64> {
        let read = || async { self.c.get(1, "/v1/cluster").await.map(|v| (v["last_log_index"].as_u64(), v["applied_index"].as_u64())) };
        let mut last = read().await;
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = read().await;
            if now == last && now.is_some_and(|(l, a)| l == a) {
                break;
            }
            last = now;
        }
        last.and_then(|(l, _)| l)
    }

    /// Everything the controller holds, to show a refused request changed nothing.
    pub async fn snapshot(&self) -> Value {
        let mut nets = self.c.get(1, "/v1/networks").await.expect("networks");
        for n in nets.as_array_mut().into_iter().flatten() {
            let name = n["name"].as_str().unwrap_or_default().to_string();
            n["endpoints"] = self.c.get(1, &format!("/v1/networks/{name}/endpoints")).await.expect("endpoints");
        }
        json!({"networks": nets, "hosts": self.c.get(1, "/v1/hosts").await.expect("hosts"), "revision": self.c.get(1, "/v1/cluster").await.expect("cluster")["revision"]})
    }
}

/// An overlay network's spec as the API takes it.
pub fn net(name: &str, subnet: &str) -> Value {
    json!({"name": name, "kind": {"type": "overlay"}, "subnet": subnet})
}
