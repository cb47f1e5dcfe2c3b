//! Endpoints of an outbound cluster, as istiod builds them: local pods, remote gateways from
//! ServiceEntries or split-horizon EDS, their localities, weights and failover priorities.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::plan_reading::*;
use crate::plan::istio::LocalityFailover;
use crate::plan::versions::IstioBehaviour;
use crate::plan::{ClusterPlan, Object};
use crate::provider::local::envoy_config::{LbEndpoint, Locality};
use crate::provider::local::topology::{ClusterTopology, Topology};

pub(super) fn parse_locality(text: &str) -> Option<Locality> {
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
pub(super) fn locality_priority(local: &Locality, endpoint: Option<&Locality>, failover: &[LocalityFailover]) -> u32 {
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

pub(super) fn apply_locality_failover(local: &Locality, endpoints: &mut [LbEndpoint], failover: &[LocalityFailover]) {
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
pub(super) fn endpoints_for(
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

/// Endpoint discovery (multi-primary, different networks): for every remote cluster with a remote
/// secret, istiod reads that cluster's endpoints and, because they sit on another network, gives
/// sidecars that network's east-west gateway instead, weighted by the number of pods behind it
/// and with their locality (Istio's split-horizon EDS). These carry `tlsMode: istio`.
pub(super) fn discovered_remote_endpoints(
    topology: &Topology,
    plan: &ClusterPlan,
    service: &PlannedService,
) -> Vec<LbEndpoint> {
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
pub(super) fn locality_groups(remote: &ClusterTopology, service: &str) -> Vec<(Locality, u32)> {
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
pub(super) fn split_horizon_gateway_endpoint(
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
