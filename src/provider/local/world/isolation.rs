//! The isolation probe of the `local` world: from a pod of each cluster, a direct connect to a pod
//! of every other cluster (must not get through) and a connect to that cluster's gateway (must).

use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;

use super::{PROBE_TIMEOUT, World};
use crate::inventory::GATEWAY_PORT;
use crate::provider::local::network;
use crate::provider::{IsolationProbe, ProviderError};

impl World {
    pub(super) async fn check_isolation(&mut self) -> Result<Vec<IsolationProbe>, ProviderError> {
        let world = self;
        let mut probes = Vec::new();
        for from in &world.topology.clusters {
            let Some(from_pod) = from.pods.first() else { continue };
            let netns = world.netns(&from.name, &from_pod.name)?;
            for to in world.topology.clusters.iter().filter(|to| to.name != from.name) {
                let Some(to_pod) = to.pods.first() else { continue };
                let port = world.first_port(&to_pod.service);
                let pod_address = SocketAddr::V4(SocketAddrV4::new(to_pod.ip, port));
                let gateway_address = SocketAddr::V4(SocketAddrV4::new(to.gateway_outside_ip, GATEWAY_PORT));
                let pod_connect = probe(&netns, pod_address);
                let gateway_connect = probe(&netns, gateway_address);
                probes.push(IsolationProbe {
                    from_cluster: from.name.clone(),
                    from_pod: from_pod.name.clone(),
                    to_cluster: to.name.clone(),
                    pod_address: pod_address.to_string(),
                    isolated: pod_connect != "connected" && gateway_connect == "connected",
                    pod_connect,
                    gateway_address: gateway_address.to_string(),
                    gateway_connect,
                });
            }
        }
        Ok(probes)
    }
}

/// What a connect from inside `netns` to `address` did, in words for the report.
fn probe(netns: &Path, address: SocketAddr) -> String {
    match network::connect_in_netns(netns, address, PROBE_TIMEOUT) {
        Ok(_) => "connected".to_owned(),
        Err(error) => match error.raw_os_error() {
            Some(libc::ENETUNREACH) => "unreachable (no route)".to_owned(),
            Some(libc::EHOSTUNREACH) => "unreachable (host)".to_owned(),
            Some(libc::ECONNREFUSED) => "refused".to_owned(),
            Some(libc::EACCES) | Some(libc::EPERM) => "prohibited".to_owned(),
            _ if error.kind() == std::io::ErrorKind::TimedOut => "timed out".to_owned(),
            _ => format!("failed ({error})"),
        },
    }
}
