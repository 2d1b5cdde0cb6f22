//! `plexus bench …`: figures, each with a baseline measured in the same run.

mod cni;
mod converge;
mod dns;
mod docker;
mod emulate;
mod failover;
mod flows;
mod ovn;
mod policy;
mod routing;
mod scale;
mod store;
mod throughput;

use clap::{Args, Subcommand};

#[derive(Args)]
pub(crate) struct BenchCmd {
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(Subcommand)]
enum Sub {
    /// Flow programming into a fresh netdev bridge: Plexus's codec (one bundle) against
    /// `ovs-ofctl --bundle add-flows` with the same flows.
    Flows {
        /// Flows per run.
        #[arg(long, default_value_t = 100_000)]
        flows: u32,
        /// Runs of each method (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The replicated store: committed writes per second and latency for a 1-node and a
    /// 3-node cluster with 1, 16 and 64 writes in flight (~256-byte bodies, sent to the
    /// leader), and endpoint creations per second; against this disk's durable commits.
    Store {
        /// Writes per case (in-flight 1 does a quarter of them).
        #[arg(long, default_value_t = 2000)]
        writes: usize,
    },
    /// Scale: one network with N endpoints over 3 hosts (dummy ports) created in one batch:
    /// time until every switch holds its full flow set, flows per switch, controller memory
    /// and CPU; then the cost of one endpoint change at that size, incremental against full.
    Scale {
        /// Endpoint counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
        endpoints: Vec<usize>,
        /// Single-endpoint changes to time at each size (the median is reported).
        #[arg(long, default_value_t = 20)]
        changes: usize,
        /// Only the compiler, in this process: no lab, no controller (seconds, not minutes).
        #[arg(long)]
        compiler_only: bool,
    },
    /// DNS from one container: queries per second and latency to its gateway's resolver (the
    /// host agent) against dnsmasq asked over the host's loopback, 1 and 16 in flight.
    Dns {
        /// Queries per case (1 in flight does a quarter of them).
        #[arg(long, default_value_t = 20_000)]
        queries: usize,
    },
    /// Docker: `docker run` to the first ping reply, a container on a Plexus network pinging
    /// another host against one on Docker's bridge pinging the same host; medians of N.
    Docker {
        /// Rounds of each.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// CNI: Plexus's plugin against the reference bridge + host-local: `podman run` to the
    /// first ping of the gateway, and ADD and DEL latency; medians of N, interleaved.
    Cni {
        /// Rounds of each.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
    /// Scale beyond this box: a three-node control plane against N switches emulated in this
    /// process (OpenFlow over TLS, flow tables in memory), M endpoints each, networks spanning
    /// `span` hosts: connect to all in sync, node memory and CPU, one endpoint change (time
    /// and switches touched), and a node's death (time until its switches have new masters).
    Emulate {
        /// Emulated switches (hosts).
        #[arg(long, default_value_t = 1000)]
        switches: usize,
        /// Endpoints (ports) per switch.
        #[arg(long, default_value_t = 100)]
        endpoints_per_switch: usize,
        /// Hosts each network spans.
        #[arg(long, default_value_t = 10)]
        span: usize,
        /// Single-endpoint changes to time.
        #[arg(long, default_value_t = 10)]
        changes: usize,
    },
    /// Failover: three controllers, 3 switches x N endpoints; controller memory and CPU, then
    /// the time from the death of a switch's master to a new master and to a change
    /// installed on that switch, against the same change with every node alive.
    Failover {
        /// Rounds (the median is reported).
        #[arg(long, default_value_t = 10)]
        rounds: usize,
        /// Endpoints on each host.
        #[arg(long, default_value_t = 200)]
        endpoints_per_host: usize,
        /// Then this many seconds with every node alive and both cores busy, counting false
        /// failovers (master moves, new Raft terms); 0 skips it.
        #[arg(long, default_value_t = 0)]
        soak_secs: u64,
    },
    /// Cross-host TCP (iperf3) through Plexus against plain OVS with the same tunnel and
    /// against a bare veth pair, interleaved; one stream and many.
    Throughput {
        /// Seconds per test.
        #[arg(long, default_value_t = 3)]
        secs: u64,
        /// Interleaved repetitions (the median is reported).
        #[arg(long, default_value_t = 3)]
        reps: usize,
        /// Parallel connections of the many-streams test.
        #[arg(long, default_value_t = 100)]
        streams: usize,
        /// Then again with this many more endpoints (on a third host) whose flows the
        /// switches carry; 0 to skip.
        #[arg(long, default_value_t = 5000)]
        endpoints: usize,
    },
    /// Routing against switching in one run: first ping after creating two endpoints, TCP
    /// throughput, and a switch's flows for N endpoints in 10 networks without and with a
    /// router joining them.
    Routing {
        /// First-ping rounds of each kind.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
        /// Seconds per iperf3 test.
        #[arg(long, default_value_t = 3)]
        secs: u64,
        /// Interleaved iperf3 repetitions.
        #[arg(long, default_value_t = 5)]
        reps: usize,
        /// Endpoints for the flow count (0 to skip).
        #[arg(long, default_value_t = 5000)]
        endpoints: usize,
    },
    /// Policies: N labelled endpoints over 3 hosts and P policies each governing 10% of them
    /// and allowing one port from another 10%: flows per switch and compile time against the
    /// same endpoints without policies, then the cost of one label change (units, flows,
    /// incremental against full, and time until every switch has it in a live lab).
    Policy {
        /// Endpoints.
        #[arg(long, default_value_t = 5000)]
        endpoints: usize,
        /// Policies.
        #[arg(long, default_value_t = 100)]
        policies: usize,
        /// Label changes to time (each is made and undone; medians are reported).
        #[arg(long, default_value_t = 10)]
        changes: usize,
        /// Only the compiler, in this process: no lab, no controller.
        #[arg(long)]
        compiler_only: bool,
    },
    /// Convergence: from the API call creating two endpoints on two hosts (containers
    /// already plugged in) to the first ping reply between them; median of N rounds.
    Converge {
        /// Rounds.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
}

pub(crate) async fn run(c: BenchCmd) -> anyhow::Result<()> {
    match c.cmd {
        Sub::Flows { flows, runs } => {
            if runs == 0 || flows == 0 {
                anyhow::bail!("--flows and --runs must be at least 1");
            }
            flows::run(flows, runs).await
        }
        Sub::Converge { rounds } => {
            if rounds == 0 || rounds > 1000 {
                anyhow::bail!("--rounds must be 1..=1000");
            }
            converge::run(rounds).await
        }
        Sub::Scale { endpoints, changes, compiler_only } => {
            if endpoints.is_empty() || endpoints.iter().any(|&n| n == 0 || n > 9_000) || changes == 0 {
                // One host's broadcast flow lists its local ports; past ~3,500 it outgrows an
                // OpenFlow message (64 KiB).
                anyhow::bail!("--endpoints must be 1..=9000 each, --changes at least 1");
            }
            if compiler_only {
                return scale::compiler_only(&endpoints, changes);
            }
            scale::run(&endpoints, changes).await
        }
        Sub::Docker { rounds } => {
            if rounds == 0 || rounds > 1000 {
                anyhow::bail!("--rounds must be 1..=1000");
            }
            docker::run(rounds).await
        }
        Sub::Dns { queries } => {
            if !(64..=1_000_000).contains(&queries) {
                anyhow::bail!("--queries must be 64..=1000000");
            }
            dns::run(queries).await
        }
        Sub::Cni { rounds } => {
            if rounds == 0 || rounds > 1000 {
                anyhow::bail!("--rounds must be 1..=1000");
            }
            cni::run(rounds).await
        }
        Sub::Emulate { switches, endpoints_per_switch, span, changes } => {
            if !(1..=5000).contains(&switches)
                || !(1..=1000).contains(&endpoints_per_switch)
                || !(1..=switches).contains(&span)
                || !(1..=1000).contains(&changes)
            {
                anyhow::bail!("--switches must be 1..=5000, --endpoints-per-switch 1..=1000, --span 1..=switches, --changes 1..=1000");
            }
            if span * endpoints_per_switch > 4000 {
                anyhow::bail!("--span x --endpoints-per-switch must be at most 4000 (each network is a /20)");
            }
            emulate::run(switches, endpoints_per_switch, span, changes).await
        }
        Sub::Failover { rounds, endpoints_per_host, soak_secs } => {
            if rounds == 0 || rounds > 100 || endpoints_per_host == 0 || endpoints_per_host > 3000 || soak_secs > 86_400 {
                anyhow::bail!("--rounds must be 1..=100, --endpoints-per-host 1..=3000 and --soak-secs at most 86400");
            }
            failover::run(rounds, endpoints_per_host, soak_secs).await
        }
        Sub::Throughput { secs, reps, streams, endpoints } => {
            if !(1..=60).contains(&secs) || !(1..=20).contains(&reps) || !(1..=128).contains(&streams) || endpoints > 9000 {
                anyhow::bail!("--secs must be 1..=60, --reps 1..=20, --streams 1..=128, --endpoints 0..=9000");
            }
            throughput::run(secs, reps, streams, endpoints).await
        }
        Sub::Routing { rounds, secs, reps, endpoints } => {
            if !(1..=500).contains(&rounds) || !(1..=60).contains(&secs) || !(1..=20).contains(&reps) || endpoints > 9000 {
                anyhow::bail!("--rounds must be 1..=500, --secs 1..=60, --reps 1..=20, --endpoints 0..=9000");
            }
            routing::run(rounds, secs, reps, endpoints).await
        }
        Sub::Policy { endpoints, policies, changes, compiler_only } => {
            if !(1..=9000).contains(&endpoints) || !(1..=2000).contains(&policies) || !(1..=1000).contains(&changes) {
                anyhow::bail!("--endpoints must be 1..=9000, --policies 1..=2000, --changes 1..=1000");
            }
            policy::run(endpoints, policies, changes, compiler_only).await
        }
        Sub::Store { writes } => {
            if writes < 64 {
                anyhow::bail!("--writes must be at least 64");
            }
            store::run(writes).await
        }
    }
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}
