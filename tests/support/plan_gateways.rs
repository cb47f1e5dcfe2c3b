//! What a plan tells a cluster about the other clusters' gateways.

use meshfed::plan::{Object, Plan};

/// Every gateway address named by a ServiceEntry in `cluster`'s plan.
pub fn named_gateways(plan: &Plan, cluster: &str) -> Vec<String> {
    plan.clusters
        .iter()
        .filter(|planned| planned.cluster == cluster)
        .flat_map(|planned| planned.objects.iter())
        .filter_map(|object| match object {
            Object::ServiceEntry(entry) => Some(entry.spec.endpoints.iter().map(|endpoint| endpoint.address.clone())),
            _ => None,
        })
        .flatten()
        .collect()
}
