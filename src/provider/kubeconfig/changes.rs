//! World changes on real clusters, through the Kubernetes API and only on what meshfed may touch
//! ([`crate::provider::kube_api::change`]): `scale` sets the replicas of the service's Deployment
//! meshfed created; `kill` deletes the pod (on Kubernetes a killed pod is replaced by a new one
//! with a new name, whichever container is named); `stopGateway`/`startGateway` scale the
//! federation gateway's Deployment to 0 and back to 1, only on clusters meshfed created (kind),
//! because on someone else's cluster the gateway belongs to their Istio installation. Each waits
//! for the pods to settle with a deadline and returns the inventory events it observed. Every
//! other change is refused with the reason.

use std::collections::BTreeSet;
use std::time::Duration;

use super::KubeconfigProvider;
use crate::change::{ChangeKind, Container, WorldChange};
use crate::inventory::InventoryEvent;
use crate::inventory::ReadyPod;
use crate::progress::Progress;
use crate::provider::ProviderError;
use crate::provider::kube_api::change::{ChangeError, Ownership, Target, delete_pod, scale_deployment};
use crate::provider::kube_api::kind_seam::federation_gateway;

pub use crate::provider::kube_api::kind_seam::{KIND_CHANGES, KUBECONFIG_CHANGES};

/// How long pods may take to settle after a change (image already on the node; Istio injects a
/// sidecar that must become ready too).
pub const SETTLE_DEADLINE: Duration = Duration::from_secs(180);

/// Istio's gateways live here.
const GATEWAY_NAMESPACE: &str = "istio-system";

fn change_failed(error: ChangeError) -> ProviderError {
    match error {
        ChangeError::NotOwned { .. } => ProviderError::Unsupported(error.to_string()),
        other => ProviderError::failed("a change to the world", other),
    }
}

/// The events between the ready pods before and the pod names after: `PodGone` for each pod no
/// longer there, `PodReady` for each new one (in the cluster's region and zone). Returns them with
/// the ready pods afterwards.
pub fn pod_events(
    cluster: &str,
    service: &str,
    before: &[ReadyPod],
    after: &[String],
    region: &str,
    zone: &str,
) -> (Vec<InventoryEvent>, Vec<ReadyPod>) {
    let before_names: BTreeSet<&str> = before.iter().map(|pod| pod.name.as_str()).collect();
    let after_names: BTreeSet<&str> = after.iter().map(String::as_str).collect();
    let mut events: Vec<InventoryEvent> = before_names
        .difference(&after_names)
        .map(|pod| InventoryEvent::PodGone {
            cluster: cluster.to_owned(),
            service: service.to_owned(),
            pod: (*pod).to_owned(),
        })
        .collect();
    let mut now = Vec::new();
    for name in &after_names {
        let pod = before
            .iter()
            .find(|pod| pod.name == *name)
            .cloned()
            .unwrap_or_else(|| ReadyPod {
                name: (*name).to_owned(),
                region: region.to_owned(),
                zone: zone.to_owned(),
            });
        if !before_names.contains(name) {
            events.push(InventoryEvent::PodReady {
                cluster: cluster.to_owned(),
                service: service.to_owned(),
                pod: pod.clone(),
            });
        }
        now.push(pod);
    }
    (events, now)
}

impl KubeconfigProvider {
    /// The changes this provider makes on `cluster`'s world.
    fn changes_for(&self, cluster: &str) -> &'static [ChangeKind] {
        if self.attached.contains_key(cluster) {
            KIND_CHANGES
        } else {
            KUBECONFIG_CHANGES
        }
    }

    fn target<'a>(&'a self, cluster: &'a str) -> Result<Target<'a>, ProviderError> {
        Ok(Target {
            client: self.client(cluster)?,
            cluster,
            ownership: if self.attached.contains_key(cluster) {
                Ownership::WholeCluster
            } else {
                Ownership::Labelled
            },
        })
    }

    /// Makes `change`, waits for the pods to settle, returns what changed in the inventory.
    pub(super) async fn change_world_through_the_api(
        &mut self,
        change: &WorldChange,
        progress: &mut dyn Progress,
    ) -> Result<Vec<InventoryEvent>, ProviderError> {
        let cluster = change.cluster();
        if !self.changes_for(cluster).contains(&change.kind()) {
            return Err(ProviderError::Unsupported(refusal(
                change,
                self.attached.contains_key(cluster),
            )));
        }
        let scenario = self.scenario()?.clone();
        let (region, zone) = scenario
            .cluster(cluster)
            .map(|c| (c.region.clone(), c.zone.clone()))
            .ok_or_else(|| ProviderError::Unsupported(format!("unknown cluster {cluster}")))?;
        match change {
            WorldChange::Scale {
                cluster,
                service,
                replicas,
            } => {
                let (name, namespace) = service
                    .split_once('.')
                    .ok_or_else(|| ProviderError::Unsupported(format!("unknown service {service}")))?;
                progress.step(&format!("cluster {cluster}: scaling {service} to {replicas}"));
                let after = scale_deployment(
                    &self.target(cluster)?,
                    namespace,
                    name,
                    &format!("app={name}"),
                    *replicas,
                    SETTLE_DEADLINE,
                )
                .await
                .map_err(change_failed)?;
                Ok(self.note_pods(cluster, service, &after, &region, &zone))
            }
            WorldChange::Kill {
                cluster,
                pod,
                container,
            } => {
                let (service, pod) = self.live_pod(cluster, pod).ok_or_else(|| {
                    ProviderError::Unsupported(format!(
                        "no ready pod {pod} in cluster {cluster} (a pod is named as the cluster lists it, or <service>-<index>)"
                    ))
                })?;
                let pod = &pod;
                let (name, namespace) = service.split_once('.').unwrap_or((service.as_str(), ""));
                let replicas = self.ready_pods(cluster, &service).len();
                let which = match container {
                    Container::Sidecar => "sidecar",
                    Container::App => "app",
                };
                progress.step(&format!(
                    "cluster {cluster}: killing pod {pod} ({which} named; Kubernetes replaces the whole pod)"
                ));
                let after = delete_pod(
                    &self.target(cluster)?,
                    namespace,
                    pod,
                    &format!("app={name}"),
                    replicas,
                    SETTLE_DEADLINE,
                )
                .await
                .map_err(change_failed)?;
                Ok(self.note_pods(cluster, &service, &after, &region, &zone))
            }
            WorldChange::StopGateway { cluster } | WorldChange::StartGateway { cluster } => {
                let replicas = u32::from(matches!(change, WorldChange::StartGateway { .. }));
                let gateway = federation_gateway(scenario.federation.mode.value);
                progress.step(&format!("cluster {cluster}: scaling {gateway} to {replicas}"));
                scale_deployment(
                    &self.target(cluster)?,
                    GATEWAY_NAMESPACE,
                    gateway,
                    &format!("app={gateway}"),
                    replicas,
                    SETTLE_DEADLINE,
                )
                .await
                .map_err(change_failed)?;
                // The LoadBalancer Service and its address stay: nothing in the inventory changed.
                Ok(Vec::new())
            }
            _ => Err(ProviderError::Unsupported(refusal(
                change,
                self.attached.contains_key(cluster),
            ))),
        }
    }

    fn ready_pods(&self, cluster: &str, service: &str) -> Vec<ReadyPod> {
        self.inventory
            .as_ref()
            .and_then(|inventory| inventory.clusters.get(cluster))
            .and_then(|cluster| cluster.ready_pods.get(service))
            .cloned()
            .unwrap_or_default()
    }

    /// The service and live name of `pod` in `cluster`: a pod the cluster lists under that name,
    /// else, for a scenario's `<service>-<index>` (real pods have generated names), the index-th
    /// ready pod of that service by name.
    fn live_pod(&self, cluster: &str, pod: &str) -> Option<(String, String)> {
        let inventory = self.inventory.as_ref()?.clusters.get(cluster)?;
        if let Some((service, _)) = inventory
            .ready_pods
            .iter()
            .find(|(_, pods)| pods.iter().any(|ready| ready.name == pod))
        {
            return Some((service.clone(), pod.to_owned()));
        }
        let (name, index) = pod.rsplit_once('-')?;
        let index: usize = index.parse().ok()?;
        inventory.ready_pods.iter().find_map(|(service, pods)| {
            if service
                .split_once('.')
                .map_or(service.as_str(), |(service_name, _)| service_name)
                != name
            {
                return None;
            }
            let mut names: Vec<&str> = pods.iter().map(|ready| ready.name.as_str()).collect();
            names.sort_unstable();
            names.get(index).map(|live| (service.clone(), (*live).to_owned()))
        })
    }

    fn note_pods(
        &mut self,
        cluster: &str,
        service: &str,
        after: &[String],
        region: &str,
        zone: &str,
    ) -> Vec<InventoryEvent> {
        let before = self.ready_pods(cluster, service);
        let (events, now) = pod_events(cluster, service, &before, after, region, zone);
        if let Some(inventory) = self
            .inventory
            .as_mut()
            .and_then(|inventory| inventory.clusters.get_mut(cluster))
        {
            inventory.ready_pods.insert(service.to_owned(), now);
        }
        events
    }
}

/// Why a change is not made on a real cluster.
fn refusal(change: &WorldChange, meshfed_cluster: bool) -> String {
    let kind = change.kind().name();
    let why = match change.kind() {
        ChangeKind::StopGateway | ChangeKind::StartGateway if !meshfed_cluster => {
            "the gateway belongs to the cluster's Istio installation, not to meshfed (kind clusters only)"
        }
        ChangeKind::Partition | ChangeKind::Heal => "cutting a cluster off needs network policy outside the cluster",
        ChangeKind::Delay => {
            "delaying replies needs a fault injected into the app, which meshfed's image does not take at run time"
        }
        ChangeKind::RotateIntermediate => "rotating Istio's intermediate CA restarts istiod and is not built",
        ChangeKind::JoinCluster | ChangeKind::LeaveCluster => {
            "adding or removing a whole cluster during a run is not built"
        }
        ChangeKind::Upgrade if !meshfed_cluster => {
            "Istio belongs to the cluster's own installation, not to meshfed (kind and local upgrade it)"
        }
        ChangeKind::Upgrade => "the kind provider upgrades Istio itself, with istioctl",
        _ => "it is not built",
    };
    format!(
        "--provider {} cannot make the change {kind}: {why}",
        if meshfed_cluster { "kind" } else { "kubeconfig" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> ReadyPod {
        ReadyPod {
            name: name.to_owned(),
            region: "r".to_owned(),
            zone: "z".to_owned(),
        }
    }

    #[test]
    fn a_replaced_pod_is_one_gone_and_one_ready_event() {
        let (events, now) = pod_events(
            "c2",
            "bar.ns2",
            &[pod("bar-a"), pod("bar-b")],
            &["bar-b".to_owned(), "bar-c".to_owned()],
            "r",
            "z",
        );
        assert_eq!(
            events,
            [
                InventoryEvent::PodGone {
                    cluster: "c2".into(),
                    service: "bar.ns2".into(),
                    pod: "bar-a".into()
                },
                InventoryEvent::PodReady {
                    cluster: "c2".into(),
                    service: "bar.ns2".into(),
                    pod: pod("bar-c")
                },
            ]
        );
        assert_eq!(now, [pod("bar-b"), pod("bar-c")]);
        let (none, _) = pod_events(
            "c2",
            "bar.ns2",
            &now,
            &["bar-b".to_owned(), "bar-c".to_owned()],
            "r",
            "z",
        );
        assert!(none.is_empty(), "nothing changed: no event");
    }

    /// A provider connected to one cluster `c2` whose API server is `answer` (method, path →
    /// status, body), with bar.ns2's ready pods `bar-a` and `bar-b` in its inventory.
    fn provider_with(
        answer: impl Fn(&str, &str) -> (u16, String) + Send + 'static,
        attached: bool,
    ) -> (KubeconfigProvider, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let line = format!("{} {}", request.method(), request.uri().path());
                log.lock().unwrap().push(line);
                let (status, body) = answer(request.method().as_str(), request.uri().path());
                respond.send_response(
                    Response::builder()
                        .status(status)
                        .body(Body::from(body.into_bytes()))
                        .unwrap(),
                );
            }
        });
        let client = kube::Client::new(service, "default");
        let mut provider = KubeconfigProvider::new(super::super::KubeconfigOptions::new(super::super::WorkloadImage {
            image: "meshfed:test".into(),
            command: "/meshfed".into(),
        }));
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/seed.yaml"))
            .unwrap()
            .replace("cluster2", "c2");
        let scenario = crate::scenario::parse(std::path::Path::new("seed.yaml"), &text).unwrap();
        let mut inventory = crate::inventory::from_scenario(&scenario);
        inventory
            .clusters
            .get_mut("c2")
            .unwrap()
            .ready_pods
            .insert("bar.ns2".into(), vec![pod("bar-a"), pod("bar-b")]);
        provider.scenario = Some(scenario);
        provider.inventory = Some(inventory);
        provider.clusters.insert(
            "c2".into(),
            super::super::Connected {
                context: "ctx".into(),
                client,
            },
        );
        if attached {
            provider
                .attached
                .insert("c2".into(), ("kubeconfig".into(), "ctx".into()));
        }
        (provider, seen)
    }

    fn ready(name: &str, owned: bool) -> serde_json::Value {
        let mut labels = serde_json::json!({ "app": name.split('-').next().unwrap() });
        if owned {
            labels["app.kubernetes.io/managed-by"] = "meshfed".into();
        }
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": "ns2", "labels": labels },
            "status": { "conditions": [{ "type": "Ready", "status": "True" }] },
        })
    }

    #[tokio::test]
    async fn scaling_on_kubeconfig_reports_the_pods_that_came_and_went_and_updates_the_inventory() {
        let (mut provider, seen) = provider_with(
            |method, path| {
                match (method, path) {
                ("GET", "/apis/apps/v1/namespaces/ns2/deployments/bar") | ("PATCH", "/apis/apps/v1/namespaces/ns2/deployments/bar") => (
                    200,
                    serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
                        "metadata": {"name": "bar", "namespace": "ns2", "labels": {"app.kubernetes.io/managed-by": "meshfed"}},
                        "spec": {"replicas": 1, "selector": {}, "template": {}}})
                    .to_string(),
                ),
                ("GET", "/api/v1/namespaces/ns2/pods") => (
                    200,
                    serde_json::json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"},
                        "items": [ready("bar-b", true)]})
                    .to_string(),
                ),
                _ => (404, "{}".into()),
            }
            },
            false,
        );
        let change = WorldChange::Scale {
            cluster: "c2".into(),
            service: "bar.ns2".into(),
            replicas: 1,
        };
        let events = provider
            .change_world_through_the_api(&change, &mut |_: &str| {})
            .await
            .unwrap();
        assert_eq!(
            events,
            [InventoryEvent::PodGone {
                cluster: "c2".into(),
                service: "bar.ns2".into(),
                pod: "bar-a".into()
            }]
        );
        assert_eq!(provider.ready_pods("c2", "bar.ns2"), [pod("bar-b")]);
        assert_eq!(
            seen.lock().unwrap()[..2],
            [
                "GET /apis/apps/v1/namespaces/ns2/deployments/bar".to_owned(),
                "PATCH /apis/apps/v1/namespaces/ns2/deployments/bar".to_owned()
            ]
        );
    }

    #[tokio::test]
    async fn stopping_the_gateway_is_refused_on_kubeconfig_without_a_request_and_made_on_kind() {
        let answer = |method: &str, path: &str| {
            match (method, path) {
            ("GET" | "PATCH", "/apis/apps/v1/namespaces/istio-system/deployments/istio-ingressgateway") => (
                200,
                serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system", "labels": {"app": "istio-ingressgateway"}},
                    "spec": {"replicas": 0, "selector": {}, "template": {}}})
                .to_string(),
            ),
            ("GET", "/api/v1/namespaces/istio-system/pods") => (
                200,
                serde_json::json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})
                    .to_string(),
            ),
            _ => (404, "{}".into()),
        }
        };
        let stop = WorldChange::StopGateway { cluster: "c2".into() };
        let (mut kubeconfig, seen) = provider_with(answer, false);
        let error = kubeconfig
            .change_world_through_the_api(&stop, &mut |_: &str| {})
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("not to meshfed (kind clusters only)"),
            "{error}"
        );
        assert!(seen.lock().unwrap().is_empty(), "refused before any request");

        let (mut kind, seen) = provider_with(answer, true);
        let events = kind
            .change_world_through_the_api(&stop, &mut |_: &str| {})
            .await
            .unwrap();
        assert!(events.is_empty(), "the gateway's address stays: {events:?}");
        assert!(
            seen.lock()
                .unwrap()
                .contains(&"PATCH /apis/apps/v1/namespaces/istio-system/deployments/istio-ingressgateway".to_owned())
        );
    }

    #[tokio::test]
    async fn a_scenario_pod_name_is_the_service_s_ready_pod_at_that_index_by_name() {
        let (provider, _) = provider_with(|_, _| (404, "{}".into()), false);
        assert_eq!(
            provider.live_pod("c2", "bar-b"),
            Some(("bar.ns2".into(), "bar-b".into()))
        );
        assert_eq!(
            provider.live_pod("c2", "bar-0"),
            Some(("bar.ns2".into(), "bar-a".into()))
        );
        assert_eq!(
            provider.live_pod("c2", "bar-1"),
            Some(("bar.ns2".into(), "bar-b".into()))
        );
        assert_eq!(provider.live_pod("c2", "bar-2"), None, "bar has two ready pods in c2");
        assert_eq!(provider.live_pod("c2", "baz-0"), None);
    }

    #[test]
    fn every_refusal_names_the_provider_the_change_and_why() {
        let stop = WorldChange::StopGateway { cluster: "c1".into() };
        assert_eq!(
            refusal(&stop, false),
            "--provider kubeconfig cannot make the change stopGateway: the gateway belongs to the cluster's Istio installation, not to meshfed (kind clusters only)"
        );
        let partition = WorldChange::Partition { cluster: "c1".into() };
        assert!(refusal(&partition, true).starts_with("--provider kind cannot make the change partition: "));
        assert!(!KUBECONFIG_CHANGES.contains(&ChangeKind::StopGateway));
        assert!(KIND_CHANGES.contains(&ChangeKind::StopGateway));
    }
}
