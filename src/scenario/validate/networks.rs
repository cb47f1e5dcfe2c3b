//! Checks of the networks: each cluster's pod and service networks fit the local address layout and
//! no two clusters' networks overlap.

use serde_saphyr::Spanned;

use super::{Checked, NOWHERE, problem};
use crate::scenario::{Cluster, Ipv4Cidr, Scenario, address_layout};

/// Pod and service networks: disjoint, each big enough for the address layout, and leaving a
/// free /24 for the outside network the gateways share.
pub(super) fn check_networks(scenario: &Scenario) -> Checked {
    check_networks_disjoint(&scenario.clusters)?;
    check_pod_networks_fit(scenario)?;
    check_service_networks_fit(scenario)?;
    let taken: Vec<Ipv4Cidr> = scenario
        .clusters
        .iter()
        .flat_map(|cluster| [cluster.pod_cidr.value, cluster.service_cidr.value])
        .collect();
    if address_layout::outside_network(&taken).is_none() {
        let covering = scenario
            .clusters
            .iter()
            .flat_map(|cluster| [&cluster.pod_cidr, &cluster.service_cidr])
            .find(|network| network.value.overlaps(address_layout::OUTSIDE_POOL))
            .map_or(NOWHERE, |network| network.referenced);
        return Err(problem(
            covering,
            format!(
                "the pod and service networks leave no free /24 in {} for the network the local gateways \
                 share: keep at least one /24 of it free",
                address_layout::OUTSIDE_POOL
            ),
        ));
    }
    Ok(())
}

fn check_networks_disjoint(clusters: &[Cluster]) -> Checked {
    let networks: Vec<(&Spanned<super::Ipv4Cidr>, String)> = clusters
        .iter()
        .flat_map(|cluster| {
            [
                (&cluster.pod_cidr, format!("podCidr of {}", cluster.name.value)),
                (&cluster.service_cidr, format!("serviceCidr of {}", cluster.name.value)),
            ]
        })
        .collect();
    for (index, (later, later_what)) in networks.iter().enumerate() {
        for (earlier, earlier_what) in &networks[..index] {
            if later.value.overlaps(earlier.value) {
                return Err(problem(
                    later.referenced,
                    format!(
                        "{later_what} {} overlaps {earlier_what} {}: every pod and service network must be disjoint",
                        later.value, earlier.value
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Every pod network holds its pods in the local address layout (checked with the layout's own
/// arithmetic, so validation and layout can never disagree).
fn check_pod_networks_fit(scenario: &Scenario) -> Checked {
    for cluster in &scenario.clusters {
        let pods: u64 = scenario
            .services
            .iter()
            .map(|service| u64::from(service.replicas_in(&cluster.name.value)))
            .sum();
        let needed = address_layout::pod_addresses_needed(pods);
        let network = cluster.pod_cidr.value;
        if network.size() < needed {
            return Err(problem(
                cluster.pod_cidr.referenced,
                format!(
                    "podCidr {network} of {} has {} addresses, but the local address layout needs {needed} for its \
                     {pods} pods: the network address, hosts 1-{} (router, gateway, kept free), one per pod, and the \
                     broadcast address; use a /{} or shorter prefix",
                    cluster.name.value,
                    network.size(),
                    address_layout::FIRST_POD_HOST - 1,
                    longest_prefix_for(needed)
                ),
            ));
        }
    }
    Ok(())
}

/// Every service network holds a cluster IP for every service in the local address layout.
fn check_service_networks_fit(scenario: &Scenario) -> Checked {
    let services = scenario.services.len() as u64;
    let needed = address_layout::service_addresses_needed(services);
    for cluster in &scenario.clusters {
        let network = cluster.service_cidr.value;
        if network.size() < needed {
            return Err(problem(
                cluster.service_cidr.referenced,
                format!(
                    "serviceCidr {network} of {} has {} addresses, but the local address layout needs {needed} for \
                     the {services} services (every service has a cluster IP in every cluster): the network address, \
                     hosts 1-{} (kept free), one per service, and the broadcast address; use a /{} or shorter prefix",
                    cluster.name.value,
                    network.size(),
                    address_layout::FIRST_SERVICE_HOST - 1,
                    longest_prefix_for(needed)
                ),
            ));
        }
    }
    Ok(())
}

/// The longest prefix whose network has at least `addresses` addresses.
fn longest_prefix_for(addresses: u64) -> u8 {
    (0..=32u8)
        .rev()
        .find(|&prefix_len| (1u64 << (32 - u32::from(prefix_len))) >= addresses)
        .unwrap_or(0)
}
