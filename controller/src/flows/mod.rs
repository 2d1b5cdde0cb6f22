//! Flows: the pipeline's layout, its features, the compiler from the model to each switch's
//! flows, what a change touches, and bringing a switch to its desired flows.

pub mod compile;
pub mod describe;
pub mod desired;
pub mod engine;
pub mod features;
pub mod neighbour;
pub mod pipeline;
pub mod policy;
pub mod reconcile;
pub mod routing;
pub mod underlay;

pub use compile::{compile, compile_unit, compile_units, cookie, unit_cookie, CookieKind, SwitchView, Unit};
pub use desired::{DesiredFlows, Update};
pub use features::gateway_mac;
pub use pipeline::{Origin, Stage, Table};
pub use reconcile::{apply, diff, ensure_hold_meter, reconcile, Diff};
