//! One pass over a switch: compile what the model wants of it (all of it, or only what a
//! change touched) and send the difference — paced so that a node with a thousand switches
//! stays responsive and within its memory.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use plexus_api::EndpointKey;
use plexus_ovs::openflow::Connection;

use super::ports::PortIndex;
use super::{PassStats, SwitchManager, TUNNEL_PORTS};
use crate::flows::{apply, ensure_hold_meter, reconcile, DesiredFlows, SwitchView};

/// Compiles of switches' flows that run at once on a node: compiling is pure CPU, and a node
/// with a thousand switches connecting must still answer health probes and Raft heartbeats
/// in time, or the leader takes it for dead and moves its switches (which makes more work).
static COMPILING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Full passes (and large incremental ones) in progress at once on a node, from compile to
/// the switch's answer. Each holds, for its moments, the switch's whole table several times
/// over (read back, diffed, encoded): a few megabytes at 2,000 flows. Unbounded, a thousand
/// switches connecting at once held them all together, gigabytes; a few at a time keep the
/// compile gate busy just the same.
static FULL_PASSES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// Runs CPU-bound work off the async workers: on a multi-thread runtime this worker hands its
/// other tasks to another thread first, so they are not held up behind it.
fn compute<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Units an incremental pass may recompile without waiting for [`COMPILING`]: one endpoint's
/// change touches three or four.
const INLINE_UNITS: usize = 16;

/// What a pass has to look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// Everything: compile it all and read the switch back.
    Full,
    /// What the model's changes and the switch's port changes since the last pass touched.
    Ports,
    /// What the model's changes since the last pass touched; the ports are as they were.
    Model,
}

impl SwitchManager {
    /// Brings the switch to the current model: a full pass compiles everything and diffs
    /// against the flows read from the switch; otherwise only what changed is compiled and its
    /// difference sent.
    /// Returns whether the switch now holds the flows (`Some`), and whether they changed.
    pub(super) async fn pass(
        &self,
        conn: &Connection,
        dpid: &str,
        ports: &HashMap<String, u32>,
        desired: &mut Option<DesiredFlows>,
        index: &mut PortIndex,
        scope: Scope,
    ) -> Option<bool> {
        let full = scope == Scope::Full;
        let t = Instant::now();
        // Nothing known of the switch yet (a new session, a promotion, a failed pass).
        let fresh = desired.is_none();
        // One snapshot of the model for the whole pass, taken under the lock in O(1) and
        // compiled from outside it: Raft's apply never waits for a switch's compile.
        let model = self.state.read().await.model.clone();
        // Most changes are nothing to most switches: those are done without building a view
        // or compiling, so that the few a change touches are not kept waiting behind them.
        if let (Scope::Model, Some(d)) = (scope, desired.as_mut()) {
            if d.catch_up(&model) {
                // The port index follows the change log, which would otherwise move on
                // without it and cost it a rebuild from every endpoint later.
                index.refresh(&model, d.host());
                let revision = d.revision();
                self.update(dpid, |s| s.revision = revision);
                return Some(false);
            }
        }
        // An incremental pass of a few units (one endpoint's change) is cheap and runs at
        // once: queued behind other switches' full compiles it would wait for all of them,
        // and a change would reach its switches only after every unaffected one was looked at.
        let mut planned = None;
        if let (false, Some(d)) = (full, desired.as_mut()) {
            let (host, plugged, view) = self.view(&model, dpid, ports, index, false)?;
            let plan = d.plan(&model, &view);
            planned = Some(match plan.as_ref().map(|u| u.len()) {
                Some(n) if n <= INLINE_UNITS => Ok((host, plugged, Some(d.update_with(&model, view, plan)))),
                _ => Err((host, plugged, view, plan)),
            });
        }
        // Held to the end of a pass that is not inline: see FULL_PASSES.
        let mut _heavy = None;
        let compiled = match planned {
            Some(Ok(done)) => Some(done),
            planned => {
                _heavy = FULL_PASSES.acquire().await.ok();
                // Everything else: one compile at a time on this node, off the async workers.
                let permit = COMPILING.acquire().await.ok();
                let compiled = compute(|| {
                    let (host, plugged, view, plan) = match planned {
                        Some(Err(p)) => p,
                        _ => {
                            let (h, p, v) = self.view(&model, dpid, ports, index, full)?;
                            (h, p, v, None)
                        }
                    };
                    let update = match desired.as_mut() {
                        Some(d) if !full => Some(d.update_with(&model, view, plan)),
                        _ => {
                            *desired = Some(DesiredFlows::new(&model, view));
                            None
                        }
                    };
                    Some((host, plugged, update))
                });
                drop(permit);
                compiled
            }
        };
        let (host, plugged, update) = compiled?;
        let d = desired.as_ref()?;
        let compile_us = t.elapsed().as_micros() as u64;
        crate::metrics::COMPILE.observe(t.elapsed());
        let (revision, len) = (d.revision(), d.len());
        let res = match &update {
            Some(u) => apply(conn, &u.diff).await.map(|_| u.diff.len()),
            // The hold flows name the meter, so it must be there before them.
            None => match ensure_hold_meter(conn, fresh).await {
                Ok(()) => reconcile(conn, &d.flows()).await.map(|d| d.len()),
                Err(e) => Err(e),
            },
        };
        if res.is_err() {
            // The switch's state is unknown now: read it back next time.
            *desired = None;
        }
        let stats = PassStats {
            full: update.is_none(),
            units: update.as_ref().map_or(0, |u| u.units),
            compile_us,
            flows_sent: *res.as_ref().unwrap_or(&0),
            ms: t.elapsed().as_secs_f64() * 1e3,
            revision,
        };
        crate::metrics::PASS.observe(t.elapsed());
        let mut new_error = false;
        self.update(dpid, |s| {
            s.host = Some(host.clone());
            s.desired_flows = len;
            s.plugged = plugged;
            match &res {
                Ok(n) => {
                    s.in_sync = true;
                    s.last_error = None;
                    s.revision = revision;
                    if *n > 0 {
                        s.corrections += u64::from(stats.full);
                        s.last_pass = Some(stats.clone());
                    }
                    if stats.full {
                        s.last_full = Some(stats.clone());
                    }
                }
                Err(e) => {
                    s.in_sync = false;
                    s.failed_passes += 1;
                    let e = e.to_string();
                    new_error = s.last_error.as_ref() != Some(&e);
                    s.last_error = Some(e);
                }
            }
        });
        if let (Err(e), true) = (&res, new_error) {
            // Said once per distinct error: the pass is retried until the switch takes it.
            tracing::warn!(%host, %dpid, error = %e, "the switch refused a flow change; retrying");
        }
        if let Ok(n) = res {
            if n > 0 {
                tracing::debug!(%host, %dpid, full = stats.full, units = stats.units, flows = n, ms = stats.ms, "switch programmed");
            }
        }
        res.ok().map(|n| n > 0)
    }

    /// The switch's host, how many endpoint ports it has plugged, and its view for the
    /// compiler; `None` (recorded in its status) while it cannot be programmed.
    fn view(
        &self,
        model: &crate::model::Model,
        dpid: &str,
        ports: &HashMap<String, u32>,
        index: &mut PortIndex,
        full: bool,
    ) -> Option<(String, usize, SwitchView)> {
        let Some(host) = model.host_by_datapath(dpid) else {
            self.update(dpid, |s| {
                s.host = None;
                s.last_error = Some(format!("no registered host has datapath id {dpid}"));
            });
            return None;
        };
        let Some(tunnel_port) = TUNNEL_PORTS.iter().find_map(|n| ports.get(*n)).copied() else {
            self.update(dpid, |s| s.last_error = Some("the switch has no tunnel port yet".into()));
            return None;
        };
        if full {
            *index = PortIndex::default();
        }
        index.refresh(model, &host.spec.name);
        let eports: BTreeMap<EndpointKey, u32> = ports.iter().filter_map(|(name, p)| Some((index.by_port.get(name)?.clone(), *p))).collect();
        let plugged = eports.len();
        let external_port = ports.get(plexus_api::routing::EXTERNAL_PORT).copied();
        let uplinks = host.spec.physical_networks.iter().filter_map(|p| Some((p.clone(), *ports.get(&plexus_api::network::uplink_port(p))?))).collect();
        Some((host.spec.name.clone(), plugged, SwitchView { host: host.spec.name.clone(), tunnel_port, external_port, uplinks, ports: eports }))
    }
}
