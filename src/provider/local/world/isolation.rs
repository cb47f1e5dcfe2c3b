//! The isolation probe of the `local` world: from a pod of each cluster, a direct connect to a pod
//! of every other cluster (must not get through) and a connect to that cluster's gateway (must).
//!
//! Only an *unreachable* pod is isolated ([`pod_is_isolated`]): the network said it cannot deliver
//! (no route, or ICMP host unreachable). A *refused* connect is a TCP RST from the pod's address:
//! the packet got there, so the pod is reachable and merely has nothing on that port. A connect
//! that *timed out* was routed toward the pod and went unanswered: a firewall dropping it or a
//! silent address, which meshfed cannot tell apart; the `local` world isolates by having no route,
//! so a timeout there means a route exists, and it does not count as isolated either.

use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;

use nix::errno::Errno;

use super::{PROBE_TIMEOUT, World};
use crate::inventory::GATEWAY_PORT;
use crate::provider::local::network;
use crate::provider::{IsolationProbe, ProviderError};

impl World {
    pub(super) async fn check_isolation(&mut self) -> Result<Vec<IsolationProbe>, ProviderError> {
        let world = self;
        // (from cluster, from pod, its namespace, to cluster, pod address, gateway address)
        let mut pairs = Vec::new();
        for from in &world.topology.clusters {
            let Some(from_pod) = from.pods.first() else { continue };
            let netns = world.netns(&from.name, &from_pod.name)?;
            for to in world.topology.clusters.iter().filter(|to| to.name != from.name) {
                let Some(to_pod) = to.pods.first() else { continue };
                let port = world.first_port(&to_pod.service);
                let pod_address = SocketAddr::V4(SocketAddrV4::new(to_pod.ip, port));
                let gateway_address = SocketAddr::V4(SocketAddrV4::new(to.gateway_outside_ip, GATEWAY_PORT));
                pairs.push((
                    &from.name,
                    &from_pod.name,
                    netns.clone(),
                    &to.name,
                    pod_address,
                    gateway_address,
                ));
            }
        }
        // Every pair at once: each probe waits on the network (up to PROBE_TIMEOUT for a connect
        // that goes unanswered), not on the CPU, and the world's set-up waits for the slowest.
        let probes = std::thread::scope(|scope| {
            let running: Vec<_> = pairs
                .iter()
                .map(|(from, from_pod, netns, to, pod_address, gateway_address)| {
                    scope.spawn(move || {
                        let pod_connect = probe(netns, *pod_address);
                        let gateway_connect = probe(netns, *gateway_address);
                        IsolationProbe {
                            from_cluster: (*from).clone(),
                            from_pod: (*from_pod).clone(),
                            to_cluster: (*to).clone(),
                            pod_address: pod_address.to_string(),
                            isolated: pod_is_isolated(&pod_connect) && gateway_connect == "connected",
                            pod_connect,
                            gateway_address: gateway_address.to_string(),
                            gateway_connect,
                        }
                    })
                })
                .collect();
            running
                .into_iter()
                .map(|probe| probe.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        });
        Ok(probes)
    }
}

/// Whether a direct connect's outcome (as [`probe`] words it) shows the pod isolated: only when
/// the network could not deliver to it. See the module docs for refused and timed out.
pub(super) fn pod_is_isolated(outcome: &str) -> bool {
    outcome.starts_with("unreachable")
}

/// What a connect from inside `netns` to `address` did, in words for the report.
fn probe(netns: &Path, address: SocketAddr) -> String {
    match network::connect_in_netns(netns, address, PROBE_TIMEOUT) {
        Ok(_) => "connected".to_owned(),
        Err(error) => match error.raw_os_error().map(Errno::from_raw) {
            Some(Errno::ENETUNREACH) => "unreachable (no route)".to_owned(),
            Some(Errno::EHOSTUNREACH) => "unreachable (host)".to_owned(),
            Some(Errno::ECONNREFUSED) => "refused".to_owned(),
            Some(Errno::EACCES | Errno::EPERM) => "prohibited".to_owned(),
            _ if error.kind() == std::io::ErrorKind::TimedOut => "timed out".to_owned(),
            _ => format!("failed ({error})"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::pod_is_isolated;

    #[test]
    fn only_an_unreachable_pod_is_isolated() {
        assert!(pod_is_isolated("unreachable (no route)"));
        assert!(pod_is_isolated("unreachable (host)"));
        for reachable in ["connected", "refused", "timed out", "prohibited", "failed (oops)"] {
            assert!(!pod_is_isolated(reachable), "{reachable}");
        }
    }
}
