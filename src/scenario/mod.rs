//! Scenario files: the model of what meshfed builds, federates, sends and expects, and its loading.
//!
//! A scenario is YAML (reference: `docs/scenario.md`). [`load`] reads a file (a regular file of at
//! most [`MAX_INPUT_BYTES`]), [`parse`] rejects unknown keys and checks the whole model: bounds,
//! string grammars, references, name collisions and networks against the local address layout.
//! Every error names the file, line and column and what is allowed. Fields whose position a later
//! check must point at are kept as [`Spanned`]; the others' positions are read in a second pass.
//!
//! The model is in `model.rs`, reading and parsing in `load.rs`, the checks in `validate/` (by what
//! they check), the value types every layer shares (`IstioVersion`, `Ipv4Cidr`) in `crate::value_types`.

pub mod address_layout;
mod file;
mod grammar;
mod load;
mod model;
pub mod resilience;
pub(crate) mod spans;
mod validate;

pub use serde_saphyr::Spanned;

/// The value types moved below the scenario (so the change vocabulary and the inventory need not
/// import the scenario); the scenario's model uses them and names them here too.
pub use crate::value_types::{
    DEFAULT_ISTIO_VERSION, Ipv4Cidr, IstioVersion, NEWEST_EMULATED_ISTIO, OLDEST_EMULATED_ISTIO,
};

pub use file::{MAX_INPUT_BYTES, read_text};
pub(crate) use load::syntax_message;
pub use load::{ScenarioError, load, load_with_istio_version, parse, parse_with_istio_version};
pub use model::*;
pub use validate::{
    MAX_ACTIONS_PER_PHASE, MAX_BUCKET_MILLIS, MAX_CLUSTERS, MAX_CONCURRENCY, MAX_DELAY_MILLIS, MAX_FAULTS_PER_PHASE,
    MAX_PHASE_TIMEOUT_SECONDS, MAX_PHASES, MAX_PLANNED_PORTS, MAX_PODS, MAX_PORTS_PER_SERVICE, MAX_RATE_PER_SECOND,
    MAX_REQUESTS, MAX_SERVICES, MAX_WINDOWS_PER_PHASE, MIN_BUCKET_MILLIS,
};
