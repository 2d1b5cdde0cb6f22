//! Open vSwitch's two control protocols, written for Plexus but free of anything Plexus-specific.
//!
//! * [`ovsdb`]: a JSON-RPC 1.0 client for `ovsdb-server` (RFC 7047 plus the `monitor_cond` and
//!   `update2` extensions), with reconnection and monitors that survive it, and typed helpers
//!   for the `Open_vSwitch` schema.
//! * [`openflow`]: an OpenFlow 1.3 codec (pure functions over bytes) with the Nicira and ONF
//!   extensions OVS speaks, and a tokio connection that matches replies to requests by xid.

#![forbid(unsafe_code)]
// This crate reads bytes from peers: nothing in it may panic on what they send.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic))]

pub mod openflow;
pub mod ovsdb;
pub mod unixctl;
