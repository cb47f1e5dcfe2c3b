//! Endpoint discovery's remote secrets: each cluster's API server, as the other clusters' istiods
//! reach it on the `kind` network, in a secret `istioctl create-remote-secret` makes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::progress::Progress;
use crate::provider::ProviderError;
use crate::scenario::{IstioVersion, Scenario};

use super::{QUERY_TIMEOUT, failed, text};
use crate::provider::kind::config::control_plane_container;
use crate::provider::kind::tools::{Invocation, Tools, os_args};
use crate::provider::kind::{KindCluster, KubeSide};

/// Remote secrets as `istioctl create-remote-secret` makes them, with the API server at its
/// control-plane container's address on the `kind` network (what other clusters' istiods reach),
/// applied to every other cluster.
pub(super) async fn create_remote_secrets<K: KubeSide>(
    tools: &Tools,
    kube: &mut K,
    clusters: &[KindCluster],
    istioctl: &BTreeMap<IstioVersion, PathBuf>,
    scenario: &Scenario,
    progress: &mut dyn Progress,
) -> Result<(), ProviderError> {
    for (cluster, scenario_cluster) in clusters.iter().zip(&scenario.clusters) {
        let container = control_plane_container(&cluster.kind_name);
        let address = text(
            tools
                .run(&Invocation::new(
                    "docker",
                    [
                        "inspect",
                        "--format",
                        "{{(index .NetworkSettings.Networks \"kind\").IPAddress}}",
                        container.as_str(),
                    ],
                    QUERY_TIMEOUT,
                ))
                .map_err(failed(format!("finding the address of {container}")))?,
        );
        let address: Ipv4Addr = address.parse().map_err(|_| {
            ProviderError::Unavailable(format!(
                "{container} has no IPv4 address on docker network kind (docker said {address:?})"
            ))
        })?;
        let secret = text(
            tools
                .run(&Invocation::new(
                    istioctl[&scenario_cluster.istio_version.value].clone(),
                    os_args![
                        "create-remote-secret",
                        "--kubeconfig",
                        &cluster.kubeconfig,
                        "--context",
                        &cluster.context,
                        "--name",
                        &cluster.cluster,
                        "--server",
                        format!("https://{address}:6443"),
                    ],
                    QUERY_TIMEOUT,
                ))
                .map_err(failed(format!("creating the remote secret of {}", cluster.cluster)))?,
        );
        for other in clusters.iter().filter(|other| other.cluster != cluster.cluster) {
            progress.step(&format!("{}: remote secret of {}", other.cluster, cluster.cluster));
            kube.apply_manifests(other, &format!("remote secret of {}", cluster.cluster), &secret)
                .await?;
        }
    }
    Ok(())
}
