//! The Kubernetes edge: a client layer over kube-rs that applies a plan with server-side apply
//! (field manager `meshfed`, ownership labels, never touching what meshfed does not own), waits on
//! explicit readiness conditions with deadlines, and deletes exactly what meshfed labelled.
//!
//! Everything here takes a [`kube::Client`], so tests drive it with a scripted API server
//! (`tower_test::mock`) and the providers (`kubeconfig`, and `kind` on top of it) with a real one.
//! The pure core never sees these types: `tests/repo/pure_core_has_no_io.rs` keeps `kube` out of
//! scenario, plan, measure, verdict and report.

pub mod apply;
pub mod change;
pub mod connect;
pub mod discovery;
pub mod down;
pub mod kind_seam;
pub mod resources;
pub mod wait;
pub mod webhooks;

#[cfg(test)]
pub(crate) mod fake_api;
#[cfg(test)]
mod tests;

pub use apply::{Applied, ApplyError, ApplyMode, Conflict, apply};
pub use connect::{ConnectError, connect};
pub use down::{DownError, Removed, down};
pub use resources::{ObjectRef, ResourceError};
pub use wait::{WaitError, await_condition};

/// The field manager of every write meshfed makes.
pub const FIELD_MANAGER: &str = "meshfed";

/// A cluster plan's objects as the JSON the API server takes, in apply order.
pub fn desired_objects(cluster: &crate::plan::ClusterPlan) -> Result<Vec<serde_json::Value>, serde_json::Error> {
    cluster.objects.iter().map(serde_json::to_value).collect()
}
