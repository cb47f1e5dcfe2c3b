//! The `kind` provider: one kind cluster per scenario cluster (Docker), MetalLB for gateway
//! addresses, real Istio at each cluster's version, meshfed's workload image loaded into every
//! node; the Kubernetes API side (applying manifests, waiting, workloads, traffic) is behind the
//! [`KubeSide`] seam (in the Kubernetes API layer, [`super::kube_api::kind_seam`]), which the
//! `kubeconfig` provider fills; `run` pairs the two, so neither provider imports the other.
//!
//! Ownership: every kind cluster meshfed creates is named `meshfed-<cluster>`
//! ([`config::CLUSTER_PREFIX`]); [`down`] deletes exactly the clusters in `kind get clusters` with
//! that prefix. kind puts no user labels on its node containers, so the name is the label (kind
//! itself finds its clusters by the `io.x-k8s.kind.cluster` container label, which is what
//! `kind get clusters` lists). Everything else meshfed adds (MetalLB, Istio, workloads) lives
//! inside those clusters and goes with them; nothing is created on the host besides the clusters,
//! the workload image (Docker label `io.meshfed.managed-by=meshfed`, removed by `down` too) and
//! files in the run directory (removed at teardown) and the cache.
//!
//! LoadBalancer addresses come from MetalLB, as in Istio's CI, not cloud-provider-kind: it lives
//! inside each cluster (deleted with it, no privileged host container with the Docker socket to
//! clean up), and its pools are a pure function of `docker network inspect kind`
//! ([`addresses`]), so every gateway's address is known in advance and tested. Clusters reach each
//! other only through those addresses: every node gets an `unreachable` route for each other
//! cluster's pod and service network ([`isolation`]), so the isolation probe reads as on `local`
//! (Istio's CI instead routes between clusters on the same network).

pub mod addresses;
pub mod config;
pub mod download;
pub mod dry_run;
pub mod install;
pub mod isolation;
pub mod istioctl;
pub mod tools;
pub mod workload_image;
mod world;

use std::path::PathBuf;

use crate::change::{ChangeKind, WorldChange};
use crate::inventory::Inventory;
use crate::inventory::InventoryEvent;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::record::RequestRecord;
use crate::scenario::Scenario;

use super::capabilities::{Capabilities, FaultKind};
use super::kube_api::kind_seam::KUBERNETES_SIDE_CAPABILITIES;
use super::{IsolationProbe, PhaseSettings, Provider, ProviderError, ProviderInfo, TlsFailures, Traffic};

/// What `kind` supports: the Kubernetes side's abilities ([`KUBERNETES_SIDE_CAPABILITIES`], the
/// `kubeconfig` provider's) (kind = create clusters + the
/// kubeconfig path), plus stopping and starting the east-west gateway meshfed installed, as a
/// phase-long `gatewayDown` and as timed `stopGateway`/`startGateway` actions, and upgrading the
/// Istio meshfed installed (a timed `upgrade` action or a phase's `upgrade:`, which is the same
/// change at 0 ms): istioctl of the new version installs over the running one, and the action's
/// started and completed times are when that install started and when istioctl reported it done.
pub const KIND_CAPABILITIES: Capabilities = Capabilities {
    provider: "kind",
    faults: &[FaultKind::Scale, FaultKind::GatewayDown],
    changes: KIND_RUN_CHANGES,
    ..KUBERNETES_SIDE_CAPABILITIES
};

/// The changes of [`KIND_CAPABILITIES`]: the Kubernetes side's
/// ([`KIND_CHANGES`](super::kube_api::kind_seam::KIND_CHANGES)) and the upgrade,
/// which the kind provider makes itself.
const KIND_RUN_CHANGES: &[ChangeKind] = &[
    ChangeKind::Scale,
    ChangeKind::Kill,
    ChangeKind::StopGateway,
    ChangeKind::StartGateway,
    ChangeKind::Upgrade,
];

pub use tools::{Invocation, ToolError, Tools};

pub use crate::provider::kube_api::kind_seam::{KindCluster, KubeSide};

/// How the `kind` provider runs.
pub struct KindOptions {
    /// The external programs.
    pub tools: Tools,
    /// meshfed's cache (istioctl per version, MetalLB's manifest).
    pub cache_dir: PathBuf,
    /// Base URL of Istio releases ([`istioctl::releases_url`]).
    pub releases_url: String,
    /// Kind configs, kubeconfigs and install files of this run; removed at teardown.
    pub run_dir: PathBuf,
    /// Keep existing `meshfed-*` clusters (and leave them at teardown) instead of creating them.
    pub reuse: bool,
    /// The workload image: built from this binary (normally the running meshfed) ...
    pub workload_binary: PathBuf,
    /// ... unless an image is named here (`MESHFED_WORKLOAD_IMAGE`), which the nodes pull.
    pub workload_image: Option<String>,
    /// Where progress lines go.
    pub progress: Box<dyn FnMut(&str) + Send>,
}

/// The `kind` provider: kind clusters built by [`world`], the rest done by `K`.
pub struct KindProvider<K: KubeSide> {
    options: KindOptions,
    kube: K,
    world: world::KindWorld,
}

impl<K: KubeSide> KindProvider<K> {
    /// A provider that has created nothing yet.
    pub fn new(options: KindOptions, kube: K) -> Self {
        KindProvider {
            options,
            kube,
            world: world::KindWorld::default(),
        }
    }

    /// The Kubernetes half (for tests that inspect their fake).
    pub fn kube(&self) -> &K {
        &self.kube
    }

    /// The clusters of the world so far.
    pub fn clusters(&self) -> &[KindCluster] {
        &self.world.clusters
    }
}

impl<K: KubeSide> Provider for KindProvider<K> {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: "kind".to_owned(),
            emulates: None,
            mode: format!(
                "{}; node image {}; MetalLB {}",
                self.world.kind_version.as_deref().unwrap_or("kind"),
                crate::plan::support_matrix::KIND.node_image,
                install::METALLB_VERSION
            ),
            proxy: self.world.istio_versions(),
        }
    }

    fn capabilities(&self) -> Capabilities {
        KIND_CAPABILITIES
    }

    async fn create_world(
        &mut self,
        scenario: &Scenario,
        progress: &mut dyn Progress,
    ) -> Result<Inventory, ProviderError> {
        world::create_world(&mut self.options, &mut self.kube, &mut self.world, scenario).await?;
        self.kube.create_world(scenario, progress).await
    }

    async fn apply_plan(
        &mut self,
        plan: &Plan,
        settings: &PhaseSettings,
        progress: &mut dyn Progress,
    ) -> Result<(), ProviderError> {
        self.kube.apply_plan(plan, settings, progress).await
    }

    async fn check_isolation(&mut self) -> Result<Vec<IsolationProbe>, ProviderError> {
        self.kube.check_isolation().await
    }

    async fn send_traffic(
        &mut self,
        traffic: &Traffic,
        progress: &mut dyn Progress,
    ) -> Result<Vec<RequestRecord>, ProviderError> {
        self.kube.send_traffic(traffic, progress).await
    }

    /// Background traffic is the Kubernetes side's (the nodes share this host's clock, so the
    /// records' epoch and the engine's offsets agree).
    async fn start_traffic(&mut self, traffic: &Traffic, progress: &mut dyn Progress) -> Result<(), ProviderError> {
        self.kube.start_traffic(traffic, progress).await
    }

    async fn await_traffic(
        &mut self,
        until: std::time::Instant,
        progress: &mut dyn Progress,
    ) -> Result<Option<Vec<RequestRecord>>, ProviderError> {
        self.kube.await_traffic(until, progress).await
    }

    async fn tls_failures(&mut self, service: &str) -> Result<TlsFailures, ProviderError> {
        self.kube.tls_failures(service).await
    }

    /// An upgrade is istioctl's ([`world::upgrade_in_place`], on its own thread while the traffic
    /// runs in its pod); every other change goes through the Kubernetes side, which knows the
    /// clusters are meshfed's (attached) and so may also stop and start their gateways.
    async fn change_world(
        &mut self,
        change: &WorldChange,
        progress: &mut dyn Progress,
    ) -> Result<Vec<InventoryEvent>, ProviderError> {
        let WorldChange::Upgrade { cluster, to } = change else {
            return self.kube.change_world(change, progress).await;
        };
        let upgrade = world::prepare_upgrade(&self.options, &self.world, cluster, *to)?;
        let tools = self.options.tools.clone();
        let upgraded = tokio::task::spawn_blocking(move || world::upgrade_in_place(&tools, &upgrade))
            .await
            .map_err(|error| ProviderError::failed("the Istio upgrade thread failed", error))??;
        progress.step(&upgraded);
        self.world.versions.insert(cluster.clone(), *to);
        Ok(vec![InventoryEvent::IstioVersion {
            cluster: cluster.clone(),
            version: *to,
        }])
    }

    async fn check_alive(&mut self) -> Result<(), ProviderError> {
        self.kube.check_alive().await
    }

    async fn stuck(&mut self) -> Vec<String> {
        self.kube.stuck().await
    }

    async fn teardown(&mut self, progress: &mut dyn Progress) -> Result<(), ProviderError> {
        let kube = if self.options.reuse && !self.world.clusters.is_empty() {
            // Kept clusters must not keep this run's workloads.
            self.kube.teardown(progress).await
        } else {
            Ok(())
        };
        let clusters = world::teardown(&mut self.options, &mut self.world);
        kube.and(clusters)
    }
}

/// `meshfed down` for kind: deletes every kind cluster whose name has meshfed's prefix and every
/// Docker image with meshfed's label ([`workload_image::IMAGE_LABEL`]), and the run directories of
/// meshfed processes that no longer exist, nothing else; returns
/// what it deleted (`kind cluster meshfed-cluster1`, `image meshfed-workload:…`).
pub fn down(tools: &Tools, progress: &mut dyn Progress) -> Result<Vec<String>, ProviderError> {
    world::down(tools, progress)
}

/// The run directory a kind run of this process uses under `temp_dir` (removed at teardown, and by
/// [`down`] once the process is gone).
pub fn run_dir(temp_dir: &std::path::Path) -> PathBuf {
    temp_dir.join(world::run_dir_name(std::process::id()))
}
