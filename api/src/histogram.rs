//! A Prometheus histogram of durations, for the controller's and the agents' `/metrics`:
//! fixed buckets and atomic counts, so recording costs a few atomic additions and nothing
//! grows with traffic.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
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
    pub fn render(&self, name: &str, labels: &str, out: &mut String) {
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

/// Histograms of one metric by their labels (`method="GET",route="/v1/networks"`): callers
/// label by a bounded set (routes, methods), never by what a client sends.
#[derive(Debug, Default)]
pub struct Family {
    by: std::sync::Mutex<std::collections::BTreeMap<String, std::sync::Arc<Histogram>>>,
}

impl Family {
    /// Records one duration under `labels`.
    pub fn observe(&self, labels: String, d: Duration) {
        let h = self.by.lock().unwrap_or_else(|e| e.into_inner()).entry(labels).or_default().clone();
        h.observe(d);
    }

    /// Writes every histogram of the family as metric `name`.
    pub fn render(&self, name: &str, out: &mut String) {
        let all: Vec<(String, std::sync::Arc<Histogram>)> =
            self.by.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (labels, h) in all {
            h.render(name, &labels, out);
        }
    }
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
