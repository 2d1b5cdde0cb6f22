//! Histograms for `/metrics`: how long API requests take per route, and how long switches'
//! flow compiles and passes take. Fixed buckets and atomic counts: recording costs a few
//! atomic additions, and nothing grows with traffic (one histogram per route the router
//! knows, not per path a client sends).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (Prometheus's defaults, from 0.5 ms).
const BOUNDS: [f64; 13] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// A Prometheus histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, bound) in self.buckets.iter().zip(BOUNDS) {
            if s <= bound {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// Writes its series, with `labels` (`method="GET",route="/v1/networks"`, or empty).
    fn render(&self, name: &str, labels: &str, out: &mut String) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, bound) in self.buckets.iter().zip(BOUNDS) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}", b.load(Ordering::Relaxed));
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Histograms by (method, route template).
type ByRoute = BTreeMap<(String, String), std::sync::Arc<Histogram>>;

/// API request durations by method and route template.
static API: LazyLock<Mutex<ByRoute>> = LazyLock::new(Default::default);
/// Flow compiles of switch passes (reading the model, matching ports, compiling).
pub static COMPILE: LazyLock<Histogram> = LazyLock::new(Histogram::default);
/// Whole switch passes (compile, send, the switch's answer).
pub static PASS: LazyLock<Histogram> = LazyLock::new(Histogram::default);

/// Records an API request to `route` (the router's template, never the raw path).
pub fn observe_api(method: &str, route: &str, d: Duration) {
    let h = {
        let mut m = API.lock().unwrap_or_else(|e| e.into_inner());
        m.entry((method.to_string(), route.to_string())).or_default().clone()
    };
    h.observe(d);
}

/// The histograms in Prometheus's text format.
pub fn render(out: &mut String) {
    let _ = writeln!(out, "# HELP plexus_api_request_duration_seconds API requests by method and route.\n# TYPE plexus_api_request_duration_seconds histogram");
    let api: Vec<((String, String), std::sync::Arc<Histogram>)> =
        API.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    for ((method, route), h) in api {
        h.render("plexus_api_request_duration_seconds", &format!("method=\"{method}\",route=\"{route}\""), out);
    }
    let _ = writeln!(out, "# HELP plexus_flow_compile_seconds Flow compiles of switch passes.\n# TYPE plexus_flow_compile_seconds histogram");
    COMPILE.render("plexus_flow_compile_seconds", "", out);
    let _ = writeln!(out, "# HELP plexus_switch_pass_seconds Switch passes: compile, send, the switch's answer.\n# TYPE plexus_switch_pass_seconds histogram");
    PASS.render("plexus_switch_pass_seconds", "", out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_into_every_bucket_at_or_above_its_value() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(20));
        let mut out = String::new();
        h.render("x", "", &mut out);
        assert!(out.contains("x_bucket{le=\"0.0025\"} 0\n") && out.contains("x_bucket{le=\"0.005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 1\n") && out.contains("x_bucket{le=\"+Inf\"} 2\n") && out.contains("x_count 2\n"), "{out}");
    }
}
