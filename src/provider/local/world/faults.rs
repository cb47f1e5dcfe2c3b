//! Changes to the `local` data plane while traffic runs: gateways stopped and started, clusters
//! partitioned and healed, replies delayed, containers killed (and restarted, as a kubelet
//! would), intermediate CAs rotated, a cluster's Istio version changed.
//!
//! Every process a change ends is ended *on purpose* through the supervisor, so liveness checks
//! never call it a death; every wait has a deadline and names what did not happen.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::apps::{app_name, delay_file};
use super::proxies::ProxyRestart;
use super::proxies::{node_id, push_secrets};
use super::{APP_READY_TIMEOUT, LocalOptions, LocalProvider, World, failed, pod_dir};
use crate::change::{Container, WorldChange};
use crate::inventory::InventoryEvent;
use crate::inventory::ReadyPod;
use crate::process::{BoundedRun, bounded_run};
use crate::progress::Progress;
use crate::provider::ProviderError;
use crate::provider::local::ads::SECRET_TYPE;
use crate::provider::local::envoy_config::CertPaths;
use crate::provider::local::network;
use crate::provider::local::topology::GATEWAY_POD;
use crate::scenario::IstioVersion;

/// How long a killed container stays down before it is started again. A kubelet restarts a
/// container that exited for the first time at once and backs off 10 s, 20 s, 40 s ... (capped at
/// 5 min) when it keeps exiting; meshfed kills once, so it waits a short fixed 1 s: long enough to
/// show in a 100 ms timeline, short enough to keep a phase short.
pub const KILL_RESTART_BACK_OFF: Duration = Duration::from_secs(1);
/// How long one `ip -batch` that adds or removes partition routes may take.
const ROUTE_BATCH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long rotated certificates may take to be loaded by every Envoy of the cluster.
const CERTS_LOADED_TIMEOUT: Duration = Duration::from_secs(10);

impl World {
    /// Carries out a data-plane change; returns the inventory events it caused.
    pub(super) async fn change_data_plane(
        &mut self,
        options: &LocalOptions,
        change: &WorldChange,
        progress: &mut dyn Progress,
    ) -> Result<Vec<InventoryEvent>, ProviderError> {
        let cluster = self.cluster(change.cluster())?.clone();
        match change {
            WorldChange::StopGateway { .. } => {
                progress.step(&format!("stopping the gateway of {}", cluster.name));
                let key = (cluster.name.clone(), GATEWAY_POD.to_owned());
                self.end_envoy(&key, nix::sys::signal::Signal::SIGTERM)?;
                if let Some(proxy) = self.proxies.get_mut(&key) {
                    proxy.stopped_on_purpose = true;
                }
                Ok(Vec::new())
            }
            WorldChange::StartGateway { .. } => {
                progress.step(&format!("starting the gateway of {}", cluster.name));
                let key = (cluster.name.clone(), GATEWAY_POD.to_owned());
                let proxy = self
                    .proxies
                    .get_mut(&key)
                    .ok_or_else(|| ProviderError::Unavailable(format!("{} has no gateway yet", cluster.name)))?;
                if !proxy.stopped_on_purpose {
                    return Ok(Vec::new());
                }
                proxy.stopped_on_purpose = false;
                // Same pod, same address; the files hold the plan last applied.
                self.start_envoy(options, &key)?;
                self.await_envoys_ready(std::slice::from_ref(&key)).await?;
                Ok(Vec::new())
            }
            WorldChange::Partition { .. } => {
                progress.step(&format!("partitioning {} from the other clusters", cluster.name));
                self.set_partition(&cluster.name, true)?;
                Ok(Vec::new())
            }
            WorldChange::Heal { .. } => {
                progress.step(&format!("healing the partition of {}", cluster.name));
                self.set_partition(&cluster.name, false)?;
                Ok(Vec::new())
            }
            WorldChange::Delay { service, millis, .. } => {
                progress.step(&format!(
                    "delaying replies of {service} in {} by {millis} ms",
                    cluster.name
                ));
                let pods: Vec<String> = cluster.pods_of(service).map(|pod| pod.name.clone()).collect();
                if pods.is_empty() {
                    return Err(ProviderError::Unsupported(format!(
                        "{service} has no pods in {} to delay",
                        cluster.name
                    )));
                }
                for pod in pods {
                    let file = delay_file(&pod_dir(&options.run_dir, &cluster.name, &pod));
                    write_delay_file(&file, *millis)
                        .map_err(|error| failed(format!("writing the delay of pod {pod}"))(error.into()))?;
                }
                // The apps re-read the file every DELAY_POLL_INTERVAL; wait that long (and a bit) so
                // the change has applied when this returns.
                tokio::time::sleep(crate::workload::echo::DELAY_POLL_INTERVAL * 3).await;
                Ok(Vec::new())
            }
            WorldChange::Kill { pod, container, .. } => {
                self.kill(options, &cluster.name, pod, *container, progress).await
            }
            WorldChange::RotateIntermediate { .. } => {
                progress.step(&format!("rotating the intermediate CA of {}", cluster.name));
                self.rotate_intermediate(options, &cluster.name).await?;
                Ok(Vec::new())
            }
            WorldChange::Upgrade { to, .. } => {
                progress.step(&format!(
                    "upgrading {} to Istio {to} (its proxies restart with the next plan)",
                    cluster.name
                ));
                self.record_version(&cluster.name, *to)?;
                Ok(vec![InventoryEvent::IstioVersion {
                    cluster: cluster.name.clone(),
                    version: *to,
                }])
            }
            WorldChange::Scale { .. } | WorldChange::JoinCluster { .. } | WorldChange::LeaveCluster { .. } => {
                Err(ProviderError::Unsupported(format!(
                    "{} changes who is in the world, not the data plane",
                    change.kind().name()
                )))
            }
        }
    }

    /// SIGKILLs a pod's sidecar or app and, after [`KILL_RESTART_BACK_OFF`], starts it again and
    /// waits until it is ready, as a kubelet would; the pod is reported gone, then ready again.
    async fn kill(
        &mut self,
        options: &LocalOptions,
        cluster: &str,
        pod: &str,
        container: Container,
        progress: &mut dyn Progress,
    ) -> Result<Vec<InventoryEvent>, ProviderError> {
        let topology_pod = self
            .cluster(cluster)?
            .pods
            .iter()
            .find(|candidate| candidate.name == pod)
            .cloned();
        let is_gateway = pod == GATEWAY_POD;
        if topology_pod.is_none() && !is_gateway {
            return Err(ProviderError::Unsupported(format!("{cluster} has no pod {pod}")));
        }
        match container {
            Container::Sidecar => {
                let key = (cluster.to_owned(), pod.to_owned());
                if self.proxies.get(&key).is_some_and(|proxy| proxy.stopped_on_purpose) {
                    return Err(ProviderError::Unsupported(format!(
                        "the gateway of {cluster} is stopped (stopGateway): there is no sidecar to kill"
                    )));
                }
                progress.step(&format!("killing the sidecar of {pod} in {cluster}"));
                self.restart_envoy(
                    options,
                    &key,
                    "killed (SIGKILL)",
                    Some((nix::sys::signal::Signal::SIGKILL, KILL_RESTART_BACK_OFF)),
                )
                .await?;
            }
            Container::App => {
                let Some(topology_pod) = &topology_pod else {
                    return Err(ProviderError::Unsupported(format!(
                        "the gateway {pod} of {cluster} has no app container"
                    )));
                };
                progress.step(&format!("killing the app of {pod} in {cluster}"));
                let name = app_name(cluster, pod);
                if let Some(id) = self.supervisor.running_named(&name) {
                    self.supervisor
                        .end_on_purpose(id, nix::sys::signal::Signal::SIGKILL, Duration::from_secs(2))
                        .map_err(|error| failed(format!("killing the {name}"))(error.into()))?;
                }
                tokio::time::sleep(KILL_RESTART_BACK_OFF).await;
                self.start_app(options, cluster, topology_pod)?;
                self.await_app(cluster, topology_pod, Instant::now() + APP_READY_TIMEOUT)?;
            }
        }
        progress.step(&format!(
            "the {} of {pod} in {cluster} runs again after a {} ms back-off",
            match container {
                Container::Sidecar => "sidecar",
                Container::App => "app",
            },
            KILL_RESTART_BACK_OFF.as_millis()
        ));
        let Some(topology_pod) = topology_pod else {
            return Ok(Vec::new());
        };
        let region = self.cluster(cluster)?.region.clone();
        Ok(vec![
            InventoryEvent::PodGone {
                cluster: cluster.to_owned(),
                service: topology_pod.service.clone(),
                pod: pod.to_owned(),
            },
            InventoryEvent::PodReady {
                cluster: cluster.to_owned(),
                service: topology_pod.service.clone(),
                pod: ReadyPod {
                    name: pod.to_owned(),
                    region,
                    zone: topology_pod.zone.clone(),
                },
            },
        ])
    }

    /// Cuts `cluster` off from the other clusters (`partitioned`) or heals it.
    ///
    /// The cut is an `unreachable` route in every pod and gateway namespace: in the other
    /// clusters for this cluster's gateway, in this cluster for every other gateway. A connect
    /// then fails at once with ENETUNREACH, so a phase measures the effect without waiting out
    /// connect timeouts, and a heal is exact (the routes go, nothing else changed). A real
    /// partition is a blackhole: packets vanish in the network, new connects hang until Istio's
    /// connect timeout (10 s) and outlier detection reacts to timeouts, not to refusals. In both,
    /// connections opened before the cut stall (their packets go nowhere) until a timeout ends
    /// the request: measured on the seed with pooled sidecar connections, the first call on each
    /// of the two pooled connections ran into the client's 5 s timeout, every later one failed
    /// in about 1 ms with a 503.
    fn set_partition(&mut self, cluster: &str, partitioned: bool) -> Result<(), ProviderError> {
        let this_gateway = self.cluster(cluster)?.gateway_outside_ip;
        let mut cuts: Vec<(String, String, Vec<Ipv4Addr>)> = Vec::new();
        for other in &self.topology.clusters {
            let pods = other
                .pods
                .iter()
                .map(|pod| pod.name.clone())
                .chain(std::iter::once(GATEWAY_POD.to_owned()));
            let blocked: Vec<Ipv4Addr> = if other.name == cluster {
                self.topology
                    .clusters
                    .iter()
                    .filter(|far| far.name != cluster)
                    .map(|far| far.gateway_outside_ip)
                    .collect()
            } else {
                vec![this_gateway]
            };
            for pod in pods {
                cuts.push((other.name.clone(), pod, blocked.clone()));
            }
        }
        for (in_cluster, pod, blocked) in cuts {
            let netns = self.netns(&in_cluster, &pod)?;
            set_unreachable_routes(&netns, &blocked, partitioned).map_err(|error| {
                failed(format!(
                    "{} the partition routes in pod {pod} of {in_cluster}",
                    if partitioned { "adding" } else { "removing" }
                ))(error)
            })?;
        }
        Ok(())
    }

    /// Records that `cluster` now runs Istio `to`; its proxies follow when a plan for that version
    /// is applied.
    fn record_version(&mut self, cluster: &str, to: IstioVersion) -> Result<(), ProviderError> {
        let recorded = self
            .scenario
            .clusters
            .iter_mut()
            .find(|candidate| candidate.name.value == cluster)
            .ok_or_else(|| ProviderError::Unsupported(format!("unknown cluster {cluster}")))?;
        recorded.istio_version.value = to;
        Ok(())
    }

    /// A new intermediate CA for `cluster` under the same root; every workload certificate of the
    /// cluster reissued by it and pushed to the pod's Envoy as its SDS secret, then waits until
    /// every running Envoy of the cluster has acknowledged it. No Envoy restarts, and connections
    /// made before keep their certificates: both chains end at the same root.
    async fn rotate_intermediate(&mut self, options: &LocalOptions, cluster: &str) -> Result<(), ProviderError> {
        self.pki
            .rotate_intermediate(cluster)
            .map_err(|error| failed(format!("rotating the intermediate CA of {cluster}"))(error.into()))?;
        let pods = self.cluster(cluster)?.pods.clone();
        let mut waiting = Vec::new();
        for pod in &pods {
            let key = (cluster.to_owned(), pod.name.clone());
            let cert = self
                .pki
                .workload_cert(cluster, &pod.namespace, &pod.service_account)
                .map_err(|error| failed(format!("reissuing the certificate of {}", pod.name))(error.into()))?;
            let dir = pod_dir(&options.run_dir, cluster, &pod.name).join("certs");
            crate::pki::create_workload_files(&cert, &dir)
                .map_err(|error| failed(format!("writing certificates of {}", pod.name))(error.into()))?;
            let secrets = self
                .proxies
                .get(&key)
                .map(|proxy| proxy.secrets.clone())
                .filter(|secrets| !secrets.is_empty())
                .unwrap_or_else(|| vec![CertPaths::in_dir(&dir)]);
            let version = push_secrets(&self.ads, &node_id(&key), &secrets)?;
            if self
                .proxies
                .get(&key)
                .is_some_and(|proxy| proxy.started && !proxy.stopped_on_purpose)
            {
                waiting.push((key, version));
            }
        }
        let deadline = Instant::now() + CERTS_LOADED_TIMEOUT;
        for (key, version) in waiting {
            let left = deadline.saturating_duration_since(Instant::now());
            self.ads
                .await_acked(&node_id(&key), SECRET_TYPE, &version, left)
                .await
                .map_err(|error| {
                    ProviderError::failed(
                        format!("{} did not load its reissued certificate", self.proxies[&key].name),
                        error,
                    )
                })?;
        }
        Ok(())
    }
}

/// Replaces a pod's delay file in one rename, so its app never reads half a number.
fn write_delay_file(file: &Path, millis: u32) -> std::io::Result<()> {
    let (Some(dir), Some(name)) = (file.parent(), file.file_name()) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is no file path", file.display()),
        ));
    };
    crate::atomic_files::Dir::open(dir)?.write_file_atomic(name, format!("{millis}\n").as_bytes(), 0o644)
}

/// Adds (`present`) or removes an `unreachable` route for each address inside `netns`; checks
/// afterwards that exactly the asked state holds.
fn set_unreachable_routes(netns: &Path, addresses: &[Ipv4Addr], present: bool) -> anyhow::Result<()> {
    let lines: Vec<String> = addresses
        .iter()
        .map(|address| {
            if present {
                format!("route replace unreachable {address}/32")
            } else {
                format!("route del unreachable {address}/32")
            }
        })
        .collect();
    let run_ip = |options: &[&str], stdin: Option<String>| -> anyhow::Result<String> {
        let mut ip = Command::new("ip");
        ip.args(options);
        let run = BoundedRun {
            what: format!("`ip {}` in {}", options.join(" "), netns.display()),
            timeout: ROUTE_BATCH_TIMEOUT,
            stdin: stdin.map(String::into_bytes),
            capture: true,
            interruptible: true,
        };
        // `ip` forked from a thread inside the namespace runs there.
        let output = network::run_in_netns(netns, || bounded_run(ip, &run))??;
        if !output.status.success() {
            return Err(anyhow!(
                "{} failed with {}: {}",
                run.what,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    // Removing a route that is not there is no error (a heal without a partition); the check
    // below catches one that stayed.
    let batch = if present {
        vec!["-batch", "-"]
    } else {
        vec!["-force", "-batch", "-"]
    };
    let _ = run_ip(&batch, Some(lines.join("\n") + "\n"))
        .or_else(|error| if present { Err(error) } else { Ok(String::new()) })?;
    let table = run_ip(&["route", "show", "type", "unreachable"], None)?;
    for address in addresses {
        let listed = table
            .lines()
            .any(|line| line.split_whitespace().any(|word| word == address.to_string()));
        if listed != present {
            return Err(anyhow!(
                "after the change the unreachable route to {address} is {} (routes: {table:?})",
                if listed { "still there" } else { "missing" }
            ));
        }
    }
    Ok(())
}

impl LocalProvider {
    /// Every Envoy restart so far (kills, upgrades), oldest first within each proxy.
    pub fn proxy_restarts(&self) -> Vec<ProxyRestart> {
        self.world
            .as_ref()
            .map(|world| {
                world
                    .proxies
                    .values()
                    .flat_map(|proxy| proxy.restarts.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The PEM certificate of `cluster`'s current intermediate CA (a rotation replaces it).
    pub fn intermediate_cert_pem(&self, cluster: &str) -> Option<String> {
        let world = self.world.as_ref()?;
        Some(world.pki.intermediate(cluster).ok()?.cert_pem().to_owned())
    }

    /// The network namespace of `pod` in `cluster`, to start a process "in the pod" that outlives
    /// one call (benchmarks, tests); it dies with the sandbox.
    #[doc(hidden)]
    pub fn pod_netns(&self, cluster: &str, pod: &str) -> Option<std::path::PathBuf> {
        self.world.as_ref()?.netns(cluster, pod).ok()
    }

    /// The Istio version the world records for `cluster` (changed by an `upgrade`).
    pub fn istio_version(&self, cluster: &str) -> Option<IstioVersion> {
        let world = self.world.as_ref()?;
        let cluster = world
            .scenario
            .clusters
            .iter()
            .find(|candidate| candidate.name.value == cluster)?;
        Some(cluster.istio_version.value)
    }
}
