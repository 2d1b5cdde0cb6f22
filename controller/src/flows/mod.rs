//! Flows: the pipeline's layout and the compiler from the model to each switch's flows.

pub mod compile;
pub mod desired;
pub mod pipeline;
pub mod reconcile;

pub use compile::{affected, compile, compile_unit, compile_units, cookie, CookieKind, SwitchView, Unit};
pub use desired::{DesiredFlows, Update};
pub use reconcile::{apply, diff, reconcile, Diff};
