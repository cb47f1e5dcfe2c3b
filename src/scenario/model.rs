//! The scenario model: what meshfed builds (clusters, services), how it federates them, and the phases
//! of traffic it sends with their faults, timed actions and expectations, as read from YAML.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use super::{DEFAULT_ISTIO_VERSION, Ipv4Cidr, IstioVersion, resilience};

/// A whole scenario: clusters, services, how they are federated, and the traffic phases to run.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    /// Short name, used in reports and as a label on generated objects.
    pub name: String,
    /// One line saying what the scenario shows.
    #[serde(default)]
    pub description: Option<String>,
    /// SPIFFE trust domain of the mesh.
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Key algorithm of every certificate meshfed makes.
    #[serde(default)]
    pub pki: PkiSettings,
    /// The clusters of the mesh (at least one).
    pub clusters: Vec<Cluster>,
    /// The services and where their pods run.
    pub services: Vec<Service>,
    /// How the clusters are federated.
    #[serde(default)]
    pub federation: Federation,
    /// Traffic phases, run in order.
    #[serde(default)]
    pub phases: Vec<Phase>,
}

/// PKI settings.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PkiSettings {
    /// Key algorithm for the root, intermediates and workloads.
    #[serde(default)]
    pub key_algorithm: crate::pki::KeyAlgorithm,
}

/// One Kubernetes cluster.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Cluster {
    /// Cluster name (a DNS label): `cluster1`.
    pub name: Spanned<String>,
    /// Topology region of the cluster's nodes (`topology.kubernetes.io/region`).
    #[serde(default = "default_region")]
    pub region: String,
    /// Topology zone of the cluster's nodes (`topology.kubernetes.io/zone`).
    #[serde(default = "default_zone")]
    pub zone: String,
    /// Istio network name; clusters on different networks reach each other only through gateways.
    #[serde(default)]
    pub network: Option<String>,
    /// Istio version installed by the real providers; it also picks the Istio API generation the
    /// plan is written for (`MeshPolicy` before 1.5, `v1` networking APIs from 1.22).
    #[serde(default = "default_istio_version")]
    pub istio_version: Spanned<IstioVersion>,
    /// Pod network of the cluster.
    pub pod_cidr: Spanned<Ipv4Cidr>,
    /// Service (cluster IP) network of the cluster.
    pub service_cidr: Spanned<Ipv4Cidr>,
    /// kubeconfig context for the `kubeconfig` provider (default: `kind-<name>` for `kind`).
    #[serde(default)]
    pub context: Option<String>,
    /// Envoy worker threads of every proxy in the cluster (Istio's `proxy.concurrency`; 1 to
    /// [`MAX_PROXY_CONCURRENCY`]). Default [`DEFAULT_PROXY_CONCURRENCY`], Istio's default.
    #[serde(default)]
    pub proxy_concurrency: Option<Spanned<u32>>,
    /// This cluster's mesh-wide mTLS mode, instead of `federation.mtls` (each cluster has its own
    /// root-namespace PeerAuthentication).
    #[serde(default)]
    pub mtls: Option<MtlsMode>,
    /// Zones the cluster's pods run in, when more than `zone` (the gateway's zone): each service's
    /// replicas go round-robin over this list (replica `i` in `zones[i % len]`). Empty: every pod
    /// in `zone`. At most [`MAX_ZONES_PER_CLUSTER`], distinct label values.
    #[serde(default)]
    pub zones: Vec<Spanned<String>>,
    /// The cluster is not part of the world at the start: a `joinCluster` action creates it and
    /// it joins the mesh then.
    #[serde(default)]
    pub joins_later: bool,
    /// The cluster's intermediate CA is signed by a root of its own instead of the mesh root (a
    /// cluster joining with the wrong root).
    #[serde(default)]
    pub foreign_root: bool,
}

/// Most zones a cluster's pods may be spread over.
pub const MAX_ZONES_PER_CLUSTER: usize = 8;

/// Envoy worker threads per proxy when a cluster does not say (Istio's default: `values.yaml`
/// `global.proxy.resources` → `pilot-agent` concurrency 2).
pub const DEFAULT_PROXY_CONCURRENCY: u32 = 2;
/// Most Envoy worker threads a scenario may ask for.
pub const MAX_PROXY_CONCURRENCY: u32 = 64;

impl Cluster {
    /// Zone of replica `index` of any service in this cluster: round-robin over `zones`, or
    /// `zone` when the cluster lists none.
    pub fn zone_of_replica(&self, index: u32) -> &str {
        if self.zones.is_empty() {
            return &self.zone;
        }
        let slot = usize::try_from(index).unwrap_or(usize::MAX) % self.zones.len();
        &self.zones[slot].value
    }

    /// Envoy worker threads of the cluster's proxies.
    pub fn proxy_concurrency(&self) -> u32 {
        self.proxy_concurrency
            .as_ref()
            .map_or(DEFAULT_PROXY_CONCURRENCY, |count| count.value)
    }
}

/// One service: a Kubernetes Service plus the pods behind it in each cluster.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    /// Service name (a DNS label).
    pub name: Spanned<String>,
    /// Namespace of the service (a DNS label).
    pub namespace: Spanned<String>,
    /// Service account the pods run as: the `sa` in their SPIFFE identity. Default: the name.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Ports of the service (at least one).
    pub ports: Vec<ServicePort>,
    /// Ready pods per cluster name. A cluster not listed has no pods for this service.
    #[serde(default)]
    pub replicas: BTreeMap<String, Spanned<u32>>,
    /// Whether the pods run an Istio sidecar (default true). `false` puts the service outside the
    /// mesh: its namespace is labelled `istio-injection: disabled`, so every service of that
    /// namespace must say `sidecar: false` too. Such pods call services in plain text, straight to
    /// the local pods (kube-proxy), and receive plain text.
    #[serde(default)]
    pub sidecar: Option<Spanned<bool>>,
}

impl Service {
    /// The service account, defaulting to the service name.
    pub fn service_account(&self) -> &str {
        self.service_account.as_deref().unwrap_or(&self.name.value)
    }

    /// `name.namespace`, the form phases use to refer to the service.
    pub fn reference(&self) -> String {
        format!("{}.{}", self.name.value, self.namespace.value)
    }

    /// Whether the service's pods run a sidecar.
    pub fn has_sidecar(&self) -> bool {
        self.sidecar.as_ref().is_none_or(|sidecar| sidecar.value)
    }

    /// The service's fully qualified host name: `bar.ns2.svc.cluster.local`.
    pub fn host(&self) -> String {
        format!("{}.{}.svc.cluster.local", self.name.value, self.namespace.value)
    }

    /// Ready pods of this service in `cluster` (0 when the cluster is not listed).
    pub fn replicas_in(&self, cluster: &str) -> u32 {
        self.replicas.get(cluster).map_or(0, |count| count.value)
    }

    /// The declared port with this name or number.
    pub fn port(&self, port: &PortRef) -> Option<&ServicePort> {
        self.ports.iter().find(|candidate| match port {
            PortRef::Name(name) => candidate.name.value == *name,
            PortRef::Number(number) => candidate.number.value == *number,
        })
    }
}

/// A port of a service.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// Port name (`http`, `tcp`, ...), unique within the service.
    pub name: Spanned<String>,
    /// Port number (1–65535), unique within the service.
    pub number: Spanned<u16>,
    /// Application protocol.
    pub protocol: Protocol,
}

/// Application protocol of a port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 from the app; the sidecars speak HTTP/1.1 between them unless the plan has an
    /// `h2UpgradePolicy: UPGRADE` (Istio's `DO_NOT_UPGRADE` default).
    Http,
    /// HTTP/2 (`http2` in Istio): the sidecars speak HTTP/2 between them; the app still speaks
    /// HTTP/1.1 to its sidecar.
    Http2,
    /// Opaque TCP.
    Tcp,
}

impl Protocol {
    /// Istio's protocol name for the port (`HTTP`, `HTTP2`, `TCP`).
    pub fn istio_name(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Tcp => "TCP",
        }
    }

    /// Whether requests are proxied as HTTP (Istio's HTTP filter chain).
    pub fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Http2)
    }
}

/// How the clusters are federated.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Federation {
    /// `serviceentry` (the seed: ServiceEntries pointing at remote gateways) or
    /// `endpoint-discovery` (Istio's multi-primary on different networks). Located, so a
    /// provider that cannot run a mode points at it.
    #[serde(default = "default_mode")]
    pub mode: Spanned<FederationMode>,
    /// `equal` (the seed: every remote gateway endpoint weighs as one pod) or `ready-pods`
    /// (gateway endpoint weight = the remote cluster's ready pods).
    #[serde(default)]
    pub endpoint_weights: EndpointWeights,
    /// Whether gateway endpoints carry the remote cluster's locality.
    #[serde(default)]
    pub locality: bool,
    /// Mesh-wide mTLS mode.
    #[serde(default)]
    pub mtls: MtlsMode,
    /// Whether the plan has the seed's `*.local` DestinationRule with `tls: ISTIO_MUTUAL` (default
    /// true). Without it, sidecars originate mTLS only where the Istio version has auto-mTLS (on by default from 1.5).
    #[serde(default = "default_true")]
    pub destination_rule: bool,
    /// `trafficPolicy.loadBalancer.simple` for every service; absent = the version's default
    /// (ROUND_ROBIN before Istio 1.14, LEAST_REQUEST from 1.14).
    #[serde(default)]
    pub load_balancer: Option<LoadBalancer>,
    /// `trafficPolicy.connectionPool.http.h2UpgradePolicy` for every service; absent = Istio's
    /// mesh default DO_NOT_UPGRADE (HTTP/1.1 between sidecars for `http` ports).
    #[serde(default)]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// `trafficPolicy.outlierDetection` in the DestinationRule: `true` (Istio's documented
    /// example values) or the fields. It also turns on Istio's locality failover priorities
    /// (same zone, same region, other regions).
    #[serde(default, deserialize_with = "resilience::deserialize_outlier_detection")]
    pub outlier_detection: Option<resilience::OutlierDetection>,
    /// `trafficPolicy.loadBalancer.localityLbSetting` (its `failover` rules).
    #[serde(default)]
    pub locality_lb_setting: Option<Spanned<resilience::LocalityLbSetting>>,
    /// `http[].retries` of a VirtualService per HTTP service; absent = Istio's default retries.
    #[serde(default)]
    pub retries: Option<resilience::Retries>,
    /// `http[].timeout` of that VirtualService; absent = none (Istio's default).
    #[serde(default)]
    pub timeout: Option<resilience::IstioDuration>,
    /// Whether sidecars resolve ServiceEntry hosts with Istio's DNS proxy
    /// (`ISTIO_META_DNS_CAPTURE`, Istio 1.8+): a Service is then replicated only into the
    /// clusters that run the service, and elsewhere the ServiceEntry alone carries the host, with
    /// an address the proxy answers with. This keeps a gateway from seeing a Service and a
    /// ServiceEntry for the same host where the service has no pods, which takes its 15443
    /// listener down on 1.8.6/1.9.5-1.21 (docs/fidelity.md row 2d). Default false: the seed's
    /// replication into every cluster.
    #[serde(default)]
    pub dns_proxying: Option<Spanned<bool>>,
}

impl Federation {
    /// Whether `dnsProxying: true` was given.
    pub fn dns_proxying(&self) -> bool {
        self.dns_proxying.as_ref().is_some_and(|flag| flag.value)
    }
}

impl Default for Federation {
    fn default() -> Self {
        Federation {
            mode: default_mode(),
            endpoint_weights: EndpointWeights::default(),
            locality: false,
            mtls: MtlsMode::default(),
            destination_rule: true,
            load_balancer: None,
            h2_upgrade_policy: None,
            outlier_detection: None,
            locality_lb_setting: None,
            retries: None,
            timeout: None,
            dns_proxying: None,
        }
    }
}

/// `serviceentry`, at no position (the key is absent).
fn default_mode() -> Spanned<FederationMode> {
    Spanned::new(
        FederationMode::default(),
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

fn default_true() -> bool {
    true
}

/// `trafficPolicy.loadBalancer.simple`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum LoadBalancer {
    /// Each endpoint in turn.
    #[serde(rename = "ROUND_ROBIN")]
    RoundRobin,
    /// Power of two choices on active requests (Istio's default from 1.14).
    #[serde(rename = "LEAST_REQUEST")]
    LeastRequest,
    /// A random endpoint.
    #[serde(rename = "RANDOM")]
    Random,
}

impl LoadBalancer {
    /// The policy as Istio spells it.
    pub fn istio_name(self) -> &'static str {
        match self {
            LoadBalancer::RoundRobin => "ROUND_ROBIN",
            LoadBalancer::LeastRequest => "LEAST_REQUEST",
            LoadBalancer::Random => "RANDOM",
        }
    }
}

/// `trafficPolicy.connectionPool.http.h2UpgradePolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum H2UpgradePolicy {
    /// HTTP/1.1 connections to the upstream sidecar (Istio's mesh default).
    #[serde(rename = "DO_NOT_UPGRADE")]
    DoNotUpgrade,
    /// HTTP/2 to the upstream sidecar: one multiplexed connection per worker.
    #[serde(rename = "UPGRADE")]
    Upgrade,
}

impl H2UpgradePolicy {
    /// The policy as Istio spells it.
    pub fn istio_name(self) -> &'static str {
        match self {
            H2UpgradePolicy::DoNotUpgrade => "DO_NOT_UPGRADE",
            H2UpgradePolicy::Upgrade => "UPGRADE",
        }
    }
}

/// Federation mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FederationMode {
    /// The seed's procedure: replicated services plus ServiceEntries for remote gateways.
    #[default]
    Serviceentry,
    /// Multi-primary on different networks: remote secrets and an east-west gateway.
    EndpointDiscovery,
}

impl FederationMode {
    /// The scenario's spelling.
    pub fn name(self) -> &'static str {
        match self {
            FederationMode::Serviceentry => "serviceentry",
            FederationMode::EndpointDiscovery => "endpoint-discovery",
        }
    }
}

/// How remote gateway endpoints are weighted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointWeights {
    /// No weight: a remote gateway counts as one endpoint (the seed, and its skew).
    #[default]
    Equal,
    /// Weight = number of ready pods behind the remote gateway.
    ReadyPods,
}

/// Mesh-wide mTLS mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum MtlsMode {
    /// Accept mTLS and plain text (the seed).
    #[default]
    #[serde(rename = "PERMISSIVE")]
    Permissive,
    /// Accept mTLS only.
    #[serde(rename = "STRICT")]
    Strict,
}

impl MtlsMode {
    /// The mode as Istio spells it.
    pub fn istio_name(self) -> &'static str {
        match self {
            MtlsMode::Permissive => "PERMISSIVE",
            MtlsMode::Strict => "STRICT",
        }
    }
}

/// One traffic phase: requests from a service in one cluster to a service port.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Phase {
    /// Phase name, unique in the scenario.
    pub name: Spanned<String>,
    /// Who sends.
    pub from: PhaseSource,
    /// Where to.
    pub to: PhaseTarget,
    /// Number of requests.
    #[serde(default = "default_requests")]
    pub requests: Spanned<u64>,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: Spanned<u32>,
    /// Whether the client reuses connections or opens one per request.
    #[serde(default)]
    pub connections: ConnectionPolicy,
    /// Overrides `federation.endpointWeights` for this phase: the world is re-planned and the new
    /// weights pushed to the running proxies before the phase starts.
    #[serde(default)]
    pub endpoint_weights: Option<EndpointWeights>,
    /// Overrides `federation.loadBalancer` for this phase (re-planned like `endpointWeights`).
    #[serde(default)]
    pub load_balancer: Option<LoadBalancer>,
    /// Overrides `federation.h2UpgradePolicy` for this phase (re-planned like `endpointWeights`).
    #[serde(default)]
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Faults applied for the duration of the phase.
    #[serde(default)]
    pub faults: Vec<Spanned<Fault>>,
    /// An Istio upgrade done while the phase's traffic runs (providers with real Istio only).
    #[serde(default)]
    pub upgrade: Option<Spanned<Upgrade>>,
    /// Requests started per second, spread evenly (`ratePerSecond`); required when the phase has
    /// `actions`, so the traffic spans a known time: `requests / ratePerSecond` seconds.
    #[serde(default)]
    pub rate_per_second: Option<Spanned<u32>>,
    /// Width of the time buckets of the phase's timeline and per-bucket expectations
    /// (`bucketMillis`, 10 to 60000; default [`DEFAULT_BUCKET_MILLIS`]).
    #[serde(default)]
    pub bucket_millis: Option<Spanned<u64>>,
    /// Changes to the world made at offsets from the start of the phase's traffic, in `atMillis`
    /// order, while requests flow.
    #[serde(default)]
    pub actions: Vec<Spanned<PhaseAction>>,
    /// What must hold at the end of the phase.
    #[serde(default)]
    pub expect: Expectations,
    /// How long the phase may take, in seconds, instead of the deadline derived from its request
    /// count (see docs/scenario.md); 1 to 86400.
    #[serde(default)]
    pub timeout_seconds: Option<Spanned<u64>>,
}

/// Time-bucket width when a phase does not set `bucketMillis`.
pub const DEFAULT_BUCKET_MILLIS: u64 = 100;

impl Phase {
    /// Width of the phase's time buckets in milliseconds.
    pub fn bucket_millis(&self) -> u64 {
        self.bucket_millis
            .as_ref()
            .map_or(DEFAULT_BUCKET_MILLIS, |millis| millis.value)
    }

    /// How long the phase's traffic lasts when paced: `requests / ratePerSecond`, in milliseconds.
    pub fn traffic_millis(&self) -> Option<u64> {
        let rate = u64::from(self.rate_per_second.as_ref()?.value);
        (rate > 0).then(|| self.requests.value.saturating_mul(1000) / rate)
    }

    /// When the paced phase's last request starts, in whole milliseconds from the start of its
    /// traffic: request `n` (from 0) starts at `n × 1000 / ratePerSecond` ms, so the last one at
    /// `(requests − 1) × 1000 / ratePerSecond`. An action later than this may find the traffic
    /// already over (it would not be taken), so validation refuses it.
    pub fn last_request_start_millis(&self) -> Option<u64> {
        let rate = u64::from(self.rate_per_second.as_ref()?.value);
        (rate > 0).then(|| self.requests.value.saturating_sub(1).saturating_mul(1000) / rate)
    }
}

/// One timed action of a phase: `{ atMillis: 1000, name: gw-down, stopGateway: { cluster: c2 } }`.
/// Exactly one change key is set (validation refuses none or two).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhaseAction {
    /// When, in milliseconds from the start of the phase's traffic.
    pub at_millis: Spanned<u64>,
    /// A label for expectations to refer to (`recovery.after`).
    #[serde(default)]
    pub name: Option<Spanned<String>>,
    /// `stopGateway: { cluster }`.
    #[serde(default)]
    pub stop_gateway: Option<Spanned<ClusterChange>>,
    /// `startGateway: { cluster }`.
    #[serde(default)]
    pub start_gateway: Option<Spanned<ClusterChange>>,
    /// `partition: { cluster }`.
    #[serde(default)]
    pub partition: Option<Spanned<ClusterChange>>,
    /// `heal: { cluster }`.
    #[serde(default)]
    pub heal: Option<Spanned<ClusterChange>>,
    /// `scale: { cluster, service, replicas }`.
    #[serde(default)]
    pub scale: Option<Spanned<ScaleChange>>,
    /// `delay: { cluster, service, millis }`.
    #[serde(default)]
    pub delay: Option<Spanned<DelayChange>>,
    /// `kill: { cluster, pod, container: sidecar|app }`.
    #[serde(default)]
    pub kill: Option<Spanned<KillChange>>,
    /// `rotateIntermediate: { cluster }`.
    #[serde(default)]
    pub rotate_intermediate: Option<Spanned<ClusterChange>>,
    /// `joinCluster: { cluster }`.
    #[serde(default)]
    pub join_cluster: Option<Spanned<ClusterChange>>,
    /// `leaveCluster: { cluster }`.
    #[serde(default)]
    pub leave_cluster: Option<Spanned<ClusterChange>>,
    /// `upgrade: { cluster, to }`.
    #[serde(default)]
    pub upgrade: Option<Spanned<UpgradeChange>>,
}

/// A change about one cluster.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterChange {
    /// The cluster.
    pub cluster: Spanned<String>,
}

/// `scale: { cluster, service, replicas }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleChange {
    /// The cluster.
    pub cluster: Spanned<String>,
    /// The service, `name.namespace`.
    pub service: Spanned<String>,
    /// Ready pods afterwards (0 included).
    pub replicas: Spanned<u32>,
}

/// `delay: { cluster, service, millis }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DelayChange {
    /// The cluster.
    pub cluster: Spanned<String>,
    /// The service, `name.namespace`.
    pub service: Spanned<String>,
    /// Added reply delay in milliseconds (0 removes it).
    pub millis: Spanned<u32>,
}

/// `kill: { cluster, pod, container }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KillChange {
    /// The cluster.
    pub cluster: Spanned<String>,
    /// The pod, `<service>-<index>`.
    pub pod: Spanned<String>,
    /// `sidecar` or `app`.
    pub container: crate::change::Container,
}

/// `upgrade: { cluster, to }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpgradeChange {
    /// The cluster.
    pub cluster: Spanned<String>,
    /// The Istio version afterwards.
    pub to: Spanned<IstioVersion>,
}

impl PhaseAction {
    /// Every change key the action sets, with where it was written and the change it asks for
    /// (validation accepts exactly one).
    pub fn changes(&self) -> Vec<(serde_saphyr::Location, crate::change::WorldChange)> {
        use crate::change::WorldChange;
        let on_cluster = |key: &Option<Spanned<ClusterChange>>, make: fn(String) -> WorldChange| {
            key.as_ref()
                .map(|change| (change.referenced, make(change.value.cluster.value.clone())))
        };
        let mut changes: Vec<(serde_saphyr::Location, WorldChange)> = [
            on_cluster(&self.stop_gateway, |cluster| WorldChange::StopGateway { cluster }),
            on_cluster(&self.start_gateway, |cluster| WorldChange::StartGateway { cluster }),
            on_cluster(&self.partition, |cluster| WorldChange::Partition { cluster }),
            on_cluster(&self.heal, |cluster| WorldChange::Heal { cluster }),
            on_cluster(&self.rotate_intermediate, |cluster| WorldChange::RotateIntermediate {
                cluster,
            }),
            on_cluster(&self.join_cluster, |cluster| WorldChange::JoinCluster { cluster }),
            on_cluster(&self.leave_cluster, |cluster| WorldChange::LeaveCluster { cluster }),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let Some(scale) = &self.scale {
            changes.push((
                scale.referenced,
                WorldChange::Scale {
                    cluster: scale.value.cluster.value.clone(),
                    service: scale.value.service.value.clone(),
                    replicas: scale.value.replicas.value,
                },
            ));
        }
        if let Some(delay) = &self.delay {
            changes.push((
                delay.referenced,
                WorldChange::Delay {
                    cluster: delay.value.cluster.value.clone(),
                    service: delay.value.service.value.clone(),
                    millis: delay.value.millis.value,
                },
            ));
        }
        if let Some(kill) = &self.kill {
            changes.push((
                kill.referenced,
                WorldChange::Kill {
                    cluster: kill.value.cluster.value.clone(),
                    pod: kill.value.pod.value.clone(),
                    container: kill.value.container,
                },
            ));
        }
        if let Some(upgrade) = &self.upgrade {
            changes.push((
                upgrade.referenced,
                WorldChange::Upgrade {
                    cluster: upgrade.value.cluster.value.clone(),
                    to: upgrade.value.to.value,
                },
            ));
        }
        changes.sort_by_key(|(at, _)| (at.line(), at.column()));
        changes
    }

    /// The change the action asks for (validation made sure there is exactly one).
    pub fn change(&self) -> Option<crate::change::WorldChange> {
        self.changes().into_iter().next().map(|(_, change)| change)
    }

    /// The action's label: its `name`, else `<kind>@<atMillis>ms`.
    pub fn label(&self) -> String {
        match (&self.name, self.change()) {
            (Some(name), _) => name.value.clone(),
            (None, Some(change)) => format!("{}@{}ms", change.kind().name(), self.at_millis.value),
            (None, None) => format!("action@{}ms", self.at_millis.value),
        }
    }
}

/// The sending side of a phase.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhaseSource {
    /// The calling service, as `name.namespace`.
    pub service: Spanned<String>,
    /// The cluster whose pod of that service sends.
    pub cluster: Spanned<String>,
}

/// The receiving side of a phase.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PhaseTarget {
    /// The called service, as `name.namespace`.
    pub service: Spanned<String>,
    /// The port, by name or number.
    pub port: Spanned<PortRef>,
}

/// A port by name or number.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PortRef {
    /// By number: `80`.
    Number(u16),
    /// By name: `http`.
    Name(String),
}

impl fmt::Display for PortRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRef::Number(number) => write!(f, "{number}"),
            PortRef::Name(name) => f.write_str(name),
        }
    }
}

/// Connection policy of the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConnectionPolicy {
    /// `concurrency` long-lived connections, reused (and the sidecar pools its own upstream).
    #[default]
    Pooled,
    /// A new connection for every request, all the way to the server's sidecar: the plan's
    /// DestinationRule gets `connectionPool.http.maxRequestsPerConnection: 1` for the phase.
    NewConnectionPerRequest,
}

impl ConnectionPolicy {
    /// As a scenario, the client's `--connections` and the report spell it.
    pub fn name(self) -> &'static str {
        match self {
            ConnectionPolicy::Pooled => "pooled",
            ConnectionPolicy::NewConnectionPerRequest => "new-connection-per-request",
        }
    }
}

/// A fault applied during a phase.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum Fault {
    /// The cluster's gateway stops accepting connections.
    GatewayDown {
        /// The cluster.
        cluster: String,
    },
    /// The service's pods in a cluster scale to `replicas` (pods are removed or added).
    Scale {
        /// The cluster.
        cluster: String,
        /// The service, as `name.namespace`.
        service: String,
        /// Ready pods after the change.
        replicas: u32,
    },
    /// The calling pod presents a workload certificate signed by a foreign root.
    ForeignClientCert {},
    /// Replies from the service's pods in a cluster are delayed.
    Delay {
        /// The cluster.
        cluster: String,
        /// The service, as `name.namespace`.
        service: String,
        /// Added delay in milliseconds.
        millis: u32,
    },
}

/// The fault as a scenario writes it (`gatewayDown: { cluster: cluster2 }`): what report.json's
/// `faults[]` and the summaries show.
impl std::fmt::Display for Fault {
    fn fmt(&self, out: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::GatewayDown { cluster } => write!(out, "gatewayDown: {{ cluster: {cluster} }}"),
            Fault::Scale {
                cluster,
                service,
                replicas,
            } => write!(
                out,
                "scale: {{ cluster: {cluster}, service: {service}, replicas: {replicas} }}"
            ),
            Fault::ForeignClientCert {} => write!(out, "foreignClientCert: {{}}"),
            Fault::Delay {
                cluster,
                service,
                millis,
            } => write!(
                out,
                "delay: {{ cluster: {cluster}, service: {service}, millis: {millis} }}"
            ),
        }
    }
}

/// An in-place Istio upgrade during a phase: `upgrade: { to: 1.30.0, clusters: [cluster2] }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Upgrade {
    /// The version installed over the running one; newer than every upgraded cluster's.
    pub to: Spanned<IstioVersion>,
    /// The clusters upgraded (all when empty).
    #[serde(default)]
    pub clusters: Vec<Spanned<String>>,
}

/// What must hold at the end of a phase. Every expectation set is evaluated and reported.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Expectations {
    /// Share of attempted requests that succeeded with the caller's expected identity seen by the
    /// server, at least (0–1).
    #[serde(default)]
    pub mtls_rate_at_least: Option<Spanned<f64>>,
    /// The same share, at most (0–1): for phases whose calls must be plain text.
    #[serde(default)]
    pub mtls_rate_at_most: Option<Spanned<f64>>,
    /// Share of attempted requests that succeeded, at least (0–1).
    #[serde(default)]
    pub success_rate_at_least: Option<Spanned<f64>>,
    /// Share of attempted requests that succeeded, at most (0–1): for phases that must fail.
    #[serde(default)]
    pub success_rate_at_most: Option<Spanned<f64>>,
    /// Largest observed/expected share over pods, at most (≥ 1).
    #[serde(default)]
    pub max_skew_ratio_at_most: Option<Spanned<f64>>,
    /// Largest observed/expected share over pods, at least (≥ 1): to show a skew is there.
    #[serde(default)]
    pub max_skew_ratio_at_least: Option<Spanned<f64>>,
    /// Which distribution the skew bounds are about.
    #[serde(default)]
    pub skew_by: SkewBasis,
    /// Clusters that must have answered at least one request.
    #[serde(default)]
    pub clusters_reached: Option<Spanned<Vec<String>>>,
    /// Server-side TLS handshake failures (Envoy's `ssl.fail_verify_*` counters), at least.
    #[serde(default)]
    pub server_tls_failures_at_least: Option<Spanned<u64>>,
    /// Bounds over the requests started in a time window of the phase's traffic.
    #[serde(default)]
    pub windows: Vec<Spanned<WindowExpectation>>,
    /// Bounds every non-empty time bucket must meet.
    #[serde(default)]
    pub every_bucket: Option<Spanned<BucketExpectation>>,
    /// After the named action, success must come back above a rate within a time.
    #[serde(default)]
    pub recovery: Option<Spanned<RecoveryExpectation>>,
    /// After every scale-up and joinCluster action: from the action's completion (its new pods
    /// ready) to the first request a new pod answered, at most this many milliseconds.
    #[serde(default)]
    pub convergence_millis_at_most: Option<Spanned<u64>>,
    /// Requests answered by a cluster after its leaveCluster action completed, at most.
    #[serde(default)]
    pub calls_after_leave_at_most: Option<Spanned<u64>>,
}

/// Bounds over the requests started in `[fromMillis, toMillis)` of the phase's traffic.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WindowExpectation {
    /// Start of the window, inclusive, in milliseconds from the start of the traffic.
    pub from_millis: Spanned<u64>,
    /// End of the window, exclusive.
    pub to_millis: Spanned<u64>,
    /// Share of the window's requests that succeeded, at least (0–1).
    #[serde(default)]
    pub success_rate_at_least: Option<Spanned<f64>>,
    /// Failed requests in the window, at most.
    #[serde(default)]
    pub failed_calls_at_most: Option<Spanned<u64>>,
    /// Share of the window's requests that succeeded over mTLS with the caller's identity (0–1).
    #[serde(default)]
    pub mtls_rate_at_least: Option<Spanned<f64>>,
    /// Clusters that answered at least one of the window's requests.
    #[serde(default)]
    pub clusters_reached: Option<Spanned<Vec<String>>>,
    /// Requests of the window one cluster answered, at most.
    #[serde(default)]
    pub calls_to_cluster_at_most: Option<Spanned<ClusterCalls>>,
}

/// `{ cluster, calls }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterCalls {
    /// The cluster.
    pub cluster: String,
    /// Requests it answered.
    pub calls: u64,
}

/// Bounds every non-empty bucket must meet.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BucketExpectation {
    /// Share of the bucket's requests that succeeded, at least (0–1).
    #[serde(default)]
    pub success_rate_at_least: Option<Spanned<f64>>,
    /// Share of the bucket's requests verified over mTLS, at least (0–1).
    #[serde(default)]
    pub mtls_rate_at_least: Option<Spanned<f64>>,
}

/// `recovery: { after, successRateAtLeast, withinMillis }`: the first bucket starting at or
/// after the named action's completion whose success rate reaches the bound must start within
/// `withinMillis` of that completion.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecoveryExpectation {
    /// The action's `name`.
    pub after: Spanned<String>,
    /// The success rate a bucket must reach (0–1).
    pub success_rate_at_least: Spanned<f64>,
    /// How long recovery may take, in milliseconds.
    pub within_millis: Spanned<u64>,
}

/// The unit a skew bound is computed over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SkewBasis {
    /// Requests per pod.
    #[default]
    Requests,
    /// Distinct server-side connections per pod (what a passthrough gateway balances).
    Connections,
}

fn default_trust_domain() -> String {
    crate::pki::DEFAULT_TRUST_DOMAIN.to_owned()
}

fn default_region() -> String {
    "region1".to_owned()
}

fn default_zone() -> String {
    "zone1".to_owned()
}

fn default_istio_version() -> Spanned<IstioVersion> {
    Spanned::new(
        DEFAULT_ISTIO_VERSION,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

fn default_requests() -> Spanned<u64> {
    Spanned::new(100, serde_saphyr::Location::UNKNOWN, serde_saphyr::Location::UNKNOWN)
}

fn default_concurrency() -> Spanned<u32> {
    Spanned::new(1, serde_saphyr::Location::UNKNOWN, serde_saphyr::Location::UNKNOWN)
}

impl Scenario {
    /// The cluster with this name.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|cluster| cluster.name.value == name)
    }

    /// The clusters' names, in the order the scenario declares them.
    pub(crate) fn cluster_names(&self) -> Vec<&str> {
        self.clusters
            .iter()
            .map(|cluster| cluster.name.value.as_str())
            .collect()
    }

    /// The services with at least one pod in `cluster`, in the order the scenario declares them.
    pub(crate) fn services_in<'scenario>(
        &'scenario self,
        cluster: &'scenario str,
    ) -> impl Iterator<Item = &'scenario Service> {
        self.services
            .iter()
            .filter(move |service| service.replicas_in(cluster) > 0)
    }

    /// The service referred to as `name.namespace`.
    pub fn service(&self, reference: &str) -> Option<&Service> {
        self.services.iter().find(|service| service.reference() == reference)
    }
}
