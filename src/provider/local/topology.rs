//! Addresses of the `local` world, derived from the scenario alone (pure): pod IPs, cluster IPs,
//! router and gateway addresses, and the "outside" network the gateways share.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::inventory::{self, GATEWAY_PORT, GatewayAddress, Inventory};
use crate::scenario::address_layout;
use crate::scenario::{Ipv4Cidr, Scenario};

/// Name of each cluster's gateway pod (as Istio names its ingress gateway).
pub const GATEWAY_POD: &str = "istio-ingressgateway";

/// The whole world's addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// Per cluster, in scenario order.
    pub clusters: Vec<ClusterTopology>,
    /// The network the gateways and the router share (none of the scenario's networks).
    pub outside_cidr: Ipv4Cidr,
    /// The router's address on the outside network.
    pub router_outside_ip: Ipv4Addr,
}

/// One cluster's addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterTopology {
    /// Cluster name.
    pub name: String,
    /// Region of its nodes.
    pub region: String,
    /// Zone of its nodes.
    pub zone: String,
    /// Pod network.
    pub pod_cidr: Ipv4Cidr,
    /// Service network (cluster IPs).
    pub service_cidr: Ipv4Cidr,
    /// The router's address on the pod network (the pods' next hop to the outside).
    pub router_ip: Ipv4Addr,
    /// The gateway pod's address on the pod network.
    pub gateway_pod_ip: Ipv4Addr,
    /// The gateway's address on the outside network: what other clusters connect to.
    pub gateway_outside_ip: Ipv4Addr,
    /// Application pods.
    pub pods: Vec<PodTopology>,
    /// Cluster IP of every service (all are replicated), by `name.namespace`.
    pub service_ips: BTreeMap<String, Ipv4Addr>,
}

/// One application pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTopology {
    /// Pod name: `bar-0`.
    pub name: String,
    /// Its service, as `name.namespace`.
    pub service: String,
    /// Namespace.
    pub namespace: String,
    /// Service account (the `sa` of its SPIFFE identity).
    pub service_account: String,
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// Zone the pod runs in (the cluster's `zones` round-robin, else its `zone`).
    pub zone: String,
}

impl Topology {
    /// The cluster with this name.
    pub fn cluster(&self, name: &str) -> Option<&ClusterTopology> {
        self.clusters.iter().find(|cluster| cluster.name == name)
    }

    /// The inventory of this world: every pod ready, gateways at their outside addresses.
    pub fn inventory(&self, scenario: &Scenario) -> Inventory {
        inventory::from_scenario_with_gateways(scenario, |cluster| GatewayAddress {
            address: self
                .cluster(cluster)
                .map_or_else(String::new, |c| c.gateway_outside_ip.to_string()),
            port: GATEWAY_PORT,
            placeholder: false,
        })
    }
}

impl ClusterTopology {
    /// The pods of service `name.namespace` in this cluster.
    pub fn pods_of<'a>(&'a self, service: &'a str) -> impl Iterator<Item = &'a PodTopology> {
        self.pods.iter().filter(move |pod| pod.service == service)
    }
}

/// Why no topology could be laid out.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A network is too small for what must live in it.
    #[error("{what} of cluster {cluster} ({cidr}) is too small for its {needed} addresses")]
    TooSmall {
        /// Cluster.
        cluster: String,
        /// `pod network` or `service network`.
        what: &'static str,
        /// The network.
        cidr: Ipv4Cidr,
        /// Addresses needed.
        needed: u64,
    },
    /// Every candidate outside network overlaps one of the scenario's networks.
    #[error(
        "no free /24 for the gateways' outside network: every candidate in 100.64.0.0/10 overlaps a scenario network"
    )]
    NoOutsideNetwork,
    /// More clusters than the outside network has gateway addresses for.
    #[error(
        "more clusters than the outside /24 has gateway addresses for ({})",
        address_layout::MAX_OUTSIDE_GATEWAYS
    )]
    TooManyClusters,
}

/// Lays out the addresses of every cluster of the scenario with [`address_layout`], the same
/// functions scenario validation checks networks against.
pub fn topology(scenario: &Scenario) -> Result<Topology, TopologyError> {
    let taken: Vec<Ipv4Cidr> = scenario
        .clusters
        .iter()
        .flat_map(|cluster| [cluster.pod_cidr.value, cluster.service_cidr.value])
        .collect();
    let outside_cidr = address_layout::outside_network(&taken).ok_or(TopologyError::NoOutsideNetwork)?;
    let mut services: Vec<_> = scenario.services.iter().collect();
    services.sort_by_key(|service| (service.namespace.value.clone(), service.name.value.clone()));
    let mut clusters = Vec::new();
    for (index, cluster) in scenario.clusters.iter().enumerate() {
        let name = cluster.name.value.clone();
        let pod_cidr = cluster.pod_cidr.value;
        let service_cidr = cluster.service_cidr.value;
        let pod_count: u64 = services
            .iter()
            .map(|service| u64::from(service.replicas_in(&name)))
            .sum();
        let pod_network_too_small = || TopologyError::TooSmall {
            cluster: name.clone(),
            what: "pod network",
            cidr: pod_cidr,
            needed: address_layout::pod_addresses_needed(pod_count),
        };
        let mut pods = Vec::new();
        let mut next_pod = 0u32;
        for service in &services {
            for replica in 0..service.replicas_in(&name) {
                let ip = address_layout::pod_address(pod_cidr, next_pod).ok_or_else(pod_network_too_small)?;
                next_pod += 1;
                pods.push(PodTopology {
                    name: inventory::pod_name(&service.name.value, replica),
                    service: service.reference(),
                    namespace: service.namespace.value.clone(),
                    service_account: service.service_account().to_owned(),
                    ip,
                    zone: cluster.zone_of_replica(replica).to_owned(),
                });
            }
        }
        let service_ips = services
            .iter()
            .enumerate()
            .map(|(position, service)| {
                let ip = u32::try_from(position)
                    .ok()
                    .and_then(|position| address_layout::service_address(service_cidr, position))
                    .ok_or_else(|| TopologyError::TooSmall {
                        cluster: name.clone(),
                        what: "service network",
                        cidr: service_cidr,
                        needed: address_layout::service_addresses_needed(services.len() as u64),
                    })?;
                Ok((service.reference(), ip))
            })
            .collect::<Result<_, TopologyError>>()?;
        let router_ip = address_layout::router_address(pod_cidr).ok_or_else(pod_network_too_small)?;
        let gateway_pod_ip = address_layout::gateway_pod_address(pod_cidr).ok_or_else(pod_network_too_small)?;
        let gateway_outside_ip = u32::try_from(index)
            .ok()
            .and_then(|index| address_layout::gateway_outside_address(outside_cidr, index))
            .ok_or(TopologyError::TooManyClusters)?;
        clusters.push(ClusterTopology {
            name,
            region: cluster.region.clone(),
            zone: cluster.zone.clone(),
            pod_cidr,
            service_cidr,
            router_ip,
            gateway_pod_ip,
            gateway_outside_ip,
            pods,
            service_ips,
        });
    }
    let router_outside_ip =
        address_layout::router_outside_address(outside_cidr).ok_or(TopologyError::NoOutsideNetwork)?;
    Ok(Topology {
        clusters,
        outside_cidr,
        router_outside_ip,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn seed() -> Scenario {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/skew.yaml");
        crate::scenario::load(&path).unwrap()
    }

    #[test]
    fn pods_get_distinct_addresses_inside_their_cluster_pod_network() {
        let topology = topology(&seed()).unwrap();
        let cluster2 = topology.cluster("cluster2").unwrap();
        let ips: Vec<String> = cluster2
            .pods
            .iter()
            .map(|pod| format!("{}={}", pod.name, pod.ip))
            .collect();
        assert_eq!(ips, ["bar-0=10.20.0.10", "bar-1=10.20.0.11", "bar-2=10.20.0.12"]);
        assert_eq!(cluster2.router_ip, Ipv4Addr::new(10, 20, 0, 1));
        assert_eq!(cluster2.gateway_pod_ip, Ipv4Addr::new(10, 20, 0, 2));
    }

    #[test]
    fn every_service_has_a_cluster_ip_in_every_cluster() {
        let topology = topology(&seed()).unwrap();
        for cluster in &topology.clusters {
            assert_eq!(cluster.service_ips.len(), 2, "{}", cluster.name);
            assert!(cluster.service_ips.values().all(|ip| {
                cluster.service_cidr.overlaps(Ipv4Cidr {
                    network: *ip,
                    prefix_len: 32,
                })
            }));
        }
    }

    #[test]
    fn outside_network_avoids_scenario_networks() {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/skew.yaml"))
            .unwrap()
            .replace("serviceCidr: 10.97.0.0/16", "serviceCidr: 100.64.0.0/23");
        let scenario = crate::scenario::parse(Path::new("x.yaml"), &text).unwrap();
        let topology = topology(&scenario).unwrap();
        assert_eq!(topology.outside_cidr.to_string(), "100.64.2.0/24");
        assert_eq!(
            topology.cluster("cluster1").unwrap().gateway_outside_ip,
            Ipv4Addr::new(100, 64, 2, 10)
        );
    }
}
