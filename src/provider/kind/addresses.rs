//! LoadBalancer address pools for MetalLB, carved from the end of Docker's `kind` network (pure):
//! what `docker network inspect kind` says in, one disjoint range per cluster out, as Istio's CI
//! does (`common/scripts/kind_provisioner.sh`). Docker hands container addresses out from the
//! start of the subnet, so the end is free for gateways.
#![forbid(unsafe_code)]

use std::net::Ipv4Addr;

use serde::Deserialize;

use crate::scenario::Ipv4Cidr;

/// Addresses per cluster (Istio's CI uses 50 too; meshfed needs one or two gateways).
pub const POOL_SIZE: u32 = 50;

/// Addresses at the start of the subnet left for node containers (the gateway takes `.1`).
pub const RESERVED_FOR_CONTAINERS: u32 = 64;

/// One cluster's MetalLB range, inclusive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressPool {
    /// First address.
    pub first: Ipv4Addr,
    /// Last address.
    pub last: Ipv4Addr,
}

impl AddressPool {
    /// `first-last`, as MetalLB's `IPAddressPool.spec.addresses` takes it.
    pub fn range(&self) -> String {
        format!("{}-{}", self.first, self.last)
    }

    /// Whether `ip` is in the pool.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.first <= ip && ip <= self.last
    }
}

/// What meshfed reads of `docker network inspect kind`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindNetwork {
    /// The network's IPv4 subnet.
    pub subnet: Ipv4Cidr,
    /// IPv4 addresses of the containers attached to it now.
    pub container_addresses: Vec<Ipv4Addr>,
}

/// Why the `kind` network cannot give the clusters their pools.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressPoolError {
    /// The inspect output is not what Docker writes.
    #[error("`docker network inspect kind` printed something meshfed cannot read: {0}")]
    Unreadable(String),
    /// The network has no IPv4 subnet.
    #[error("docker network `kind` has no IPv4 subnet (meshfed needs one for gateway addresses)")]
    NoIpv4Subnet,
    /// The subnet is too small.
    #[error(
        "docker network `kind` ({subnet}) is too small for {clusters} cluster(s): meshfed needs {needed} addresses \
         ({POOL_SIZE} per cluster at its end plus {RESERVED_FOR_CONTAINERS} for nodes); delete it (`docker network rm kind`) \
         so kind recreates it as a /16"
    )]
    TooSmall {
        /// The subnet.
        subnet: Ipv4Cidr,
        /// Clusters asked for.
        clusters: usize,
        /// Addresses needed.
        needed: u64,
    },
    /// A container already has an address inside a pool.
    #[error(
        "container address {address} on docker network `kind` lies in the gateway pool {pool} meshfed would give cluster {cluster}"
    )]
    InUse {
        /// The address.
        address: Ipv4Addr,
        /// The pool.
        pool: String,
        /// The cluster.
        cluster: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectedNetwork {
    #[serde(rename = "IPAM")]
    ipam: Ipam,
    #[serde(default)]
    containers: Option<std::collections::BTreeMap<String, InspectedContainer>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Ipam {
    #[serde(default)]
    config: Option<Vec<IpamConfig>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpamConfig {
    #[serde(default)]
    subnet: String,
}

#[derive(Deserialize)]
struct InspectedContainer {
    #[serde(rename = "IPv4Address", default)]
    ipv4_address: String,
}

/// Reads the JSON `docker network inspect kind` prints (an array with one network).
pub fn parse_network_inspect(json: &str) -> Result<KindNetwork, AddressPoolError> {
    let networks: Vec<InspectedNetwork> =
        serde_json::from_str(json).map_err(|error| AddressPoolError::Unreadable(error.to_string()))?;
    let [network] = <[InspectedNetwork; 1]>::try_from(networks)
        .map_err(|networks| AddressPoolError::Unreadable(format!("expected one network, got {}", networks.len())))?;
    let subnet = network
        .ipam
        .config
        .unwrap_or_default()
        .iter()
        .find_map(|config| config.subnet.parse::<Ipv4Cidr>().ok())
        .ok_or(AddressPoolError::NoIpv4Subnet)?;
    let container_addresses = network
        .containers
        .unwrap_or_default()
        .values()
        .filter_map(|container| container.ipv4_address.split('/').next()?.parse().ok())
        .collect();
    Ok(KindNetwork {
        subnet,
        container_addresses,
    })
}

/// One pool per cluster, in the given order, counted back from the subnet's last usable address.
pub fn address_pools(network: &KindNetwork, clusters: &[&str]) -> Result<Vec<AddressPool>, AddressPoolError> {
    let needed = u64::from(POOL_SIZE) * clusters.len() as u64 + u64::from(RESERVED_FOR_CONTAINERS) + 2;
    if network.subnet.size() < needed {
        return Err(AddressPoolError::TooSmall {
            subnet: network.subnet,
            clusters: clusters.len(),
            needed,
        });
    }
    // The broadcast address is `size - 1`; the last usable one is `size - 2`.
    let last_usable = (network.subnet.size() - 2) as u32;
    clusters
        .iter()
        .enumerate()
        .map(|(index, cluster)| {
            let last_index = last_usable - POOL_SIZE * index as u32;
            let pool = AddressPool {
                first: network
                    .subnet
                    .host(last_index + 1 - POOL_SIZE)
                    .expect("inside the subnet"),
                last: network.subnet.host(last_index).expect("inside the subnet"),
            };
            if let Some(address) = network
                .container_addresses
                .iter()
                .find(|address| pool.contains(**address))
            {
                return Err(AddressPoolError::InUse {
                    address: *address,
                    pool: pool.range(),
                    cluster: (*cluster).to_owned(),
                });
            }
            Ok(pool)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSPECT: &str = r#"[{"Name":"kind","IPAM":{"Driver":"default","Config":[
        {"Subnet":"fc00:f853:ccd:e793::/64"},{"Subnet":"172.18.0.0/16","Gateway":"172.18.0.1"}]},
        "Containers":{"a1":{"Name":"kind-control-plane","IPv4Address":"172.18.0.2/16","IPv6Address":""}}}]"#;

    #[test]
    fn pools_are_carved_back_from_the_end_of_the_ipv4_subnet() {
        let network = parse_network_inspect(INSPECT).unwrap();
        assert_eq!(network.subnet.to_string(), "172.18.0.0/16");
        assert_eq!(network.container_addresses, vec![Ipv4Addr::new(172, 18, 0, 2)]);
        let pools = address_pools(&network, &["cluster1", "cluster2"]).unwrap();
        assert_eq!(pools[0].range(), "172.18.255.205-172.18.255.254");
        assert_eq!(pools[1].range(), "172.18.255.155-172.18.255.204");
    }

    #[test]
    fn a_small_subnet_or_a_used_address_is_refused() {
        let mut network = parse_network_inspect(INSPECT).unwrap();
        network.subnet = "172.18.0.0/24".parse().unwrap();
        assert!(matches!(
            address_pools(&network, &["a", "b", "c", "d"]),
            Err(AddressPoolError::TooSmall { needed: 266, .. })
        ));
        network.container_addresses.push(Ipv4Addr::new(172, 18, 0, 230));
        assert!(matches!(
            address_pools(&network, &["a"]),
            Err(AddressPoolError::InUse { .. })
        ));
    }

    #[test]
    fn a_network_without_ipv4_is_refused() {
        let json = r#"[{"IPAM":{"Config":[{"Subnet":"fc00::/64"}]},"Containers":{}}]"#;
        assert_eq!(parse_network_inspect(json), Err(AddressPoolError::NoIpv4Subnet));
    }
}
