//! The `kubeconfig` provider as the Kubernetes half of `kind` ([`KubeSide`]): kind creates the
//! clusters and hands over each one's kubeconfig file and context; everything through the API
//! server (MetalLB and Istio's prerequisites, waits, then workloads, plan and traffic) is this
//! provider's.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::Value;

use super::KubeconfigProvider;
use crate::provider::ProviderError;
use crate::provider::kube_api::kind_seam::{KindCluster, KubeSide};
use crate::provider::kube_api::wait::{self, Watched};
use crate::provider::kube_api::{self as kube_layer, ApplyMode};

impl KubeconfigProvider {
    async fn kind_client(&self, cluster: &KindCluster) -> Result<kube::Client, ProviderError> {
        kube_layer::connect::connect_with(&cluster.cluster, &cluster.context, Some(&cluster.kubeconfig))
            .await
            .map_err(|error| ProviderError::Unavailable(error.to_string()))
    }
}

impl KubeSide for KubeconfigProvider {
    fn check_available(&self) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn apply_manifests(&mut self, cluster: &KindCluster, what: &str, yaml: &str) -> Result<(), ProviderError> {
        let client = self.kind_client(cluster).await?;
        apply_install_manifest(&client, cluster, what, yaml, &[]).await
    }

    async fn apply_manifests_when_webhooks_serve(
        &mut self,
        cluster: &KindCluster,
        what: &str,
        yaml: &str,
        webhooks: &[&str],
    ) -> Result<(), ProviderError> {
        let client = self.kind_client(cluster).await?;
        apply_install_manifest(&client, cluster, what, yaml, webhooks).await
    }

    async fn await_pods_ready(
        &mut self,
        cluster: &KindCluster,
        namespace: &str,
        labels: &str,
        deadline: Duration,
    ) -> Result<(), ProviderError> {
        let client = self.kind_client(cluster).await?;
        await_install_pods_ready(&client, cluster, namespace, labels, deadline).await
    }

    async fn await_load_balancer_address(
        &mut self,
        cluster: &KindCluster,
        namespace: &str,
        service: &str,
        deadline: Duration,
    ) -> Result<Ipv4Addr, ProviderError> {
        let client = self.kind_client(cluster).await?;
        let services: kube::Api<Service> = kube::Api::namespaced(client, namespace);
        let found = wait::await_condition(
            &services,
            &Watched::Name(service.to_owned()),
            &format!("LoadBalancer address of {namespace}/{service} in {}", cluster.kind_name),
            deadline,
            wait::gateway_address_assigned,
        )
        .await
        .map_err(|error| ProviderError::failed("waiting for a gateway address", error))?;
        let address = found.first().and_then(wait::load_balancer_address).unwrap_or_default();
        address.parse().map_err(|_| {
            ProviderError::Unsupported(format!(
                "{namespace}/{service} in {} got address {address:?}, not an IPv4 address",
                cluster.kind_name
            ))
        })
    }

    fn attach(&mut self, clusters: &[KindCluster], workload_image: &str) {
        for cluster in clusters {
            self.attached.insert(
                cluster.cluster.clone(),
                (cluster.kubeconfig.clone(), cluster.context.clone()),
            );
        }
        self.options.image.image = workload_image.to_owned();
    }
}

/// The objects of an install manifest (one or more YAML documents, e.g. MetalLB's
/// `metallb-native.yaml`), each labelled as meshfed's under the scenario [`KIND_INSTALL`]:
/// third-party manifests carry no meshfed labels; they are installed, not owned per scenario, and
/// go with the kind cluster.
pub(crate) fn install_objects(what: &str, yaml: &str) -> Result<Vec<Value>, ProviderError> {
    let objects: Vec<Value> = serde_saphyr::from_multiple::<Value>(yaml)
        .map_err(|error| ProviderError::failed(format!("reading the manifests of {what}"), anyhow::anyhow!("{error}")))?
        .into_iter()
        .filter(|object| !object.is_null())
        .collect();
    Ok(objects
        .into_iter()
        .map(|mut object| {
            if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                let labels = metadata
                    .entry("labels")
                    .or_insert_with(|| Value::Object(Default::default()));
                if let Some(labels) = labels.as_object_mut() {
                    labels.insert(
                        crate::plan::MANAGED_BY_LABEL.to_owned(),
                        Value::from(crate::plan::MANAGED_BY),
                    );
                    labels.insert(crate::plan::SCENARIO_LABEL.to_owned(), Value::from(KIND_INSTALL));
                }
            }
            object
        })
        .collect())
}

/// Applies an install manifest to a kind cluster through `client`; with `webhooks` named, a
/// refusal because one of them does not serve yet is retried ([`kube_layer::webhooks`]).
pub(crate) async fn apply_install_manifest(
    client: &kube::Client,
    cluster: &KindCluster,
    what: &str,
    yaml: &str,
    webhooks: &[&str],
) -> Result<(), ProviderError> {
    let objects = install_objects(what, yaml)?;
    let failed = |error: &dyn std::fmt::Display| {
        ProviderError::failed(
            format!("applying {what} to {}", cluster.kind_name),
            anyhow::anyhow!("{error}"),
        )
    };
    if webhooks.is_empty() {
        kube_layer::apply(client, &cluster.cluster, KIND_INSTALL, &objects, ApplyMode::Apply)
            .await
            .map(|_| ())
            .map_err(|error| ProviderError::failed(format!("applying {what} to {}", cluster.kind_name), error))
    } else {
        kube_layer::webhooks::apply_when_webhooks_serve(client, &cluster.cluster, KIND_INSTALL, &objects, webhooks)
            .await
            .map(|_| ())
            .map_err(|error| failed(&error))
    }
}

/// Waits until every pod with `labels` in `namespace` is Ready.
pub(crate) async fn await_install_pods_ready(
    client: &kube::Client,
    cluster: &KindCluster,
    namespace: &str,
    labels: &str,
    deadline: Duration,
) -> Result<(), ProviderError> {
    let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), namespace);
    wait::await_condition(
        &pods,
        &Watched::Labels(labels.to_owned()),
        &format!("every pod {labels} in {namespace} Ready in {}", cluster.kind_name),
        deadline,
        wait::pods_ready,
    )
    .await
    .map(|_| ())
    .map_err(|error| ProviderError::failed("waiting for pods", error))
}

/// The scenario label of what kind installs before the scenario's own objects (MetalLB, Istio's
/// prerequisites); it goes with the kind cluster.
const KIND_INSTALL: &str = "kind-install";

#[cfg(test)]
#[path = "../../../tests/support/skip.rs"]
mod skip;
#[cfg(test)]
#[path = "../../../tests/support/upstream.rs"]
mod upstream;

#[cfg(test)]
mod tests {
    //! The kind install's manifests through the real apply path against the fake API server
    //! ([`crate::provider::kube_api::fake_api`]), which serves discovery as a real one does.

    use super::*;
    use crate::provider::kind::addresses::AddressPool;
    use crate::provider::kind::install::{METALLB_POOL_WEBHOOKS, mk_metallb_pool};
    use crate::provider::kube_api::fake_api::{FakeApi, Recorded, status, unscripted};

    fn upstream(relative: &str) -> Option<String> {
        super::upstream::upstream_file(relative)
    }

    fn kind_cluster() -> KindCluster {
        KindCluster {
            cluster: "cluster1".to_owned(),
            kind_name: "meshfed-cluster1".to_owned(),
            kubeconfig: "unused".into(),
            context: "kind-meshfed-cluster1".to_owned(),
            gateway_address: None,
        }
    }

    fn pool() -> String {
        mk_metallb_pool(&AddressPool {
            first: "172.18.255.205".parse().unwrap(),
            last: "172.18.255.254".parse().unwrap(),
        })
    }

    /// An error and every cause below it, as the CLI prints them.
    fn with_causes(error: &dyn std::error::Error) -> String {
        let mut shown = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            shown.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        shown
    }

    fn patches(fake: &FakeApi) -> Vec<Recorded> {
        fake.requests().into_iter().filter(|r| r.method == "PATCH").collect()
    }

    #[tokio::test]
    async fn the_real_metallb_manifest_then_meshfeds_pool_apply_through_discovery_every_object_accepted() {
        let Some(manifest) = upstream("metallb-v0.14.9/metallb-native.yaml") else {
            return;
        };
        let fake = FakeApi::without_istio();
        let client = fake.client(unscripted());
        let cluster = kind_cluster();
        apply_install_manifest(&client, &cluster, "MetalLB v0.14.9", &manifest, &[])
            .await
            .unwrap();
        let documents = install_objects("MetalLB", &manifest).unwrap();
        assert!(documents.len() > 20, "{} documents", documents.len());
        let applied = patches(&fake);
        assert_eq!(applied.len(), documents.len(), "one server-side apply per object");
        assert_eq!(
            fake.objects.lock().unwrap().len(),
            documents.len(),
            "every object accepted and stored"
        );
        for kind in [
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "DaemonSet",
            "ValidatingWebhookConfiguration",
            "CustomResourceDefinition",
        ] {
            assert!(
                applied
                    .iter()
                    .any(|patch| patch.body.as_ref().is_some_and(|body| body["kind"] == kind)),
                "{kind} applied"
            );
        }
        // meshfed's pool: its kinds are served now that MetalLB's CRDs are established.
        apply_pool(&client, &cluster).await.unwrap();
        assert!(fake.has("/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools/meshfed"));
        assert!(fake.has("/apis/metallb.io/v1beta1/namespaces/metallb-system/l2advertisements/meshfed"));
        assert!(
            fake.all_requests().iter().any(|r| r.path == "/apis/metallb.io/v1beta1"),
            "the pool's kinds come from discovery"
        );
    }

    /// MetalLB's pool kinds, served as if its CRDs were established.
    const METALLB_KINDS: &[(&str, &str, &str, &str, bool)] = &[
        ("metallb.io", "v1beta1", "ipaddresspools", "IPAddressPool", true),
        ("metallb.io", "v1beta1", "l2advertisements", "L2Advertisement", true),
    ];

    /// A fake API server on which MetalLB is installed (its pool kinds are served).
    fn metallb_installed() -> FakeApi {
        FakeApi {
            preinstalled: METALLB_KINDS,
            ..FakeApi::default()
        }
    }

    /// Applies meshfed's MetalLB address pool to `cluster`, as the kind provider does.
    async fn apply_pool(client: &kube::Client, cluster: &KindCluster) -> Result<(), ProviderError> {
        apply_install_manifest(client, cluster, "MetalLB address pool", &pool(), &METALLB_POOL_WEBHOOKS).await
    }

    /// What the API server answers while MetalLB's webhook does not serve, as metallb#1597 quotes
    /// it (`kubectl apply` prints "Error from server (InternalError): … Internal error occurred:
    /// failed calling webhook …"): a 500 InternalError Status.
    fn webhook_not_serving() -> (u16, String) {
        (
            500,
            status(
                500,
                "InternalError",
                "Internal error occurred: failed calling webhook \"ipaddresspoolvalidationwebhook.metallb.io\": failed to call webhook: \
                 Post \"https://metallb-webhook-service.metallb-system.svc:443/validate-metallb-io-v1beta1-ipaddresspool?timeout=10s\": \
                 dial tcp 10.102.144.175:443: connect: connection refused",
            ),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_pool_is_applied_again_while_metallbs_webhook_does_not_serve() {
        let fake = metallb_installed();
        let mut refusals = 2;
        let client = fake.client(Box::new(move |request| {
            if request.method == "PATCH" && request.path.contains("/ipaddresspools/") && refusals > 0 {
                refusals -= 1;
                return Some(webhook_not_serving());
            }
            None
        }));
        let started = tokio::time::Instant::now();
        apply_pool(&client, &kind_cluster()).await.unwrap();
        let pool_patches = patches(&fake)
            .iter()
            .filter(|r| r.path.contains("/ipaddresspools/"))
            .count();
        assert_eq!(pool_patches, 3, "two refusals, then accepted");
        assert!(fake.has("/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools/meshfed"));
        assert_eq!(
            started.elapsed(),
            2 * crate::provider::kube_api::webhooks::WEBHOOK_RETRY_PAUSE,
            "a pause between tries, as Istio's retry"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_webhook_that_never_serves_fails_after_bounded_tries_naming_it() {
        let fake = metallb_installed();
        let client = fake.client(Box::new(|request| {
            (request.method == "PATCH" && request.path.contains("/ipaddresspools/")).then(webhook_not_serving)
        }));
        let error = apply_pool(&client, &kind_cluster()).await.unwrap_err();
        let error = with_causes(&error);
        assert!(error.contains("still did not serve after 5 tries 5 s apart"), "{error}");
        assert!(error.contains("ipaddresspoolvalidationwebhook.metallb.io"), "{error}");
        assert_eq!(patches(&fake).len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn another_refusal_of_the_pool_is_not_retried() {
        let fake = metallb_installed();
        let client = fake.client(Box::new(|request| {
            (request.method == "PATCH" && request.path.contains("/ipaddresspools/")).then(|| {
                (
                    422,
                    status(
                        422,
                        "Invalid",
                        "IPAddressPool.metallb.io \"meshfed\" is invalid: spec.addresses: Invalid value",
                    ),
                )
            })
        }));
        let error = apply_pool(&client, &kind_cluster()).await.unwrap_err();
        let error = with_causes(&error);
        assert!(error.contains("is invalid"), "{error}");
        assert_eq!(patches(&fake).len(), 1);
    }

    #[tokio::test]
    async fn metallbs_pods_are_awaited_until_every_one_is_ready() {
        let pod = |name: &str, ready: &str| {
            (
                format!("/api/v1/namespaces/metallb-system/pods/{name}"),
                serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": name, "namespace": "metallb-system", "labels": {"app": "metallb"}},
                    "status": {"conditions": [{"type": "Ready", "status": ready}]}}),
            )
        };
        let fake = FakeApi::with(vec![pod("controller-1", "True"), pod("speaker-a", "False")]);
        let store = fake.objects.clone();
        let client = fake.client(Box::new(move |request| {
            if request.query.contains("watch=true") {
                // The speaker becomes Ready meanwhile; the watch ends and meshfed relists.
                let (path, ready) = pod("speaker-a", "True");
                store.lock().unwrap().insert(path, ready);
            }
            None
        }));
        await_install_pods_ready(
            &client,
            &kind_cluster(),
            "metallb-system",
            "app=metallb",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        let lists = fake
            .requests()
            .iter()
            .filter(|r| r.path == "/api/v1/namespaces/metallb-system/pods" && !r.query.contains("watch=true"))
            .count();
        assert_eq!(lists, 2, "not ready at the first list, ready after the watch");
    }
}
