//! The Plexus controller: a replicated store (openraft, durable in redb), the model it holds,
//! the flow compiler that turns the model into each switch's flows, the switch manager that
//! keeps switches at those flows, and the REST API NetOps and agents use. The path of one
//! write through all of them is in `docs/architecture.md`.

pub mod counters;
pub mod flows;
pub mod held;
pub mod mastership;
pub mod metrics;
pub mod model;
pub mod node;
mod serve;
pub mod server;
pub mod store;
pub mod switches;
pub mod trace;

/// Wall-clock milliseconds since the Unix epoch: stamped into commands by the API (the state
/// machine must not read clocks itself) and kept by the mastership lease.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
