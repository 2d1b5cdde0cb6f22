//! Histograms for `/metrics`: how long API requests take per route (one histogram per route
//! the router knows, not per path a client sends), and how long switches' flow compiles and
//! passes take.

use std::fmt::Write;
use std::sync::LazyLock;
use std::time::Duration;

pub use plexus_api::histogram::{Family, Histogram};

/// API request durations by method and route template.
static API: LazyLock<Family> = LazyLock::new(Family::default);
/// Flow compiles of switch passes (reading the model, matching ports, compiling).
pub static COMPILE: LazyLock<Histogram> = LazyLock::new(Histogram::default);
/// From a model change reaching this node to a switch it masters holding it.
pub static SYNC: LazyLock<Histogram> = LazyLock::new(Histogram::default);
/// Whole switch passes (compile, send, the switch's answer).
pub static PASS: LazyLock<Histogram> = LazyLock::new(Histogram::default);

/// Records an API request to `route` (the router's template, never the raw path).
pub fn observe_api(method: &str, route: &str, d: Duration) {
    API.observe(format!("method=\"{method}\",route=\"{route}\""), d);
}

/// The histograms in Prometheus's text format.
pub fn render(out: &mut String) {
    let _ = writeln!(out, "# HELP plexus_api_request_duration_seconds API requests by method and route.\n# TYPE plexus_api_request_duration_seconds histogram");
    API.render("plexus_api_request_duration_seconds", out);
    let _ = writeln!(out, "# HELP plexus_flow_compile_seconds Flow compiles of switch passes.\n# TYPE plexus_flow_compile_seconds histogram");
    COMPILE.render("plexus_flow_compile_seconds", "", out);
    let _ = writeln!(out, "# HELP plexus_switch_pass_seconds Switch passes: compile, send, the switch's answer.\n# TYPE plexus_switch_pass_seconds histogram");
    PASS.render("plexus_switch_pass_seconds", "", out);
    let _ = writeln!(out, "# HELP plexus_switch_sync_seconds From a model change reaching this node to a switch it masters holding it.\n# TYPE plexus_switch_sync_seconds histogram");
    SYNC.render("plexus_switch_sync_seconds", "", out);
}
