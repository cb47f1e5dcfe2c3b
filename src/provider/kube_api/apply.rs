//! Applying desired objects to one cluster with server-side apply, field manager `meshfed`.
//!
//! Two passes. First every object is read: one that exists without meshfed's ownership labels (or
//! with another scenario's) is a [`Conflict`], and if there is any, nothing is written. Then each
//! object is applied. An existing object is applied with its `resourceVersion` as a precondition,
//! so an object someone changed between the read and the write (e.g. took meshfed's label off) is
//! re-read and re-checked instead of being overwritten.
//!
//! Kinds are resolved through the server's discovery ([`super::discovery`]), so any manifest
//! applies. Every CRD an apply writes is waited for until it reports `Established` (so what is
//! applied next, a MetalLB pool after MetalLB, finds its kind served). An object whose kind only a
//! CustomResourceDefinition of the same manifest serves (an operator and its resources) is
//! applied after the rest: once those CRDs are established meshfed asks discovery again until
//! the kinds are served (bounded by [`CRD_SERVED_TIMEOUT`]), then applies them. A kind the server does not serve and no
//! CRD of the manifest defines is refused by name before anything is written.
//!
//! 409 handling: an *optimistic-lock* 409 ("the object has been modified") re-reads and retries
//! (at most [`MAX_ATTEMPTS`]); a *field-manager* 409 ("Apply failed with N conflicts") on an
//! object that carries meshfed's labels is retried once with `force=true`. Forcing is safe there
//! and only there: the object is meshfed's, and force takes over only the fields meshfed's apply
//! sets (someone hand-edited a ServiceEntry weight: the plan wins, as the reconcile loop would);
//! fields meshfed does not set stay with their managers. Each forced take-over is reported in
//! [`Applied::forced`], naming the other manager's message.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use serde_json::Value;

use super::FIELD_MANAGER;
use super::discovery::{ServedKinds, kinds_defined_by};
use super::resources::{ObjectRef, ResourceError};
use super::wait::{self, WaitError, Watched};

/// How many times one object is re-read and re-applied after optimistic-lock conflicts.
pub const MAX_ATTEMPTS: usize = 3;

/// How long a manifest's CRDs may take to be established and their kinds served.
pub const CRD_SERVED_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether the apply changes the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApplyMode {
    /// Apply for real.
    Apply,
    /// `dryRun=All`: the server runs admission and validation (CEL rules included) and persists
    /// nothing. Every object is tried; every rejection is reported.
    ServerDryRun,
}

/// An object that exists in the cluster and is not meshfed's (for this scenario): left untouched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    /// Cluster name.
    pub cluster: String,
    /// The object.
    pub object: String,
    /// Who manages it: its `app.kubernetes.io/managed-by` label, else the managers of its fields.
    pub manager: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in cluster {} exists and is managed by {}, not by meshfed: left untouched",
            self.object, self.cluster, self.manager
        )
    }
}

/// What an apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Objects applied (or accepted by the dry run), in order.
    pub applied: Vec<String>,
    /// Objects whose fields meshfed took back from another field manager, with the server's message.
    pub forced: Vec<(String, String)>,
    /// Dry run only: objects the server rejected, with its message (e.g. a CEL rule).
    pub rejected: Vec<(String, String)>,
}

/// Why an apply stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Objects exist that meshfed does not own; nothing was written.
    #[error("{} object(s) in the way, nothing was applied:\n{}", .0.len(), conflict_lines(.0))]
    Conflicts(Vec<Conflict>),
    /// An object cannot be addressed (its kind is not served, ...); nothing of its stage was written.
    #[error("cluster {cluster}: {source}")]
    Resource {
        /// Cluster name.
        cluster: String,
        /// Why.
        #[source]
        source: ResourceError,
    },
    /// The server's discovery could not be read.
    #[error("cluster {cluster}: reading the API server's discovery (/api, /apis) failed: {source}")]
    Discovery {
        /// Cluster name.
        cluster: String,
        /// kube-rs's error.
        #[source]
        source: kube::Error,
    },
    /// A CRD of the manifest did not become established.
    #[error("cluster {cluster}: {source}")]
    CrdNotEstablished {
        /// Cluster name.
        cluster: String,
        /// The wait's error (names the CRD and its last condition).
        #[source]
        source: WaitError,
    },
    /// The API server refused or failed a call.
    #[error("cluster {cluster}: {action} {object} failed: {source}")]
    Api {
        /// Cluster name.
        cluster: String,
        /// `reading`, `applying`, ...
        action: &'static str,
        /// The object.
        object: String,
        /// kube-rs's error.
        #[source]
        source: kube::Error,
    },
    /// An object kept changing under meshfed.
    #[error(
        "cluster {cluster}: {object} changed under meshfed {MAX_ATTEMPTS} times in a row (409 the object has been modified); giving up"
    )]
    KeptChanging {
        /// Cluster name.
        cluster: String,
        /// The object.
        object: String,
    },
}

fn conflict_lines(conflicts: &[Conflict]) -> String {
    conflicts
        .iter()
        .map(|conflict| format!("  {conflict}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Who owns an existing object, if not meshfed for `scenario` (the pure core's test, shared with
/// the reconcile loop).
fn foreign_manager(existing: &kube::api::DynamicObject, scenario: &str) -> Option<String> {
    crate::reconcile::foreign_manager(&existing.metadata, scenario)
}

fn is_field_manager_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409 && status.message.starts_with("Apply failed"))
}

fn is_modified_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409 && !status.message.starts_with("Apply failed"))
}

fn api_message(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => format!("{} ({} {})", status.message, status.code, status.reason),
        other => other.to_string(),
    }
}

/// Applies `objects` (desired objects, each with `apiVersion`, `kind` and `metadata`) to
/// `cluster` in order, kinds served by the manifest's own CRDs last. See the module
/// documentation for discovery, conflicts and retries.
pub async fn apply(
    client: &kube::Client,
    cluster: &str,
    scenario: &str,
    objects: &[Value],
    mode: ApplyMode,
) -> Result<Applied, ApplyError> {
    let resource_error = |source| ApplyError::Resource {
        cluster: cluster.to_owned(),
        source,
    };
    let served = discover(client, cluster, objects).await?;
    let defined = kinds_defined_by(objects);
    let mut now = Vec::new();
    let mut later = Vec::new();
    for object in objects {
        match ObjectRef::resolve(object, &served) {
            Ok(reference) => now.push((reference, object)),
            Err(ResourceError::NotServed { api_version, kind, .. })
                if defined.iter().any(|(v, k, _)| *v == api_version && *k == kind) =>
            {
                later.push(object.clone());
            }
            Err(source) => return Err(resource_error(source)),
        }
    }
    let mut applied = Applied::default();
    apply_stage(client, cluster, scenario, &now, mode, &mut applied).await?;
    if mode == ApplyMode::Apply {
        // The manifest's CRDs serve their kinds only once established: wait here, so whatever is
        // applied next (this manifest's own resources, or a pool after MetalLB) finds them.
        let started = Instant::now();
        for crd in defined
            .iter()
            .map(|(_, _, crd)| crd.as_str())
            .collect::<std::collections::BTreeSet<_>>()
        {
            await_established(
                client,
                cluster,
                crd,
                CRD_SERVED_TIMEOUT.saturating_sub(started.elapsed()),
            )
            .await?;
        }
    }
    if later.is_empty() {
        return Ok(applied);
    }
    if mode == ApplyMode::ServerDryRun {
        // A dry run creates no CRD, so their kinds are never served: say so for each object.
        for object in &later {
            applied.rejected.push((
                describe(object),
                "its kind is served only once a CRD of this manifest is established; a dry run creates none".to_owned(),
            ));
        }
        return Ok(applied);
    }
    let served = await_served(client, cluster, &later).await?;
    let later_refs = later
        .iter()
        .map(|object| ObjectRef::resolve(object, &served).map(|reference| (reference, object)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(resource_error)?;
    apply_stage(client, cluster, scenario, &later_refs, mode, &mut applied).await?;
    Ok(applied)
}

async fn discover(client: &kube::Client, cluster: &str, objects: &[Value]) -> Result<ServedKinds, ApplyError> {
    ServedKinds::discover(client, objects)
        .await
        .map_err(|source| ApplyError::Discovery {
            cluster: cluster.to_owned(),
            source,
        })
}

/// `Kind namespace/name` of an object that has no resource yet.
fn describe(object: &Value) -> String {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or_default();
    match object.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(namespace) => format!("{} {namespace}/{}", text("/kind"), text("/metadata/name")),
        None => format!("{} {}", text("/kind"), text("/metadata/name")),
    }
}

async fn await_established(
    client: &kube::Client,
    cluster: &str,
    crd: &str,
    deadline: Duration,
) -> Result<(), ApplyError> {
    let api: kube::Api<CustomResourceDefinition> = kube::Api::all(client.clone());
    wait::await_condition(
        &api,
        &Watched::Name(crd.to_owned()),
        &format!("CustomResourceDefinition {crd} established in cluster {cluster}"),
        deadline,
        wait::crd_established,
    )
    .await
    .map(|_| ())
    .map_err(|source| ApplyError::CrdNotEstablished {
        cluster: cluster.to_owned(),
        source,
    })
}

/// Once the manifest's CRDs are established, asks discovery until it serves every kind of
/// `later` (it may lag the condition), within [`CRD_SERVED_TIMEOUT`].
async fn await_served(client: &kube::Client, cluster: &str, later: &[Value]) -> Result<ServedKinds, ApplyError> {
    let started = Instant::now();
    loop {
        let served = discover(client, cluster, later).await?;
        let missing = later
            .iter()
            .find_map(|object| ObjectRef::resolve(object, &served).err());
        match missing {
            None => return Ok(served),
            Some(source) if started.elapsed() >= CRD_SERVED_TIMEOUT => {
                return Err(ApplyError::Resource {
                    cluster: cluster.to_owned(),
                    source,
                });
            }
            // Discovery notices an established CRD a moment later: ask again.
            Some(_) => tokio::time::sleep(wait::RETRY_PAUSE).await,
        }
    }
}

/// The two passes of the module documentation over objects whose resources are known.
async fn apply_stage(
    client: &kube::Client,
    cluster: &str,
    scenario: &str,
    objects: &[(ObjectRef, &Value)],
    mode: ApplyMode,
    applied: &mut Applied,
) -> Result<(), ApplyError> {
    let mut conflicts = Vec::new();
    for (object, _) in objects {
        if let Some(manager) = read_foreign_manager(client, cluster, scenario, object).await? {
            conflicts.push(Conflict {
                cluster: cluster.to_owned(),
                object: object.to_string(),
                manager,
            });
        }
    }
    if !conflicts.is_empty() {
        return Err(ApplyError::Conflicts(conflicts));
    }
    for (object, desired) in objects {
        match apply_one(client, cluster, scenario, object, desired, mode, applied).await {
            Err(ApplyError::Api { source, .. }) if mode == ApplyMode::ServerDryRun && is_rejection(&source) => {
                applied.rejected.push((object.to_string(), api_message(&source)));
            }
            other => other?,
        }
    }
    Ok(())
}

/// A 4xx that says the object is invalid (not an outage): the dry run reports it and goes on.
fn is_rejection(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if (400..500).contains(&status.code) && status.code != 401 && status.code != 403)
}

async fn read_foreign_manager(
    client: &kube::Client,
    cluster: &str,
    scenario: &str,
    object: &ObjectRef,
) -> Result<Option<String>, ApplyError> {
    let existing = object
        .api(client)
        .get_opt(&object.name)
        .await
        .map_err(|source| ApplyError::Api {
            cluster: cluster.to_owned(),
            action: "reading",
            object: object.to_string(),
            source,
        })?;
    Ok(existing.and_then(|existing| foreign_manager(&existing, scenario)))
}

async fn apply_one(
    client: &kube::Client,
    cluster: &str,
    scenario: &str,
    object: &ObjectRef,
    desired: &Value,
    mode: ApplyMode,
    applied: &mut Applied,
) -> Result<(), ApplyError> {
    let api = object.api(client);
    let api_error = |action, source| ApplyError::Api {
        cluster: cluster.to_owned(),
        action,
        object: object.to_string(),
        source,
    };
    let mut params = PatchParams::apply(FIELD_MANAGER);
    if mode == ApplyMode::ServerDryRun {
        params = params.dry_run();
    }
    for _ in 0..MAX_ATTEMPTS {
        let existing = api
            .get_opt(&object.name)
            .await
            .map_err(|source| api_error("reading", source))?;
        if let Some(manager) = existing
            .as_ref()
            .and_then(|existing| foreign_manager(existing, scenario))
        {
            return Err(ApplyError::Conflicts(vec![Conflict {
                cluster: cluster.to_owned(),
                object: object.to_string(),
                manager,
            }]));
        }
        let mut body = desired.clone();
        if let (Some(version), Some(metadata)) = (
            existing
                .as_ref()
                .and_then(|existing| existing.metadata.resource_version.clone()),
            body.get_mut("metadata").and_then(Value::as_object_mut),
        ) {
            // A precondition: the write fails with 409 if the object changed since the read.
            metadata.insert("resourceVersion".to_owned(), Value::String(version));
        }
        match api.patch(&object.name, &params, &Patch::Apply(&body)).await {
            Ok(_) => {
                applied.applied.push(object.to_string());
                return Ok(());
            }
            Err(error) if is_field_manager_conflict(&error) && existing.is_some() => {
                // The object is meshfed's (checked above): take back the fields of the plan.
                let forced = params.clone().force();
                api.patch(&object.name, &forced, &Patch::Apply(&body))
                    .await
                    .map_err(|source| api_error("force-applying", source))?;
                applied.forced.push((object.to_string(), api_message(&error)));
                applied.applied.push(object.to_string());
                return Ok(());
            }
            Err(error) if is_modified_conflict(&error) || is_field_manager_conflict(&error) => continue,
            Err(source) => return Err(api_error("applying", source)),
        }
    }
    Err(ApplyError::KeptChanging {
        cluster: cluster.to_owned(),
        object: object.to_string(),
    })
}
