//! Flows: the pipeline's layout and the compiler from the model to each switch's flows.

pub mod compile;
pub mod pipeline;
pub mod reconcile;

pub use compile::{compile, cookie, CookieKind, SwitchView};
pub use reconcile::{diff, reconcile, Diff};
