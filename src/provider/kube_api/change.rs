//! Changes to a running world through the Kubernetes API, only on objects meshfed may touch:
//! scale a Deployment (a service's pods, or the federation gateway of a cluster meshfed created)
//! and delete a pod, then wait with a deadline until the pods behind it have settled, and report
//! which pods are ready afterwards (the caller turns the difference into inventory events).
//!
//! Ownership: an object must carry `app.kubernetes.io/managed-by=meshfed`, unless the whole
//! cluster is meshfed's ([`Ownership::WholeCluster`], a kind cluster it created, where Istio's own
//! gateway Deployment has istioctl's labels). Anything else is refused, naming the object and who
//! manages it, before any write.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::FIELD_MANAGER;
use super::wait::{Observed, WaitError, Watched, await_condition};
use crate::plan::{MANAGED_BY, MANAGED_BY_LABEL};

/// Which objects of a cluster meshfed may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ownership {
    /// Only objects labelled `app.kubernetes.io/managed-by=meshfed` (someone else's cluster).
    Labelled,
    /// Everything: meshfed created the cluster (kind), including Istio's gateway Deployments.
    WholeCluster,
}

/// A change that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChangeError {
    /// The object is not meshfed's to change.
    #[error(
        "{what} in cluster {cluster} is not meshfed's (its {MANAGED_BY_LABEL} label is {manager:?}); meshfed changes only what it created"
    )]
    NotOwned {
        /// The object: `deployment ns2/bar`.
        what: String,
        /// The cluster.
        cluster: String,
        /// Its manager label, if any.
        manager: Option<String>,
    },
    /// The API server refused or failed a request.
    #[error("{action} {what} in cluster {cluster} failed: {source}")]
    Api {
        /// `scaling`, `deleting`, `reading`.
        action: &'static str,
        /// The object.
        what: String,
        /// The cluster.
        cluster: String,
        /// kube's error.
        #[source]
        source: Box<kube::Error>,
    },
    /// The pods did not settle before the deadline.
    #[error(transparent)]
    Wait(#[from] WaitError),
}

/// Where a change is made: a cluster's client, its name (for messages) and what is meshfed's.
#[derive(Clone)]
pub struct Target<'a> {
    /// The cluster's client.
    pub client: &'a kube::Client,
    /// The scenario's cluster name.
    pub cluster: &'a str,
    /// What meshfed may change there.
    pub ownership: Ownership,
}

impl Target<'_> {
    fn api_error(&self, action: &'static str, what: &str, source: kube::Error) -> ChangeError {
        ChangeError::Api {
            action,
            what: what.to_owned(),
            cluster: self.cluster.to_owned(),
            source: Box::new(source),
        }
    }

    fn check_owned(
        &self,
        what: &str,
        labels: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Result<(), ChangeError> {
        let manager = labels.and_then(|labels| labels.get(MANAGED_BY_LABEL)).cloned();
        if self.ownership == Ownership::WholeCluster || manager.as_deref() == Some(MANAGED_BY) {
            return Ok(());
        }
        Err(ChangeError::NotOwned {
            what: what.to_owned(),
            cluster: self.cluster.to_owned(),
            manager,
        })
    }
}

/// Sets the Deployment's replicas and waits (at most `deadline`) until exactly `replicas` pods
/// with `pod_selector` exist and all are ready (terminating ones gone). Returns the ready pods'
/// names, sorted.
pub async fn scale_deployment(
    target: &Target<'_>,
    namespace: &str,
    name: &str,
    pod_selector: &str,
    replicas: u32,
    deadline: Duration,
) -> Result<Vec<String>, ChangeError> {
    let what = format!("deployment {namespace}/{name}");
    let deployments: Api<Deployment> = Api::namespaced(target.client.clone(), namespace);
    let deployment = deployments
        .get(name)
        .await
        .map_err(|source| target.api_error("reading", &what, source))?;
    target.check_owned(&what, deployment.metadata.labels.as_ref())?;
    let patch = json!({ "spec": { "replicas": replicas } });
    deployments
        .patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| target.api_error("scaling", &what, source))?;
    await_pods_settled(target, namespace, pod_selector, replicas as usize, deadline, &what).await
}

/// Deletes a pod (its Deployment makes a new one) and waits (at most `deadline`) until the pods
/// with `pod_selector` are `replicas` ready ones again, the deleted one gone. Returns the ready
/// pods' names, sorted.
pub async fn delete_pod(
    target: &Target<'_>,
    namespace: &str,
    pod: &str,
    pod_selector: &str,
    replicas: usize,
    deadline: Duration,
) -> Result<Vec<String>, ChangeError> {
    let what = format!("pod {namespace}/{pod}");
    let pods: Api<Pod> = Api::namespaced(target.client.clone(), namespace);
    let found = pods
        .get(pod)
        .await
        .map_err(|source| target.api_error("reading", &what, source))?;
    target.check_owned(&what, found.metadata.labels.as_ref())?;
    pods.delete(pod, &DeleteParams::default())
        .await
        .map_err(|source| target.api_error("deleting", &what, source))?;
    let settled = await_pods_settled(target, namespace, pod_selector, replicas, deadline, &what).await?;
    Ok(settled.into_iter().filter(|name| name != pod).collect())
}

async fn await_pods_settled(
    target: &Target<'_>,
    namespace: &str,
    pod_selector: &str,
    replicas: usize,
    deadline: Duration,
    after: &str,
) -> Result<Vec<String>, ChangeError> {
    let pods: Api<Pod> = Api::namespaced(target.client.clone(), namespace);
    let what = format!(
        "{replicas} ready pods {pod_selector} in {namespace} of cluster {} after changing {after}",
        target.cluster
    );
    let settled = await_condition(
        &pods,
        &Watched::Labels(pod_selector.to_owned()),
        &what,
        deadline,
        |pods| pods_settled(pods, replicas),
    )
    .await?;
    let mut names: Vec<String> = settled.into_iter().filter_map(|pod| pod.metadata.name).collect();
    names.sort();
    Ok(names)
}

/// Exactly `wanted` pods, none terminating, all `Ready`.
pub fn pods_settled(pods: &[&Pod], wanted: usize) -> Observed {
    let terminating = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_some())
        .count();
    let ready = pods.iter().filter(|pod| pod_ready(pod)).count();
    Observed::new(
        pods.len() == wanted && terminating == 0 && ready == wanted,
        format!(
            "{} pods, {ready} ready, {terminating} terminating, {wanted} wanted",
            pods.len()
        ),
    )
}

fn pod_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|status| status.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|condition| condition.type_ == "Ready" && condition.status == "True")
            })
}
