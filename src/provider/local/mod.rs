//! The `local` provider: clusters made of Linux network namespaces, a data plane of real Envoy
//! processes configured from the federation plan, and meshfed's own workloads.

pub mod ads;
pub mod control_plane;
pub mod envoy_binary;
pub mod envoy_config;
pub mod memory;
pub mod network;
pub mod sandbox;
pub mod supervisor;
pub mod topology;
pub mod world;

#[cfg(test)]
mod interrupt_tests;

pub use envoy_binary::provision_envoy;
pub use world::{LocalOptions, LocalProvider, PodExec, TERMINATION_DRAIN};
