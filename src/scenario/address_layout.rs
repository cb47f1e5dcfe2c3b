//! The address layout of a world whose addresses meshfed assigns itself (the `local` provider):
//! which host of each pod and service network is the router, the gateway, each pod and each
//! cluster IP, and where the gateways' shared outside network goes.
//!
//! Pure arithmetic on [`Ipv4Cidr`]s. Scenario validation and `provider::local::topology` both call
//! these functions, so a scenario that validates always lays out, and a pod never gets a network
//! or broadcast address.

use std::net::Ipv4Addr;

use super::Ipv4Cidr;

/// Host index of the router on each cluster's pod network.
pub const ROUTER_HOST: u32 = 1;
/// Host index of the gateway pod on its cluster's pod network.
pub const GATEWAY_HOST: u32 = 2;
/// Host index of the first application pod (3–9 are kept free).
pub const FIRST_POD_HOST: u32 = 10;
/// Host index of the first service cluster IP (1–9 are kept free).
pub const FIRST_SERVICE_HOST: u32 = 10;
/// Host index of the first cluster's gateway on the outside network; cluster `i` gets this + `i`.
pub const FIRST_OUTSIDE_GATEWAY_HOST: u32 = 10;
/// Host index of the router on the outside network.
pub const OUTSIDE_ROUTER_HOST: u32 = 1;
/// Prefix length of the outside network the gateways and the router share.
pub const OUTSIDE_PREFIX_LEN: u8 = 24;
/// Where the outside network is taken from: the shared address space 100.64.0.0/10 (RFC 6598).
pub const OUTSIDE_POOL: Ipv4Cidr = Ipv4Cidr {
    network: Ipv4Addr::new(100, 64, 0, 0),
    prefix_len: 10,
};

/// Most clusters the outside network holds a gateway for: hosts 10 to 254 of a /24.
pub const MAX_OUTSIDE_GATEWAYS: u32 = (1 << (32 - OUTSIDE_PREFIX_LEN)) - 1 - FIRST_OUTSIDE_GATEWAY_HOST;

/// Ranges no scenario network may touch, with why: they are not routable between network
/// namespaces (or mean something else to the kernel).
pub const RESERVED_RANGES: &[(Ipv4Cidr, &str)] = &[
    (cidr(0, 0, 0, 0, 8), "\"this network\" (0.0.0.0/8), not routable"),
    (
        cidr(127, 0, 0, 0, 8),
        "loopback (127.0.0.0/8), never leaves a network namespace",
    ),
    (cidr(169, 254, 0, 0, 16), "link-local (169.254.0.0/16), not routed"),
    (cidr(224, 0, 0, 0, 4), "multicast (224.0.0.0/4)"),
    (cidr(240, 0, 0, 0, 4), "reserved and broadcast (240.0.0.0/4)"),
];

const fn cidr(a: u8, b: u8, c: u8, d: u8, prefix_len: u8) -> Ipv4Cidr {
    Ipv4Cidr {
        network: Ipv4Addr::new(a, b, c, d),
        prefix_len,
    }
}

/// The `host`-th address of `network` if it is usable by an interface: inside the network and
/// neither its network nor its broadcast address.
pub fn usable_host(network: Ipv4Cidr, host: u32) -> Option<Ipv4Addr> {
    let size = network.size();
    (host >= 1 && u64::from(host) + 1 < size)
        .then(|| network.host(host))
        .flatten()
}

/// Addresses a pod network must have for `pods` application pods: the network address, the
/// router, the gateway and the free hosts up to [`FIRST_POD_HOST`], the pods, and the broadcast
/// address.
pub fn pod_addresses_needed(pods: u64) -> u64 {
    u64::from(FIRST_POD_HOST) + pods + 1
}

/// Addresses a service network must have for `services` cluster IPs (every service has one in
/// every cluster): the network address, the free hosts up to [`FIRST_SERVICE_HOST`], the cluster
/// IPs and the broadcast address.
pub fn service_addresses_needed(services: u64) -> u64 {
    u64::from(FIRST_SERVICE_HOST) + services + 1
}

/// The router's address on a pod network.
pub fn router_address(pod_network: Ipv4Cidr) -> Option<Ipv4Addr> {
    usable_host(pod_network, ROUTER_HOST)
}

/// The gateway pod's address on a pod network.
pub fn gateway_pod_address(pod_network: Ipv4Cidr) -> Option<Ipv4Addr> {
    usable_host(pod_network, GATEWAY_HOST)
}

/// The address of the `index`-th application pod of a cluster (counting over all its services).
pub fn pod_address(pod_network: Ipv4Cidr, index: u32) -> Option<Ipv4Addr> {
    usable_host(pod_network, FIRST_POD_HOST.checked_add(index)?)
}

/// The cluster IP of the `index`-th service (services in (namespace, name) order).
pub fn service_address(service_network: Ipv4Cidr, index: u32) -> Option<Ipv4Addr> {
    usable_host(service_network, FIRST_SERVICE_HOST.checked_add(index)?)
}

/// The first /24 of [`OUTSIDE_POOL`] that none of `taken` overlaps. It exists only inside
/// meshfed's own namespaces.
pub fn outside_network(taken: &[Ipv4Cidr]) -> Option<Ipv4Cidr> {
    let blocks = 1u32 << (OUTSIDE_PREFIX_LEN - OUTSIDE_POOL.prefix_len);
    (0..blocks)
        .map(|block| Ipv4Cidr {
            network: Ipv4Addr::from(u32::from(OUTSIDE_POOL.network) + (block << (32 - OUTSIDE_PREFIX_LEN))),
            prefix_len: OUTSIDE_PREFIX_LEN,
        })
        .find(|candidate| taken.iter().all(|network| !network.overlaps(*candidate)))
}

/// The `index`-th cluster's gateway address on the outside network.
pub fn gateway_outside_address(outside: Ipv4Cidr, cluster_index: u32) -> Option<Ipv4Addr> {
    usable_host(outside, FIRST_OUTSIDE_GATEWAY_HOST.checked_add(cluster_index)?)
}

/// The router's address on the outside network.
pub fn router_outside_address(outside: Ipv4Cidr) -> Option<Ipv4Addr> {
    usable_host(outside, OUTSIDE_ROUTER_HOST)
}

/// The reserved range `network` touches, with why it is reserved.
pub fn reserved_range(network: Ipv4Cidr) -> Option<(Ipv4Cidr, &'static str)> {
    RESERVED_RANGES
        .iter()
        .copied()
        .find(|(reserved, _)| reserved.overlaps(network))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn a_pod_never_gets_the_broadcast_address() {
        let small = net("10.0.0.0/28");
        assert_eq!(pod_addresses_needed(5), 16);
        assert_eq!(pod_address(small, 4), Some(Ipv4Addr::new(10, 0, 0, 14)));
        assert_eq!(pod_address(small, 5), None, "10.0.0.15 is the broadcast address");
        assert_eq!(pod_address(small, u32::MAX), None);
    }

    #[test]
    fn needed_addresses_agree_with_the_addresses_handed_out() {
        for prefix_len in 16..=32u8 {
            let network = Ipv4Cidr {
                network: Ipv4Addr::new(10, 0, 0, 0),
                prefix_len,
            };
            // k pods (services) fit by the count exactly when the k-th one gets an address.
            for count in 1..=(network.size() as u32).min(70_000) {
                assert_eq!(
                    pod_addresses_needed(u64::from(count)) <= network.size(),
                    pod_address(network, count - 1).is_some(),
                    "{count} pods in /{prefix_len}"
                );
                assert_eq!(
                    service_addresses_needed(u64::from(count)) <= network.size(),
                    service_address(network, count - 1).is_some(),
                    "{count} services in /{prefix_len}"
                );
            }
        }
    }

    #[test]
    fn reserved_ranges_are_found_by_overlap() {
        assert!(reserved_range(net("127.0.0.0/16")).is_some());
        assert!(reserved_range(net("0.0.0.0/1")).is_some());
        assert!(reserved_range(net("239.1.0.0/16")).is_some());
        assert!(reserved_range(net("10.0.0.0/8")).is_none());
    }

    #[test]
    fn outside_network_skips_taken_blocks() {
        assert_eq!(outside_network(&[net("100.64.0.0/23")]), Some(net("100.64.2.0/24")));
        assert_eq!(outside_network(&[net("100.0.0.0/8")]), None);
        assert_eq!(MAX_OUTSIDE_GATEWAYS, 245);
        let outside = net("100.64.0.0/24");
        assert!(gateway_outside_address(outside, MAX_OUTSIDE_GATEWAYS - 1).is_some());
        assert!(gateway_outside_address(outside, MAX_OUTSIDE_GATEWAYS).is_none());
    }
}
