//! The `kubeconfig` provider as the Kubernetes half of `kind` ([`KubeSide`]): kind creates the
//! clusters and hands over each one's kubeconfig file and context; everything through the API
//! server (MetalLB and Istio's prerequisites, waits, then workloads, plan and traffic) is this
//! provider's.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use serde_json::Value;

use super::KubeconfigProvider;
use crate::provider::ProviderError;
use crate::provider::kind::{KindCluster, KubeSide};
use crate::provider::kube::wait::{self, Watched};
use crate::provider::kube::{self as kube_layer, ApplyMode};

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
        let objects: Vec<Value> = serde_saphyr::from_multiple::<Value>(yaml)
            .map_err(|error| {
                ProviderError::failed(format!("reading the manifests of {what}"), anyhow::anyhow!("{error}"))
            })?
            .into_iter()
            .filter(|object| !object.is_null())
            .collect();
        let client = self.kind_client(cluster).await?;
        // Third-party manifests (MetalLB) carry no meshfed labels: they are installed, not owned
        // per scenario, and go with the kind cluster. Applied under the scenario "kind-install".
        let labelled: Vec<Value> = objects
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
            .collect();
        kube_layer::apply(&client, &cluster.cluster, KIND_INSTALL, &labelled, ApplyMode::Apply)
            .await
            .map(|_| ())
            .map_err(|error| ProviderError::failed(format!("applying {what} to {}", cluster.kind_name), error))
    }

    async fn await_deployment_available(
        &mut self,
        cluster: &KindCluster,
        namespace: &str,
        name: &str,
        deadline: Duration,
    ) -> Result<(), ProviderError> {
        let client = self.kind_client(cluster).await?;
        let deployments: kube::Api<Deployment> = kube::Api::namespaced(client, namespace);
        wait::await_condition(
            &deployments,
            &Watched::Name(name.to_owned()),
            &format!("deployment {namespace}/{name} available in {}", cluster.kind_name),
            deadline,
            wait::deployment_available,
        )
        .await
        .map(|_| ())
        .map_err(|error| ProviderError::failed("waiting for a deployment", error))
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

/// The scenario label of what kind installs before the scenario's own objects (MetalLB, Istio's
/// prerequisites); it goes with the kind cluster.
const KIND_INSTALL: &str = "kind-install";
