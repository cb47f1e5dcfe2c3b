//! What the integration-test binaries share: each binary's `main.rs` has `mod support;` once.
//!
//! Every binary uses a different part of it (the local binary the markers, the kube binary the
//! fake tools, the library binary the CRD checker), so what one binary leaves unused is allowed
//! here, once, instead of in every file.

#![allow(dead_code, reason = "each test binary uses a different part of the shared support")]

pub mod crd_schema;
pub mod fake_tools;
pub mod kubeconfig;
pub mod libtest;
pub mod local_provider;
pub mod marker;
pub mod meshfed_command;
pub mod plan_gateways;
pub mod rust_sources;
pub mod skip;
pub mod temp_dir;
pub mod test_provider;
pub mod upstream;
