//! `meshfed` runs on the `local` provider with real namespaces and real Envoy, through the binary:
//! whole scenarios, changes under traffic, version comparisons, kept diagnostics, `meshfed diff` of
//! real runs, the report's three forms, and Envoy accepting the configuration meshfed generates.
//! They need what `meshfed setup` checks (root or user namespaces, `ip`, Envoy); elsewhere each
//! records itself skipped (tests/support/skip.rs), a failure under `CI=true`.

#[path = "../support/mod.rs"]
mod support;

mod changes;
mod diagnostics;
mod diff;
mod e2e;
mod envoy_config_validates;
mod report_formats;
mod version_matrix;
