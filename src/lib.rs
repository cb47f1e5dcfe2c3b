//! meshfed: stand up an Istio mesh across clusters, federate it, and measure cross-cluster mTLS and skew.
//!
//! The pure core (no I/O): [`scenario`] (the model and its validation), [`inventory`], [`plan`] (the
//! federation plan), [`change`] (world changes and the inventory events they cause), [`reconcile`] (events in, the plan's difference out), [`pki`], [`measure`], [`record`], [`verdict`], [`report`] and [`diff`] (comparing two reports); [`engine`] drives a provider
//! through a scenario. The edges: [`provider`] (the worlds meshfed
//! runs scenarios in), [`process`] (bounded child processes), [`workload`] (meshfed's own echo and client apps), [`output`] (files
//! replaced in one step, never through a symlink) and [`cli`].

pub mod change;
pub mod cli;
pub mod diff;
pub mod engine;
pub mod inventory;
pub mod measure;
pub mod output;
pub mod pki;
pub mod plan;
pub mod process;
pub mod progress;
pub mod provider;
pub mod reconcile;
pub mod record;
pub mod report;
pub mod scenario;
pub mod verdict;
pub mod workload;
