//! `plexus router …`: routers join overlay networks into a routing domain, routed in every
//! host's switch.

use anyhow::{bail, Context};
use clap::Subcommand;
use plexus_api::{Router, RouterSpec};

use crate::resources::{labels, print, ApiOpts};

#[derive(Subcommand)]
pub(crate) enum RouterCmd {
    /// Create a router joining networks.
    Create {
        /// Name (DNS label).
        name: String,
        /// A network to join (repeat for more).
        #[arg(long = "network", required = true)]
        networks: Vec<String>,
        /// Let its networks' containers reach outside Plexus, NATed by their own host to its
        /// address, and publish ports.
        #[arg(long)]
        external: bool,
        /// Labels, KEY=VALUE.
        #[arg(long = "label")]
        labels: Vec<String>,
    },
    /// Join one more network to a router.
    Add {
        /// Router.
        name: String,
        /// Network.
        network: String,
    },
    /// Take a network off a router.
    Remove {
        /// Router.
        name: String,
        /// Network.
        network: String,
    },
    /// List routers.
    List,
    /// Show one router.
    Show {
        /// Name.
        name: String,
    },
    /// Delete a router.
    Delete {
        /// Name.
        name: String,
    },
}

fn table(routers: &[Router]) {
    println!("{:<20} {:<48} {:<9} REV", "NAME", "NETWORKS", "EXTERNAL");
    for r in routers {
        println!("{:<20} {:<48} {:<9} {}", r.spec.name, r.spec.networks.join(","), if r.spec.external { "yes" } else { "no" }, r.revision);
    }
}

/// Reads router `name`, changes its networks with `f`, and writes it back only if nobody
/// changed it since it was read (If-Match).
async fn change(api: &plexus_api::Client, name: &str, f: impl FnOnce(&mut Vec<String>) -> anyhow::Result<()>) -> anyhow::Result<Router> {
    let r = api.router(name).await.with_context(|| format!("router {name}"))?;
    let mut spec = r.spec.clone();
    f(&mut spec.networks)?;
    Ok(api.put_router(&spec, Some(r.revision)).await?)
}

pub(crate) async fn router(o: ApiOpts, c: RouterCmd) -> anyhow::Result<()> {
    let api = o.auth.client(&o.api)?;
    match c {
        RouterCmd::Create { name, networks, external, labels: l } => {
            let r = api.create_router(&RouterSpec { name, networks, external, external_gateway: None, labels: labels(&l)? }).await?;
            print(o.output, &r, || table(std::slice::from_ref(&r)))?;
        }
        RouterCmd::Add { name, network } => {
            let r = change(&api, &name, |nets| {
                if nets.contains(&network) {
                    bail!("router {name} already joins {network}");
                }
                nets.push(network.clone());
                Ok(())
            })
            .await?;
            print(o.output, &r, || table(std::slice::from_ref(&r)))?;
        }
        RouterCmd::Remove { name, network } => {
            let r = change(&api, &name, |nets| {
                if !nets.contains(&network) {
                    bail!("router {name} does not join {network}");
                }
                nets.retain(|n| *n != network);
                if nets.is_empty() {
                    bail!("{network} is the last network of router {name}; delete the router instead (plexus router delete {name})");
                }
                Ok(())
            })
            .await?;
            print(o.output, &r, || table(std::slice::from_ref(&r)))?;
        }
        RouterCmd::List => {
            let v = api.routers().await?;
            print(o.output, &v, || table(&v))?;
        }
        RouterCmd::Show { name } => {
            let r = api.router(&name).await?;
            print(o.output, &r, || table(std::slice::from_ref(&r)))?;
        }
        RouterCmd::Delete { name } => {
            api.delete_router(&name).await?;
            println!("router {name} deleted");
        }
    }
    Ok(())
}
