//! An OVSDB client (RFC 7047, JSON-RPC 1.0) with the `monitor_cond`/`update2` extension.
//!
//! [`Client`] keeps one connection to `ovsdb-server`, reconnects with back-off when it drops,
//! and re-establishes every monitor afterwards; a [`Monitor`] keeps a replica of the rows it
//! watches and reports the difference after a reconnect as ordinary updates, so its consumer
//! never sees a gap. [`VSwitch`] adds typed helpers for the `Open_vSwitch` schema.
//!
//! `ovsdb-server` drops connections whose messages carry `"jsonrpc":"2.0"`, so this speaks
//! JSON-RPC 1.0 itself rather than through a JSON-RPC 2.0 library.

mod client;
mod error;
mod jsonrpc;
mod monitor;
mod ops;
mod schema;
pub mod value;
mod vswitch;

pub use client::{Client, ClientOptions, ConnState, Target, TlsConnector, TlsHandshake};
pub use error::OvsdbError;
pub use monitor::{Monitor, MonitorRequest, Row, RowUpdate};
pub use ops::{Condition, Mutation, OpResult, Operation};
pub use schema::{ColumnType, DbSchema};
pub use vswitch::{BridgeSpec, InterfaceType, PortSpec, VSwitch};
