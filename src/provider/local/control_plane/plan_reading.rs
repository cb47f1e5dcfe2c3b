//! What the control plane reads of one cluster's plan: replicated Services and their ports,
//! DestinationRules, PeerAuthentication, namespaces' injection, the passthrough Gateway and the
//! identities behind a host.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::pki::spiffe_id;
use crate::plan::istio::{LocalityFailover, TrafficPolicy};
use crate::plan::versions::IstioBehaviour;
use crate::plan::{ClusterPlan, INJECTION_LABEL, Object};
use crate::provider::local::envoy_config::Protocol;
use crate::provider::local::topology::{ClusterTopology, Topology};

/// A port of a replicated service, as read from the plan's `Service` object.
pub(super) struct PlannedPort {
    pub(super) name: String,
    pub(super) number: u16,
    pub(super) protocol: Protocol,
}

/// A replicated service as read from the plan.
pub(super) struct PlannedService {
    /// `name.namespace`.
    pub(super) reference: String,
    pub(super) host: String,
    pub(super) ports: Vec<PlannedPort>,
    /// The ServiceEntry's address when no Service carries the host (DNS proxying); `None` for a
    /// Service, whose address is its cluster IP.
    pub(super) entry_address: Option<Ipv4Addr>,
    /// Whether a Kubernetes Service carries the host (else only a ServiceEntry does).
    pub(super) kubernetes: bool,
}

/// Every host istiod gives the cluster's proxies: its Services, then the ServiceEntries whose
/// host no Service carries (with `federation.dnsProxying`), in plan order.
pub(super) fn planned_services(plan: &ClusterPlan) -> Vec<PlannedService> {
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
pub(super) fn outbound_address(cluster: &ClusterTopology, service: &PlannedService) -> Option<Ipv4Addr> {
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

pub(super) fn planned_kubernetes_services(plan: &ClusterPlan) -> Vec<PlannedService> {
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

/// The mesh-wide mTLS mode of the plan: its PeerAuthentication (1.5+) or MeshPolicy (before
/// 1.5). Without either, Istio's default is PERMISSIVE.
pub fn peer_authentication_strict(plan: &ClusterPlan) -> bool {
    plan.objects.iter().any(|object| match object {
        Object::PeerAuthentication(policy) => policy.spec.mtls.mode == "STRICT",
        Object::MeshPolicy(policy) => policy.spec.peers.iter().any(|peer| peer.mtls.mode == "STRICT"),
        _ => false,
    })
}

pub(super) fn passthrough_gateway_planned(plan: &ClusterPlan) -> bool {
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
pub(super) fn server_identities(
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

/// Remote clusters this cluster discovers endpoints from: those it has a remote secret for.
pub(super) fn remote_secret_clusters(plan: &ClusterPlan) -> impl Iterator<Item = &str> {
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

/// The DestinationRule's `localityLbSetting.failover` rules for `host`, as the cluster's istiod
/// reads them: versions before 1.5 ignore the rule's `localityLbSetting` (row 5d).
pub(super) fn failover_rules<'a>(plan: &'a ClusterPlan, host: &str) -> &'a [LocalityFailover] {
    if !IstioBehaviour::of(plan.install.istio_version).destination_rule_locality_lb_setting() {
        return &[];
    }
    destination_rule_for(plan, host)
        .and_then(|p| p.load_balancer.as_ref())
        .and_then(|lb| lb.locality_lb_setting.as_ref())
        .map_or(&[][..], |setting| setting.failover.as_slice())
}
