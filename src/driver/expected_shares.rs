//! What each pod of a phase's target should get: an equal share (the ideal the skew is measured
//! against), and the share the plan's endpoint weights predict.

use crate::inventory::Inventory;
use crate::measure::{self, ExpectedPod};
use crate::plan;
use crate::provider::Traffic;

/// The pods that should share the phase's load: every ready pod of the target service in every
/// cluster, equally (the ideal the skew is measured against).
pub(super) fn expected_pods(inventory: &Inventory, service: &str) -> Vec<ExpectedPod> {
    let pods: Vec<(String, String)> = inventory
        .clusters
        .iter()
        .flat_map(|(cluster, cluster_inventory)| {
            cluster_inventory
                .ready_pods
                .get(service)
                .into_iter()
                .flatten()
                .map(move |pod| (pod.name.clone(), cluster.clone()))
        })
        .collect();
    let share = if pods.is_empty() { 0.0 } else { 1.0 / pods.len() as f64 };
    pods.into_iter()
        .map(|(pod, cluster)| ExpectedPod { pod, cluster, share })
        .collect()
}

/// The share of the phase's requests each ready pod of the target gets if the caller's proxy
/// follows the endpoint weights of the plan in force when the traffic starts: every ready pod in
/// the caller's cluster weighs 1, and each remote gateway endpoint of the caller's ServiceEntry for
/// the target weighs its weight (1 when unweighted), split evenly over the ready pods of the
/// gateway's cluster. `None` when the caller's cluster has no such ServiceEntry (endpoint
/// discovery: no weights in the plan to predict from), when an endpoint is not exactly one other
/// cluster's gateway, or when the weights add up to nothing.
pub(super) fn predicted_shares(
    plan: &plan::Plan,
    inventory: &Inventory,
    traffic: &Traffic,
) -> Option<std::collections::BTreeMap<(String, String), f64>> {
    let host_prefix = format!("{}.", traffic.to_service);
    let entry = plan
        .clusters
        .iter()
        .filter(|cluster| cluster.cluster == traffic.from_cluster)
        .flat_map(|cluster| &cluster.objects)
        .find_map(|object| match object {
            plan::Object::ServiceEntry(entry) if entry.spec.hosts.iter().any(|host| host.starts_with(&host_prefix)) => {
                Some(entry)
            }
            _ => None,
        })?;
    let ready = |cluster: &str| -> Vec<String> {
        inventory
            .clusters
            .get(cluster)
            .and_then(|inventory| inventory.ready_pods.get(&traffic.to_service))
            .map(|pods| pods.iter().map(|pod| pod.name.clone()).collect())
            .unwrap_or_default()
    };
    let mut weights: std::collections::BTreeMap<(String, String), f64> = std::collections::BTreeMap::new();
    for pod in ready(&traffic.from_cluster) {
        *weights.entry((traffic.from_cluster.clone(), pod)).or_default() += 1.0;
    }
    for endpoint in &entry.spec.endpoints {
        // A remote endpoint is another cluster's gateway; one that names no cluster, or more than
        // one, leaves nothing to predict from.
        let mut behind = inventory
            .clusters
            .iter()
            .filter(|(name, cluster)| **name != traffic.from_cluster && cluster.gateway.address == endpoint.address);
        let (cluster, None) = (behind.next()?.0, behind.next()) else {
            return None;
        };
        let pods = ready(cluster);
        let per_pod = f64::from(endpoint.weight.unwrap_or(1)) / pods.len().max(1) as f64;
        for pod in pods {
            *weights.entry((cluster.clone(), pod)).or_default() += per_pod;
        }
    }
    let total: f64 = weights.values().sum();
    (total > 0.0).then(|| weights.into_iter().map(|(pod, weight)| (pod, weight / total)).collect())
}

/// Writes the predicted shares into the measurement's pods and clusters (0 for an expected pod
/// the weights do not reach).
pub(super) fn fill_predicted_shares(
    measurement: &mut measure::PhaseMeasurement,
    predicted: &std::collections::BTreeMap<(String, String), f64>,
) {
    for pod in &mut measurement.pods {
        let share = predicted
            .get(&(pod.cluster.clone(), pod.pod.clone()))
            .copied()
            .unwrap_or(0.0);
        pod.predicted_share = Some(share);
    }
    for cluster in &mut measurement.clusters {
        let share = measurement
            .pods
            .iter()
            .filter(|pod| pod.cluster == cluster.cluster)
            .filter_map(|pod| pod.predicted_share)
            .sum();
        cluster.predicted_share = Some(share);
    }
}
