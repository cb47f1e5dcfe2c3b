//! The federation plan: from a scenario and the clusters' inventory to every object each cluster
//! needs, as the seed's Summary asks (replicate namespaces, services and Istio configuration; one
//! ServiceEntry per replicated service whose endpoints are the gateways of every other cluster that
//! has pods for it). Pure and deterministic: the same input gives byte-identical output.

pub mod istio;
mod render;
mod resilience;
pub mod support_matrix;
pub mod upgrade_rules;
pub mod version_warnings;
pub mod versions;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{
    Namespace, Secret, Service as KubeService, ServicePort as KubeServicePort, ServiceSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

use crate::inventory::{ClusterInventory, Inventory};
use crate::scenario::{
    ConnectionPolicy, EndpointWeights, FederationMode, H2UpgradePolicy, IstioVersion, LoadBalancer, Phase, Scenario,
    Service,
};
pub use istio::IstioApi;
use istio::{
    ClientTls, ConnectionPoolSettings, DestinationRuleSpec, GatewayServer, GatewaySpec, HttpConnectionPool,
    IstioObject, IstioPort, MeshPolicySpec, MtlsSetting, PeerAuthenticationSpec, PeerMethod, ServerTls,
    ServiceEntrySpec, TrafficPolicy, VirtualServiceSpec, WorkloadEntry,
};
pub use render::{RenderedFile, render, summary};
use versions::IstioBehaviour;

/// Label every object meshfed creates carries; meshfed changes and deletes only objects with it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "meshfed";
/// Label naming the scenario an object was planned for.
pub const SCENARIO_LABEL: &str = "meshfed.io/scenario";
/// Annotation on objects that hold placeholders instead of values only a live cluster has.
pub const PLACEHOLDER_ANNOTATION: &str = "meshfed.io/placeholders";
/// Istio's root namespace, where mesh-wide configuration lives.
pub const ROOT_NAMESPACE: &str = "istio-system";

/// Label on a namespace that turns sidecar injection on (`enabled`) or off (`disabled`).
pub const INJECTION_LABEL: &str = "istio-injection";

/// Every cluster's desired objects.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Per cluster, in scenario order.
    pub clusters: Vec<ClusterPlan>,
    /// Istio bugs this plan runs into on the clusters' versions (see [`PlanWarning`]).
    pub warnings: Vec<PlanWarning>,
}

/// One cluster's desired objects, in apply order.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterPlan {
    /// Cluster name.
    pub cluster: String,
    /// Istio API generation the objects are written for.
    pub api: IstioApi,
    /// How Istio is installed in the cluster (what the `kind` provider passes to the installer).
    pub install: InstallValues,
    /// Objects in apply order (namespaces first).
    pub objects: Vec<Object>,
}

/// Install-time values of a cluster's Istio: the version and the proxies' worker count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstallValues {
    /// Istio version.
    pub istio_version: IstioVersion,
    /// Envoy workers per proxy (`meshConfig.defaultConfig.concurrency`; Istio's default is 2).
    pub proxy_concurrency: u32,
    /// Whether sidecars run Istio's DNS proxy (`meshConfig.defaultConfig.proxyMetadata`
    /// `ISTIO_META_DNS_CAPTURE: "true"`, `federation.dnsProxying`): a ServiceEntry's host then
    /// resolves to its address without a Kubernetes Service.
    pub dns_capture: bool,
}

/// A known Istio bug the plan's objects trigger on a cluster's version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanWarning {
    /// The cluster.
    pub cluster: String,
    /// The service host whose Service and ServiceEntry collide.
    pub host: String,
    /// What happens, on which versions, and what avoids it.
    pub message: String,
}

/// The traffic policy a plan is written for: the scenario's, or one phase's overrides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrafficSettings {
    /// Gateway endpoint weights in ServiceEntries.
    pub weights: EndpointWeights,
    /// Pooled, or `maxRequestsPerConnection: 1`.
    pub connections: ConnectionPolicy,
    /// `loadBalancer.simple`, when set.
    pub load_balancer: Option<LoadBalancer>,
    /// `connectionPool.http.h2UpgradePolicy`, when set.
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
}

impl TrafficSettings {
    /// The scenario-wide settings (pooled connections).
    pub fn of_scenario(scenario: &Scenario) -> Self {
        TrafficSettings {
            weights: scenario.federation.endpoint_weights,
            connections: ConnectionPolicy::Pooled,
            load_balancer: scenario.federation.load_balancer,
            h2_upgrade_policy: scenario.federation.h2_upgrade_policy,
        }
    }

    /// The settings during `phase`: its overrides over the scenario's.
    pub fn of_phase(scenario: &Scenario, phase: &Phase) -> Self {
        let base = TrafficSettings::of_scenario(scenario);
        TrafficSettings {
            weights: phase.endpoint_weights.unwrap_or(base.weights),
            connections: phase.connections,
            load_balancer: phase.load_balancer.or(base.load_balancer),
            h2_upgrade_policy: phase.h2_upgrade_policy.or(base.h2_upgrade_policy),
        }
    }
}

/// A desired object.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    /// A namespace of a replicated service (or Istio's root namespace, for its network label).
    Namespace(Box<Namespace>),
    /// A replicated service.
    Service(Box<KubeService>),
    /// Mesh-wide mTLS for Istio before 1.5.
    MeshPolicy(IstioObject<MeshPolicySpec>),
    /// Mesh-wide mTLS for Istio 1.5 and later.
    PeerAuthentication(IstioObject<PeerAuthenticationSpec>),
    /// `*.local` → ISTIO_MUTUAL.
    DestinationRule(IstioObject<DestinationRuleSpec>),
    /// The 15443 AUTO_PASSTHROUGH gateway.
    Gateway(IstioObject<GatewaySpec>),
    /// Remote gateways as endpoints of a replicated service.
    ServiceEntry(IstioObject<ServiceEntrySpec>),
    /// Retries and timeout of calls to an HTTP service.
    VirtualService(IstioObject<VirtualServiceSpec>),
    /// A remote secret (endpoint discovery), with placeholders for credentials.
    Secret(Box<Secret>),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::Service(_) => "Service",
            Object::MeshPolicy(_) => "MeshPolicy",
            Object::PeerAuthentication(_) => "PeerAuthentication",
            Object::DestinationRule(_) => "DestinationRule",
            Object::Gateway(_) => "Gateway",
            Object::ServiceEntry(_) => "ServiceEntry",
            Object::VirtualService(_) => "VirtualService",
            Object::Secret(_) => "Secret",
        }
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Object::Namespace(object) => &object.metadata,
            Object::Service(object) => &object.metadata,
            Object::Secret(object) => &object.metadata,
            Object::MeshPolicy(object) => &object.metadata,
            Object::PeerAuthentication(object) => &object.metadata,
            Object::DestinationRule(object) => &object.metadata,
            Object::Gateway(object) => &object.metadata,
            Object::ServiceEntry(object) => &object.metadata,
            Object::VirtualService(object) => &object.metadata,
        }
    }
}

/// Computes every cluster's desired objects.
///
/// `inventory` must have an entry for every cluster of the scenario (as [`crate::inventory::load`]
/// and [`crate::inventory::from_scenario`] guarantee); a missing one is planned as a cluster with
/// no pods and a placeholder gateway.
pub fn plan(scenario: &Scenario, inventory: &Inventory) -> Plan {
    plan_with(scenario, inventory, TrafficSettings::of_scenario(scenario))
}

/// The plan in force during `phase` (its connection policy, weights and traffic policy).
pub fn plan_phase(scenario: &Scenario, inventory: &Inventory, phase: &Phase) -> Plan {
    plan_with(scenario, inventory, TrafficSettings::of_phase(scenario, phase))
}

/// [`plan`] with the endpoint weighting overridden.
pub fn plan_with_weights(scenario: &Scenario, inventory: &Inventory, weights: EndpointWeights) -> Plan {
    let settings = TrafficSettings {
        weights,
        ..TrafficSettings::of_scenario(scenario)
    };
    plan_with(scenario, inventory, settings)
}

/// The plan for explicit traffic settings.
pub fn plan_with(scenario: &Scenario, inventory: &Inventory, settings: TrafficSettings) -> Plan {
    let mut services: Vec<&Service> = scenario.services.iter().collect();
    services.sort_by(|a, b| (&a.namespace.value, &a.name.value).cmp(&(&b.namespace.value, &b.name.value)));
    let mut planner = Planner {
        scenario,
        inventory,
        services,
        weights: settings.weights,
        settings,
        gateway_endpoints: Vec::new(),
    };
    planner.gateway_endpoints = planner.mk_all_gateway_endpoints();
    // A `joinsLater` cluster that has not joined (no inventory entry) is not in the mesh yet.
    let clusters = scenario
        .clusters
        .iter()
        .filter(|cluster| !cluster.joins_later || inventory.clusters.contains_key(&cluster.name.value))
        .map(|cluster| planner.cluster_plan(&cluster.name.value))
        .collect();
    let mut warnings = planner.mk_warnings();
    warnings.extend(planner.mk_ignored_field_warnings());
    Plan { clusters, warnings }
}

struct Planner<'a> {
    scenario: &'a Scenario,
    inventory: &'a Inventory,
    /// Sorted by namespace, then name.
    services: Vec<&'a Service>,
    weights: EndpointWeights,
    settings: TrafficSettings,
    /// Per service (same order as `services`): the gateway endpoint of every cluster with ready
    /// pods for it, in scenario order. Computed once, so planning is linear in the objects made.
    gateway_endpoints: Vec<Vec<(&'a str, WorkloadEntry)>>,
}

impl<'a> Planner<'a> {
    fn mk_all_gateway_endpoints(&self) -> Vec<Vec<(&'a str, WorkloadEntry)>> {
        let scenario: &'a Scenario = self.scenario;
        let inventory: &'a Inventory = self.inventory;
        self.services
            .iter()
            .map(|service| {
                let reference = service.reference();
                scenario
                    .clusters
                    .iter()
                    .filter_map(|cluster| {
                        let name = cluster.name.value.as_str();
                        let remote = inventory.clusters.get(name)?;
                        Some((name, self.mk_gateway_endpoint(remote, service, &reference)?))
                    })
                    .collect()
            })
            .collect()
    }

    fn install_values(&self, cluster: &str) -> InstallValues {
        let scenario_cluster = self.scenario.cluster(cluster);
        InstallValues {
            istio_version: self
                .inventory
                .clusters
                .get(cluster)
                .map(|inventory| inventory.istio_version)
                .or(scenario_cluster.map(|c| c.istio_version.value))
                .unwrap_or(crate::scenario::DEFAULT_ISTIO_VERSION),
            proxy_concurrency: scenario_cluster.map_or(versions::ISTIO_DEFAULT_CONCURRENCY, |c| c.proxy_concurrency()),
            dns_capture: self.scenario.federation.dns_proxying(),
        }
    }

    /// Rows 5b, 5d and 7b of docs/fidelity.md: fields of the plan's DestinationRule each cluster's
    /// version ignores.
    fn mk_ignored_field_warnings(&self) -> Vec<PlanWarning> {
        self.scenario
            .clusters
            .iter()
            .flat_map(|cluster| {
                let name = cluster.name.value.as_str();
                version_warnings::ignored_field_warnings(self.scenario, name, self.install_values(name).istio_version)
            })
            .collect()
    }

    /// Whether `cluster` gets a Kubernetes Service for `service`: always in the seed's
    /// replication; with DNS proxying only where the service runs (replicas declared there, or
    /// ready pods a change brought), since elsewhere the ServiceEntry carries the host.
    fn replicates_service(&self, cluster: &str, service: &Service) -> bool {
        !self.scenario.federation.dns_proxying()
            || service.replicas.contains_key(cluster)
            || self
                .inventory
                .clusters
                .get(cluster)
                .is_some_and(|inventory| inventory.ready_count(&service.reference()) > 0)
    }

    /// The address a ServiceEntry for the service at `position` (in `self.services`) gets where
    /// no Service carries its host and sidecars proxy DNS: one per service in Istio's own range
    /// for ServiceEntry addresses, 240.240.0.0/16 (Class E, unreachable outside the pod;
    /// `pilot/pkg/serviceregistry/serviceentry/controller.go@1.20.8`), skipping the .0 and .255
    /// of each /24 as Istio's allocator does.
    fn mk_service_entry_address(position: usize) -> String {
        let position = u32::try_from(position).unwrap_or(u32::MAX);
        let (third, fourth) = (position / 254, position % 254 + 1);
        format!("240.240.{}.{}", third.min(255), fourth)
    }

    /// Rows 2b and 2d of docs/fidelity.md: a cluster with a Service and a ServiceEntry for the same
    /// host (because other clusters have pods of it) meets a gateway bug on some versions: 2d
    /// whether or not the cluster has pods of it (the seed's own plan), 2b where it has.
    fn mk_warnings(&self) -> Vec<PlanWarning> {
        if self.scenario.federation.mode.value != FederationMode::Serviceentry {
            return Vec::new();
        }
        let mut warnings = Vec::new();
        for cluster in &self.scenario.clusters {
            let name = cluster.name.value.as_str();
            let behaviour = IstioBehaviour::of(self.install_values(name).istio_version);
            for (service, endpoints) in self.services.iter().zip(&self.gateway_endpoints) {
                let local = endpoints.iter().any(|(owner, _)| *owner == name);
                let remote = endpoints.iter().any(|(owner, _)| *owner != name);
                if !remote || !self.replicates_service(name, service) {
                    continue;
                }
                let version = behaviour.version;
                let message = if behaviour.gateway_duplicates_passthrough_chains() {
                    duplicated_chains_warning(version, local)
                } else if !local {
                    continue;
                } else if behaviour.gateway_merges_service_entry_endpoints()
                    && (self.scenario.federation.destination_rule || !behaviour.gateway_merge_needs_istio_mutual_rule())
                {
                    format!(
                        "Istio {version} (1.1-1.18; from 1.8.6/1.9.5 with an ISTIO_MUTUAL DestinationRule) merges the \
                         same-host ServiceEntry's endpoints (other clusters' gateways) into the gateway's passthrough \
                         cluster, so connections can bounce between gateways: upgrade to 1.19+, or use the *.global \
                         host + tcp_cluster_rewrite form the pre-1.8 docs used"
                    )
                } else {
                    continue;
                };
                warnings.push(PlanWarning {
                    cluster: name.to_owned(),
                    host: service.host(),
                    message,
                });
            }
        }
        warnings
    }

    fn cluster_plan(&self, cluster: &str) -> ClusterPlan {
        let install = self.install_values(cluster);
        let api = IstioApi::of(install.istio_version);
        let endpoint_discovery = self.scenario.federation.mode.value == FederationMode::EndpointDiscovery;
        let mut objects = Vec::new();
        if endpoint_discovery {
            objects.push(Object::Namespace(Box::new(self.mk_root_namespace(cluster))));
        }
        objects.extend(
            self.mk_namespaces()
                .into_iter()
                .map(|namespace| Object::Namespace(Box::new(namespace))),
        );
        objects.extend(
            self.services
                .iter()
                .filter(|service| self.replicates_service(cluster, service))
                .map(|service| Object::Service(Box::new(self.mk_service(service)))),
        );
        objects.push(self.mk_mtls_policy(cluster, api));
        objects.extend(self.mk_destination_rule(api).map(Object::DestinationRule));
        objects.extend(
            self.services
                .iter()
                .filter_map(|service| self.mk_virtual_service(service, api))
                .map(Object::VirtualService),
        );
        objects.push(Object::Gateway(self.mk_passthrough_gateway(api)));
        if endpoint_discovery {
            objects.extend(
                self.other_clusters(cluster)
                    .map(|remote| Object::Secret(Box::new(self.mk_remote_secret(remote)))),
            );
        } else {
            objects.extend(
                self.services
                    .iter()
                    .zip(&self.gateway_endpoints)
                    .enumerate()
                    .filter_map(|(position, (service, endpoints))| {
                        let mut entry = self.mk_service_entry(cluster, service, endpoints, api)?;
                        if !self.replicates_service(cluster, service) {
                            entry.spec.addresses = vec![Self::mk_service_entry_address(position)];
                        }
                        Some(entry)
                    })
                    .map(Object::ServiceEntry),
            );
        }
        ClusterPlan {
            cluster: cluster.to_owned(),
            api,
            install,
            objects,
        }
    }

    fn other_clusters<'c>(&'c self, cluster: &'c str) -> impl Iterator<Item = &'c str> {
        self.scenario
            .clusters
            .iter()
            .map(|other| other.name.value.as_str())
            .filter(move |other| *other != cluster)
    }

    fn mk_metadata(&self, name: &str, namespace: Option<&str>) -> ObjectMeta {
        let labels = BTreeMap::from([
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
            (SCENARIO_LABEL.to_owned(), self.scenario.name.clone()),
        ]);
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: namespace.map(str::to_owned),
            labels: Some(labels),
            ..ObjectMeta::default()
        }
    }

    fn mk_root_namespace(&self, cluster: &str) -> Namespace {
        let mut metadata = self.mk_metadata(ROOT_NAMESPACE, None);
        let network = self
            .scenario
            .cluster(cluster)
            .and_then(|c| c.network.clone())
            .unwrap_or_else(|| cluster.to_owned());
        labels_of(&mut metadata).insert("topology.istio.io/network".to_owned(), network);
        Namespace {
            metadata,
            ..Namespace::default()
        }
    }

    fn mk_namespaces(&self) -> Vec<Namespace> {
        let mut names: Vec<&str> = self
            .services
            .iter()
            .map(|service| service.namespace.value.as_str())
            .collect();
        names.dedup();
        names
            .into_iter()
            .map(|name| {
                let mut metadata = self.mk_metadata(name, None);
                // Validation makes every service of a namespace agree.
                let injected = self
                    .services
                    .iter()
                    .filter(|service| service.namespace.value == name)
                    .all(|service| service.has_sidecar());
                let injection = if injected { "enabled" } else { "disabled" };
                labels_of(&mut metadata).insert(INJECTION_LABEL.to_owned(), injection.to_owned());
                Namespace {
                    metadata,
                    ..Namespace::default()
                }
            })
            .collect()
    }

    fn mk_service(&self, service: &Service) -> KubeService {
        let mut metadata = self.mk_metadata(&service.name.value, Some(&service.namespace.value));
        labels_of(&mut metadata).insert("app".to_owned(), service.name.value.clone());
        let ports = service
            .ports
            .iter()
            .map(|port| KubeServicePort {
                name: Some(port.name.value.clone()),
                port: i32::from(port.number.value),
                target_port: Some(IntOrString::Int(i32::from(port.number.value))),
                app_protocol: Some(port.protocol.istio_name().to_ascii_lowercase()),
                ..KubeServicePort::default()
            })
            .collect();
        let spec = ServiceSpec {
            ports: Some(ports),
            selector: Some(BTreeMap::from([("app".to_owned(), service.name.value.clone())])),
            ..ServiceSpec::default()
        };
        KubeService {
            metadata,
            spec: Some(spec),
            ..KubeService::default()
        }
    }

    fn mk_mtls_policy(&self, cluster: &str, api: IstioApi) -> Object {
        let mode = self
            .scenario
            .cluster(cluster)
            .and_then(|c| c.mtls)
            .unwrap_or(self.scenario.federation.mtls)
            .istio_name()
            .to_owned();
        match api.security() {
            None => Object::MeshPolicy(IstioObject {
                api_version: "authentication.istio.io/v1alpha1".to_owned(),
                kind: "MeshPolicy".to_owned(),
                metadata: self.mk_metadata("default", None),
                spec: MeshPolicySpec {
                    peers: vec![PeerMethod {
                        mtls: MtlsSetting { mode },
                    }],
                },
            }),
            Some(api_version) => Object::PeerAuthentication(IstioObject {
                api_version: api_version.to_owned(),
                kind: "PeerAuthentication".to_owned(),
                metadata: self.mk_metadata("default", Some(ROOT_NAMESPACE)),
                spec: PeerAuthenticationSpec {
                    mtls: MtlsSetting { mode },
                },
            }),
        }
    }

    /// The mesh-wide `*.local` rule: the seed's ISTIO_MUTUAL plus every traffic policy the
    /// scenario or phase asks for (one rule, because Istio applies only one per host). `None` when
    /// there is nothing to say.
    fn mk_destination_rule(&self, api: IstioApi) -> Option<IstioObject<DestinationRuleSpec>> {
        let federation = &self.scenario.federation;
        let http = HttpConnectionPool {
            max_requests_per_connection: (self.settings.connections == ConnectionPolicy::NewConnectionPerRequest)
                .then_some(1),
            h2_upgrade_policy: self
                .settings
                .h2_upgrade_policy
                .map(|policy| policy.istio_name().to_owned()),
        };
        let traffic_policy = TrafficPolicy {
            tls: federation.destination_rule.then(|| ClientTls {
                mode: "ISTIO_MUTUAL".to_owned(),
            }),
            connection_pool: (http != HttpConnectionPool::default()).then_some(ConnectionPoolSettings { http }),
            load_balancer: self.mk_load_balancer(),
            outlier_detection: federation
                .outlier_detection
                .as_ref()
                .map(resilience::mk_outlier_detection),
        };
        (traffic_policy != TrafficPolicy::default()).then(|| IstioObject {
            api_version: api.networking().to_owned(),
            kind: "DestinationRule".to_owned(),
            metadata: self.mk_metadata("default", Some(ROOT_NAMESPACE)),
            spec: DestinationRuleSpec {
                host: "*.local".to_owned(),
                traffic_policy,
            },
        })
    }

    /// The seed relied on a chart flag that pre-configured this gateway, and released charts matched
    /// only `*.global`; meshfed therefore always writes it for `*.local`.
    fn mk_passthrough_gateway(&self, api: IstioApi) -> IstioObject<GatewaySpec> {
        let (name, gateway_label) = match self.scenario.federation.mode.value {
            FederationMode::Serviceentry => ("cross-cluster-passthrough", "ingressgateway"),
            FederationMode::EndpointDiscovery => ("cross-network-gateway", "eastwestgateway"),
        };
        IstioObject {
            api_version: api.networking().to_owned(),
            kind: "Gateway".to_owned(),
            metadata: self.mk_metadata(name, Some(ROOT_NAMESPACE)),
            spec: GatewaySpec {
                selector: BTreeMap::from([("istio".to_owned(), gateway_label.to_owned())]),
                servers: vec![GatewayServer {
                    port: IstioPort {
                        number: crate::inventory::GATEWAY_PORT,
                        name: "tls".to_owned(),
                        protocol: "TLS".to_owned(),
                    },
                    tls: ServerTls {
                        mode: "AUTO_PASSTHROUGH".to_owned(),
                    },
                    hosts: vec!["*.local".to_owned()],
                }],
            },
        }
    }

    /// The ServiceEntry for `service` in `cluster`: one endpoint per *other* cluster with ready pods
    /// for it, at that cluster's gateway. `None` when no other cluster has pods.
    fn mk_service_entry(
        &self,
        cluster: &str,
        service: &Service,
        gateway_endpoints: &[(&str, WorkloadEntry)],
        api: IstioApi,
    ) -> Option<IstioObject<ServiceEntrySpec>> {
        let endpoints: Vec<WorkloadEntry> = gateway_endpoints
            .iter()
            .filter(|(remote, _)| *remote != cluster)
            .map(|(_, endpoint)| endpoint.clone())
            .collect();
        if endpoints.is_empty() {
            return None;
        }
        let ports = service
            .ports
            .iter()
            .map(|port| IstioPort {
                number: port.number.value,
                name: port.name.value.clone(),
                protocol: port.protocol.istio_name().to_owned(),
            })
            .collect();
        let name = format!("remote-endpoint-for-{}-in-{cluster}", service.name.value);
        let mut metadata = self.mk_metadata(&name, Some(&service.namespace.value));
        // What the inventory marks a placeholder (`placeholder: true`, as docs/inventory.md says;
        // the scenario-only inventory marks its `<gateway-address-of-C>` so), not a spelling.
        let placeholder = gateway_endpoints.iter().any(|(remote, _)| {
            *remote != cluster
                && self
                    .inventory
                    .clusters
                    .get(*remote)
                    .is_some_and(|remote| remote.gateway.placeholder)
        });
        if placeholder {
            metadata.annotations = Some(BTreeMap::from([(
                PLACEHOLDER_ANNOTATION.to_owned(),
                "spec.endpoints[].address: gateway addresses are unknown until the clusters exist".to_owned(),
            )]));
        }
        Some(IstioObject {
            api_version: api.networking().to_owned(),
            kind: "ServiceEntry".to_owned(),
            metadata,
            spec: ServiceEntrySpec {
                hosts: vec![service.host()],
                addresses: Vec::new(),
                ports,
                resolution: "STATIC".to_owned(),
                location: "MESH_INTERNAL".to_owned(),
                endpoints,
                subject_alt_names: Vec::new(),
            },
        })
    }

    fn mk_gateway_endpoint(
        &self,
        remote: &ClusterInventory,
        service: &Service,
        reference: &str,
    ) -> Option<WorkloadEntry> {
        let ready = remote.ready_count(reference);
        if ready == 0 {
            return None;
        }
        let gateway_port = remote.gateway.port;
        Some(WorkloadEntry {
            address: remote.gateway.address.clone(),
            ports: service
                .ports
                .iter()
                .map(|port| (port.name.value.clone(), gateway_port))
                .collect(),
            weight: match self.weights {
                EndpointWeights::Equal => None,
                EndpointWeights::ReadyPods => Some(u32::try_from(ready).unwrap_or(u32::MAX)),
            },
            locality: self
                .scenario
                .federation
                .locality
                .then(|| format!("{}/{}", remote.region, remote.zone)),
        })
    }

    /// The shape of `istioctl create-remote-secret` output for `remote`: the credentials (API server
    /// address, CA, token) exist only in a live cluster, so they are placeholders here and the
    /// `kind`/`kubeconfig` providers fill them in.
    fn mk_remote_secret(&self, remote: &str) -> Secret {
        let mut metadata = self.mk_metadata(&format!("istio-remote-secret-{remote}"), Some(ROOT_NAMESPACE));
        labels_of(&mut metadata).insert("istio/multiCluster".to_owned(), "true".to_owned());
        metadata.annotations = Some(BTreeMap::from([
            ("networking.istio.io/cluster".to_owned(), remote.to_owned()),
            (
                PLACEHOLDER_ANNOTATION.to_owned(),
                format!("stringData.{remote}: credentials come from the live cluster"),
            ),
        ]));
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: <ca-data-of-{remote}>\n    server: <api-server-of-{remote}>\n  name: {remote}\ncontexts:\n- context:\n    cluster: {remote}\n    user: {remote}\n  name: {remote}\ncurrent-context: {remote}\nusers:\n- name: {remote}\n  user:\n    token: <istio-reader-token-of-{remote}>\n"
        );
        Secret {
            metadata,
            string_data: Some(BTreeMap::from([(remote.to_owned(), kubeconfig)])),
            data: None::<BTreeMap<String, ByteString>>,
            ..Secret::default()
        }
    }
}

/// Row 2d's warning: what happens on `version` and the way out that fits. Where the cluster has
/// no pods of the service, sidecars can resolve the ServiceEntry's host without a replicated
/// Service (Istio's DNS proxying, 1.8+); where it has pods it needs the Service, so only endpoint
/// discovery (no ServiceEntry) or an upgrade avoids the collision.
fn duplicated_chains_warning(version: IstioVersion, local_pods: bool) -> String {
    let way_out = if local_pods {
        "upgrade to 1.22+, or federate with `mode: endpoint-discovery` (no ServiceEntry); this cluster has pods of \
         the service, so it needs the Service"
    } else {
        "upgrade to 1.22+, or set `federation.dnsProxying: true` (Istio's DNS proxy resolves the ServiceEntry's \
         host, so the Service is replicated only where the service has pods)"
    };
    format!(
        "Istio {version} (1.8.6, 1.9.5-1.21) builds two identical 15443 filter chains for a host that is both a Service \
         and a ServiceEntry, whether or not this cluster has pods of it, and Envoy rejects the gateway's whole 15443 \
         listener (istio/istio#44356): calls into this cluster through its gateway fail; {way_out}"
    )
}

fn labels_of(metadata: &mut ObjectMeta) -> &mut BTreeMap<String, String> {
    metadata.labels.get_or_insert_with(BTreeMap::new)
}
