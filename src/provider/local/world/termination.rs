//! Pods of the `local` world that terminate as Kubernetes and Istio terminate them: out of the
//! endpoints at once, still serving while their sidecar drains, ended when the drain is over.
//!
//! On Kubernetes a pod being deleted is marked not ready in its EndpointSlices while the kubelet
//! sends SIGTERM to its containers in parallel. Istio's agent then asks Envoy to drain its inbound
//! listeners (`POST /drain_listeners?inboundonly&graceful`; a gateway drains every listener) and
//! kills it only after ProxyConfig `terminationDrainDuration`, 5 s by default
//! (`pkg/envoy/agent.go@1.30.3`, `terminate()`; the default in `pkg/config/mesh/mesh.go@1.30.3`).
//! Meanwhile istiod pushes the endpoints without the pod, and meshfed's reconcile loop re-plans
//! the other clusters. `local` does the same in that order: the cluster's own proxies lose the
//! pods, the pods' Envoys are asked to drain, the change returns (so the engine pushes the
//! re-planned federation) while the pods keep serving, and the pods' app and Envoy are ended
//! once [`TERMINATION_DRAIN`] has passed (checked whenever traffic is awaited, a change is made or
//! a plan applied, and by [`World::await_terminated`]). The app serves until then too: an app
//! that stops at SIGTERM would fail calls on a real cluster as well.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::apps::app_name;
use super::proxies::Proxy;
use super::{World, failed};
use crate::provider::ProviderError;
use crate::provider::local::envoy_binary::admin_post;
use crate::provider::local::topology::GATEWAY_POD;

/// Istio's default `terminationDrainDuration`: how long a terminating pod keeps serving.
pub const TERMINATION_DRAIN: Duration = Duration::from_secs(5);
/// How long an app or Envoy ended after its drain may take to exit after SIGTERM before SIGKILL.
const END_GRACE: Duration = Duration::from_secs(2);

/// Pods (or a whole cluster) terminating: still running, in no endpoint, until `drained_at`.
pub(super) struct Terminating {
    /// The cluster they belong to.
    pub(super) cluster: String,
    /// Their names ([`GATEWAY_POD`] for a gateway).
    pub(super) pods: Vec<String>,
    /// Their Envoys by pod, taken out of the world's proxies so no plan configures them again.
    proxies: Vec<(String, Proxy)>,
    /// The whole cluster leaves: its network goes once its pods have ended.
    whole_cluster: bool,
    /// Directories removed once they have ended.
    dirs: Vec<PathBuf>,
    /// When the drain is over.
    pub(super) drained_at: Instant,
}

impl World {
    /// Starts terminating `pods` of `cluster` (already out of the topology, and out of the
    /// cluster's endpoints once the caller applied the plan): asks each Envoy to drain and keeps
    /// everything running until [`TERMINATION_DRAIN`] has passed. `whole_cluster` removes the
    /// cluster's network too when they end; `dirs` are removed then.
    pub(super) async fn start_termination(
        &mut self,
        cluster: &str,
        pods: Vec<String>,
        whole_cluster: bool,
        dirs: Vec<PathBuf>,
    ) {
        let mut proxies = Vec::new();
        for pod in &pods {
            if let Some(proxy) = self.proxies.remove(&(cluster.to_owned(), pod.clone())) {
                proxies.push((pod.clone(), proxy));
            }
        }
        for (pod, proxy) in proxies
            .iter()
            .filter(|(_, proxy)| proxy.started && !proxy.stopped_on_purpose)
        {
            // A sidecar drains its inbound listeners, a gateway all of them (istio-agent's
            // `DrainListeners(adminPort, inboundonly = e.Sidecar, ..)`, pkg/envoy/admin.go@1.30.3).
            let path = if pod == GATEWAY_POD {
                "/drain_listeners?graceful"
            } else {
                "/drain_listeners?inboundonly&graceful"
            };
            if let Err(error) = admin_post(&proxy.admin_socket, path).await {
                // It keeps serving undrained; its end comes at the same time.
                tracing::warn!(proxy = %proxy.name, %error, "could not ask a terminating Envoy to drain");
            }
        }
        self.terminating.push(Terminating {
            cluster: cluster.to_owned(),
            pods,
            proxies,
            whole_cluster,
            dirs,
            drained_at: Instant::now() + TERMINATION_DRAIN,
        });
    }

    /// Ends every terminating pod whose drain is over.
    pub(super) fn end_drained(&mut self) -> Result<(), ProviderError> {
        let now = Instant::now();
        self.end_terminating_where(|terminating| terminating.drained_at <= now)
    }

    /// Ends at once the terminating pod `pod` of `cluster` (or, with `None`, everything of the
    /// cluster still terminating): a pod is about to be created under its name (pods are named
    /// by index, as a StatefulSet's are, and one waits for the old pod to be gone), or the
    /// cluster joins again. By then the re-plan that took it out of the federation was applied.
    pub(super) fn end_terminating_now(&mut self, cluster: &str, pod: Option<&str>) -> Result<(), ProviderError> {
        self.end_terminating_where(|terminating| {
            terminating.cluster == cluster
                && pod.is_none_or(|pod| terminating.pods.iter().any(|terminating| terminating == pod))
        })
    }

    /// Waits until every terminating pod's drain is over and ends them (a library user or test
    /// that wants the world settled).
    pub(super) async fn await_terminated(&mut self) -> Result<(), ProviderError> {
        if let Some(last) = self.terminating.iter().map(|terminating| terminating.drained_at).max() {
            tokio::time::sleep_until(last.into()).await;
        }
        self.end_drained()
    }

    fn end_terminating_where(&mut self, due: impl Fn(&Terminating) -> bool) -> Result<(), ProviderError> {
        let (ending, staying): (Vec<Terminating>, Vec<Terminating>) = std::mem::take(&mut self.terminating)
            .into_iter()
            .partition(|terminating| due(terminating));
        self.terminating = staying;
        for terminating in ending {
            self.end_terminating(terminating)?;
        }
        Ok(())
    }

    /// The drain is over: the pods' apps and Envoys are ended on purpose, then their network and
    /// files removed.
    fn end_terminating(&mut self, terminating: Terminating) -> Result<(), ProviderError> {
        let Terminating {
            cluster,
            pods,
            proxies,
            whole_cluster,
            dirs,
            ..
        } = terminating;
        let names = pods
            .iter()
            .filter(|pod| pod.as_str() != GATEWAY_POD)
            .map(|pod| app_name(&cluster, pod))
            .chain(proxies.iter().map(|(_, proxy)| proxy.name.clone()));
        for name in names.collect::<Vec<_>>() {
            if let Some(id) = self.supervisor.running_named(&name) {
                self.supervisor
                    .end_on_purpose(id, nix::sys::signal::Signal::SIGTERM, END_GRACE)
                    .map_err(|error| failed(format!("ending {name} after its drain"))(error.into()))?;
            }
        }
        let network = self
            .network
            .as_mut()
            .ok_or_else(|| ProviderError::Unavailable("the local network is gone".to_owned()))?;
        if whole_cluster {
            network
                .remove_cluster(&cluster)
                .map_err(|error| failed(format!("removing the network of cluster {cluster}"))(error.into()))?;
        } else {
            for pod in &pods {
                network
                    .remove_pod(&cluster, pod)
                    .map_err(|error| failed(format!("removing the network of pod {pod} in {cluster}"))(error.into()))?;
            }
        }
        for dir in &dirs {
            super::membership::remove_dir_if_present(dir)?;
        }
        Ok(())
    }
}
