//! The emulated control plane (pure): turns one cluster's planned objects plus the world's
//! addresses into Envoy specs, the way istiod turns Services, ServiceEntries, the DestinationRule
//! and the Gateway into sidecar and gateway configuration.
//!
//! What it reads from the plan: replicated `Service`s (hosts and ports of outbound listeners and of
//! the gateway's SNI routes), `ServiceEntry` endpoints (remote gateways with weight and locality),
//! the `*.local` ISTIO_MUTUAL DestinationRule (mTLS origination) and the AUTO_PASSTHROUGH `Gateway`
//! (whether the gateway routes at all). What it adds from the world: local pods (Kubernetes
//! endpoints) and their identities.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddrV4};

use super::envoy_config::{
    CertPaths, CircuitBreaker, GatewayFailover, GatewaySpec, InboundMtls, InboundPort, LbEndpoint, Locality,
    OutboundPort, OutlierDetection, Protocol, RetryPolicy, SidecarSpec, SniRoute, UpstreamTls, outbound_sni,
};
use super::topology::{ClusterTopology, PodTopology, Topology};
use crate::pki::spiffe_id;
use crate::plan::istio::{HttpRoute, LocalityFailover, TrafficPolicy};
use crate::plan::versions::IstioBehaviour;
use crate::plan::{ClusterPlan, INJECTION_LABEL, Object};
use crate::scenario::resilience::{IstioDuration, RetryOn};
use crate::scenario::{H2UpgradePolicy, LoadBalancer};

/// A port of a replicated service, as read from the plan's `Service` object.
struct PlannedPort {
    name: String,
    number: u16,
    protocol: Protocol,
}

/// A replicated service as read from the plan.
struct PlannedService {
    /// `name.namespace`.
    reference: String,
    host: String,
    ports: Vec<PlannedPort>,
    /// The ServiceEntry's address when no Service carries the host (DNS proxying); `None` for a
    /// Service, whose address is its cluster IP.
    entry_address: Option<Ipv4Addr>,
    /// Whether a Kubernetes Service carries the host (else only a ServiceEntry does).
    kubernetes: bool,
}

/// Every host istiod gives the cluster's proxies: its Services, then the ServiceEntries whose
/// host no Service carries (with `federation.dnsProxying`), in plan order.
fn planned_services(plan: &ClusterPlan) -> Vec<PlannedService> {
    let mut services = planned_kubernetes_services(plan);
    let entry_only: Vec<PlannedService> = plan
        .objects
        .iter()
        .filter_map(|object| match object {
            Object::ServiceEntry(entry) => Some(entry),
            _ => None,
        })
        .filter_map(|entry| {
            let host = entry.spec.hosts.first()?;
            if services.iter().any(|service| service.host == *host) {
                return None;
            }
            let (name, rest) = host.split_once('.')?;
            let namespace = rest.strip_suffix(".svc.cluster.local")?;
            Some(PlannedService {
                reference: format!("{name}.{namespace}"),
                host: host.clone(),
                ports: entry
                    .spec
                    .ports
                    .iter()
                    .map(|port| PlannedPort {
                        name: port.name.clone(),
                        number: port.number,
                        protocol: match port.protocol.as_str() {
                            "TCP" => Protocol::Tcp,
                            "HTTP2" | "GRPC" => Protocol::Http2,
                            _ => Protocol::Http,
                        },
                    })
                    .collect(),
                entry_address: entry.spec.addresses.first().and_then(|address| address.parse().ok()),
                kubernetes: false,
            })
        })
        .collect();
    services.extend(entry_only);
    services
}

/// The address a sidecar in `cluster` serves `service` on: a Service's cluster IP, or the
/// address of the ServiceEntry that alone carries the host.
fn outbound_address(cluster: &ClusterTopology, service: &PlannedService) -> Option<Ipv4Addr> {
    match service.entry_address {
        Some(address) => Some(address),
        None => cluster.service_ips.get(&service.reference).copied(),
    }
}

/// The address a pod in `cluster` reaches `service` (`name.namespace`) at, as its DNS lookup of
/// the host answers under `plan`: the Service's cluster IP (kube-dns) when the plan has the
/// Service; else, with DNS proxying (`install.dns_capture`), the ServiceEntry's address, which
/// the sidecar's proxy answers (`pkg/dns/server/name_table.go@1.20.8` `BuildNameTable`); else
/// nothing resolves the host.
pub fn resolved_service_address(cluster: &ClusterTopology, plan: &ClusterPlan, service: &str) -> Option<Ipv4Addr> {
    let planned = planned_services(plan);
    let found = planned.iter().find(|planned| planned.reference == service)?;
    if found.entry_address.is_some() && !plan.install.dns_capture {
        return None;
    }
    outbound_address(cluster, found)
}

fn planned_kubernetes_services(plan: &ClusterPlan) -> Vec<PlannedService> {
    plan.objects
        .iter()
        .filter_map(|object| match object {
            Object::Service(service) => Some(service),
            _ => None,
        })
        .filter_map(|service| {
            let name = service.metadata.name.as_deref()?;
            let namespace = service.metadata.namespace.as_deref()?;
            let ports = service
                .spec
                .as_ref()?
                .ports
                .as_ref()?
                .iter()
                .filter_map(|port| {
                    Some(PlannedPort {
                        name: port.name.clone()?,
                        number: u16::try_from(port.port).ok()?,
                        protocol: match port.app_protocol.as_deref() {
                            Some("tcp") => Protocol::Tcp,
                            Some("http2" | "grpc") => Protocol::Http2,
                            _ => Protocol::Http,
                        },
                    })
                })
                .collect();
            Some(PlannedService {
                reference: format!("{name}.{namespace}"),
                host: format!("{name}.{namespace}.svc.cluster.local"),
                ports,
                entry_address: None,
                kubernetes: true,
            })
        })
        .collect()
}

/// Whether pods in `namespace` get a sidecar: the plan's Namespace object says
/// `istio-injection: enabled` (a namespace the plan does not label is outside the mesh).
pub fn namespace_injected(plan: &ClusterPlan, namespace: &str) -> bool {
    plan.objects.iter().any(|object| {
        matches!(object, Object::Namespace(ns)
            if ns.metadata.name.as_deref() == Some(namespace)
                && ns.metadata.labels.as_ref().and_then(|labels| labels.get(INJECTION_LABEL)).map(String::as_str)
                    == Some("enabled"))
    })
}

/// The DestinationRule traffic policy Istio applies to `host`: an exact host wins, then the
/// longest wildcard suffix (`*.ns2.svc.cluster.local` before `*.local`); only one rule applies
/// (`pilot/pkg/model/push_context.go` `destinationRule()` via `MostSpecificHostMatch`).
pub fn destination_rule_for<'a>(plan: &'a ClusterPlan, host: &str) -> Option<&'a TrafficPolicy> {
    let mut best: Option<(usize, &TrafficPolicy)> = None;
    for object in &plan.objects {
        let Object::DestinationRule(rule) = object else {
            continue;
        };
        let pattern = rule.spec.host.as_str();
        let specificity = if pattern == host {
            usize::MAX
        } else if let Some(suffix) = pattern.strip_prefix('*') {
            if host.ends_with(suffix) { suffix.len() } else { continue }
        } else {
            continue;
        };
        if best.is_none_or(|(score, _)| specificity > score) {
            best = Some((specificity, &rule.spec.traffic_policy));
        }
    }
    best.map(|(_, policy)| policy)
}

/// Whether the plan asks sidecars to originate Istio mTLS for `*.local` (the seed's DestinationRule).
pub fn originates_istio_mutual(plan: &ClusterPlan) -> bool {
    destination_rule_for(plan, "x.local")
        .and_then(|policy| policy.tls.as_ref())
        .is_some_and(|tls| tls.mode == "ISTIO_MUTUAL")
}

/// The mesh-wide mTLS mode of the plan: its PeerAuthentication (1.5+) or MeshPolicy (before
/// 1.5). Without either, Istio's default is PERMISSIVE.
pub fn peer_authentication_strict(plan: &ClusterPlan) -> bool {
    plan.objects.iter().any(|object| match object {
        Object::PeerAuthentication(policy) => policy.spec.mtls.mode == "STRICT",
        Object::MeshPolicy(policy) => policy.spec.peers.iter().any(|peer| peer.mtls.mode == "STRICT"),
        _ => false,
    })
}

fn passthrough_gateway_planned(plan: &ClusterPlan) -> bool {
    plan.objects.iter().any(|object| {
        matches!(object, Object::Gateway(gateway) if gateway.spec.servers.iter().any(|server| {
            server.tls.mode == "AUTO_PASSTHROUGH" && server.hosts.iter().any(|host| host == "*.local")
        }))
    })
}

/// The SPIFFE identities a client sidecar in `cluster` accepts from `service`'s servers, as
/// istiod computes them (`pilot/pkg/model/push_context.go@1.30.3`, `ServiceAccounts` over the
/// service's endpoint shards, plus `ServiceEntry.subjectAltNames`): the service accounts of the
/// pods istiod knows — this cluster's, and with endpoint discovery those of every cluster it has a
/// remote secret for — and the subject alt names of ServiceEntries for the host. ServiceEntry
/// endpoints carry no service account, so in serviceentry mode a cluster without local pods gets
/// an empty list, and an empty list means no SAN check at all.
fn server_identities(
    topology: &Topology,
    trust_domain: &str,
    cluster: &ClusterTopology,
    plan: &ClusterPlan,
    service: &PlannedService,
) -> Vec<String> {
    let shards = std::iter::once(cluster).chain(remote_secret_clusters(plan).filter_map(|name| topology.cluster(name)));
    let mut identities: BTreeSet<String> = shards
        .flat_map(|shard| shard.pods_of(&service.reference))
        .map(|pod| spiffe_id(trust_domain, &pod.namespace, &pod.service_account))
        .collect();
    for object in &plan.objects {
        if let Object::ServiceEntry(entry) = object
            && entry.spec.hosts.contains(&service.host)
        {
            identities.extend(entry.spec.subject_alt_names.iter().cloned());
        }
    }
    identities.into_iter().collect()
}

fn parse_locality(text: &str) -> Option<Locality> {
    let (region, zone) = text.split_once('/')?;
    Some(Locality {
        region: region.to_owned(),
        zone: zone.to_owned(),
    })
}

/// Istio's failover priority of an endpoint seen from `local`: 0 same region and zone, 1 same
/// region, 2 another region; an endpoint without locality counts as another region. A
/// `localityLbSetting.failover` rule from the caller's region demotes every other region but its
/// `to` one a level further. Istio then compacts the priorities so no level is empty
/// (`pilot/pkg/networking/core/v1alpha3/loadbalancer/loadbalancer.go@1.14.6`
/// `applyLocalityFailover`, `pilot/pkg/networking/core/loadbalancer/loadbalancer.go@1.30`;
/// subzones are not emulated).
fn locality_priority(local: &Locality, endpoint: Option<&Locality>, failover: &[LocalityFailover]) -> u32 {
    match endpoint {
        Some(other) if other == local => 0,
        Some(other) if other.region == local.region => 1,
        _ => match failover.iter().find(|rule| rule.from == local.region) {
            Some(rule) if endpoint.is_some_and(|other| other.region == rule.to) => 2,
            Some(_) => 3,
            None => 2,
        },
    }
}

fn apply_locality_failover(local: &Locality, endpoints: &mut [LbEndpoint], failover: &[LocalityFailover]) {
    for endpoint in endpoints.iter_mut() {
        endpoint.priority = locality_priority(local, endpoint.locality.as_ref(), failover);
    }
    let used: BTreeSet<u32> = endpoints.iter().map(|endpoint| endpoint.priority).collect();
    for endpoint in endpoints.iter_mut() {
        endpoint.priority = u32::try_from(used.range(..endpoint.priority).count()).unwrap_or(u32::MAX);
    }
}

/// The endpoints istiod would give a sidecar for one service port: the local pods (Kubernetes
/// endpoints, weight 1 each, labelled `tlsMode: istio` when injected) and the ServiceEntry's
/// remote gateways (their weight and locality; no `tlsMode` label, so auto-mTLS sends them
/// plain text: `pilot/pkg/networking/core/v1alpha3/cluster.go@1.6.0`).
fn endpoints_for(
    topology: &Topology,
    cluster: &ClusterTopology,
    plan: &ClusterPlan,
    service: &PlannedService,
    port: &PlannedPort,
    client_zone: &str,
) -> Vec<LbEndpoint> {
    let local_locality = Locality {
        region: cluster.region.clone(),
        zone: client_zone.to_owned(),
    };
    let injected = namespace_injected(plan, service.reference.split_once('.').map_or("", |(_, ns)| ns));
    let mut endpoints: Vec<LbEndpoint> = cluster
        .pods_of(&service.reference)
        .map(|pod| LbEndpoint {
            address: pod.ip,
            port: port.number,
            weight: 1,
            locality: Some(Locality {
                region: cluster.region.clone(),
                zone: pod.zone.clone(),
            }),
            priority: 0,
            istio_mtls: injected,
        })
        .collect();
    for object in &plan.objects {
        let Object::ServiceEntry(entry) = object else { continue };
        if entry.spec.hosts.iter().all(|host| *host != service.host) {
            continue;
        }
        for endpoint in &entry.spec.endpoints {
            let (Ok(address), Some(gateway_port)) =
                (endpoint.address.parse::<Ipv4Addr>(), endpoint.ports.get(&port.name))
            else {
                continue;
            };
            endpoints.push(LbEndpoint {
                address,
                port: *gateway_port,
                weight: endpoint.weight.unwrap_or(1),
                locality: endpoint.locality.as_deref().and_then(parse_locality),
                priority: 0,
                istio_mtls: false,
            });
        }
    }
    endpoints.extend(discovered_remote_endpoints(topology, plan, service));
    let behaviour = IstioBehaviour::of(plan.install.istio_version);
    let policy = destination_rule_for(plan, &service.host);
    if policy.is_some_and(|p| p.outlier_detection.is_some()) && behaviour.locality_lb_by_default() {
        apply_locality_failover(&local_locality, &mut endpoints, failover_rules(plan, &service.host));
    }
    endpoints
}

/// The DestinationRule's `localityLbSetting.failover` rules for `host`, as the cluster's istiod
/// reads them: versions before 1.5 ignore the rule's `localityLbSetting` (row 5d).
fn failover_rules<'a>(plan: &'a ClusterPlan, host: &str) -> &'a [LocalityFailover] {
    if !IstioBehaviour::of(plan.install.istio_version).destination_rule_locality_lb_setting() {
        return &[];
    }
    destination_rule_for(plan, host)
        .and_then(|p| p.load_balancer.as_ref())
        .and_then(|lb| lb.locality_lb_setting.as_ref())
        .map_or(&[][..], |setting| setting.failover.as_slice())
}

/// Remote clusters this cluster discovers endpoints from: those it has a remote secret for.
fn remote_secret_clusters(plan: &ClusterPlan) -> impl Iterator<Item = &str> {
    plan.objects.iter().filter_map(|object| match object {
        Object::Secret(secret) => {
            let labels = secret.metadata.labels.as_ref()?;
            (labels.get("istio/multiCluster").map(String::as_str) == Some("true")).then_some(())?;
            secret
                .metadata
                .annotations
                .as_ref()?
                .get("networking.istio.io/cluster")
                .map(String::as_str)
        }
        _ => None,
    })
}

/// Endpoint discovery (multi-primary, different networks): for every remote cluster with a remote
/// secret, istiod reads that cluster's endpoints and, because they sit on another network, gives
/// sidecars that network's east-west gateway instead, weighted by the number of pods behind it
/// and with their locality (Istio's split-horizon EDS). These carry `tlsMode: istio`.
fn discovered_remote_endpoints(topology: &Topology, plan: &ClusterPlan, service: &PlannedService) -> Vec<LbEndpoint> {
    let behaviour = IstioBehaviour::of(plan.install.istio_version);
    let first_group_only = behaviour.split_horizon_first_locality_weight_only();
    // Row 10: remote pods without a sidecar (tlsMode disabled) are not sent across networks. A
    // namespace's injection label is the same in every cluster's plan.
    let namespace = service.reference.split_once('.').map_or("", |(_, ns)| ns);
    if behaviour.cross_network_drops_uninjected_endpoints() && !namespace_injected(plan, namespace) {
        return Vec::new();
    }
    remote_secret_clusters(plan)
        .filter_map(|remote| topology.cluster(remote))
        .filter_map(|remote| {
            let groups = locality_groups(remote, &service.reference);
            split_horizon_gateway_endpoint(remote.gateway_outside_ip, &groups, first_group_only)
        })
        .collect()
}

/// A remote cluster's pods of `service` grouped by locality, in Istio's order (localities sorted
/// as strings, `pilot/pkg/xds/endpoint_builder.go`), with each group's pod count.
fn locality_groups(remote: &ClusterTopology, service: &str) -> Vec<(Locality, u32)> {
    let mut groups: std::collections::BTreeMap<(String, String), u32> = std::collections::BTreeMap::new();
    for pod in remote.pods_of(service) {
        *groups.entry((remote.region.clone(), pod.zone.clone())).or_default() += 1;
    }
    groups
        .into_iter()
        .map(|((region, zone), count)| (Locality { region, zone }, count))
        .collect()
}

/// The gateway endpoint a sidecar gets for one remote network. istiod emits it once per locality
/// group, weighted by that group's pods; Envoy de-duplicates hosts by address, so with the bug
/// (`first_group_only`) the first group's weight and locality are what Envoy balances with
/// (istio/istio#56355); without it, one endpoint weighted by all the network's pods (the fix,
/// PR #60835). No pods: no endpoint.
fn split_horizon_gateway_endpoint(
    gateway: Ipv4Addr,
    groups: &[(Locality, u32)],
    first_group_only: bool,
) -> Option<LbEndpoint> {
    let (first_locality, first_count) = groups.first()?;
    let weight = if first_group_only {
        *first_count
    } else {
        groups.iter().map(|(_, count)| count).sum()
    };
    Some(LbEndpoint {
        address: gateway,
        port: crate::inventory::GATEWAY_PORT,
        weight,
        locality: Some(first_locality.clone()),
        priority: 0,
        istio_mtls: true,
    })
}

/// How a client sidecar talks to one service port, from the plan's DestinationRule and the
/// cluster's Istio version.
struct UpstreamPolicy {
    tls: UpstreamTls,
    locality_weighted: bool,
    http2: bool,
    load_balancer: LoadBalancer,
    max_requests_per_connection: Option<u32>,
    outlier_detection: Option<OutlierDetection>,
}

fn upstream_policy(plan: &ClusterPlan, host: &str, protocol: Protocol) -> UpstreamPolicy {
    let behaviour = IstioBehaviour::of(plan.install.istio_version);
    let policy = destination_rule_for(plan, host);
    let tls = match policy
        .and_then(|policy| policy.tls.as_ref())
        .map(|tls| tls.mode.as_str())
    {
        Some("ISTIO_MUTUAL") => UpstreamTls::IstioMutual,
        Some(_) => UpstreamTls::Plaintext,
        None if behaviour.auto_mtls() => UpstreamTls::Auto,
        None => UpstreamTls::Plaintext,
    };
    let http_pool = policy
        .and_then(|policy| policy.connection_pool.as_ref())
        .map(|pool| &pool.http);
    // Versions before 1.6 ignore `h2UpgradePolicy` (row 7b).
    let upgrade = behaviour.h2_upgrade_policy()
        && http_pool
            .and_then(|http| http.h2_upgrade_policy.as_deref())
            .is_some_and(|mode| mode == H2UpgradePolicy::Upgrade.istio_name());
    let load_balancer = match policy
        .and_then(|policy| policy.load_balancer.as_ref())
        .and_then(|lb| lb.simple.as_deref())
    {
        Some("ROUND_ROBIN") => LoadBalancer::RoundRobin,
        Some("LEAST_REQUEST") => LoadBalancer::LeastRequest,
        Some("RANDOM") => LoadBalancer::Random,
        _ => behaviour.default_load_balancer(),
    };
    let outlier_detection = policy
        .and_then(|policy| policy.outlier_detection.as_ref())
        .map(|detection| envoy_outlier_detection(detection, behaviour));
    UpstreamPolicy {
        tls,
        locality_weighted: behaviour
            .locality_weighted_lb(outlier_detection.is_some(), !failover_rules(plan, host).is_empty()),
        http2: protocol == Protocol::Http2 || (protocol == Protocol::Http && upgrade),
        load_balancer,
        max_requests_per_connection: http_pool.and_then(|http| http.max_requests_per_connection),
        outlier_detection,
    }
}

/// The DestinationRule's `outlierDetection` as the cluster's istiod turns it into Envoy values
/// (durations were checked when the scenario was read; one the plan could not have written counts
/// as unset). Before 1.5 the `consecutive5xxErrors`/`consecutiveGatewayErrors` fields do not
/// exist and are ignored; before 1.3 Envoy's panic threshold stays (row 5b).
fn envoy_outlier_detection(
    detection: &crate::plan::istio::OutlierDetection,
    behaviour: IstioBehaviour,
) -> OutlierDetection {
    let error_fields = behaviour.outlier_detection_5xx_and_gateway_errors();
    let millis = |text: &Option<String>| {
        text.as_deref()
            .and_then(|text| text.parse::<IstioDuration>().ok())
            .map(|duration| duration.millis)
    };
    OutlierDetection {
        consecutive_5xx: detection.consecutive_5xx_errors.filter(|_| error_fields),
        consecutive_gateway_failure: detection.consecutive_gateway_errors.filter(|_| error_fields),
        interval_millis: millis(&detection.interval),
        base_ejection_millis: millis(&detection.base_ejection_time),
        max_ejection_percent: detection.max_ejection_percent,
        envoy_panic_threshold: !behaviour.outlier_panic_threshold_zero(),
    }
}

/// The HTTP route of the plan's VirtualService for `host`, when there is one.
fn virtual_service_route<'a>(plan: &'a ClusterPlan, host: &str) -> Option<&'a HttpRoute> {
    plan.objects.iter().find_map(|object| match object {
        Object::VirtualService(service) if service.spec.hosts.iter().any(|h| h == host) => service.spec.http.first(),
        _ => None,
    })
}

/// The route's retry policy and timeout as istiod writes them: the VirtualService's `retries`
/// over Istio's default policy (`attempts: 0` turns retries off), its `timeout`; without a
/// VirtualService, the version's default retries and no timeout.
fn route_resilience(plan: &ClusterPlan, host: &str) -> (Option<RetryPolicy>, Option<u64>) {
    let behaviour = IstioBehaviour::of(plan.install.istio_version);
    let millis = |text: Option<&str>| {
        text.and_then(|text| text.parse::<IstioDuration>().ok())
            .map(|duration| duration.millis)
    };
    let route = virtual_service_route(plan, host);
    let retries = match route.and_then(|route| route.retries.as_ref()) {
        None => behaviour.default_retries().then(RetryPolicy::istio_default),
        Some(retries) if retries.attempts == 0 => None,
        Some(retries) => {
            let mut policy = RetryPolicy::istio_default();
            policy.num_retries = retries.attempts;
            if let Some(retry_on) = retries
                .retry_on
                .as_deref()
                .and_then(|text| text.parse::<RetryOn>().ok())
            {
                policy.retry_on = retry_on.conditions();
                policy.retriable_status_codes = retry_on.status_codes();
            }
            policy.per_try_timeout_millis = millis(retries.per_try_timeout.as_deref());
            Some(policy)
        }
    };
    (retries, millis(route.and_then(|route| route.timeout.as_deref())))
}

/// The proxy of one application pod: an Istio sidecar when its namespace is injected; otherwise
/// the pod's plain network path (kube-proxy to local pods for calls, the app's own port for
/// callers), emulated by a plain-text Envoy.
pub fn sidecar_spec(
    topology: &Topology,
    trust_domain: &str,
    cluster: &ClusterTopology,
    plan: &ClusterPlan,
    pod: &PodTopology,
    certs: CertPaths,
) -> SidecarSpec {
    let behaviour = IstioBehaviour::of(plan.install.istio_version);
    let injected = namespace_injected(plan, &pod.namespace);
    let services = planned_services(plan);
    let inbound_mtls = if !injected {
        InboundMtls::Disabled
    } else if peer_authentication_strict(plan) {
        InboundMtls::Strict
    } else {
        InboundMtls::Permissive {
            istio_alpn: behaviour.inbound_mtls_alpn().into_iter().map(str::to_owned).collect(),
        }
    };
    let inbound = services
        .iter()
        .filter(|service| service.reference == pod.service)
        .flat_map(|service| service.ports.iter())
        .map(|port| InboundPort {
            port: port.number,
            protocol: port.protocol,
            mtls: inbound_mtls.clone(),
        })
        .collect();
    let outbound = services
        .iter()
        .filter_map(|service| Some((service, outbound_address(cluster, service)?)))
        .flat_map(|(service, cluster_ip)| {
            let identities = server_identities(topology, trust_domain, cluster, plan, service);
            service.ports.iter().map(move |port| {
                if !injected {
                    return kube_proxy_port(cluster, service, port, cluster_ip);
                }
                let policy = upstream_policy(plan, &service.host, port.protocol);
                let (retry_policy, timeout_millis) = if port.protocol.is_http() {
                    route_resilience(plan, &service.host)
                } else {
                    (None, None)
                };
                OutboundPort {
                    host: service.host.clone(),
                    cluster_ip,
                    port: port.number,
                    protocol: port.protocol,
                    server_identities: identities.clone(),
                    endpoints: endpoints_for(topology, cluster, plan, service, port, &pod.zone),
                    tls: policy.tls,
                    alpn: behaviour
                        .client_alpn(port.protocol.is_http(), policy.http2)
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                    http2: policy.http2,
                    load_balancer: policy.load_balancer,
                    max_requests_per_connection: policy.max_requests_per_connection,
                    outlier_detection: policy.outlier_detection,
                    retry_policy,
                    timeout_millis,
                    l4_only: false,
                    circuit_breaker: CircuitBreaker {
                        max_retries: behaviour.circuit_breaker_max_retries(),
                        max_requests: behaviour.circuit_breaker_unlimited().then_some(u32::MAX),
                    },
                    locality_weighted: policy.locality_weighted,
                }
            })
        })
        .collect();
    SidecarSpec {
        node_id: format!("sidecar~{}~{}.{}~{}", pod.ip, pod.name, pod.namespace, cluster.name),
        pod: pod.name.clone(),
        cluster: cluster.name.clone(),
        pod_ip: pod.ip,
        certs,
        inbound,
        outbound,
    }
}

/// A pod without a sidecar reaches a service through kube-proxy: the cluster IP is translated to
/// one of the service's pods in this cluster (the ServiceEntry is Istio's, kube-proxy never sees
/// it), per connection, in plain text.
fn kube_proxy_port(
    cluster: &ClusterTopology,
    service: &PlannedService,
    port: &PlannedPort,
    cluster_ip: Ipv4Addr,
) -> OutboundPort {
    OutboundPort {
        host: service.host.clone(),
        cluster_ip,
        port: port.number,
        protocol: port.protocol,
        server_identities: Vec::new(),
        endpoints: cluster
            .pods_of(&service.reference)
            .map(|pod| LbEndpoint {
                address: pod.ip,
                port: port.number,
                weight: 1,
                locality: None,
                priority: 0,
                istio_mtls: false,
            })
            .collect(),
        tls: UpstreamTls::Plaintext,
        alpn: Vec::new(),
        http2: false,
        load_balancer: LoadBalancer::Random,
        max_requests_per_connection: None,
        outlier_detection: None,
        retry_policy: None,
        timeout_millis: None,
        l4_only: true,
        circuit_breaker: CircuitBreaker::ENVOY_DEFAULT,
        locality_weighted: false,
    }
}

/// Row 5 at the gateway: istiod builds EDS failover priorities for any proxy, gateways included
/// (`pilot/pkg/xds/endpoints/endpoint_builder.go@1.30.3`), when the rule for the host has outlier
/// detection, so the gateway's SNI cluster prefers the pods in the gateway's own zone, then its
/// region. The merged gateways of row 2b carry no locality of this region.
fn gateway_failover(
    cluster: &ClusterTopology,
    plan: &ClusterPlan,
    service: &PlannedService,
) -> Option<GatewayFailover> {
    let behaviour = IstioBehaviour::of(plan.install.istio_version);
    let detection = destination_rule_for(plan, &service.host)?.outlier_detection.as_ref()?;
    if !behaviour.locality_lb_by_default() {
        return None;
    }
    let gateway = Locality {
        region: cluster.region.clone(),
        zone: cluster.zone.clone(),
    };
    let endpoint = |locality: Option<Locality>| LbEndpoint {
        address: Ipv4Addr::UNSPECIFIED,
        port: 0,
        weight: 1,
        locality,
        priority: 0,
        istio_mtls: true,
    };
    let mut endpoints: Vec<LbEndpoint> = cluster
        .pods_of(&service.reference)
        .map(|pod| {
            endpoint(Some(Locality {
                region: cluster.region.clone(),
                zone: pod.zone.clone(),
            }))
        })
        .collect();
    // Stands for the merged gateways, which come last.
    endpoints.push(endpoint(None));
    apply_locality_failover(&gateway, &mut endpoints, failover_rules(plan, &service.host));
    let merged_gateways_priority = endpoints.pop()?.priority;
    Some(GatewayFailover {
        priorities: endpoints.iter().map(|endpoint| endpoint.priority).collect(),
        merged_gateways_priority,
        outlier_detection: envoy_outlier_detection(detection, behaviour),
    })
}

/// Row 2b: whether the gateway's passthrough cluster for `host` keeps a same-host ServiceEntry's
/// endpoints. From the 1.8.6/1.9.5 security fix to 1.18 the gateway's mTLS endpoint filter keeps
/// them only when an ISTIO_MUTUAL DestinationRule applies to the host
/// (`pilot/pkg/xds/endpoint_builder.go@1.8.6`, `pilot/pkg/xds/mtls_checker.go@1.18.0`).
fn gateway_keeps_service_entry_endpoints(behaviour: IstioBehaviour, plan: &ClusterPlan, host: &str) -> bool {
    behaviour.gateway_merges_service_entry_endpoints()
        && (!behaviour.gateway_merge_needs_istio_mutual_rule()
            || destination_rule_for(plan, host)
                .and_then(|policy| policy.tls.as_ref())
                .is_some_and(|tls| tls.mode == "ISTIO_MUTUAL"))
}

/// The cluster's 15443 gateway: one SNI route per planned service port, when the plan has the
/// AUTO_PASSTHROUGH Gateway (without it, the gateway routes nothing, as Istio's would). Like
/// `builtAutoPassthroughFilterChains` (`pilot/pkg/networking/core/v1alpha3/gateway.go@1.10.6`)
/// it never looks at endpoints: a service without pods here gets a chain whose cluster is empty.
///
/// Version rows 2b and 2d (docs/fidelity.md) apply where the plan also has a ServiceEntry for a
/// service's host: on 1.1-1.18 (from 1.8.6/1.9.5 only with an ISTIO_MUTUAL rule) the route's cluster also
/// holds the ServiceEntry's endpoints (other gateways), on 1.8.6/1.9.5-1.21 the route's filter chain is emitted twice (and Envoy rejects
/// the listener), whether or not this cluster has pods of the service. A host only a ServiceEntry
/// carries (`federation.dnsProxying`) is one service: one chain.
pub fn gateway_spec(cluster: &ClusterTopology, plan: &ClusterPlan) -> GatewaySpec {
    let behaviour = IstioBehaviour::of(plan.install.istio_version);
    let routes = if passthrough_gateway_planned(plan) {
        planned_services(plan)
            .iter()
            .flat_map(|service| {
                service.ports.iter().map(|port| {
                    let endpoints: Vec<SocketAddrV4> = cluster
                        .pods_of(&service.reference)
                        .map(|pod| SocketAddrV4::new(pod.ip, port.number))
                        .collect();
                    let same_host_entries: Vec<(SocketAddrV4, u32)> = plan
                        .objects
                        .iter()
                        .filter_map(|object| match object {
                            Object::ServiceEntry(entry) if entry.spec.hosts.contains(&service.host) => Some(entry),
                            _ => None,
                        })
                        .flat_map(|entry| entry.spec.endpoints.iter())
                        .filter_map(|endpoint| {
                            let address = endpoint.address.parse::<Ipv4Addr>().ok()?;
                            let gateway_port = *endpoint.ports.get(&port.name)?;
                            Some((SocketAddrV4::new(address, gateway_port), endpoint.weight.unwrap_or(1)))
                        })
                        .collect();
                    let collides = !same_host_entries.is_empty();
                    SniRoute {
                        sni: outbound_sni(port.number, &service.host),
                        endpoints,
                        merged_gateways: if collides
                            && gateway_keeps_service_entry_endpoints(behaviour, plan, &service.host)
                        {
                            same_host_entries
                        } else {
                            Vec::new()
                        },
                        duplicated_chain: collides
                            && service.kubernetes
                            && behaviour.gateway_duplicates_passthrough_chains(),
                        failover: gateway_failover(cluster, plan, service),
                    }
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    GatewaySpec {
        node_id: format!(
            "router~{}~istio-ingressgateway~{}",
            cluster.gateway_pod_ip, cluster.name
        ),
        routes,
        load_balancer: behaviour.default_load_balancer(),
    }
}

#[cfg(test)]
#[path = "control_plane_fidelity_rules.rs"]
mod fidelity_rules;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::plan;
    use crate::provider::local::envoy_config::GatewaySpec;
    use crate::provider::local::topology::topology;
    use crate::scenario::EndpointWeights;

    /// `scenarios/skew.yaml` with `edit` applied to its text, laid out and planned.
    pub(super) fn skew_edited(edit: impl Fn(String) -> String, weights: EndpointWeights) -> (Topology, plan::Plan) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/skew.yaml");
        let text = edit(std::fs::read_to_string(&path).unwrap());
        let scenario = crate::scenario::parse(&path, &text).unwrap();
        let topology = topology(&scenario).unwrap();
        let plan = plan::plan_with_weights(&scenario, &topology.inventory(&scenario), weights);
        (topology, plan)
    }

    fn skew(weights: EndpointWeights) -> (Topology, plan::Plan) {
        skew_edited(|text| text, weights)
    }

    /// The sidecar of foo-0 in cluster1 for a planned world.
    pub(super) fn foo_sidecar_of((topology, plan): (Topology, plan::Plan)) -> SidecarSpec {
        let cluster = topology.cluster("cluster1").unwrap();
        let foo = cluster.pods.iter().find(|pod| pod.name == "foo-0").unwrap();
        let certs = CertPaths::in_dir(&PathBuf::from("/certs"));
        sidecar_spec(&topology, "cluster.local", cluster, &plan.clusters[0], foo, certs)
    }

    fn foo_sidecar(weights: EndpointWeights) -> SidecarSpec {
        foo_sidecar_of(skew(weights))
    }

    fn bar_endpoints(spec: &SidecarSpec) -> Vec<(String, u16, u32)> {
        let bar = spec
            .outbound
            .iter()
            .find(|port| port.host == "bar.ns2.svc.cluster.local")
            .unwrap();
        bar.endpoints
            .iter()
            .map(|endpoint| (endpoint.address.to_string(), endpoint.port, endpoint.weight))
            .collect()
    }

    #[test]
    fn equal_weights_make_the_remote_gateway_one_endpoint_beside_the_local_pod() {
        let spec = foo_sidecar(EndpointWeights::Equal);
        assert_eq!(
            bar_endpoints(&spec),
            [("10.10.0.11".to_owned(), 80, 1), ("100.64.0.11".to_owned(), 15443, 1)]
        );
    }

    #[test]
    fn ready_pods_weights_give_the_remote_gateway_its_pod_count() {
        let spec = foo_sidecar(EndpointWeights::ReadyPods);
        assert_eq!(
            bar_endpoints(&spec),
            [("10.10.0.11".to_owned(), 80, 1), ("100.64.0.11".to_owned(), 15443, 3)]
        );
    }

    #[test]
    fn sidecar_verifies_the_servers_spiffe_identity_and_listens_on_cluster_ips() {
        let spec = foo_sidecar(EndpointWeights::Equal);
        let bar = spec
            .outbound
            .iter()
            .find(|port| port.host == "bar.ns2.svc.cluster.local")
            .unwrap();
        assert_eq!(bar.server_identities, ["spiffe://cluster.local/ns/ns2/sa/bar"]);
        assert_eq!(
            bar.cluster_ip,
            Ipv4Addr::new(10, 96, 0, 11),
            "services in namespace order: foo.ns1 .10, bar.ns2 .11"
        );
        assert_eq!(spec.inbound.len(), 1);
        assert_eq!((spec.inbound[0].port, spec.inbound[0].protocol), (80, Protocol::Http));
    }

    fn bar_identities(spec: &SidecarSpec) -> Vec<String> {
        spec.outbound
            .iter()
            .find(|port| port.host == "bar.ns2.svc.cluster.local")
            .unwrap()
            .server_identities
            .clone()
    }

    /// Mirrors `pilot/pkg/model/push_context.go@1.30.3` (`ServiceAccounts`: the service accounts
    /// of the service's endpoint shards plus `ServiceEntry.subjectAltNames`). In serviceentry mode
    /// a cluster without local pods of the service knows no service account (ServiceEntry
    /// endpoints carry none), so its sidecars check no SAN; with endpoint discovery the remote
    /// cluster's shard brings its pods' service accounts.
    #[test]
    fn fidelity_server_san_check_uses_the_service_accounts_istiod_knows() {
        let bar_remote_only =
            |text: String| text.replace("replicas: { cluster1: 1, cluster2: 3 }", "replicas: { cluster2: 3 }");
        let serviceentry = foo_sidecar_of(skew_edited(bar_remote_only, EndpointWeights::Equal));
        assert_eq!(
            bar_identities(&serviceentry),
            Vec::<String>::new(),
            "no local pods: no SAN check"
        );
        let resources = sidecar_resources(&serviceentry);
        let bar_cluster = resources.clusters["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|cluster| cluster["name"].as_str().is_some_and(|name| name.ends_with(BAR)))
            .unwrap();
        let clusters = bar_cluster.to_string();
        assert!(
            !clusters.contains("subject_alt_names") && clusters.contains("trusted_ca"),
            "an empty SAN list must not be written as a check"
        );

        let discovery =
            move |text: String| bar_remote_only(text).replace("  mode: serviceentry", "  mode: endpoint-discovery");
        let discovered = foo_sidecar_of(skew_edited(discovery, EndpointWeights::Equal));
        assert_eq!(bar_identities(&discovered), ["spiffe://cluster.local/ns/ns2/sa/bar"]);

        let (topology, mut plan) = skew_edited(bar_remote_only, EndpointWeights::Equal);
        for object in &mut plan.clusters[0].objects {
            if let Object::ServiceEntry(entry) = object {
                entry.spec.subject_alt_names = vec!["spiffe://other.domain/ns/ns2/sa/bar".to_owned()];
            }
        }
        let with_sans = foo_sidecar_of((topology, plan));
        assert_eq!(bar_identities(&with_sans), ["spiffe://other.domain/ns/ns2/sa/bar"]);
    }

    #[test]
    fn endpoint_discovery_gives_remote_gateways_weighted_by_their_pods() {
        let discovery = |text: String| text.replace("  mode: serviceentry", "  mode: endpoint-discovery");
        let (topology, plan) = skew_edited(discovery, EndpointWeights::Equal);
        assert!(
            plan.clusters[0]
                .objects
                .iter()
                .all(|object| object.kind() != "ServiceEntry")
        );
        let spec = foo_sidecar_of((topology, plan));
        assert_eq!(
            bar_endpoints(&spec),
            [("10.10.0.11".to_owned(), 80, 1), ("100.64.0.11".to_owned(), 15443, 3)]
        );
    }

    /// skew.yaml in endpoint-discovery mode on `version`, with cluster2's three bar pods spread
    /// over zones `[zone2b, zone2a]`: zone2b gets bar-0 and bar-2, zone2a gets bar-1.
    fn two_zone_remote_at(version: &str) -> (Topology, plan::Plan) {
        let version = version.to_owned();
        skew_edited(
            move |text| {
                text.replace("  mode: serviceentry", "  mode: endpoint-discovery")
                    .replace(
                        "    podCidr:",
                        &format!("    istioVersion: \"{version}\"\n    podCidr:"),
                    )
                    .replace("    zone: zone2a\n", "    zone: zone2a\n    zones: [zone2b, zone2a]\n")
            },
            EndpointWeights::ReadyPods,
        )
    }

    /// Mirrors `pilot/pkg/xds/ep_filters.go@1.8.0` (`EndpointsByNetworkFilter`: the remote
    /// network's gateway is appended once per locality group, weighted by that group's count;
    /// same shape on 1.30.2, istio/istio#56355) plus Envoy keeping one host per address: the
    /// programmed gateway weight is the first locality's (zone2a: 1 pod), not the network's 3.
    /// No emulated version lacks the bug (fix PR #60835 unmerged), so both sides of the 1.8
    /// reference are buggy and the correct total is checked on the fix path itself.
    #[test]
    fn fidelity_two_zone_remote_gateway_keeps_only_the_first_localitys_weight() {
        for version in ["1.8.6", "1.30.3"] {
            let (topology, plan) = two_zone_remote_at(version);
            let zones: Vec<(String, String)> = topology
                .cluster("cluster2")
                .unwrap()
                .pods
                .iter()
                .filter(|pod| pod.service == "bar.ns2")
                .map(|pod| (pod.name.clone(), pod.zone.clone()))
                .collect();
            assert_eq!(
                zones,
                [
                    ("bar-0".to_owned(), "zone2b".to_owned()),
                    ("bar-1".to_owned(), "zone2a".to_owned()),
                    ("bar-2".to_owned(), "zone2b".to_owned())
                ]
            );
            let spec = foo_sidecar_of((topology, plan));
            assert_eq!(
                bar_endpoints(&spec),
                [("10.10.0.11".to_owned(), 80, 1), ("100.64.0.11".to_owned(), 15443, 1)],
                "{version}: the gateway is programmed with zone2a's count only"
            );
            let bar = spec.outbound.iter().find(|port| port.host == BAR).unwrap();
            let gateway_locality = bar.endpoints[1].locality.as_ref().unwrap();
            assert_eq!(
                (gateway_locality.region.as_str(), gateway_locality.zone.as_str()),
                ("region2", "zone2a")
            );
        }
        let (topology, _) = two_zone_remote_at("1.30.3");
        let groups = locality_groups(topology.cluster("cluster2").unwrap(), "bar.ns2");
        let gateway = Ipv4Addr::new(100, 64, 0, 11);
        let fixed = split_horizon_gateway_endpoint(gateway, &groups, false).unwrap();
        assert_eq!(
            fixed.weight, 3,
            "the fix (PR #60835) weighs the gateway by every zone's pods"
        );
        let buggy = split_horizon_gateway_endpoint(gateway, &groups, true).unwrap();
        assert_eq!(buggy.weight, 1);
        assert!(split_horizon_gateway_endpoint(gateway, &[], true).is_none());
    }

    /// A route per planned service port, to this cluster's pods only (foo has none in cluster2:
    /// its chain exists, as Istio's does, with an empty cluster).
    #[test]
    fn gateway_routes_sni_to_its_own_clusters_pods_only() {
        let (topology, plan) = skew(EndpointWeights::Equal);
        let gateway = gateway_spec(topology.cluster("cluster2").unwrap(), &plan.clusters[1]);
        let routes: Vec<(String, usize)> = gateway
            .routes
            .iter()
            .map(|route| (route.sni.clone(), route.endpoints.len()))
            .collect();
        assert_eq!(
            routes,
            [
                ("outbound_.80_._.foo.ns1.svc.cluster.local".to_owned(), 0),
                ("outbound_.80_._.bar.ns2.svc.cluster.local".to_owned(), 3)
            ]
        );
    }

    #[test]
    fn without_the_passthrough_gateway_in_the_plan_the_gateway_routes_nothing() {
        let (topology, mut plan) = skew(EndpointWeights::Equal);
        plan.clusters[1]
            .objects
            .retain(|object| !matches!(object, Object::Gateway(_)));
        assert!(
            gateway_spec(topology.cluster("cluster2").unwrap(), &plan.clusters[1])
                .routes
                .is_empty()
        );
    }

    // ---- Fidelity: each test names the Istio source it mirrors and checks the generated Envoy
    // configuration on both sides of a version boundary (docs/fidelity.md).

    use crate::provider::local::envoy_config::{outbound_cluster_name, sidecar_resources};
    use serde_json::{Value, json};

    const BAR: &str = "bar.ns2.svc.cluster.local";

    /// skew.yaml with every cluster on `version` and `federation_extra` lines added to federation.
    fn skew_at(version: &str, federation_extra: &str) -> (Topology, plan::Plan) {
        let version = version.to_owned();
        let extra = federation_extra.to_owned();
        skew_edited(
            move |text| {
                text.replace(
                    "    podCidr:",
                    &format!("    istioVersion: \"{version}\"\n    podCidr:"),
                )
                .replace("  mtls: PERMISSIVE\n", &format!("  mtls: PERMISSIVE\n{extra}"))
            },
            EndpointWeights::Equal,
        )
    }

    fn bar_cluster_at(version: &str, federation_extra: &str) -> Value {
        let resources = sidecar_resources(&foo_sidecar_of(skew_at(version, federation_extra)));
        resources.clusters["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|cluster| cluster["name"] == outbound_cluster_name(80, BAR))
            .unwrap()
            .clone()
    }

    fn bar_inbound_at(version: &str, federation_extra: &str) -> Value {
        let (topology, plan) = skew_at(version, federation_extra);
        bar_inbound_in(&topology, &plan)
    }

    /// cluster1's bar-0 inbound listener as the control plane builds it from `plan`.
    fn bar_inbound_in(topology: &Topology, plan: &crate::plan::Plan) -> Value {
        let cluster = topology.cluster("cluster1").unwrap();
        let bar = cluster.pods.iter().find(|pod| pod.name == "bar-0").unwrap();
        let spec = sidecar_spec(
            topology,
            "cluster.local",
            cluster,
            &plan.clusters[0],
            bar,
            CertPaths::in_dir(&PathBuf::from("/certs")),
        );
        sidecar_resources(&spec).listeners["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|listener| listener["name"].as_str().unwrap().starts_with("inbound_"))
            .unwrap()
            .clone()
    }

    /// Row 1b: pilot/pkg/networking/core/v1alpha3/listener_builder.go@1.5.10 (istio.alpn filter),
    /// pilot/pkg/xds/filters/filters.go@1.14.6; 1.4: cluster TLS context ALPN `istio`.
    #[test]
    fn fidelity_client_alpn_changes_at_1_5() {
        let alpn = |version| {
            bar_cluster_at(version, "")["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"]
                .clone()
        };
        assert_eq!(alpn("1.4.6"), json!(["istio"]));
        assert_eq!(alpn("1.5.10"), json!(["istio-http/1.1", "istio", "http/1.1"]));
        assert_eq!(alpn("1.30.3"), json!(["istio-http/1.1", "istio", "http/1.1"]));
    }

    /// Row 1d: auto-mTLS, on by default from 1.5 (`mtls.auto: true` in
    /// operator/data/profiles/default.yaml@1.5.0 and manifests/global.yaml@1.5.0; `auto: false` in
    /// install/kubernetes/helm/istio/values.yaml@1.4.10) and pilot/pkg/networking/core/v1alpha3/cluster.go@1.6.0
    /// (transport_socket_matches on tlsMode). Without the DestinationRule: 1.4 plain text, 1.5
    /// mTLS to sidecar pods only (the ServiceEntry's gateway has no tlsMode label).
    #[test]
    fn fidelity_without_a_destination_rule_mtls_needs_auto_mtls_from_1_5() {
        let no_rule = "  destinationRule: false\n";
        let old = bar_cluster_at("1.4.10", no_rule);
        assert!(old.get("transport_socket").is_none() && old.get("transport_socket_matches").is_none());
        let new = bar_cluster_at("1.5.0", no_rule);
        assert!(new.get("transport_socket").is_none());
        assert_eq!(
            new["transport_socket_matches"][0]["match"],
            json!({ "tlsMode": "istio" })
        );
        assert_eq!(new["transport_socket_matches"][1]["match"], json!({}));
        let endpoints = new["load_assignment"]["endpoints"].to_string();
        assert_eq!(endpoints.matches("\"tlsMode\":\"istio\"").count(), 1, "{endpoints}");
        let with_rule = bar_cluster_at("1.4.10", "");
        assert_eq!(with_rule["transport_socket"]["name"], "envoy.transport_sockets.tls");
    }

    /// Row 3a: pilot/pkg/networking/core/v1alpha3/filterchain_options.go@1.10.6: PERMISSIVE
    /// inbound = tls_inspector + an mTLS chain matched on Istio ALPN + a raw_buffer chain; STRICT
    /// = mTLS only.
    #[test]
    fn fidelity_permissive_inbound_accepts_plain_text_strict_does_not() {
        for version in ["1.5.10", "1.30.3"] {
            let permissive = bar_inbound_at(version, "");
            let chains = permissive["filter_chains"].as_array().unwrap();
            assert_eq!(chains.len(), 2, "{version}");
            assert_eq!(chains[0]["filter_chain_match"]["transport_protocol"], "tls");
            assert!(
                chains[0]["filter_chain_match"]["application_protocols"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("istio-http/1.1"))
            );
            assert_eq!(chains[1]["filter_chain_match"]["transport_protocol"], "raw_buffer");
            assert!(chains[1].get("transport_socket").is_none());
            assert_eq!(
                permissive["listener_filters"][0]["name"],
                "envoy.filters.listener.tls_inspector"
            );
        }
        let strict = bar_inbound_at("1.30.3", "").to_string();
        let strict_at = |version: &str| {
            let (topology, mut plan) = skew_at(version, "");
            for object in &mut plan.clusters[0].objects {
                if let Object::PeerAuthentication(policy) = object {
                    policy.spec.mtls.mode = "STRICT".into();
                }
            }
            bar_inbound_in(&topology, &plan)
        };
        let strict_listener = strict_at("1.30.3");
        assert_ne!(strict_listener.to_string(), strict);
        let chains = strict_listener["filter_chains"].as_array().unwrap();
        assert_eq!(chains.len(), 1);
        assert_eq!(
            chains[0]["transport_socket"]["typed_config"]["require_client_certificate"],
            true
        );
    }

    /// Row 2c: pilot/pkg/networking/core/v1alpha3/cluster.go@1.14.0 (LEAST_REQUEST default),
    /// pilot/pkg/networking/core/cluster_traffic_policy.go@1.30.3 (DestinationRule loadBalancer).
    #[test]
    fn fidelity_load_balancer_default_changes_at_1_14_unless_the_rule_sets_one() {
        assert_eq!(bar_cluster_at("1.13.9", "")["lb_policy"], "ROUND_ROBIN");
        assert_eq!(bar_cluster_at("1.14.0", "")["lb_policy"], "LEAST_REQUEST");
        assert_eq!(
            bar_cluster_at("1.14.0", "  loadBalancer: ROUND_ROBIN\n")["lb_policy"],
            "ROUND_ROBIN"
        );
        let (topology, plan) = skew_at("1.13.9", "");
        let gateway = gateway_spec(topology.cluster("cluster2").unwrap(), &plan.clusters[1]);
        assert_eq!(gateway.load_balancer, LoadBalancer::RoundRobin);
    }

    /// Row 7b: h2UpgradePolicy default DO_NOT_UPGRADE (istio/api mesh/v1alpha1/config.proto@1.30.3),
    /// pilot/pkg/networking/core/cluster_traffic_policy.go@1.30.3: `http` ports go upstream as
    /// HTTP/1.1, HTTP/2 with UPGRADE (and its ALPN then offers istio-h2).
    #[test]
    fn fidelity_http_ports_speak_http1_unless_the_rule_upgrades() {
        let protocol =
            |cluster: &Value| cluster["typed_extension_protocol_options"][HTTP_OPTIONS]["explicit_http_config"].clone();
        assert_eq!(
            protocol(&bar_cluster_at("1.30.3", "")),
            json!({ "http_protocol_options": {} })
        );
        let upgraded = bar_cluster_at("1.30.3", "  h2UpgradePolicy: UPGRADE\n");
        assert_eq!(protocol(&upgraded), json!({ "http2_protocol_options": {} }));
        assert_eq!(
            upgraded["transport_socket"]["typed_config"]["common_tls_context"]["alpn_protocols"],
            json!(["istio-h2", "istio", "h2"])
        );
    }

    const HTTP_OPTIONS: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";

    /// Row 7c: pilot/cmd/pilot-agent/config/config.go@1.30.3: two workers unless configured.
    #[test]
    fn fidelity_proxy_concurrency_is_two_by_default_and_configurable() {
        let (_, plan) = skew_at("1.30.3", "");
        assert_eq!(plan.clusters[0].install.proxy_concurrency, 2);
        let (_, plan) = skew_edited(
            |text| text.replacen("    podCidr: 10.10", "    proxyConcurrency: 4\n    podCidr: 10.10", 1),
            EndpointWeights::Equal,
        );
        assert_eq!(plan.clusters[0].install.proxy_concurrency, 4);
        assert_eq!(plan.clusters[1].install.proxy_concurrency, 2);
    }

    fn gateway_route_at(version: &str) -> SniRoute {
        let (topology, plan) = skew_at(version, "");
        let gateway = gateway_spec(topology.cluster("cluster2").unwrap(), &plan.clusters[1]);
        let bar = outbound_sni(80, BAR);
        gateway.routes.into_iter().find(|route| route.sni == bar).unwrap()
    }

    /// Rows 2b and 2d: pilot/pkg/xds/endpoint_builder.go@1.14.6 (SE endpoints merged into the
    /// gateway's SNI cluster, 1.1-1.18; gone with pilot/pkg/xds/mtls_checker.go@1.19.0
    /// in 1.19), pilot/pkg/networking/core/v1alpha3/gateway.go@1.10.6 (a chain per service, twice
    /// for a Service + same-host ServiceEntry, 1.10-1.21, istio/istio#44356) and
    /// pilot/pkg/networking/core/gateway.go@1.22.8 (one service per host).
    #[test]
    fn fidelity_gateway_merges_and_duplicates_by_version() {
        let cluster1_gateway = SocketAddrV4::new(Ipv4Addr::new(100, 64, 0, 10), 15443);
        let cases = [
            ("1.4.6", true, false),
            ("1.5.10", true, false),
            ("1.9.9", true, true),
            ("1.10.6", true, true),
            ("1.18.7", true, true),
            ("1.19.0", false, true),
            ("1.21.6", false, true),
            ("1.22.8", false, false),
            ("1.30.3", false, false),
        ];
        for (version, merged, duplicated) in cases {
            let route = gateway_route_at(version);
            let expected: Vec<(SocketAddrV4, u32)> = if merged { vec![(cluster1_gateway, 1)] } else { vec![] };
            assert_eq!(route.merged_gateways, expected, "{version}");
            assert_eq!(route.duplicated_chain, duplicated, "{version}");
            let resources = crate::provider::local::envoy_config::gateway_resources(&GatewaySpec {
                node_id: "gw".into(),
                routes: vec![route],
                load_balancer: LoadBalancer::RoundRobin,
            });
            let chains = resources.listeners["resources"][0]["filter_chains"]
                .as_array()
                .unwrap()
                .len();
            assert_eq!(chains, if duplicated { 2 } else { 1 }, "{version}");
            let endpoints = resources.clusters["resources"][0]["load_assignment"].to_string();
            assert_eq!(endpoints.contains("100.64.0.10"), merged, "{version}: {endpoints}");
        }
    }

    /// The SNIs of `cluster`'s gateway listener, each once per filter chain, as Envoy receives them.
    fn gateway_listener_snis(topology: &Topology, plan: &plan::Plan, cluster: usize) -> Vec<String> {
        let name = &plan.clusters[cluster].cluster;
        let spec = gateway_spec(topology.cluster(name).unwrap(), &plan.clusters[cluster]);
        let resources = crate::provider::local::envoy_config::gateway_resources(&spec);
        resources.listeners["resources"][0]["filter_chains"]
            .as_array()
            .unwrap()
            .iter()
            .map(|chain| {
                chain["filter_chain_match"]["server_names"][0]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    /// Row 2e: with `federation.dnsProxying` on 1.20.8 neither gateway holds a Service and a
    /// ServiceEntry for one host, so each host has one chain (the ServiceEntry's, for the service
    /// the gateway's cluster does not run: `builtAutoPassthroughFilterChains` skips only
    /// MeshExternal services, `pilot/pkg/networking/core/v1alpha3/gateway.go@1.10.6`); foo's
    /// sidecar serves bar on the ServiceEntry's address, which its DNS proxy answers for the host
    /// (`pkg/dns/server/name_table.go@1.20.8`), and without the proxy the host resolves to nothing.
    #[test]
    fn fidelity_dns_proxying_gives_each_gateway_one_chain_per_host() {
        let (topology, plan) = skew_edited(
            |text| {
                text.replace("replicas: { cluster1: 1, cluster2: 3 }", "replicas: { cluster2: 3 }")
                    .replace("    podCidr:", "    istioVersion: \"1.20.8\"\n    podCidr:")
                    .replace("  mtls: PERMISSIVE\n", "  mtls: PERMISSIVE\n  dnsProxying: true\n")
            },
            EndpointWeights::Equal,
        );
        let foo = outbound_sni(80, "foo.ns1.svc.cluster.local");
        let bar = outbound_sni(80, BAR);
        for cluster in [0, 1] {
            let mut snis = gateway_listener_snis(&topology, &plan, cluster);
            snis.sort();
            assert_eq!(snis, [bar.clone(), foo.clone()], "cluster{}", cluster + 1);
        }
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
        let entry_address = plan.clusters[0]
            .objects
            .iter()
            .find_map(|object| match object {
                Object::ServiceEntry(entry) => entry.spec.addresses.first().cloned(),
                _ => None,
            })
            .unwrap()
            .parse::<Ipv4Addr>()
            .unwrap();
        let cluster1 = topology.cluster("cluster1").unwrap();
        assert_eq!(
            resolved_service_address(cluster1, &plan.clusters[0], "bar.ns2"),
            Some(entry_address)
        );
        assert_eq!(
            resolved_service_address(cluster1, &plan.clusters[0], "foo.ns1"),
            cluster1.service_ips.get("foo.ns1").copied(),
            "a Service resolves to its cluster IP"
        );
        let sidecar = foo_sidecar_of((topology.clone(), plan.clone()));
        let outbound = sidecar.outbound.iter().find(|port| port.host == BAR).unwrap();
        assert_eq!(outbound.cluster_ip, entry_address);
        assert_eq!(
            bar_endpoints(&sidecar),
            [("100.64.0.11".to_owned(), 15443, 1)],
            "the ServiceEntry's gateway"
        );
        let mut without_proxy = plan.clusters[0].clone();
        without_proxy.install.dns_capture = false;
        assert_eq!(resolved_service_address(cluster1, &without_proxy, "bar.ns2"), None);
    }

    /// Row 2d on the seed's shape (every service with pods in one cluster only):
    /// `builtAutoPassthroughFilterChains` (`pilot/pkg/networking/core/v1alpha3/gateway.go@1.10.6`)
    /// emits a chain per service port of `push.Services(proxy)` without looking at endpoints, and
    /// the aggregate registry (`pilot/pkg/serviceregistry/aggregate/controller.go@1.10.6`,
    /// `Services()`) lists a ServiceEntry beside the Kubernetes Service of its host, so each
    /// gateway gets foo's (cluster2) or bar's (cluster1) chain twice although it has no pods of
    /// it: from 1.8.6 and 1.9.5 (istio/istio#32840) to 1.21.6; not at 1.8.5, 1.9.4 or 1.22.0
    /// (`pilot/pkg/model/sidecar.go@1.22.0` keeps one service per hostname).
    #[test]
    fn fidelity_a_service_with_pods_in_one_cluster_duplicates_its_chain_in_the_other_gateway() {
        let foo = outbound_sni(80, "foo.ns1.svc.cluster.local");
        let bar = outbound_sni(80, BAR);
        let twice = |snis: &[String], sni: &str| snis.iter().filter(|chain| *chain == sni).count();
        for (version, duplicated) in [
            ("1.8.5", false),
            ("1.8.6", true),
            ("1.9.4", false),
            ("1.9.5", true),
            ("1.12.0", true),
            ("1.20.8", true),
            ("1.21.6", true),
            ("1.22.0", false),
            ("1.30.3", false),
        ] {
            let version_owned = version.to_owned();
            let (topology, plan) = skew_edited(
                move |text| {
                    text.replace("replicas: { cluster1: 1, cluster2: 3 }", "replicas: { cluster2: 3 }")
                        .replace(
                            "    podCidr:",
                            &format!("    istioVersion: \"{version_owned}\"\n    podCidr:"),
                        )
                },
                EndpointWeights::Equal,
            );
            let expected = if duplicated { 2 } else { 1 };
            let cluster1 = gateway_listener_snis(&topology, &plan, 0);
            let cluster2 = gateway_listener_snis(&topology, &plan, 1);
            assert_eq!(twice(&cluster1, &bar), expected, "{version} cluster1: {cluster1:?}");
            assert_eq!(twice(&cluster1, &foo), 1, "{version} cluster1: {cluster1:?}");
            assert_eq!(twice(&cluster2, &foo), expected, "{version} cluster2: {cluster2:?}");
            assert_eq!(twice(&cluster2, &bar), 1, "{version} cluster2: {cluster2:?}");
            let warned: Vec<&str> = plan.warnings.iter().map(|warning| warning.cluster.as_str()).collect();
            let expected_warnings: &[&str] = if duplicated { &["cluster1", "cluster2"] } else { &[] };
            assert_eq!(warned, expected_warnings, "{version}: {:?}", plan.warnings);
        }
    }

    /// Row 5: pilot/pkg/networking/core/v1alpha3/loadbalancer/loadbalancer.go@1.14.6 and
    /// pilot/pkg/xds/endpoint_builder.go@1.14.6: failover priorities only with outlierDetection.
    #[test]
    fn fidelity_locality_priorities_need_outlier_detection() {
        let priorities = |extra: &str| {
            let bar = bar_port_with(extra);
            (
                bar.endpoints
                    .iter()
                    .map(|endpoint| endpoint.priority)
                    .collect::<Vec<_>>(),
                bar.outlier_detection.is_some(),
            )
        };
        assert_eq!(priorities(""), (vec![0, 0], false));
        assert_eq!(priorities("  outlierDetection: true\n"), (vec![0, 1], true));
    }

    /// The foo sidecar's bar port in skew.yaml with `extra` added under `federation:`.
    fn bar_port_with(extra: &str) -> OutboundPort {
        let (topology, plan) = skew_edited(
            |text| {
                text.replace("  locality: false\n", "  locality: true\n")
                    .replace("  mtls: PERMISSIVE\n", &format!("  mtls: PERMISSIVE\n{extra}"))
            },
            EndpointWeights::Equal,
        );
        let spec = foo_sidecar_of((topology, plan));
        spec.outbound.iter().find(|port| port.host == BAR).unwrap().clone()
    }

    /// pilot/pkg/networking/core/cluster_traffic_policy.go@1.30 `applyOutlierDetection`: each
    /// DestinationRule field becomes its Envoy field; unset ones stay unset (Envoy's defaults).
    #[test]
    fn fidelity_outlier_detection_fields_reach_envoy_as_istio_writes_them() {
        let bar = bar_port_with(
            "  outlierDetection:\n    consecutiveGatewayErrors: 1\n    interval: 250ms\n    baseEjectionTime: 5s\n    maxEjectionPercent: 100\n",
        );
        assert_eq!(
            bar.outlier_detection,
            Some(OutlierDetection {
                consecutive_5xx: None,
                consecutive_gateway_failure: Some(1),
                interval_millis: Some(250),
                base_ejection_millis: Some(5_000),
                max_ejection_percent: Some(100),
                envoy_panic_threshold: false,
            })
        );
        let cluster = &super::super::envoy_config::sidecar_resources(&SidecarSpec {
            outbound: vec![bar],
            inbound: Vec::new(),
            ..foo_sidecar_of(skew_edited(|text| text.to_owned(), EndpointWeights::Equal))
        })
        .clusters["resources"][0];
        let detection = &cluster["outlier_detection"];
        assert_eq!(detection["consecutive_gateway_failure"], 1);
        assert_eq!(detection["enforcing_consecutive_gateway_failure"], 100);
        assert_eq!(detection["enforcing_success_rate"], 0);
        assert_eq!(detection["interval"], "0.250s");
        assert_eq!(detection["base_ejection_time"], "5s");
        assert_eq!(detection["max_ejection_percent"], 100);
        assert!(detection.get("consecutive_5xx").is_none(), "{detection}");
        assert_eq!(cluster["common_lb_config"]["healthy_panic_threshold"]["value"], 0);
    }

    /// pilot/pkg/networking/core/route/retry/retry.go@1.30: without a VirtualService a route
    /// gets Istio's default retries; `retries` overrides them (status codes split out of
    /// `retryOn`), `attempts: 0` removes them; `timeout` becomes the route timeout.
    #[test]
    fn fidelity_retries_and_timeout_come_from_the_virtual_service_over_istios_default() {
        let default = bar_port_with("");
        assert_eq!(default.retry_policy, Some(RetryPolicy::istio_default()));
        assert_eq!(default.timeout_millis, None);
        let set = bar_port_with(
            "  retries: { attempts: 4, perTryTimeout: 500ms, retryOn: \"gateway-error,503\" }\n  timeout: 3s\n",
        );
        assert_eq!(
            set.retry_policy,
            Some(RetryPolicy {
                num_retries: 4,
                retry_on: vec!["gateway-error".into(), "retriable-status-codes".into()],
                retriable_status_codes: vec![503],
                per_try_timeout_millis: Some(500),
            })
        );
        assert_eq!(set.timeout_millis, Some(3_000));
        let off = bar_port_with("  retries: { attempts: 0 }\n");
        assert_eq!(off.retry_policy, None);
        let route = &super::super::envoy_config::sidecar_resources(&SidecarSpec {
            outbound: vec![set],
            inbound: Vec::new(),
            ..foo_sidecar_of(skew_edited(|text| text.to_owned(), EndpointWeights::Equal))
        })
        .listeners["resources"][0]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
            [0]["routes"][0]["route"]
            .clone();
        assert_eq!(route["timeout"], "3s");
        assert_eq!(route["retry_policy"]["num_retries"], 4);
        assert_eq!(
            route["retry_policy"]["retry_on"],
            "gateway-error,retriable-status-codes"
        );
        assert_eq!(route["retry_policy"]["per_try_timeout"], "0.500s");
        assert_eq!(
            route["retry_policy"]["retry_host_predicate"][0]["name"],
            "envoy.retry_host_predicates.previous_hosts"
        );
    }

    /// loadbalancer.go `applyLocalityFailover`: a failover rule from the caller's region puts its
    /// `to` region before every other remote region.
    #[test]
    fn a_failover_rule_puts_its_region_before_the_other_remote_regions() {
        let local = Locality {
            region: "r1".into(),
            zone: "z1".into(),
        };
        let at = |region: &str| {
            Some(Locality {
                region: region.into(),
                zone: "z9".into(),
            })
        };
        let mut endpoints: Vec<LbEndpoint> = ["r2", "r3", "r1"]
            .iter()
            .map(|region| LbEndpoint {
                address: Ipv4Addr::new(10, 0, 0, 1),
                port: 15443,
                weight: 1,
                locality: at(region),
                priority: 0,
                istio_mtls: false,
            })
            .collect();
        let rule = |to: &str| LocalityFailover {
            from: "r1".into(),
            to: to.into(),
        };
        apply_locality_failover(&local, &mut endpoints, &[]);
        assert_eq!(endpoints.iter().map(|e| e.priority).collect::<Vec<_>>(), [1, 1, 0]);
        apply_locality_failover(&local, &mut endpoints, &[rule("r3")]);
        assert_eq!(endpoints.iter().map(|e| e.priority).collect::<Vec<_>>(), [2, 1, 0]);
        apply_locality_failover(&local, &mut endpoints, &[rule("r2")]);
        assert_eq!(endpoints.iter().map(|e| e.priority).collect::<Vec<_>>(), [1, 2, 0]);
    }

    #[test]
    fn locality_priorities_are_compacted_zone_region_other() {
        let local = Locality {
            region: "r1".into(),
            zone: "z1".into(),
        };
        let at = |region: &str, zone: &str| LbEndpoint {
            address: Ipv4Addr::LOCALHOST,
            port: 1,
            weight: 1,
            locality: Some(Locality {
                region: region.into(),
                zone: zone.into(),
            }),
            priority: 9,
            istio_mtls: false,
        };
        let mut endpoints = vec![at("r1", "z2"), at("r2", "z1"), at("r1", "z2")];
        apply_locality_failover(&local, &mut endpoints, &[]);
        let found: Vec<u32> = endpoints.iter().map(|endpoint| endpoint.priority).collect();
        assert_eq!(found, [0, 1, 0], "no local pod: the same region comes first");
    }

    /// pilot/pkg/model/push_context.go@1.30.3 (MostSpecificHostMatch): an exact host beats `*.local`.
    #[test]
    fn the_most_specific_destination_rule_applies_alone() {
        let (_, mut plan) = skew_at("1.30.3", "");
        let mut exact = plan.clusters[0]
            .objects
            .iter()
            .find_map(|object| match object {
                Object::DestinationRule(rule) => Some(rule.clone()),
                _ => None,
            })
            .unwrap();
        exact.spec.host = BAR.into();
        exact.spec.traffic_policy.tls = None;
        plan.clusters[0].objects.push(Object::DestinationRule(exact));
        assert!(destination_rule_for(&plan.clusters[0], BAR).unwrap().tls.is_none());
        assert!(
            destination_rule_for(&plan.clusters[0], "foo.ns1.svc.cluster.local")
                .unwrap()
                .tls
                .is_some()
        );
        assert!(destination_rule_for(&plan.clusters[0], "example.com").is_none());
    }

    /// The connection policy is a DestinationRule connectionPool in the phase's plan.
    #[test]
    fn a_new_connection_per_request_phase_plans_max_requests_per_connection_one() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/skew.yaml");
        let scenario = crate::scenario::load(&path).unwrap();
        let topology = topology(&scenario).unwrap();
        let inventory = topology.inventory(&scenario);
        let per_request = &scenario.phases[0];
        assert_eq!(
            per_request.connections,
            crate::scenario::ConnectionPolicy::NewConnectionPerRequest
        );
        let plan = plan::plan_phase(&scenario, &inventory, per_request);
        let spec = foo_sidecar_of((topology.clone(), plan));
        let bar = spec.outbound.iter().find(|port| port.host == BAR).unwrap();
        assert_eq!(bar.max_requests_per_connection, Some(1));
        let pooled = scenario
            .phases
            .iter()
            .find(|phase| phase.connections == crate::scenario::ConnectionPolicy::Pooled)
            .unwrap();
        let spec = foo_sidecar_of((topology, plan::plan_phase(&scenario, &inventory, pooled)));
        let bar = spec.outbound.iter().find(|port| port.host == BAR).unwrap();
        assert_eq!(bar.max_requests_per_connection, None);
    }
}
