//! The `local` provider: clusters made of Linux network namespaces, a data plane of real Envoy
//! processes configured from the federation plan, and meshfed's own workloads.

/// Kept under its old path: the runner moved to [`crate::process`] so `kind` uses it too.
pub use crate::process as bounded_run;
pub mod control_plane;
pub mod envoy_binary;
pub mod envoy_config;
/// Kept under its old path while the tests move (remove once none names it): the flag moved to
/// [`crate::interrupt`], below `process` and every provider.
pub use crate::interrupt;
pub mod network;
pub mod sandbox;
pub mod supervisor;
pub mod topology;
pub mod world;

#[cfg(test)]
mod interrupt_tests;

pub use envoy_binary::provision_envoy;
pub use world::{LocalOptions, LocalProvider, PodExec, TERMINATION_DRAIN};
