//! The Plexus host agent: it keeps the host's switch as Plexus needs it (OVSDB), registers the
//! host with the controller, plugs endpoints into `br-int` (one implementation for `plexus
//! attach`, Docker and CNI), serves Docker's network and IPAM plugin protocols, and is the
//! CNI plugin runtimes such as podman run.
//! The lab that runs agents on namespaced hosts is a crate of its own, `plexus-lab`.

pub mod agent;
pub mod attach;
pub mod cni;
pub mod dns;
pub mod docker;
pub mod edge;
pub mod netns;
pub mod ovsdb_tls;
pub mod plumb;
pub mod underlay;
