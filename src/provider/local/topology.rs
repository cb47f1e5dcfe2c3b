//! Addresses of the `local` world, derived from the scenario alone (pure): pod IPs, cluster IPs,
//! router and gateway addresses, and the "outside" network the gateways share.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::inventory::{self, ClusterInventory, GATEWAY_PORT, GatewayAddress, Inventory, ReadyPod};
use crate::scenario::address_layout;
use crate::scenario::{Cluster, Ipv4Cidr, IstioVersion, Scenario, Service};

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
    /// What this cluster has now, as a live inventory reports it: its pods (every one ready) and
    /// its gateway's outside address.
    pub fn inventory(&self, istio_version: IstioVersion) -> ClusterInventory {
        let mut ready_pods: BTreeMap<String, Vec<ReadyPod>> = BTreeMap::new();
        for pod in &self.pods {
            ready_pods
                .entry(pod.service.clone())
                .or_default()
                .push(self.ready_pod(pod));
        }
        ClusterInventory {
            gateway: GatewayAddress {
                address: self.gateway_outside_ip.to_string(),
                port: GATEWAY_PORT,
                placeholder: false,
            },
            istio_version,
            region: self.region.clone(),
            zone: self.zone.clone(),
            ready_pods,
        }
    }

    /// `pod` as an inventory lists it.
    pub fn ready_pod(&self, pod: &PodTopology) -> ReadyPod {
        ReadyPod {
            name: pod.name.clone(),
            region: self.region.clone(),
            zone: pod.zone.clone(),
        }
    }

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
    /// The scenario has no cluster of this name.
    #[error("the scenario has no cluster {0}")]
    UnknownCluster(String),
    /// A cluster that is already in the world cannot join it.
    #[error("cluster {0} is already in the world")]
    AlreadyThere(String),
}

/// Lays out the addresses of every cluster of the scenario with [`address_layout`], the same
/// functions scenario validation checks networks against. A cluster declared `joinsLater` is left
/// out ([`Topology::mk_joining_cluster`] lays it out when it joins), but its gateway keeps the
/// outside address of its place in the scenario, so no address ever moves.
pub fn topology(scenario: &Scenario) -> Result<Topology, TopologyError> {
    let taken: Vec<Ipv4Cidr> = scenario
        .clusters
        .iter()
        .flat_map(|cluster| [cluster.pod_cidr.value, cluster.service_cidr.value])
        .collect();
    let outside_cidr = address_layout::outside_network(&taken).ok_or(TopologyError::NoOutsideNetwork)?;
    let clusters = scenario
        .clusters
        .iter()
        .filter(|cluster| !cluster.joins_later)
        .map(|cluster| mk_cluster(scenario, &cluster.name.value, outside_cidr))
        .collect::<Result<_, _>>()?;
    let router_outside_ip =
        address_layout::router_outside_address(outside_cidr).ok_or(TopologyError::NoOutsideNetwork)?;
    Ok(Topology {
        clusters,
        outside_cidr,
        router_outside_ip,
    })
}

/// Services sorted by (namespace, name): the order pod and cluster IPs are handed out in.
fn sorted_services(scenario: &Scenario) -> Vec<&Service> {
    let mut services: Vec<_> = scenario.services.iter().collect();
    services.sort_by_key(|service| (service.namespace.value.clone(), service.name.value.clone()));
    services
}

/// One cluster's addresses, with every replica the scenario gives it.
fn mk_cluster(scenario: &Scenario, name: &str, outside_cidr: Ipv4Cidr) -> Result<ClusterTopology, TopologyError> {
    let index = scenario
        .clusters
        .iter()
        .position(|cluster| cluster.name.value == name)
        .ok_or_else(|| TopologyError::UnknownCluster(name.to_owned()))?;
    let cluster = &scenario.clusters[index];
    let services = sorted_services(scenario);
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
            pods.push(mk_pod(service, replica, cluster, ip));
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
    Ok(ClusterTopology {
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
    })
}

/// The pods a scale added and removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scaled {
    /// New pods (not running yet), lowest index first.
    pub added: Vec<PodTopology>,
    /// Pods no longer in the topology, highest index first.
    pub removed: Vec<PodTopology>,
}

impl Topology {
    /// Lays out a cluster that joins the running world (declared `joinsLater`), at the addresses
    /// its place in the scenario gives it; [`Topology::clusters`] is not changed.
    pub fn mk_joining_cluster(&self, scenario: &Scenario, name: &str) -> Result<ClusterTopology, TopologyError> {
        if self.cluster(name).is_some() {
            return Err(TopologyError::AlreadyThere(name.to_owned()));
        }
        mk_cluster(scenario, name, self.outside_cidr)
    }

    /// The cluster with this name, to change.
    pub fn cluster_mut(&mut self, name: &str) -> Option<&mut ClusterTopology> {
        self.clusters.iter_mut().find(|cluster| cluster.name == name)
    }
}

/// Pod `replica` of `service` in `cluster`, at `ip`, in the zone its index gives.
fn mk_pod(service: &Service, replica: u32, cluster: &Cluster, ip: Ipv4Addr) -> PodTopology {
    PodTopology {
        name: inventory::pod_name(&service.name.value, replica),
        service: service.reference(),
        namespace: service.namespace.value.clone(),
        service_account: service.service_account().to_owned(),
        ip,
        zone: cluster.zone_of_replica(replica).to_owned(),
    }
}

impl ClusterTopology {
    /// Scales `service` to `replicas` pods, as a StatefulSet does: pods are `bar-0` up to
    /// `bar-<replicas - 1>`; scaling down removes the highest indices, scaling up adds the lowest
    /// free ones, each at the lowest free pod address of the layout and in the zone its index
    /// gives ([`crate::scenario::Cluster::zone_of_replica`]).
    pub fn scale(&mut self, scenario: &Scenario, service: &Service, replicas: u32) -> Result<Scaled, TopologyError> {
        let reference = service.reference();
        let scenario_cluster = scenario
            .cluster(&self.name)
            .ok_or_else(|| TopologyError::UnknownCluster(self.name.clone()))?;
        let index_of = |pod: &PodTopology| {
            pod.name
                .rsplit_once('-')
                .and_then(|(_, index)| index.parse::<u32>().ok())
                .unwrap_or(u32::MAX)
        };
        let mut scaled = Scaled::default();
        let mut indices: Vec<u32> = self.pods_of(&reference).map(index_of).collect();
        indices.sort_unstable();
        while indices.len() > replicas as usize {
            let highest = indices.pop().unwrap_or_default();
            let name = inventory::pod_name(&service.name.value, highest);
            if let Some(position) = self
                .pods
                .iter()
                .position(|pod| pod.service == reference && pod.name == name)
            {
                scaled.removed.push(self.pods.remove(position));
            }
        }
        let mut replica = 0u32;
        while indices.len() < replicas as usize {
            if indices.contains(&replica) {
                replica += 1;
                continue;
            }
            let ip = self.free_pod_address().ok_or_else(|| TopologyError::TooSmall {
                cluster: self.name.clone(),
                what: "pod network",
                cidr: self.pod_cidr,
                needed: address_layout::pod_addresses_needed(self.pods.len() as u64 + 1),
            })?;
            let pod = mk_pod(service, replica, scenario_cluster, ip);
            self.pods.push(pod.clone());
            scaled.added.push(pod);
            indices.push(replica);
            replica += 1;
        }
        Ok(scaled)
    }

    /// The lowest pod address of the layout no pod of this cluster has.
    fn free_pod_address(&self) -> Option<Ipv4Addr> {
        (0u32..)
            .map(|index| address_layout::pod_address(self.pod_cidr, index))
            .take_while(Option::is_some)
            .flatten()
            .find(|ip| self.pods.iter().all(|pod| pod.ip != *ip))
    }
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

    #[test]
    fn scaling_removes_the_highest_pods_and_adds_the_lowest_free_ones_at_free_addresses() {
        let scenario = seed();
        let mut topology = topology(&scenario).unwrap();
        let bar = scenario.service("bar.ns2").unwrap();
        let cluster2 = topology.cluster_mut("cluster2").unwrap();
        let down = cluster2.scale(&scenario, bar, 1).unwrap();
        let names = |pods: &[PodTopology]| {
            pods.iter()
                .map(|pod| format!("{}={}", pod.name, pod.ip))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&down.removed), ["bar-2=10.20.0.12", "bar-1=10.20.0.11"]);
        assert!(down.added.is_empty());
        let up = cluster2.scale(&scenario, bar, 4).unwrap();
        assert_eq!(
            names(&up.added),
            ["bar-1=10.20.0.11", "bar-2=10.20.0.12", "bar-3=10.20.0.13"]
        );
        assert_eq!(cluster2.pods_of("bar.ns2").count(), 4);
        let zero = cluster2.scale(&scenario, bar, 0).unwrap();
        assert_eq!(zero.removed.len(), 4);
        assert_eq!(cluster2.pods_of("bar.ns2").count(), 0);
    }

    #[test]
    fn a_cluster_that_joins_later_is_laid_out_only_when_it_joins_at_its_own_gateway_address() {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/three-clusters.yaml"))
            .unwrap();
        // Validation wants a joinCluster action for a joinsLater cluster; the layout does not.
        let mut scenario = crate::scenario::parse(Path::new("x.yaml"), &text).unwrap();
        scenario.clusters[1].joins_later = true;
        assert_eq!(scenario.clusters[1].name.value, "cluster2");
        let topology = topology(&scenario).unwrap();
        let names: Vec<&str> = topology.clusters.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["cluster1", "cluster3"]);
        assert_eq!(
            topology.cluster("cluster3").unwrap().gateway_outside_ip,
            Ipv4Addr::new(100, 64, 0, 12),
            "cluster3 keeps the address of its place in the scenario"
        );
        let joining = topology.mk_joining_cluster(&scenario, "cluster2").unwrap();
        assert_eq!(joining.gateway_outside_ip, Ipv4Addr::new(100, 64, 0, 11));
        assert_eq!(joining.pods.len(), 2);
        assert!(topology.mk_joining_cluster(&scenario, "cluster1").is_err());
        assert!(!topology.inventory(&scenario).clusters.contains_key("cluster2"));
    }
}
