//! `plexus`: one binary for every Plexus role: `controller`, `agent`, the resource commands
//! (`network`, `endpoint`, `host`, …), `attach`/`detach`, the `lab`, and the benchmarks.

mod agent;
mod apply;
mod attach;
mod bench;
mod cni;
mod controller;
mod lab;
mod pki;
mod policies;
mod resources;
mod routers;
mod trace;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "plexus", version, about = "Plexus: a software-defined network for Docker hosts on Open vSwitch")]
struct Cli {
    /// Log filter (e.g. info, debug, plexus_ovs=trace); also RUST_LOG.
    #[arg(long, global = true, env = "PLEXUS_LOG", default_value = "info,openraft=warn")]
    log: String,
    /// Log lines as text, or as one JSON object each (for log collectors).
    #[arg(long, global = true, env = "PLEXUS_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build, inspect and remove labs of namespaced hosts running Open vSwitch.
    Lab(lab::LabCmd),
    /// Measure Plexus against baselines measured in the same run.
    Bench(bench::BenchCmd),
    /// Run the host agent: register, heartbeat, keep the host's switch configured.
    Agent(agent::AgentCmd),
    /// Run a controller node (alone it is a one-node cluster).
    Controller(controller::ControllerCmd),
    /// Issue and rotate the cluster's credentials: API tokens, certificates.
    Pki(pki::PkiCmd),
    /// Attach a container's network namespace to a network (Pipework for Plexus).
    Attach(attach::AttachCmd),
    /// Detach an endpoint: its port, its veth and the endpoint itself.
    Detach(attach::DetachCmd),
    /// Run as the CNI plugin (runtimes run it as `plexus-cni`, a link to this binary): the
    /// configuration on stdin, `CNI_*` variables, the result on stdout.
    Cni,
    /// Create, list, show and delete networks.
    Network {
        #[command(flatten)]
        api: resources::ApiOpts,
        #[command(subcommand)]
        cmd: resources::NetworkCmd,
    },
    /// Create, list and delete endpoints.
    Endpoint {
        #[command(flatten)]
        api: resources::ApiOpts,
        #[command(subcommand)]
        cmd: resources::EndpointCmd,
    },
    /// Make the cluster what files say (YAML or JSON documents), in one all-or-nothing batch.
    Apply(apply::FilesCmd),
    /// Show what `plexus apply` would change, field by field; change nothing.
    Diff(apply::FilesCmd),
    /// Write the cluster as documents `plexus apply` takes (YAML; `-o json` for JSON).
    Export(apply::ExportCmd),
    /// Print a shell completion script: `source <(plexus completion bash)`.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Create, change, list and delete routers (distributed routing between networks).
    Router {
        #[command(flatten)]
        api: resources::ApiOpts,
        #[command(subcommand)]
        cmd: routers::RouterCmd,
    },
    /// Create, list and delete policies (which traffic may reach and leave endpoints).
    Policy {
        #[command(flatten)]
        api: resources::ApiOpts,
        #[command(subcommand)]
        cmd: policies::PolicyCmd,
    },
    /// Trace a packet from an endpoint through the switches: every flow it meets, named by
    /// the object it came from, and the verdict.
    Trace(trace::TraceCmd),
    /// Registered hosts.
    Host {
        #[command(flatten)]
        api: resources::ApiOpts,
        #[command(subcommand)]
        cmd: resources::HostCmd,
    },
    /// The controller cluster.
    Cluster {
        #[command(flatten)]
        api: resources::ApiOpts,
        #[command(subcommand)]
        cmd: resources::ClusterCmd,
    },
}

fn main() {
    plexus_pki::install_crypto_provider();
    quiet_on_closed_stdout();
    // A runtime runs the CNI plugin by its name, with no arguments but the protocol's.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    if std::path::Path::new(&argv0).file_name().is_some_and(|n| n == cni::PLUGIN_NAME) {
        std::process::exit(cni_main());
    }
    if let Err(e) = run() {
        // The chain of causes, without a backtrace: users read this.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// The CNI plugin's entry: logs on stderr (runtimes keep it), warnings only unless
/// `PLEXUS_LOG` says otherwise; stdout is the protocol's.
fn cni_main() -> i32 {
    let filter = std::env::var("PLEXUS_LOG").unwrap_or_else(|_| "warn".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(false).with_writer(std::io::stderr).init();
    cni::run()
}

/// `plexus … | head` closes stdout early; `println!` then panics with "Broken pipe". A CLI
/// whose reader has gone should stop quietly, as other Unix tools do (SIGPIPE is not restored
/// instead: the daemons' and clients' sockets rely on it being ignored).
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let p = info.payload();
        let msg = p.downcast_ref::<String>().map(String::as_str).or_else(|| p.downcast_ref::<&str>().copied()).unwrap_or_default();
        if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info)
    }));
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log).map_err(|e| anyhow::anyhow!("--log {:?}: {e}", cli.log))?;
    match cli.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init(),
    }
    if let Cmd::Cni = cli.cmd {
        std::process::exit(cni::run());
    }
    if let Cmd::Completion { shell } = cli.cmd {
        clap_complete::generate(shell, &mut Cli::command(), "plexus", &mut std::io::stdout());
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        match cli.cmd {
            Cmd::Lab(c) => lab::run(c).await,
            Cmd::Bench(c) => bench::run(c).await,
            Cmd::Controller(c) => controller::run(c).await,
            Cmd::Agent(c) => agent::run(c).await,
            Cmd::Pki(c) => pki::run(c),
            Cmd::Attach(c) => attach::attach(c).await,
            Cmd::Detach(c) => attach::detach(c).await,
            Cmd::Network { api, cmd } => resources::network(api, cmd).await,
            Cmd::Endpoint { api, cmd } => resources::endpoint(api, cmd).await,
            Cmd::Router { api, cmd } => routers::router(api, cmd).await,
            Cmd::Policy { api, cmd } => policies::policy(api, cmd).await,
            Cmd::Trace(t) => trace::trace(t).await,
            Cmd::Apply(c) => apply::apply(c).await,
            Cmd::Diff(c) => apply::diff(c).await,
            Cmd::Export(c) => apply::export(c).await,
            Cmd::Completion { .. } | Cmd::Cni => Ok(()),
            Cmd::Host { api, cmd } => resources::host(api, cmd).await,
            Cmd::Cluster { api, cmd } => resources::cluster(api, cmd).await,
        }
    })
}
