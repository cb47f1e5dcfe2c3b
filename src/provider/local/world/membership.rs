//! Changes to who is in the `local` world while traffic runs: a service scaled in a cluster (pods
//! created or removed), a cluster that joins or leaves the mesh.
//!
//! What a cluster does by itself happens here, as Kubernetes and the cluster's own istiod would:
//! a new pod gets its namespace, address, certificate, app and sidecar, and is ready before the
//! change returns; the cluster's own sidecars and gateway learn its pods at once (the last applied
//! plan is re-applied, which changes only their endpoints). What crosses clusters (the other
//! clusters' ServiceEntries) changes only when the reconcile loop re-plans from the returned
//! inventory events and the engine applies that plan. A pod scaled away, and every pod and the
//! gateway of a cluster that leaves, terminate as on Kubernetes with Istio ([`super::termination`]):
//! out of the endpoints at once, serving while they drain, ended after the drain.

use std::time::Instant;

use super::capacity;
use super::{APP_READY_TIMEOUT, LocalOptions, World, cluster_network, failed, pod_address, pod_dir};
use crate::change::WorldChange;
use crate::inventory::InventoryEvent;
use crate::pki::{self, MeshPki};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::provider::local::topology::{GATEWAY_POD, PodTopology};
use crate::provider::{PhaseSettings, ProviderError};

impl World {
    /// Carries out a membership change; returns the inventory events it caused.
    pub(super) async fn change_membership(
        &mut self,
        options: &LocalOptions,
        change: &WorldChange,
        progress: &mut dyn Progress,
    ) -> Result<Vec<InventoryEvent>, ProviderError> {
        match change {
            WorldChange::Scale {
                cluster,
                service,
                replicas,
            } => self.scale(options, cluster, service, *replicas, progress).await,
            WorldChange::JoinCluster { cluster } => self.join_cluster(options, cluster, progress).await,
            WorldChange::LeaveCluster { cluster } => self.leave_cluster(options, cluster, progress).await,
            other => Err(ProviderError::Unsupported(format!(
                "{} is not a membership change",
                other.kind().name()
            ))),
        }
    }

    /// Scales `service` in `cluster` to `replicas` pods: removed pods leave the cluster's
    /// endpoints first, then their app and sidecar are ended on purpose and their namespace
    /// deleted; added pods are created, started and ready before this returns.
    async fn scale(
        &mut self,
        options: &LocalOptions,
        cluster: &str,
        service: &str,
        replicas: u32,
        progress: &mut dyn Progress,
    ) -> Result<Vec<InventoryEvent>, ProviderError> {
        let scenario_service = self
            .scenario
            .service(service)
            .cloned()
            .ok_or_else(|| ProviderError::Unsupported(format!("scale: the scenario has no service {service}")))?;
        let (plan, settings) = self.applied_plan()?;
        let current = self.cluster(cluster)?.pods_of(service).count();
        let adding = (replicas as usize).saturating_sub(current);
        let scenario = self.scenario.clone();
        capacity::check_memory_now(capacity::Demand {
            pods: adding,
            gateways: 0,
        })
        .map_err(ProviderError::Unavailable)?;
        let topology_cluster = self
            .topology
            .cluster_mut(cluster)
            .ok_or_else(|| ProviderError::Unsupported(format!("scale: unknown cluster {cluster}")))?;
        let scaled = topology_cluster
            .scale(&scenario, &scenario_service, replicas)
            .map_err(|error| failed(format!("scaling {service} in {cluster}"))(error.into()))?;
        let cluster_topology = self.cluster(cluster)?.clone();
        progress.step(&format!(
            "scaling {service} in {cluster} to {replicas} ({} added, {} removed)",
            scaled.added.len(),
            scaled.removed.len()
        ));
        let mut events = Vec::new();
        if !scaled.removed.is_empty() {
            // Out of the cluster's endpoints first (the EndpointSlice marks a terminating pod not
            // ready); the pods keep serving while they drain, and the PodGone events let the
            // engine push the re-planned federation meanwhile.
            self.apply_plan(options, &plan, &settings).await?;
            let removed: Vec<String> = scaled.removed.iter().map(|pod| pod.name.clone()).collect();
            let dirs = removed
                .iter()
                .map(|pod| pod_dir(&options.run_dir, cluster, pod))
                .collect();
            self.start_termination(cluster, removed, false, dirs).await;
            events.extend(scaled.removed.iter().map(|pod| InventoryEvent::PodGone {
                cluster: cluster.to_owned(),
                service: service.to_owned(),
                pod: pod.name.clone(),
            }));
        }
        if !scaled.added.is_empty() {
            for pod in &scaled.added {
                self.end_terminating_now(cluster, Some(&pod.name))?;
            }
            self.create_pods(options, cluster, &scaled.added)?;
            let deadline = Instant::now() + APP_READY_TIMEOUT;
            for pod in &scaled.added {
                self.await_app(cluster, pod, deadline)?;
            }
            // Starts the new sidecars (and waits until they are ready); the cluster's other
            // proxies and its gateway get the new endpoints.
            self.apply_plan(options, &plan, &settings).await?;
            events.extend(scaled.added.iter().map(|pod| InventoryEvent::PodReady {
                cluster: cluster.to_owned(),
                service: service.to_owned(),
                pod: cluster_topology.ready_pod(pod),
            }));
        }
        Ok(events)
    }

    /// Creates a cluster declared `joinsLater`: its network, PKI (a foreign root's with
    /// `foreignRoot`), apps, gateway and sidecars, configured from the last applied plan plus the
    /// new cluster's own objects; returns once every proxy of it is ready.
    async fn join_cluster(
        &mut self,
        options: &LocalOptions,
        cluster: &str,
        progress: &mut dyn Progress,
    ) -> Result<Vec<InventoryEvent>, ProviderError> {
        let scenario_cluster =
            self.scenario.cluster(cluster).cloned().ok_or_else(|| {
                ProviderError::Unsupported(format!("joinCluster: the scenario has no cluster {cluster}"))
            })?;
        self.end_terminating_now(cluster, None)?;
        let (plan, settings) = self.applied_plan()?;
        let joining = self
            .topology
            .mk_joining_cluster(&self.scenario, cluster)
            .map_err(|error| failed(format!("laying out cluster {cluster}"))(error.into()))?;
        progress.step(&format!(
            "cluster {cluster} joins with {} pods{}",
            joining.pods.len(),
            if scenario_cluster.foreign_root {
                ", its intermediate signed by a foreign root"
            } else {
                ""
            }
        ));
        capacity::check_memory_now(capacity::Demand {
            pods: joining.pods.len(),
            gateways: 1,
        })
        .map_err(ProviderError::Unavailable)?;
        if scenario_cluster.foreign_root {
            // Its own root and intermediate, as when an operator generated a new root instead of
            // signing with the mesh's: workloads still trust the mesh root (its `root-cert.pem`).
            let foreign = pki::pki(&self.scenario.trust_domain, &[cluster], self.scenario.pki.key_algorithm)
                .map_err(|error| failed(format!("creating the foreign root of {cluster}"))(error.into()))?;
            self.foreign_roots.insert(cluster.to_owned(), foreign);
        }
        self.topology.clusters.push(joining.clone());
        self.network
            .as_mut()
            .ok_or_else(|| ProviderError::Unavailable("the local network is gone".to_owned()))?
            .add_cluster(&cluster_network(&joining))
            .map_err(|error| failed(format!("creating the network of cluster {cluster}"))(error.into()))?;
        for pod in &joining.pods {
            self.create_workload_files(options, cluster, pod)?;
            self.start_app(options, cluster, pod)?;
        }
        let deadline = Instant::now() + APP_READY_TIMEOUT;
        for pod in &joining.pods {
            self.await_app(cluster, pod, deadline)?;
        }
        let inventory = joining.inventory(scenario_cluster.istio_version.value);
        let mut with_joined = plan;
        let mut live = self.live_inventory(&with_joined);
        live.clusters.insert(cluster.to_owned(), inventory.clone());
        let own = crate::plan::plan(&self.scenario, &live)
            .clusters
            .into_iter()
            .find(|planned| planned.cluster == cluster)
            .ok_or_else(|| ProviderError::Unavailable(format!("the plan has no objects for {cluster}")))?;
        with_joined.clusters.push(own);
        self.apply_plan(options, &with_joined, &settings).await?;
        self.applied = Some((with_joined, settings));
        Ok(vec![InventoryEvent::ClusterJoined {
            cluster: cluster.to_owned(),
            inventory,
        }])
    }

    /// Removes a cluster from the mesh: it leaves the topology and the applied plan at once (the
    /// ClusterLeft event lets the engine push the re-planned federation without it), while its
    /// pods and gateway keep serving for their drain; then every process of it is ended on
    /// purpose and its namespaces, bridge and files deleted ([`super::termination`]).
    async fn leave_cluster(
        &mut self,
        options: &LocalOptions,
        cluster: &str,
        progress: &mut dyn Progress,
    ) -> Result<Vec<InventoryEvent>, ProviderError> {
        let leaving = self.cluster(cluster)?.clone();
        progress.step(&format!(
            "cluster {cluster} leaves with {} pods (they drain for {} ms)",
            leaving.pods.len(),
            super::TERMINATION_DRAIN.as_millis()
        ));
        self.topology.clusters.retain(|known| known.name != cluster);
        self.foreign_roots.remove(cluster);
        if let Some((plan, _)) = self.applied.as_mut() {
            plan.clusters.retain(|planned| planned.cluster != cluster);
        }
        let pods = leaving
            .pods
            .iter()
            .map(|pod| pod.name.clone())
            .chain([GATEWAY_POD.to_owned()])
            .collect();
        self.start_termination(cluster, pods, true, vec![options.run_dir.join(cluster)])
            .await;
        Ok(vec![InventoryEvent::ClusterLeft {
            cluster: cluster.to_owned(),
        }])
    }

    /// The last applied plan, for the clusters the world has now.
    fn applied_plan(&self) -> Result<(Plan, PhaseSettings), ProviderError> {
        let (mut plan, settings) = self
            .applied
            .clone()
            .ok_or_else(|| ProviderError::Unavailable("no plan was applied before the membership change".to_owned()))?;
        plan.clusters
            .retain(|planned| self.topology.cluster(&planned.cluster).is_some());
        Ok((plan, settings))
    }

    /// The world's inventory now: every cluster's pods and gateway, at the Istio version of the
    /// plan it runs.
    fn live_inventory(&self, plan: &Plan) -> crate::inventory::Inventory {
        let clusters = self
            .topology
            .clusters
            .iter()
            .map(|cluster| {
                let version = plan
                    .clusters
                    .iter()
                    .find(|planned| planned.cluster == cluster.name)
                    .map(|planned| planned.install.istio_version)
                    .or_else(|| self.scenario.cluster(&cluster.name).map(|c| c.istio_version.value))
                    .unwrap_or(crate::scenario::DEFAULT_ISTIO_VERSION);
                (cluster.name.clone(), cluster.inventory(version))
            })
            .collect();
        crate::inventory::Inventory { clusters }
    }

    /// A new pod of a running cluster: its namespace and veth, certificate and app (not awaited).
    /// Creates `pods` in `cluster`: their network in one go ([`super::network::Network::add_pods`]),
    /// then each one's certificate and app.
    fn create_pods(
        &mut self,
        options: &LocalOptions,
        cluster: &str,
        pods: &[PodTopology],
    ) -> Result<(), ProviderError> {
        if pods.is_empty() {
            return Ok(());
        }
        let addresses: Vec<_> = pods.iter().map(pod_address).collect();
        self.network
            .as_mut()
            .ok_or_else(|| ProviderError::Unavailable("the local network is gone".to_owned()))?
            .add_pods(cluster, &addresses)
            .map_err(|error| {
                let names: Vec<&str> = pods.iter().map(|pod| pod.name.as_str()).collect();
                failed(format!(
                    "creating the network of pods {} in {cluster}",
                    names.join(", ")
                ))(error.into())
            })?;
        for pod in pods {
            self.create_workload_files(options, cluster, pod)?;
            self.start_app(options, cluster, pod)?;
        }
        Ok(())
    }

    /// Writes the pod's workload certificate, from its cluster's intermediate (the foreign
    /// root's for a cluster that joined with one, still trusting the mesh root).
    fn create_workload_files(
        &self,
        options: &LocalOptions,
        cluster: &str,
        pod: &PodTopology,
    ) -> Result<(), ProviderError> {
        let issuer: &MeshPki = self.foreign_roots.get(cluster).unwrap_or(&self.pki);
        let mut cert = issuer
            .workload_cert(cluster, &pod.namespace, &pod.service_account)
            .map_err(|error| failed(format!("issuing the certificate of {}", pod.name))(error.into()))?;
        cert.root_cert_pem = self.pki.root_cert_pem().to_owned();
        let dir = pod_dir(&options.run_dir, cluster, &pod.name).join("certs");
        pki::create_workload_files(&cert, &dir)
            .map_err(|error| failed(format!("writing certificates of {}", pod.name))(error.into()))
    }
}

/// Removes `dir` and what it holds (never following a symlink below it); a missing `dir` is fine.
pub(super) fn remove_dir_if_present(dir: &std::path::Path) -> Result<(), ProviderError> {
    let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
        return Err(ProviderError::Unavailable(format!(
            "{} has no parent directory",
            dir.display()
        )));
    };
    match crate::atomic_files::Dir::open(parent) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        opened => opened.and_then(|parent| parent.remove_tree(name)),
    }
    .map_err(|error| failed(format!("removing {}", dir.display()))(error.into()))
}
