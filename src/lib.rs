//! meshfed: stand up an Istio mesh across clusters, federate it, and measure cross-cluster mTLS and skew.
//!
//! As a library, meshfed has one way in: [`Run`] (module [`run`]). It loads a scenario (a file, or
//! YAML built in code), picks a provider, runs the scenario in a helper process (so it works from
//! libtest's multi-threaded process and from `#[tokio::test]`), and returns a typed [`RunReport`]
//! with assertion helpers. The guide is `docs/library.md`.
//!
//! ```no_run
//! let report = meshfed::Run::new(meshfed::ScenarioSource::file("scenarios/seed.yaml")).run()?;
//! report.assert_passed(); // panics listing every failed check, then the summary
//! let http = report.phase("foo-to-bar-http");
//! assert_eq!(http.mtls_rate(), 1.0);
//! assert_eq!(http.clusters_reached(), ["cluster2"]);
//! # Ok::<(), meshfed::run::Error>(())
//! ```
//!
//! The other modules are meshfed's own building blocks: private where nothing outside the
//! library uses them (`diagnostics`, `live_progress`, `logging`), otherwise public only for its
//! command line, tests and benches, hidden from these docs and not a stable API. The report types
//! a [`RunReport`] hands out ([`report`], [`measure`], [`verdict`]) are shown, and so is
//! [`IstioVersion`], which [`Run::istio_version`] takes.
//!
//! Inside: the pure core (no I/O) is `value_types` (an Istio version, an IPv4 network, pod names),
//! `change` (world changes), `scenario` (the model and its validation), `inventory` (and the events
//! a change causes in it), `plan` (the federation plan), `reconcile` (inventory events in, the
//! plan's difference out), `pki`, [`measure`], `record`, `observation` (isolation probes, TLS
//! counters), [`verdict`], [`report`], `diff` (comparing two reports) and `printable` (the one
//! escaper of every text output); `driver` drives a provider through a scenario. The edges: `provider` (the worlds meshfed runs
//! scenarios in), `process` (bounded child processes), `interrupt` (the signal flag every wait looks at), `workload`
//! (meshfed's own echo and client apps), `atomic_files` (files replaced in one step), `kept_logs` (what a run keeps), [`run`] (the
//! library entry point), `cli` and `helper_role` (an executable linking meshfed becoming the
//! command line before its `main`); `exit_code` is shared by the last three. Imports point one
//! way, downward (`scripts/module-cycles` checks that no module imports one that imports it back).

#[doc(hidden)]
pub mod atomic_files;
#[doc(hidden)]
pub mod change;
#[doc(hidden)]
pub mod cli;
#[doc(hidden)]
pub mod diff;
#[doc(hidden)]
pub mod driver;
mod exit_code;
mod helper_role;
#[doc(hidden)]
pub mod interrupt;
#[doc(hidden)]
pub mod inventory;
mod kept_logs;
mod live_progress;
mod logging;
pub mod measure;
mod observation;
#[doc(hidden)]
pub mod pki;
#[doc(hidden)]
pub mod plan;
#[doc(hidden)]
pub mod printable;
#[doc(hidden)]
pub mod process;
#[doc(hidden)]
pub mod progress;
#[doc(hidden)]
pub mod provider;
#[doc(hidden)]
pub mod reconcile;
#[doc(hidden)]
pub mod record;
pub mod report;
pub mod run;
#[doc(hidden)]
pub mod scenario;
mod value_types;
pub mod verdict;
#[doc(hidden)]
pub mod workload;

pub use run::{Error, PhaseResult, ProviderKind, Run, RunReport, ScenarioSource};
/// The Istio version [`Run::istio_version`] takes (`"1.22".parse()` or [`IstioVersion::new`]).
pub use value_types::IstioVersion;
