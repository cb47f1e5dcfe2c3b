//! What the `kind` provider and the Kubernetes side it hands its clusters to agree on, below both:
//! the [`KubeSide`] seam and the [`KindCluster`]s it receives, the changes and capabilities of a
//! world driven through the API server, the name of the federation gateway meshfed installs, and
//! the sidecars' access-log format the install sets and the measurements parse. `kind` is generic
//! over [`KubeSide`]; the `kubeconfig` provider implements it; `run` pairs them, so neither
//! provider imports the other.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use crate::change::ChangeKind;
use crate::provider::capabilities::{Action, Capabilities, FaultKind};
use crate::provider::{Provider, ProviderError};
use crate::scenario::FederationMode;

/// What a world driven through the Kubernetes API supports (the `kubeconfig` provider; `kind`
/// adds the gateway it installed): per-phase endpoint weights (re-applied ServiceEntries) and a
/// new connection per request (the client's side; the sidecars follow the plan's
/// DestinationRule). Of the faults only a phase-long `scale` of a Deployment meshfed created
/// (made before the phase's traffic and undone after it): a foreign client certificate needs a
/// pod with its own certificate files, which real Istio does not let meshfed swap. Timed
/// actions: the changes [`KUBECONFIG_CHANGES`] (`scale`, `kill`), made while the client runs in
/// the background.
pub const KUBERNETES_SIDE_CAPABILITIES: Capabilities = Capabilities {
    provider: "kubeconfig",
    faults: &[FaultKind::Scale],
    actions: &[Action::ChangeEndpointWeights, Action::NewConnectionPerRequest],
    changes: KUBECONFIG_CHANGES,
    federation_modes: &[FederationMode::Serviceentry],
};

/// The changes the `kubeconfig` provider makes (and `kind`, which adds the gateway's).
pub const KUBECONFIG_CHANGES: &[ChangeKind] = &[ChangeKind::Scale, ChangeKind::Kill];
/// The changes on clusters meshfed created (`kind`): also stopping and starting the gateway.
pub const KIND_CHANGES: &[ChangeKind] = &[
    ChangeKind::Scale,
    ChangeKind::Kill,
    ChangeKind::StopGateway,
    ChangeKind::StartGateway,
];

/// Name of the gateway whose LoadBalancer address other clusters use.
pub fn federation_gateway(mode: FederationMode) -> &'static str {
    match mode {
        FederationMode::Serviceentry => "istio-ingressgateway",
        FederationMode::EndpointDiscovery => "istio-eastwestgateway",
    }
}

/// The sidecars' access-log format: the one the Kubernetes side's measurements parse (caller
/// identity, the connection's remote address and the sidecar's address toward the app), so kind
/// and kubeconfig read the same evidence. It is the format meshfed needs in the mesh config
/// (`meshConfig.accessLogFormat`, with `accessLogEncoding: JSON` and `accessLogFile:
/// /dev/stdout`). The `kind` provider installs Istio with it; on `kubeconfig` clusters the user's
/// mesh config must carry it (meshfed checks).
pub const ACCESS_LOG_FORMAT: &str = r#"{"meshfed":"1","start":"%START_TIME%","upstream_cluster":"%UPSTREAM_CLUSTER_RAW%","peer":"%DOWNSTREAM_PEER_URI_SAN%","downstream":"%DOWNSTREAM_REMOTE_ADDRESS%","upstream_local":"%UPSTREAM_LOCAL_ADDRESS%","request_id":"%REQ(X-REQUEST-ID)%"}"#;

/// One kind cluster of the world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindCluster {
    /// The scenario's cluster name (`cluster1`).
    pub cluster: String,
    /// kind's cluster name (`meshfed-cluster1`).
    pub kind_name: String,
    /// A kubeconfig for it (written by `kind export kubeconfig`, never the user's own).
    pub kubeconfig: PathBuf,
    /// Its context in that kubeconfig (`kind-meshfed-cluster1`).
    pub context: String,
    /// The LoadBalancer address of its federation gateway, once assigned.
    pub gateway_address: Option<Ipv4Addr>,
}

/// The Kubernetes API half of the `kind` provider: what `kind` needs done through the API server
/// while it builds the world, plus everything after (workloads, plan, traffic, measurements) via
/// [`Provider`]. Implemented by the `kubeconfig` provider's client; tests use a recording fake.
pub trait KubeSide: Provider {
    /// Fails when this build cannot talk to Kubernetes (checked before anything is created).
    fn check_available(&self) -> Result<(), ProviderError>;

    /// Server-side applies `yaml` (one or more documents) to `cluster`; `what` names it in errors.
    fn apply_manifests(
        &mut self,
        cluster: &KindCluster,
        what: &str,
        yaml: &str,
    ) -> impl std::future::Future<Output = Result<(), ProviderError>> + Send;

    /// [`KubeSide::apply_manifests`] for objects that admission `webhooks` validate: while the
    /// API server cannot call one of them yet, the apply is tried again, a bounded number of times
    /// ([`crate::provider::kube_api::webhooks`]).
    fn apply_manifests_when_webhooks_serve(
        &mut self,
        cluster: &KindCluster,
        what: &str,
        yaml: &str,
        webhooks: &[&str],
    ) -> impl std::future::Future<Output = Result<(), ProviderError>> + Send;

    /// Waits until every pod with `labels` (`app=metallb`) in `namespace` is Ready.
    fn await_pods_ready(
        &mut self,
        cluster: &KindCluster,
        namespace: &str,
        labels: &str,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<(), ProviderError>> + Send;

    /// Waits until the LoadBalancer Service has an ingress IP and returns it.
    fn await_load_balancer_address(
        &mut self,
        cluster: &KindCluster,
        namespace: &str,
        service: &str,
        deadline: Duration,
    ) -> impl std::future::Future<Output = Result<Ipv4Addr, ProviderError>> + Send;

    /// Hands over the finished clusters and the image the workloads run; `create_world` follows.
    fn attach(&mut self, clusters: &[KindCluster], workload_image: &str);
}
