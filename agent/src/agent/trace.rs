//! Runs `plexus trace` jobs on this host's switch: a long poll to the controller brings the
//! packets to trace, `ofproto/trace` on `ovs-vswitchd`'s control socket traces them, and the
//! printout goes back as the answer. The controller explains it; the agent only runs it.

use std::path::PathBuf;
use std::time::Duration;

use plexus_api::{Client, TraceOutput};
use plexus_ovs::unixctl;

use super::BR_INT;

/// How long one poll waits for a job.
const POLL_S: u64 = 8;
/// How long OVS may take to trace.
const TRACE_WAIT: Duration = Duration::from_secs(3);

/// Serves trace jobs for `host` until the process ends; `rundir` holds `ovs-vswitchd`'s
/// control socket (looked up for each job: a restarted daemon has a new one).
pub(super) async fn serve(api: Client, host: String, rundir: PathBuf) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let jobs = match api.trace_jobs(&host, POLL_S).await {
            Ok(j) => {
                backoff = Duration::from_millis(200);
                j
            }
            Err(e) => {
                tracing::debug!(error = %e, "polling for trace jobs failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        for job in jobs {
            tracing::info!(id = job.id, flow = %job.flow, "tracing a packet through the switch");
            let answer = match unixctl::vswitchd_ctl(&rundir) {
                None => TraceOutput { output: None, error: Some(format!("no ovs-vswitchd control socket in {}", rundir.display())) },
                Some(ctl) => match unixctl::call(&ctl, "ofproto/trace", &[BR_INT, &job.flow], TRACE_WAIT).await {
                    Ok(out) => TraceOutput { output: Some(out), error: None },
                    Err(e) => TraceOutput { output: None, error: Some(e.to_string()) },
                },
            };
            if let Err(e) = api.trace_answer(&host, job.id, &answer).await {
                tracing::warn!(id = job.id, error = %e, "could not answer a trace job");
            }
        }
    }
}
