//! `meshfed down` on a cluster: deletes exactly the objects that carry meshfed's labels for the
//! scenario, and nothing else.
//!
//! Objects are listed per kind with the label selector `app.kubernetes.io/managed-by=meshfed,
//! meshfed.io/scenario=<name>` and each listed object's labels are checked again before it is
//! deleted (a server that ignored the selector still cannot make meshfed delete a stranger's
//! object). Namespaced objects go first, namespaces last; a meshfed namespace that holds objects
//! meshfed does not own is kept (deleting it would delete them) and reported.

use kube::api::{DeleteParams, DynamicObject, ListParams};
use serde_json::Value;

use super::discovery::ServedKinds;
use super::resources::{ObjectRef, ResourceError, Scope};
use crate::plan::{MANAGED_BY, MANAGED_BY_LABEL, SCENARIO_LABEL};

/// What `down` did in one cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    /// Objects deleted.
    pub deleted: Vec<String>,
    /// Namespaces kept because they hold objects meshfed does not own, with those objects.
    pub kept: Vec<(String, Vec<String>)>,
}

/// Why `down` stopped.
#[derive(Debug, thiserror::Error)]
pub enum DownError {
    /// An object cannot be addressed.
    #[error(transparent)]
    Resource(#[from] ResourceError),
    /// The API server refused or failed a call.
    #[error("cluster {cluster}: {action} failed: {source}")]
    Api {
        /// Cluster name.
        cluster: String,
        /// What was being done.
        action: String,
        /// kube-rs's error.
        #[source]
        source: kube::Error,
    },
}

/// The label selector of everything meshfed created for `scenario`.
pub fn ownership_selector(scenario: &str) -> String {
    format!("{MANAGED_BY_LABEL}={MANAGED_BY},{SCENARIO_LABEL}={scenario}")
}

fn owned_by(object: &DynamicObject, scenario: &str) -> bool {
    let labels = object.metadata.labels.as_ref();
    labels
        .and_then(|labels| labels.get(MANAGED_BY_LABEL))
        .map(String::as_str)
        == Some(MANAGED_BY)
        && labels.and_then(|labels| labels.get(SCENARIO_LABEL)).map(String::as_str) == Some(scenario)
}

/// Kinds whose unowned objects keep a namespace alive; the ones every namespace gets by itself
/// (the `default` service account, the CA config maps) are not counted.
const NAMESPACE_CONTENT: [(&str, &str); 5] = [
    ("v1", "Pod"),
    ("v1", "Service"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("apps/v1", "Deployment"),
];
const NAMESPACE_DEFAULTS: [&str; 3] = ["kube-root-ca.crt", "istio-ca-root-cert", "default"];

/// Deletes, in `cluster`, every object of the kinds in `kinds` (sample objects: one desired object
/// per `apiVersion`/`kind`, e.g. the scenario's plan) that carries meshfed's labels for `scenario`.
/// A kind the cluster does not serve (its discovery does not list it: Istio's CRDs are gone) has
/// nothing to delete.
pub async fn down(client: &kube::Client, cluster: &str, scenario: &str, kinds: &[Value]) -> Result<Removed, DownError> {
    let content_samples: Vec<Value> = NAMESPACE_CONTENT
        .iter()
        .map(|(api_version, kind)| namespace_content_sample(api_version, kind))
        .collect();
    let asked: Vec<Value> = kinds.iter().chain(&content_samples).cloned().collect();
    let served = ServedKinds::discover(client, &asked)
        .await
        .map_err(|source| DownError::Api {
            cluster: cluster.to_owned(),
            action: "reading the API server's discovery (/api, /apis)".to_owned(),
            source,
        })?;
    let mut refs = Vec::new();
    for sample in kinds {
        let object = match ObjectRef::resolve(sample, &served) {
            Ok(object) => object,
            Err(ResourceError::NotServed { .. }) => continue,
            Err(error) => return Err(error.into()),
        };
        if !refs.iter().any(|known: &ObjectRef| {
            known.resource.api_version == object.resource.api_version && known.resource.kind == object.resource.kind
        }) {
            refs.push(object);
        }
    }
    // Namespaced kinds first, namespaces last.
    refs.sort_by_key(|object| object.resource.kind == "Namespace");
    let selector = ListParams::default().labels(&ownership_selector(scenario));
    let api_error = |action: String, source| DownError::Api {
        cluster: cluster.to_owned(),
        action,
        source,
    };
    let mut removed = Removed::default();
    for kind in refs {
        let all: kube::Api<DynamicObject> = kube::Api::all_with(client.clone(), &kind.resource);
        let listed = match all.list(&selector).await {
            Ok(listed) => listed,
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(source) => return Err(api_error(format!("listing {}", kind.resource.plural), source)),
        };
        for object in listed.items.iter().filter(|object| owned_by(object, scenario)) {
            let name = object.metadata.name.clone().unwrap_or_default();
            let namespace = object.metadata.namespace.clone();
            let target = ObjectRef {
                namespace: if kind.scope == Scope::Namespaced {
                    namespace
                } else {
                    None
                },
                name,
                ..kind.clone()
            };
            if target.resource.kind == "Namespace" {
                let strangers = unowned_content(client, &served, cluster, &target.name, scenario).await?;
                if !strangers.is_empty() {
                    removed.kept.push((target.to_string(), strangers));
                    continue;
                }
            }
            match target
                .api(client)
                .delete(&target.name, &DeleteParams::background())
                .await
            {
                Ok(_) => removed.deleted.push(target.to_string()),
                Err(kube::Error::Api(status)) if status.code == 404 => {}
                Err(source) => return Err(api_error(format!("deleting {target}"), source)),
            }
        }
    }
    Ok(removed)
}

fn namespace_content_sample(api_version: &str, kind: &str) -> Value {
    serde_json::json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": "x", "namespace": "x"}})
}

async fn unowned_content(
    client: &kube::Client,
    served: &ServedKinds,
    cluster: &str,
    namespace: &str,
    scenario: &str,
) -> Result<Vec<String>, DownError> {
    let mut strangers = Vec::new();
    for (api_version, kind) in NAMESPACE_CONTENT {
        let Some((resource, _)) = served.resource(api_version, kind) else {
            continue;
        };
        let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(client.clone(), namespace, &resource);
        let listed = api
            .list(&ListParams::default())
            .await
            .map_err(|source| DownError::Api {
                cluster: cluster.to_owned(),
                action: format!("listing {} in namespace {namespace}", resource.plural),
                source,
            })?;
        for object in &listed.items {
            let name = object.metadata.name.clone().unwrap_or_default();
            let is_default = NAMESPACE_DEFAULTS.contains(&name.as_str()) || name.starts_with("default-token-");
            // Pods belong to their Deployment: meshfed's Deployments label their pod templates.
            if !owned_by(object, scenario) && !is_default {
                strangers.push(format!("{kind} {namespace}/{name}"));
            }
        }
    }
    Ok(strangers)
}
