//! The Plexus controller: replicated store, IPAM, flow compiler, switch manager and REST
//! server. Empty until the controller issue; the crate exists so the workspace has its final
//! shape and dependants can be wired now.

#![forbid(unsafe_code)]
#![warn(missing_docs)]
