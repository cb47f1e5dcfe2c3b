//! The `local` provider: clusters made of Linux network namespaces, a data plane of real Envoy
//! processes configured from the federation plan, and meshfed's own workloads.

/// Kept under its old path: the runner moved to [`crate::process`] so `kind` uses it too.
pub use crate::process as bounded_run;
pub mod ads;
pub mod control_plane;
pub mod envoy_binary;
pub mod envoy_config;
pub mod interrupt;
pub mod network;
pub mod sandbox;
pub mod supervisor;
pub mod topology;
pub mod world;

pub use envoy_binary::provision_envoy;
pub use world::{LocalOptions, LocalProvider, PodExec, TERMINATION_DRAIN};
