//! Isolation on kind reads as it does on `local` (pure): every node of a cluster gets an
//! `unreachable` route for each other cluster's pod and service network, so a pod's direct
//! connect to another cluster fails at once with "No route to host" instead of following the
//! node's default route to the docker bridge and timing out. Istio's CI does the opposite for
//! clusters on one network (`ip route add` of the other clusters' CIDRs via their nodes,
//! `common/scripts/kind_provisioner.sh`); meshfed's clusters are each their own network and meet
//! only at gateways, whose addresses are on the `kind` network and keep the default route. `ip` is
//! in every node image (`iproute2` in kind's `images/base/Dockerfile` at v0.30.0); `replace`
//! makes the step idempotent on `--reuse`d clusters.
#![forbid(unsafe_code)]

use std::time::Duration;

use crate::scenario::Scenario;

use super::config::{control_plane_container, kind_cluster_name};
use super::tools::Invocation;

/// `docker exec` of one `ip route` on a node.
pub const ROUTE_TIMEOUT: Duration = Duration::from_secs(30);

/// The nodes of a meshfed kind cluster (its config has one control-plane node).
pub fn nodes(kind_name: &str) -> Vec<String> {
    vec![control_plane_container(kind_name)]
}

/// Per scenario cluster, in order: the other clusters' pod and service CIDRs, and the
/// `docker exec NODE ip route replace unreachable CIDR` that makes each unreachable on each node.
pub fn unreachable_routes(scenario: &Scenario) -> Vec<(String, Vec<String>, Vec<Invocation>)> {
    scenario
        .clusters
        .iter()
        .map(|cluster| {
            let cidrs: Vec<String> = scenario
                .clusters
                .iter()
                .filter(|other| other.name.value != cluster.name.value)
                .flat_map(|other| [other.pod_cidr.value.to_string(), other.service_cidr.value.to_string()])
                .collect();
            let invocations = nodes(&kind_cluster_name(&cluster.name.value))
                .iter()
                .flat_map(|node| {
                    cidrs.iter().map(move |cidr| {
                        Invocation::new(
                            "docker",
                            [
                                "exec",
                                node.as_str(),
                                "ip",
                                "route",
                                "replace",
                                "unreachable",
                                cidr.as_str(),
                            ],
                            ROUTE_TIMEOUT,
                        )
                    })
                })
                .collect();
            (cluster.name.value.clone(), cidrs, invocations)
        })
        .collect()
}
