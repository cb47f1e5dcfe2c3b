//! Waiting on explicit readiness conditions, each with a deadline: CRDs established, deployments
//! available, endpoints ready, a gateway's LoadBalancer address assigned. A timeout names what did
//! not become ready and the last state observed, never just "waiting for …".
//!
//! [`await_condition`] lists the objects, judges them, then watches from the list's
//! `resourceVersion`. A `410 Gone` (the version is too old: as an HTTP status or as an `ERROR`
//! watch event) and the server closing the watch both lead to a relist; other errors are retried
//! after [`RETRY_PAUSE`] and shown as the last state if the deadline passes. The judges
//! (`crd_established`, ...) are pure functions of the observed objects.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;

/// Pause before relisting after an error that is not a 410.
pub const RETRY_PAUSE: Duration = Duration::from_secs(1);
/// How long the server keeps one watch open before meshfed relists.
const WATCH_SECONDS: u32 = 60;

/// A wait that ran out of time.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// The condition did not hold before the deadline.
    #[error("{what} did not become ready within {} s; last observed: {last_state}", .deadline.as_secs())]
    Deadline {
        /// What was waited for: `deployment ns2/bar available in cluster2`.
        what: String,
        /// The deadline.
        deadline: Duration,
        /// The last state seen (or the last error).
        last_state: String,
    },
}

/// A judge's verdict on the objects observed so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The condition holds.
    pub ready: bool,
    /// What was seen, for the timeout message: `availableReplicas 0 of 2`.
    pub state: String,
}

impl Observed {
    pub(crate) fn new(ready: bool, state: impl Into<String>) -> Observed {
        Observed {
            ready,
            state: state.into(),
        }
    }
}

/// Which objects a wait looks at.
#[derive(Clone, Debug)]
pub enum Watched {
    /// The object with this name.
    Name(String),
    /// Objects with these labels (`kubernetes.io/service-name=bar`).
    Labels(String),
}

/// Waits until `judge` says the watched objects are ready, or `deadline` passes. Returns the
/// objects at that moment.
pub async fn await_condition<K>(
    api: &Api<K>,
    watched: &Watched,
    what: &str,
    deadline: Duration,
    judge: impl Fn(&[&K]) -> Observed,
) -> Result<Vec<K>, WaitError>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut last_state = "nothing observed yet".to_owned();
    let waited = tokio::time::timeout(deadline, watch_until(api, watched, &judge, &mut last_state)).await;
    waited.map_err(|_| WaitError::Deadline {
        what: what.to_owned(),
        deadline,
        last_state,
    })
}

async fn watch_until<K>(
    api: &Api<K>,
    watched: &Watched,
    judge: &impl Fn(&[&K]) -> Observed,
    last_state: &mut String,
) -> Vec<K>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let (list_params, watch_params) = match watched {
        Watched::Name(name) => (
            ListParams::default().fields(&format!("metadata.name={name}")),
            WatchParams::default()
                .fields(&format!("metadata.name={name}"))
                .timeout(WATCH_SECONDS),
        ),
        Watched::Labels(labels) => (
            ListParams::default().labels(labels),
            WatchParams::default().labels(labels).timeout(WATCH_SECONDS),
        ),
    };
    let judge_now = |objects: &BTreeMap<String, K>, last_state: &mut String| {
        let current: Vec<&K> = objects.values().collect();
        let observed = judge(&current);
        *last_state = observed.state;
        observed.ready.then(|| objects.values().cloned().collect::<Vec<K>>())
    };
    loop {
        // (Re)list: the truth at one resourceVersion.
        let list = match api.list(&list_params).await {
            Ok(list) => list,
            Err(error) => {
                *last_state = format!("{last_state} (then listing failed: {error})");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let version = list.metadata.resource_version.clone().unwrap_or_default();
        let mut objects: BTreeMap<String, K> = list
            .items
            .into_iter()
            .map(|object| (object.name_any(), object))
            .collect();
        if let Some(ready) = judge_now(&objects, last_state) {
            return ready;
        }
        let stream = match api.watch(&watch_params, &version).await {
            Ok(stream) => stream,
            Err(kube::Error::Api(status)) if status.code == 410 => continue,
            Err(error) => {
                *last_state = format!("{last_state} (then watching failed: {error})");
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let mut stream = stream.boxed();
        loop {
            match stream.try_next().await {
                Ok(Some(WatchEvent::Added(object) | WatchEvent::Modified(object))) => {
                    objects.insert(object.name_any(), object);
                }
                Ok(Some(WatchEvent::Deleted(object))) => {
                    objects.remove(&object.name_any());
                }
                Ok(Some(WatchEvent::Bookmark(_))) => continue,
                // 410 Gone: our resourceVersion is too old; relist.
                Ok(Some(WatchEvent::Error(status))) if status.code == 410 => break,
                Ok(Some(WatchEvent::Error(status))) => {
                    *last_state = format!(
                        "{last_state} (then the watch failed: {} {})",
                        status.code, status.message
                    );
                    tokio::time::sleep(RETRY_PAUSE).await;
                    break;
                }
                // The server ended the watch (its timeout): relist, after a pause so that a
                // server ending every watch at once is not hammered.
                Ok(None) => {
                    tokio::time::sleep(RETRY_PAUSE).await;
                    break;
                }
                Err(error) => {
                    *last_state = format!("{last_state} (then the watch failed: {error})");
                    tokio::time::sleep(RETRY_PAUSE).await;
                    break;
                }
            }
            if let Some(ready) = judge_now(&objects, last_state) {
                return ready;
            }
        }
    }
}

fn condition<'a>(
    conditions: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a str>)>,
    wanted: &str,
) -> Option<(String, Option<String>)> {
    conditions
        .into_iter()
        .find(|(kind, _, _)| *kind == wanted)
        .map(|(_, status, reason)| (status.to_owned(), reason.map(str::to_owned)))
}

/// A CRD is established (its API is served).
pub fn crd_established(objects: &[&CustomResourceDefinition]) -> Observed {
    let Some(crd) = objects.first() else {
        return Observed::new(false, "the CustomResourceDefinition does not exist");
    };
    let conditions = crd.status.as_ref().and_then(|status| status.conditions.as_ref());
    let established = condition(
        conditions
            .into_iter()
            .flatten()
            .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_deref())),
        "Established",
    );
    match established {
        Some((status, _)) if status == "True" => Observed::new(true, "Established=True"),
        Some((status, reason)) => {
            Observed::new(false, format!("Established={status} ({})", reason.unwrap_or_default()))
        }
        None => Observed::new(false, "no Established condition yet"),
    }
}

/// A deployment has rolled out its current generation and every replica is available.
pub fn deployment_available(objects: &[&Deployment]) -> Observed {
    let Some(deployment) = objects.first() else {
        return Observed::new(false, "the Deployment does not exist");
    };
    let wanted = deployment.spec.as_ref().and_then(|spec| spec.replicas).unwrap_or(1);
    let status = deployment.status.clone().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or(0);
    let observed_generation = status.observed_generation.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let condition_text = status
        .conditions
        .iter()
        .flatten()
        .map(|c| {
            format!(
                "{}={}{}",
                c.type_,
                c.status,
                c.reason
                    .as_ref()
                    .map(|reason| format!(" ({reason})"))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let ready = observed_generation >= generation && updated >= wanted && available >= wanted;
    Observed::new(
        ready,
        format!(
            "availableReplicas {available} of {wanted}, updated {updated}, generation {observed_generation}/{generation}{}",
            if condition_text.is_empty() {
                String::new()
            } else {
                format!(", conditions: {condition_text}")
            }
        ),
    )
}

/// Every listed pod is Ready and at least one exists (`kubectl wait pod -l … --for=condition=Ready`).
pub fn pods_ready(pods: &[&Pod]) -> Observed {
    let not_ready: Vec<String> = pods
        .iter()
        .filter(|pod| {
            !pod.status
                .as_ref()
                .and_then(|status| status.conditions.as_ref())
                .is_some_and(|conditions| conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .map(|pod| pod.name_any())
        .collect();
    Observed::new(
        !pods.is_empty() && not_ready.is_empty(),
        if pods.is_empty() {
            "no pods yet".to_owned()
        } else if not_ready.is_empty() {
            format!("{} pods Ready", pods.len())
        } else {
            format!(
                "{} of {} pods not Ready: {}",
                not_ready.len(),
                pods.len(),
                not_ready.join(", ")
            )
        },
    )
}

/// The EndpointSlices of a service hold at least `wanted` ready endpoints.
pub fn endpoints_ready(wanted: usize) -> impl Fn(&[&EndpointSlice]) -> Observed {
    move |slices| {
        let (ready, total) =
            slices
                .iter()
                .flat_map(|slice| slice.endpoints.iter())
                .fold((0, 0), |(ready, total), endpoint| {
                    let is_ready = endpoint.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
                    (
                        ready + usize::from(is_ready) * endpoint.addresses.len(),
                        total + endpoint.addresses.len(),
                    )
                });
        Observed::new(
            ready >= wanted,
            format!(
                "{ready} of {wanted} endpoints ready ({total} listed in {} slice(s))",
                slices.len()
            ),
        )
    }
}

/// The address other clusters reach a LoadBalancer Service at, if assigned.
pub fn load_balancer_address(service: &Service) -> Option<String> {
    service
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .iter()
        .find_map(|ingress| ingress.ip.clone().or_else(|| ingress.hostname.clone()))
}

/// A gateway Service has a LoadBalancer address.
pub fn gateway_address_assigned(objects: &[&Service]) -> Observed {
    let Some(service) = objects.first() else {
        return Observed::new(false, "the gateway Service does not exist");
    };
    match load_balancer_address(service) {
        Some(address) => Observed::new(true, format!("address {address}")),
        None => Observed::new(
            false,
            format!(
                "type {}, no status.loadBalancer.ingress yet",
                service
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.type_.clone())
                    .unwrap_or_default()
            ),
        ),
    }
}
