//! The Plexus host agent, and the lab: hosts made of network namespaces, each running its own
//! Open vSwitch, joined by an underlay switch in a namespace of its own.
//!
//! The lab is also the test harness: [`lab::Lab`] tears everything down when dropped.

pub mod agent;
pub mod attach;
pub mod docker;
pub mod lab;
pub mod netns;
pub mod plumb;
pub mod underlay;
