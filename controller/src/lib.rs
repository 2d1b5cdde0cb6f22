//! The Plexus controller: a replicated store (openraft, durable in redb), the model it
//! holds, and the REST API NetOps and agents use. Flow compilation and switch management
//! follow in their own modules.

#![warn(missing_docs)]

pub mod flows;
pub mod mastership;
pub mod model;
pub mod store;
pub mod switches;
pub mod node;
pub mod server;
