//! `plexus pki …`: the cluster's credentials, made from its PKI directory (the CA's key and
//! the token key live there; run these where they are).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use plexus_pki::{Ca, Role, TokenKey, Usage};

#[derive(Args)]
pub(crate) struct PkiCmd {
    /// The cluster's PKI directory (a controller's --pki-dir, by default DATA_DIR/pki).
    #[arg(long, env = "PLEXUS_PKI_DIR")]
    pki_dir: PathBuf,
    #[command(subcommand)]
    cmd: PkiSub,
}

#[derive(Subcommand)]
enum PkiSub {
    /// Issue an API token and print it: admin, reader, or agent:HOST (may register and
    /// heartbeat HOST only).
    Token {
        /// The role the token grants (admin, reader, agent:HOST, bootstrap:HOST, join).
        #[arg(long)]
        role: Role,
        /// Seconds it stays valid (default: one hour for the one-time bootstrap and join
        /// tokens, no limit for the others).
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Replace the token key: every token issued so far is refused once the controllers
    /// restart with the new key (copy token.key to every node's PKI directory first).
    RotateTokens,
    /// Issue a certificate NAME.crt/NAME.key into OUT (default: the PKI directory).
    Issue {
        /// Its name: node-ID, HOST.hosts.plexus for a host's switch, anything for an operator.
        #[arg(long)]
        name: String,
        /// What it is for.
        #[arg(long, value_enum)]
        usage: CertUsage,
        /// Further DNS names or IP addresses it is valid for (repeat).
        #[arg(long)]
        san: Vec<String>,
        /// Where to write it (it is not replaced if there; remove the old pair to rotate it).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CertUsage {
    /// A controller node (cluster port, both ends).
    Node,
    /// An operator on the cluster port (membership changes).
    Operator,
    /// A host's switch (OpenFlow to the controllers).
    Switch,
}

pub(crate) fn run(c: PkiCmd) -> anyhow::Result<()> {
    match c.cmd {
        PkiSub::Token { role, ttl } => {
            let key = TokenKey::open(&c.pki_dir).context("the token key (does a controller use this --pki-dir?)")?;
            let one_time = matches!(role, Role::Bootstrap(_) | Role::Join);
            let ttl = ttl.or(one_time.then_some(3600));
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
            println!("{}", key.issue_until(&role, ttl.map(|t| now + t))?);
        }
        PkiSub::RotateTokens => {
            TokenKey::rotate(&c.pki_dir)?;
            let admin = c.pki_dir.join(plexus_controller::node::ADMIN_TOKEN_FILE);
            let _ = std::fs::remove_file(&admin);
            let token = TokenKey::open(&c.pki_dir)?.issue(&Role::Admin)?;
            plexus_pki::write_secret(&admin, &token)?;
            eprintln!("new token key; restart every controller with it. A new admin token is in {}", admin.display());
        }
        PkiSub::Issue { name, usage, san, out } => {
            let usage = match usage {
                CertUsage::Node => Usage::Node,
                CertUsage::Operator => Usage::Operator,
                CertUsage::Switch => Usage::Client,
            };
            let ca = Ca::open(&c.pki_dir).context("the cluster CA")?;
            let out = out.unwrap_or_else(|| c.pki_dir.clone());
            std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
            ca.issue(&name, &san, usage)?.save(&out, &name)?;
            std::fs::write(out.join("ca.crt"), ca.cert_pem()).with_context(|| out.display().to_string())?;
            println!("{}", out.join(format!("{name}.crt")).display());
        }
    }
    Ok(())
}
