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
    CertPaths, GatewaySpec, InboundPort, LbEndpoint, Locality, OutboundPort, Protocol, SidecarSpec, SniRoute,
    outbound_sni,
};
use super::topology::{ClusterTopology, PodTopology, Topology};
use crate::pki::spiffe_id;
use crate::plan::{ClusterPlan, Object};

/// Proxy settings that a phase may change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxySettings {
    /// `Some(1)` makes every request a new upstream connection (new-connection-per-request).
    pub max_requests_per_connection: Option<u32>,
}

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
}

fn planned_services(plan: &ClusterPlan) -> Vec<PlannedService> {
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
                            _ => Protocol::Http,
                        },
                    })
                })
                .collect();
            Some(PlannedService {
                reference: format!("{name}.{namespace}"),
                host: format!("{name}.{namespace}.svc.cluster.local"),
                ports,
            })
        })
        .collect()
}

/// Whether the plan asks sidecars to originate Istio mTLS for `*.local` (the seed's DestinationRule).
pub fn originates_istio_mutual(plan: &ClusterPlan) -> bool {
    plan.objects.iter().any(|object| {
        matches!(object, Object::DestinationRule(rule)
            if rule.spec.host == "*.local" && rule.spec.traffic_policy.tls.mode == "ISTIO_MUTUAL")
    })
}

fn passthrough_gateway_planned(plan: &ClusterPlan) -> bool {
    plan.objects.iter().any(|object| {
        matches!(object, Object::Gateway(gateway) if gateway.spec.servers.iter().any(|server| {
            server.tls.mode == "AUTO_PASSTHROUGH" && server.hosts.iter().any(|host| host == "*.local")
        }))
    })
}

/// The SPIFFE identities of every pod of a service, in every cluster.
fn server_identities(topology: &Topology, trust_domain: &str, service: &str) -> Vec<String> {
    let identities: BTreeSet<String> = topology
        .clusters
        .iter()
        .flat_map(|cluster| cluster.pods_of(service))
        .map(|pod| spiffe_id(trust_domain, &pod.namespace, &pod.service_account))
        .collect();
    identities.into_iter().collect()
}

fn parse_locality(text: &str) -> Option<Locality> {
    let (region, zone) = text.split_once('/')?;
    Some(Locality {
        region: region.to_owned(),
        zone: zone.to_owned(),
    })
}

/// The endpoints istiod would give a sidecar for one service port: the local pods (Kubernetes
/// endpoints, weight 1 each) and the ServiceEntry's remote gateways (their weight and locality).
fn endpoints_for(
    topology: &Topology,
    cluster: &ClusterTopology,
    plan: &ClusterPlan,
    service: &PlannedService,
    port: &PlannedPort,
) -> Vec<LbEndpoint> {
    let local_locality = Locality {
        region: cluster.region.clone(),
        zone: cluster.zone.clone(),
    };
    let mut endpoints: Vec<LbEndpoint> = cluster
        .pods_of(&service.reference)
        .map(|pod| LbEndpoint {
            address: pod.ip,
            port: port.number,
            weight: 1,
            locality: Some(local_locality.clone()),
            priority: 0,
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
            });
        }
    }
    endpoints.extend(discovered_remote_endpoints(topology, plan, service));
    endpoints
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
/// and with their locality (Istio's split-horizon EDS).
fn discovered_remote_endpoints(topology: &Topology, plan: &ClusterPlan, service: &PlannedService) -> Vec<LbEndpoint> {
    remote_secret_clusters(plan)
        .filter_map(|remote| topology.cluster(remote))
        .filter_map(|remote| {
            let pods = remote.pods_of(&service.reference).count();
            (pods > 0).then(|| LbEndpoint {
                address: remote.gateway_outside_ip,
                port: crate::inventory::GATEWAY_PORT,
                weight: u32::try_from(pods).unwrap_or(u32::MAX),
                locality: Some(Locality {
                    region: remote.region.clone(),
                    zone: remote.zone.clone(),
                }),
                priority: 0,
            })
        })
        .collect()
}

/// The sidecar of one application pod.
pub fn sidecar_spec(
    topology: &Topology,
    trust_domain: &str,
    cluster: &ClusterTopology,
    plan: &ClusterPlan,
    pod: &PodTopology,
    certs: CertPaths,
    settings: ProxySettings,
) -> SidecarSpec {
    let services = planned_services(plan);
    let inbound = services
        .iter()
        .filter(|service| service.reference == pod.service)
        .flat_map(|service| service.ports.iter())
        .map(|port| InboundPort {
            port: port.number,
            protocol: port.protocol,
        })
        .collect();
    let outbound = services
        .iter()
        .filter_map(|service| Some((service, *cluster.service_ips.get(&service.reference)?)))
        .flat_map(|(service, cluster_ip)| {
            let identities = server_identities(topology, trust_domain, &service.reference);
            service.ports.iter().map(move |port| OutboundPort {
                host: service.host.clone(),
                cluster_ip,
                port: port.number,
                protocol: port.protocol,
                server_identities: identities.clone(),
                endpoints: endpoints_for(topology, cluster, plan, service, port),
                max_requests_per_connection: settings.max_requests_per_connection,
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

/// The cluster's 15443 gateway: one SNI route per service port with local pods, when the plan
/// has the AUTO_PASSTHROUGH Gateway (without it, the gateway routes nothing, as Istio's would).
pub fn gateway_spec(cluster: &ClusterTopology, plan: &ClusterPlan) -> GatewaySpec {
    let routes = if passthrough_gateway_planned(plan) {
        planned_services(plan)
            .iter()
            .flat_map(|service| {
                service.ports.iter().filter_map(|port| {
                    let endpoints: Vec<SocketAddrV4> = cluster
                        .pods_of(&service.reference)
                        .map(|pod| SocketAddrV4::new(pod.ip, port.number))
                        .collect();
                    (!endpoints.is_empty()).then(|| SniRoute {
                        sni: outbound_sni(port.number, &service.host),
                        endpoints,
                    })
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
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::plan;
    use crate::provider::local::topology::topology;
    use crate::scenario::EndpointWeights;

    /// `scenarios/skew.yaml` with `edit` applied to its text, laid out and planned.
    fn skew_edited(edit: impl Fn(String) -> String, weights: EndpointWeights) -> (Topology, plan::Plan) {
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
    fn foo_sidecar_of((topology, plan): (Topology, plan::Plan)) -> SidecarSpec {
        let cluster = topology.cluster("cluster1").unwrap();
        let foo = cluster.pods.iter().find(|pod| pod.name == "foo-0").unwrap();
        let certs = CertPaths::in_dir(&PathBuf::from("/certs"));
        sidecar_spec(
            &topology,
            "cluster.local",
            cluster,
            &plan.clusters[0],
            foo,
            certs,
            ProxySettings::default(),
        )
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
        assert_eq!(
            spec.inbound,
            [InboundPort {
                port: 80,
                protocol: Protocol::Http
            }]
        );
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

    #[test]
    fn gateway_routes_sni_to_its_own_clusters_pods_only() {
        let (topology, plan) = skew(EndpointWeights::Equal);
        let gateway = gateway_spec(topology.cluster("cluster2").unwrap(), &plan.clusters[1]);
        let routes: Vec<(String, usize)> = gateway
            .routes
            .iter()
            .map(|route| (route.sni.clone(), route.endpoints.len()))
            .collect();
        assert_eq!(routes, [("outbound_.80_._.bar.ns2.svc.cluster.local".to_owned(), 3)]);
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
}
