//! The emulated control plane (pure): turns one cluster's planned objects plus the world's
//! addresses into Envoy specs, the way istiod turns Services, ServiceEntries, the DestinationRule
//! and the Gateway into sidecar and gateway configuration.
//!
//! What it reads from the plan: replicated `Service`s (hosts and ports of outbound listeners and of
//! the gateway's SNI routes), `ServiceEntry` endpoints (remote gateways with weight and locality),
//! the `*.local` ISTIO_MUTUAL DestinationRule (mTLS origination) and the AUTO_PASSTHROUGH `Gateway`
//! (whether the gateway routes at all). What it adds from the world: local pods (Kubernetes
//! endpoints) and their identities.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::envoy_config::{
    CertPaths, CircuitBreaker, GatewayFailover, GatewaySpec, InboundMtls, InboundPort, LbEndpoint, Locality,
    OutboundPort, SidecarSpec, SniRoute, UpstreamTls, outbound_sni,
};
use super::topology::{ClusterTopology, PodTopology, Topology};
use crate::plan::versions::IstioBehaviour;
use crate::plan::{ClusterPlan, Object};
use crate::scenario::LoadBalancer;

mod endpoints;
mod plan_reading;
mod policy;

use endpoints::*;
use plan_reading::*;
pub use plan_reading::{
    destination_rule_for, namespace_injected, peer_authentication_strict, resolved_service_address,
};
use policy::*;

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
mod fidelity_rules;

#[cfg(test)]
mod tests;
