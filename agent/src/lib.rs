//! The Plexus host agent: it keeps the host's switch as Plexus needs it (OVSDB), registers the
//! host with the controller, plugs endpoints into `br-int` (one implementation for `plexus
//! attach` and Docker), and serves Docker's network and IPAM plugin protocols.
//! The lab that runs agents on namespaced hosts is a crate of its own, `plexus-lab`.

pub mod agent;
pub mod attach;
pub mod docker;
pub mod edge;
pub mod netns;
pub mod ovsdb_tls;
pub mod plumb;
pub mod underlay;
