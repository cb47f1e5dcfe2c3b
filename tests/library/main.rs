//! meshfed as a library, without a world: the federation plan (and its objects against Istio's own
//! CRD schemas), the scenario engine against a scripted provider, the reconcile loop, resilience and
//! upgrade settings, the PKI checked by `openssl`, the workloads against each other on loopback, and
//! the provider seam.

#[path = "../support/mod.rs"]
mod support;

mod crd_schema_selftest;
mod engine;
mod pki;
mod plan;
mod plan_crd_schema;
mod provider_seam;
mod reconcile;
mod resilience_scenario;
mod upgrade_scenario;
mod workload;
