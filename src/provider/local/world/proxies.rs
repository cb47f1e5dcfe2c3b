//! The Envoys of the `local` world: configuration pushed from the plan (sidecars and gateways),
//! start-up and readiness, configuration versions and the stats meshfed reads from them.
//!
//! Every admin call has a deadline ([`ADMIN_TIMEOUT`]): a stopped Envoy still accepts connections
//! on its admin socket (the kernel does) and never answers. A start-up wait races the Envoys'
//! readiness against their exit, so one that dies on its configuration is reported at once, with
//! the lines of its log that say why.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::anyhow;

use super::{CONFIG_APPLIED_TIMEOUT, ENVOY_READY_TIMEOUT, LocalOptions, World, failed, pod_dir};
use crate::pki;
use crate::plan::Plan;
use crate::provider::local::ads::{self, AdsServer, AwaitAckError};
use crate::provider::local::control_plane;
use crate::provider::local::envoy_binary::{
    AwaitReadyError, admin_get, await_ready, envoy_args, parse_counters, write_bootstrap,
};
use crate::provider::local::envoy_config::{self, CertPaths, XdsResources};
use crate::provider::local::supervisor::{ChildExit, ChildExited, ChildOutput, Supervisor};
use crate::provider::local::topology::GATEWAY_POD;
use crate::provider::{PhaseSettings, ProviderError, TlsFailures};
use crate::scenario::IstioVersion;

/// How long one admin call (stats, config version) may take.
pub(super) const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an Envoy stopped on purpose may take to exit after SIGTERM before it is SIGKILLed.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How often a start-up wait checks whether a child exited.
const EXIT_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// One Envoy and what was last pushed to it.
pub(super) struct Proxy {
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) admin_socket: PathBuf,
    pushed: Option<XdsResources>,
    /// The identity certificates pushed to it as SDS secrets.
    pub(super) secrets: Vec<CertPaths>,
    pub(super) started: bool,
    /// Envoy worker threads (the cluster's install values).
    concurrency: u32,
    /// The Istio version whose behaviour the pushed configuration follows (the cluster's install
    /// values): when a plan carries another one, the proxy restarts ([`World::restart_envoy`]).
    istio_version: Option<IstioVersion>,
    /// Stopped by a fault (a stopped gateway): a plan is written to its files but nothing waits
    /// for it, and liveness checks leave it alone until it is started again.
    pub(super) stopped_on_purpose: bool,
    /// Every restart so far, oldest first.
    pub(super) restarts: Vec<ProxyRestart>,
}

/// One restart of an Envoy: why, when the old process was ended and when the new one was ready.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyRestart {
    /// The Envoy, e.g. "envoy for pod bar-0 in cluster2".
    pub proxy: String,
    /// Why it restarted, e.g. "istio 1.29.0 -> 1.30.3" or "sidecar killed".
    pub reason: String,
    /// When the old process was gone.
    pub stopped: Instant,
    /// When the new process answered `/ready` with LIVE.
    pub ready: Instant,
}

/// `GET path` on `proxy`'s admin socket, failing after [`ADMIN_TIMEOUT`] naming the proxy.
pub(super) async fn admin_call(proxy: &Proxy, path: &str, what: &str) -> Result<String, ProviderError> {
    match tokio::time::timeout(ADMIN_TIMEOUT, admin_get(&proxy.admin_socket, path)).await {
        Ok(answer) => answer.map_err(|error| failed(format!("{what} of {}", proxy.name))(error.into())),
        Err(_) => Err(ProviderError::failed(
            format!("{what} of {}", proxy.name),
            anyhow!(
                "its admin socket {} did not answer {path} within {} s (is it stopped or overloaded?)",
                proxy.admin_socket.display(),
                ADMIN_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// The SDS secret name of an impostor's foreign certificate (its genuine one stays `default`).
const IMPOSTOR_SECRET: &str = "impostor";

/// The ADS node id of the Envoy of `pod` in `cluster`.
pub(super) fn node_id(key: &(String, String)) -> String {
    format!("{}.{}", key.1, key.0)
}

/// Hands `node` the clusters of `resources` (and its listeners when they are dynamic) through the
/// ADS server: its Envoy gets them at once if it runs, or when it connects.
pub(super) fn push_resources(server: &AdsServer, node: &str, resources: &XdsResources) -> Result<(), ProviderError> {
    let mut responses = vec![(ads::CLUSTER_TYPE, &resources.clusters)];
    if resources.listeners_dynamic {
        responses.push((ads::LISTENER_TYPE, &resources.listeners));
    }
    for (type_url, response) in responses {
        let encoded = encode_response(response).map_err(failed(format!("encoding the configuration of {node}")))?;
        let version = response["version_info"].as_str().unwrap_or_default();
        server.set(node, type_url, version, encoded);
    }
    Ok(())
}

/// Hands `node` its identity secrets (SDS), read from the PEM files of each of `certs`, and the
/// root CA of the first (`ROOTCA`); the
/// version follows the certificate chains, so a reissued certificate is pushed and an unchanged
/// one is not.
pub(super) fn push_secrets(server: &AdsServer, node: &str, certs: &[CertPaths]) -> Result<String, ProviderError> {
    let mut resources = Vec::new();
    let mut versions = String::new();
    for paths in certs {
        let secret = envoy_config::sds_secret(&paths.secret, &read_pem(&paths.cert_chain)?, &read_pem(&paths.key)?);
        versions.push_str(secret["version_info"].as_str().unwrap_or_default());
        resources.extend(encode_response(&secret).map_err(failed(format!("encoding the secrets of {node}")))?);
    }
    // The mesh root the proxy verifies peers against (`ROOTCA`): its genuine certificates' root
    // (an impostor's foreign certificate still trusts the real root).
    if let Some(genuine) = certs.first() {
        let root = envoy_config::root_ca_secret(&read_pem(&genuine.root)?);
        versions.push_str(root["version_info"].as_str().unwrap_or_default());
        resources.extend(encode_response(&root).map_err(failed(format!("encoding the secrets of {node}")))?);
    }
    server.set(node, ads::SECRET_TYPE, &versions, resources);
    Ok(versions)
}

/// A PEM file of a pod's certificates.
fn read_pem(path: &Path) -> Result<String, ProviderError> {
    std::fs::read_to_string(path).map_err(|error| failed(format!("reading {}", path.display()))(error.into()))
}

/// The encoded resources of a DiscoveryResponse as [`envoy_config`] writes it.
fn encode_response(response: &serde_json::Value) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let resources = response["resources"].as_array().map(Vec::as_slice).unwrap_or_default();
    Ok(resources
        .iter()
        .map(ads::encode_resource)
        .collect::<Result<Vec<_>, _>>()?)
}

/// Why Envoys did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A child exited while the Envoys were starting.
    #[error("{} exited during start-up, before every envoy was ready: {}", .0.name, ChildExited(.0.clone()))]
    Exited(ChildExit),
    /// An Envoy did not report ready in time.
    #[error(transparent)]
    NotReady(#[from] AwaitReadyError),
    /// An Envoy's admin socket did not answer at all in time.
    #[error("{envoy} was not ready within {} s: its admin socket did not answer", .waited.as_secs())]
    Silent {
        /// The Envoy.
        envoy: String,
        /// How long it was waited for.
        waited: Duration,
    },
    /// A wait task failed.
    #[error("waiting for envoys failed")]
    Join(#[source] tokio::task::JoinError),
}

/// Waits until every `(name, admin socket)` Envoy answers `/ready` with LIVE within `timeout`,
/// checking every [`EXIT_POLL_INTERVAL`] that no long-lived child of `supervisor` has exited: the
/// first one that did is the error, at once, with its log excerpt.
pub async fn await_ready_or_exit(
    supervisor: &mut Supervisor,
    envoys: Vec<(String, PathBuf)>,
    timeout: Duration,
) -> Result<(), StartupError> {
    let mut waits = tokio::task::JoinSet::new();
    for (name, socket) in envoys {
        waits.spawn(async move {
            // await_ready polls with admin calls that a stopped Envoy never answers.
            match tokio::time::timeout(timeout + ADMIN_TIMEOUT, await_ready(&name, &socket, timeout)).await {
                Ok(ready) => ready.map_err(StartupError::from),
                Err(_) => Err(StartupError::Silent {
                    envoy: name,
                    waited: timeout + ADMIN_TIMEOUT,
                }),
            }
        });
    }
    let mut exit_checks = tokio::time::interval(EXIT_POLL_INTERVAL);
    loop {
        tokio::select! {
            joined = waits.join_next() => match joined {
                None => return Ok(()),
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(error))) => {
                    // An exit explains a wait that failed better than the wait does.
                    supervisor.check_running().map_err(|exited| StartupError::Exited(exited.0))?;
                    return Err(error);
                }
                Some(Err(error)) => return Err(StartupError::Join(error)),
            },
            _ = exit_checks.tick() => {
                supervisor.check_running().map_err(|exited| StartupError::Exited(exited.0))?;
            }
        }
    }
}

impl World {
    pub(super) fn certs_for(
        &mut self,
        options: &LocalOptions,
        cluster: &str,
        pod: &str,
        foreign: bool,
    ) -> Result<CertPaths, ProviderError> {
        let dir = pod_dir(&options.run_dir, cluster, pod);
        if !foreign {
            return Ok(CertPaths::in_dir(&dir.join("certs")));
        }
        let foreign_dir = dir.join("foreign-certs");
        if !foreign_dir.exists() {
            let cluster_names: Vec<&str> = self.topology.clusters.iter().map(|c| c.name.as_str()).collect();
            if self.foreign_pki.is_none() {
                let foreign_pki = pki::pki(
                    &self.scenario.trust_domain,
                    &cluster_names,
                    self.scenario.pki.key_algorithm,
                )
                .map_err(|error| failed("creating a foreign root")(error.into()))?;
                self.foreign_pki = Some(foreign_pki);
            }
            let topology_pod = self
                .cluster(cluster)?
                .pods
                .iter()
                .find(|candidate| candidate.name == pod)
                .cloned()
                .ok_or_else(|| ProviderError::Unsupported(format!("unknown pod {pod}")))?;
            let foreign_pki = self
                .foreign_pki
                .as_ref()
                .ok_or_else(|| ProviderError::Unavailable("no foreign PKI".into()))?;
            let mut cert = foreign_pki
                .workload_cert(cluster, &topology_pod.namespace, &topology_pod.service_account)
                .map_err(|error| failed("issuing a foreign certificate")(error.into()))?;
            // The impostor still trusts the real root, so it can verify the server; only its own
            // certificate comes from the foreign root.
            cert.root_cert_pem = self.pki.root_cert_pem().to_owned();
            pki::create_workload_files(&cert, &foreign_dir)
                .map_err(|error| failed("writing a foreign certificate")(error.into()))?;
        }
        Ok(CertPaths::named(&foreign_dir, IMPOSTOR_SECRET))
    }

    pub(super) async fn apply_plan(
        &mut self,
        options: &LocalOptions,
        plan: &Plan,
        settings: &PhaseSettings,
    ) -> Result<(), ProviderError> {
        let mut desired = Vec::new();
        for cluster_plan in &plan.clusters {
            let cluster = self.cluster(&cluster_plan.cluster)?.clone();
            let concurrency = cluster_plan.install.proxy_concurrency;
            let version = cluster_plan.install.istio_version;
            for pod in &cluster.pods {
                let foreign = settings.foreign_client_cert.as_ref() == Some(&(cluster.name.clone(), pod.name.clone()));
                let genuine_certs = self.certs_for(options, &cluster.name, &pod.name, false)?;
                let impostor_certs = if foreign {
                    Some(self.certs_for(options, &cluster.name, &pod.name, true)?)
                } else {
                    None
                };
                let sidecar = |certs| {
                    let spec = control_plane::sidecar_spec(
                        &self.topology,
                        &self.scenario.trust_domain,
                        &cluster,
                        cluster_plan,
                        pod,
                        certs,
                    );
                    envoy_config::sidecar_resources(&spec)
                };
                let mut secrets = vec![genuine_certs.clone()];
                secrets.extend(impostor_certs.clone());
                let genuine = sidecar(genuine_certs);
                // An impostor presents the foreign certificate only as a client (clusters); its
                // listeners, static for the run, keep serving with the genuine one.
                let resources = match impostor_certs {
                    Some(certs) => XdsResources {
                        listeners: genuine.listeners,
                        clusters: sidecar(certs).clusters,
                        listeners_dynamic: false,
                    },
                    None => genuine,
                };
                let name = format!("envoy for pod {} in {}", pod.name, cluster.name);
                desired.push((
                    cluster.name.clone(),
                    pod.name.clone(),
                    name,
                    resources,
                    secrets,
                    concurrency,
                    version,
                ));
            }
            let gateway = control_plane::gateway_spec(&cluster, cluster_plan);
            let name = format!("envoy of gateway {GATEWAY_POD} in {}", cluster.name);
            desired.push((
                cluster.name.clone(),
                GATEWAY_POD.to_owned(),
                name,
                envoy_config::gateway_resources(&gateway),
                Vec::new(),
                concurrency,
                version,
            ));
        }
        let mut started = Vec::new();
        let mut updated = Vec::new();
        let mut upgraded = Vec::new();
        for (cluster, pod, name, resources, secrets, concurrency, version) in desired {
            let key = (cluster.clone(), pod.clone());
            if !secrets.is_empty() {
                push_secrets(&self.ads, &node_id(&key), &secrets)?;
            }
            let proxy = self.proxies.entry(key.clone()).or_insert_with(|| {
                let dir = pod_dir(&options.run_dir, &cluster, &pod).join("envoy");
                Proxy {
                    name,
                    admin_socket: dir.join("admin.sock"),
                    dir,
                    pushed: None,
                    secrets: Vec::new(),
                    started: false,
                    concurrency,
                    istio_version: None,
                    stopped_on_purpose: false,
                    restarts: Vec::new(),
                }
            });
            // A running sidecar of another Istio version is replaced, not reconfigured: its new
            // configuration is written once the old process is gone (see `restart_envoy`). A
            // gateway is not: Istio's gateway Deployment rolls out with `rollingMaxSurge: 100%`
            // and `rollingMaxUnavailable: 25%` (`manifests/charts/gateways/istio-ingress/values.yaml`
            // @1.30.3), so with one replica the new pod is ready before the old one stops and
            // drains, and callers reach the gateway's address throughout. Pushing the new
            // version's configuration to the running gateway live (Envoy drains the listeners it
            // replaces) is that rollout without a second process on the same address.
            if proxy.started
                && !proxy.stopped_on_purpose
                && pod != GATEWAY_POD
                && proxy.istio_version.is_some_and(|running| running != version)
            {
                let reason = format!(
                    "istio {} -> {version}",
                    proxy
                        .istio_version
                        .map(|running| running.to_string())
                        .unwrap_or_default()
                );
                upgraded.push((key, resources, version, concurrency, reason));
                continue;
            }
            proxy.secrets = secrets;
            proxy.istio_version = Some(version);
            proxy.concurrency = concurrency;
            if proxy.pushed.as_ref() == Some(&resources) {
                continue;
            }
            if let Some(pushed) = proxy
                .pushed
                .as_ref()
                .filter(|pushed| !pushed.listeners_dynamic && pushed.listeners != resources.listeners)
            {
                return Err(ProviderError::failed(
                    format!("reconfiguring {}", proxy.name),
                    anyhow!(
                        "its listeners would change (from version {} to {}), but listeners are static for a run",
                        pushed.listeners["version_info"],
                        resources.listeners["version_info"]
                    ),
                ));
            }
            std::fs::create_dir_all(&proxy.dir)
                .map_err(|error| failed(format!("creating {}", proxy.dir.display()))(error.into()))?;
            push_resources(&self.ads, &node_id(&key), &resources)?;
            proxy.pushed = Some(resources);
            if proxy.stopped_on_purpose {
                // Written for when it starts again; nothing runs to apply it now.
            } else if proxy.started {
                updated.push(key);
            } else {
                started.push(key);
            }
        }
        for key in &started {
            self.start_envoy(options, key)?;
        }
        self.await_envoys_ready(&started).await?;
        updated.extend(started);
        self.await_config_applied(&updated).await?;
        // Pod by pod, as a rolling restart after an upgrade: each ready before the next stops.
        for (key, resources, version, concurrency, reason) in upgraded {
            let proxy = self
                .proxies
                .get_mut(&key)
                .ok_or_else(|| ProviderError::Unavailable("unknown proxy".into()))?;
            proxy.pushed = Some(resources);
            proxy.istio_version = Some(version);
            proxy.concurrency = concurrency;
            self.restart_envoy(options, &key, &reason, None).await?;
        }
        Ok(())
    }

    /// Ends `key`'s Envoy on purpose (SIGTERM, or `signal`), waits `back_off` when given (a
    /// kubelet's restart delay), writes its pushed configuration, starts it again in the same pod
    /// and waits until it is ready; records the restart.
    pub(super) async fn restart_envoy(
        &mut self,
        options: &LocalOptions,
        key: &(String, String),
        reason: &str,
        kill: Option<(nix::sys::signal::Signal, Duration)>,
    ) -> Result<(), ProviderError> {
        let name = self.proxy_name(key)?;
        let (signal, back_off) = kill.unwrap_or((nix::sys::signal::Signal::SIGTERM, Duration::ZERO));
        self.end_envoy(key, signal)?;
        let stopped = Instant::now();
        tokio::time::sleep(back_off).await;
        let proxy = &self.proxies[key];
        if let Some(resources) = &proxy.pushed {
            push_resources(&self.ads, &node_id(key), resources)?;
        }
        self.start_envoy(options, key)?;
        self.await_envoys_ready(std::slice::from_ref(key)).await?;
        let ready = Instant::now();
        if let Some(proxy) = self.proxies.get_mut(key) {
            proxy.restarts.push(ProxyRestart {
                proxy: name,
                reason: reason.to_owned(),
                stopped,
                ready,
            });
        }
        Ok(())
    }

    /// The supervisor's name of `key`'s Envoy.
    fn proxy_name(&self, key: &(String, String)) -> Result<String, ProviderError> {
        self.proxies
            .get(key)
            .map(|proxy| proxy.name.clone())
            .ok_or_else(|| ProviderError::Unavailable(format!("no proxy for {} in {}", key.1, key.0)))
    }

    /// Ends `key`'s running Envoy on purpose with `signal` (its exit is no death), if one runs.
    pub(super) fn end_envoy(
        &mut self,
        key: &(String, String),
        signal: nix::sys::signal::Signal,
    ) -> Result<(), ProviderError> {
        let name = self.proxy_name(key)?;
        if let Some(id) = self.supervisor.running_named(&name) {
            self.supervisor
                .end_on_purpose(id, signal, STOP_GRACE)
                .map_err(|error| failed(format!("stopping {name}"))(error.into()))?;
        }
        Ok(())
    }

    pub(super) fn start_envoy(&mut self, options: &LocalOptions, key: &(String, String)) -> Result<(), ProviderError> {
        let netns = self.netns(&key.0, &key.1)?;
        let proxy = self
            .proxies
            .get_mut(key)
            .ok_or_else(|| ProviderError::Unavailable("unknown proxy".into()))?;
        let bootstrap_path = proxy.dir.join("bootstrap.json");
        let resources = proxy
            .pushed
            .as_ref()
            .ok_or_else(|| ProviderError::Unavailable(format!("no configuration for {}", proxy.name)))?;
        let bootstrap = envoy_config::bootstrap(&node_id(key), self.ads.socket(), &proxy.admin_socket, resources);
        write_bootstrap(&bootstrap_path, &bootstrap)
            .map_err(|error| failed(format!("configuring {}", proxy.name))(error.into()))?;
        let mut command = Command::new(&options.envoy);
        command.args(envoy_args(&bootstrap_path, "warning", proxy.concurrency));
        let log_dir = proxy.dir.clone();
        let name = proxy.name.clone();
        proxy.started = true;
        self.supervisor
            .spawn(&name, command, Some(&netns), ChildOutput::LogDir(log_dir))
            .map_err(|error| failed(format!("starting {name}"))(error.into()))?;
        Ok(())
    }

    pub(super) async fn await_envoys_ready(&mut self, keys: &[(String, String)]) -> Result<(), ProviderError> {
        let envoys = keys
            .iter()
            .map(|key| {
                let proxy = &self.proxies[key];
                (proxy.name.clone(), proxy.admin_socket.clone())
            })
            .collect();
        await_ready_or_exit(&mut self.supervisor, envoys, ENVOY_READY_TIMEOUT)
            .await
            .map_err(|error| failed("starting envoys")(error.into()))
    }

    /// Waits until each Envoy of `keys` has acknowledged the pushed clusters (its ADS stream ACKs
    /// the version); one that rejects them (NACK) fails the run, naming the proxy and Envoy's
    /// reason. A gateway's listeners are not waited for: Envoy refusing one is an Istio behaviour
    /// the report shows ([`World::config_rejections`]), not a failure of the world.
    pub(super) async fn await_config_applied(&mut self, keys: &[(String, String)]) -> Result<(), ProviderError> {
        let deadline = Instant::now() + CONFIG_APPLIED_TIMEOUT;
        for key in keys {
            let proxy = &self.proxies[key];
            let Some(pushed) = &proxy.pushed else { continue };
            let version = pushed.clusters["version_info"].as_str().unwrap_or_default();
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .ads
                .await_acked(&node_id(key), ads::CLUSTER_TYPE, version, left)
                .await
            {
                Ok(()) => {}
                Err(error @ AwaitAckError::Rejected { .. }) => {
                    return Err(ProviderError::failed(
                        format!("{} rejected the pushed configuration", proxy.name),
                        error,
                    ));
                }
                Err(error @ AwaitAckError::Timeout { .. }) => {
                    return Err(ProviderError::failed(
                        format!("{} did not apply the pushed configuration", proxy.name),
                        error,
                    ));
                }
            }
        }
        // An ACK says Envoy accepted the clusters; a changed cluster is then warmed and handed to
        // the worker threads. The cut point a verdict measures from ("the federation without
        // cluster3 applied") must be after that, so each proxy's main thread is asked once more:
        // the version is current and no cluster is still warming.
        for key in keys {
            let proxy = &self.proxies[key];
            let Some(pushed) = &proxy.pushed else { continue };
            let want = format!(
                "cluster_manager.cds.version_text: \"{}\"",
                pushed.clusters["version_info"].as_str().unwrap_or_default()
            );
            loop {
                let stats = admin_call(
                    proxy,
                    "/stats?filter=cluster_manager\\.(cds\\.version_text|warming_clusters)",
                    "reading the applied configuration",
                )
                .await?;
                if stats.contains(&want) && stats.contains("cluster_manager.warming_clusters: 0") {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(ProviderError::failed(
                        format!("{} did not apply the pushed configuration", proxy.name),
                        anyhow!("acknowledged, but after {CONFIG_APPLIED_TIMEOUT:?} its stats say: {stats}"),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        Ok(())
    }

    /// Whether `cluster`'s gateway is stopped by a `stopGateway` action (and not started again).
    fn gateway_stopped_on_purpose(&self, cluster: &str) -> bool {
        self.proxies
            .get(&(cluster.to_owned(), GATEWAY_POD.to_owned()))
            .is_some_and(|proxy| proxy.stopped_on_purpose)
    }

    pub(super) async fn counters(&self, cluster: &str, pod: &str) -> Result<BTreeMap<String, u64>, ProviderError> {
        let proxy = self
            .proxies
            .get(&(cluster.to_owned(), pod.to_owned()))
            .ok_or_else(|| ProviderError::Unavailable(format!("no proxy for {pod} in {cluster}")))?;
        let text = admin_call(proxy, "/stats", "reading stats").await?;
        Ok(parse_counters(&text))
    }

    pub(super) async fn tls_failures(&mut self, service: &str) -> Result<TlsFailures, ProviderError> {
        let world = self;
        let mut failures = TlsFailures::default();
        let pods: Vec<(String, String, String)> = world
            .topology
            .clusters
            .iter()
            .flat_map(|cluster| {
                cluster
                    .pods_of(service)
                    .map(|pod| (cluster.name.clone(), pod.name.clone(), pod.ip.to_string()))
            })
            .collect();
        for (cluster, pod, ip) in pods {
            let counters = world.counters(&cluster, &pod).await?;
            let prefix = format!("listener.{ip}_");
            for (name, value) in counters.iter().filter(|(name, _)| name.starts_with(&prefix)) {
                if name.ends_with(".ssl.fail_verify_error") {
                    failures.fail_verify_error += value;
                } else if name.ends_with(".ssl.fail_verify_no_cert") {
                    failures.fail_verify_no_cert += value;
                } else if name.ends_with(".ssl.connection_error") {
                    failures.connection_error += value;
                }
            }
        }
        let clusters: Vec<String> = world
            .topology
            .clusters
            .iter()
            .map(|cluster| cluster.name.clone())
            .collect();
        for cluster in clusters {
            // A gateway the scenario stopped (stopGateway) has no admin to ask and counts nothing
            // while stopped; asking it would fail the run at the end of a phase that stops one.
            if world.gateway_stopped_on_purpose(&cluster) {
                continue;
            }
            let counters = world.counters(&cluster, GATEWAY_POD).await?;
            failures.gateway_no_filter_chain_match += counters
                .get("listener.0.0.0.0_15443.no_filter_chain_match")
                .copied()
                .unwrap_or(0);
        }
        Ok(failures)
    }

    /// Each cluster's gateway proxy, with its cluster, unless a fault stopped it on purpose.
    fn gateways_not_stopped_on_purpose(&self) -> impl Iterator<Item = (&str, &Proxy)> {
        self.topology.clusters.iter().filter_map(|cluster| {
            self.proxies
                .get(&(cluster.name.clone(), GATEWAY_POD.to_owned()))
                .filter(|proxy| !proxy.stopped_on_purpose)
                .map(|proxy| (cluster.name.as_str(), proxy))
        })
    }

    /// Connections the gateways opened to other gateways so far (Istio 1.1-1.18 merge a same-host
    /// ServiceEntry's gateways into the passthrough cluster, row 2b): from each gateway's
    /// `/clusters`, the `cx_total` of every host on port 15443 of an `outbound_` SNI cluster.
    pub(super) async fn gateway_hops(&self) -> Result<u64, ProviderError> {
        let mut hops = 0;
        for (_, proxy) in self.gateways_not_stopped_on_purpose() {
            let text = admin_call(proxy, "/clusters", "reading upstream hosts").await?;
            hops += gateway_to_gateway_connections(&text);
        }
        Ok(hops)
    }

    /// Listeners a gateway's Envoy refused, each with Envoy's reason from its log.
    pub(super) async fn config_rejections(&self) -> Result<Vec<String>, ProviderError> {
        let mut rejections = Vec::new();
        for (cluster, proxy) in self.gateways_not_stopped_on_purpose() {
            let counters = parse_counters(&admin_call(proxy, "/stats?filter=lds", "reading LDS stats").await?);
            let rejected = counters
                .get("listener_manager.lds.update_rejected")
                .copied()
                .unwrap_or(0);
            if rejected == 0 {
                continue;
            }
            let reason = self
                .ads
                .last_rejection(
                    &node_id(&(cluster.to_owned(), GATEWAY_POD.to_owned())),
                    ads::LISTENER_TYPE,
                )
                .map(|rejection| rejection.detail)
                .or_else(|| last_rejection_in_logs(&proxy.dir))
                .unwrap_or_else(|| "no reason found in its log".to_owned());
            let listeners = admin_call(proxy, "/listeners?format=json", "reading listeners").await?;
            rejections.push(gateway_rejection(&proxy.name, rejected, &reason, &listeners));
        }
        Ok(rejections)
    }
}

/// A gateway's refused 15443 listener, as the report says it: Envoy's reason, and what traffic
/// meets now, read from the listeners the gateway still serves (admin `/listeners?format=json`,
/// `admin.v3.Listeners`: `listener_statuses[].name`). A refused LDS update leaves the previously
/// accepted listener in place, which routes only the SNIs it had then; without one there is no
/// 15443 listener at all.
fn gateway_rejection(proxy: &str, rejected: u64, reason: &str, listeners_json: &str) -> String {
    let listener = envoy_config::gateway_listener_name();
    let serving = serde_json::from_str::<serde_json::Value>(listeners_json)
        .ok()
        .and_then(|listeners| listeners.get("listener_statuses").and_then(|v| v.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .any(|status| status.get("name").and_then(|name| name.as_str()) == Some(listener.as_str()));
    let traffic = if serving {
        "the listener it accepted earlier stays in place and routes only the SNIs it had then: \
         connections for services added since are refused (no_filter_chain_match)"
    } else {
        "it never accepted one, so the gateway has no 15443 listener: every connection to it is \
         refused, and calls through it fail unless a retry reaches another endpoint"
    };
    format!(
        "{proxy} rejected its 15443 listener {listener} (listener_manager.lds.update_rejected = {rejected}): \
         {reason}; {traffic}"
    )
}

/// Sums `cx_total` of upstream hosts on the gateway port in `outbound_…` (SNI) clusters of an
/// Envoy `/clusters` text (`outbound_.80_._.bar.ns2.svc.cluster.local::100.64.0.10:15443::cx_total::3`).
fn gateway_to_gateway_connections(clusters_text: &str) -> u64 {
    let gateway_port = format!(":{}", crate::inventory::GATEWAY_PORT);
    clusters_text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split("::");
            let (cluster, host, stat, value) = (fields.next()?, fields.next()?, fields.next()?, fields.next()?);
            (cluster.starts_with("outbound_.") && host.ends_with(&gateway_port) && stat == "cx_total")
                .then(|| value.trim().parse::<u64>().ok())
                .flatten()
        })
        .sum()
}

/// Envoy's message on the last "config rejected" line of the logs in `dir`.
fn last_rejection_in_logs(dir: &Path) -> Option<String> {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    logs.sort();
    logs.iter().rev().find_map(|log| {
        let text = std::fs::read_to_string(log).ok()?;
        let line = text.lines().rev().find(|line| line.contains("config rejected"))?;
        // `[time][thread][level][logger] [source:line] message`: keep the message.
        Some(
            line.rsplit_once("] ")
                .map_or(line, |(_, message)| message)
                .trim()
                .to_owned(),
        )
    })
}

#[cfg(test)]
mod hop_tests {
    use super::gateway_to_gateway_connections;

    #[test]
    fn only_gateway_hosts_of_sni_clusters_count_as_hops() {
        let text = "\
outbound_.80_._.bar.ns2.svc.cluster.local::10.20.0.10:80::cx_total::7
outbound_.80_._.bar.ns2.svc.cluster.local::100.64.0.10:15443::cx_total::3
outbound_.80_._.bar.ns2.svc.cluster.local::100.64.0.10:15443::rq_total::9
outbound|80||bar.ns2.svc.cluster.local::100.64.0.11:15443::cx_total::5
outbound_.9090_._.bar.ns2.svc.cluster.local::100.64.0.12:15443::cx_total::2
";
        assert_eq!(gateway_to_gateway_connections(text), 5);
    }
}

#[cfg(test)]
mod rejection_tests {
    use super::gateway_rejection;

    /// Envoy's admin `/listeners?format=json` is an `admin.v3.Listeners`
    /// (envoyproxy.io `api-v3/admin/v3/listeners.proto`): `listener_statuses[]` with `name` and
    /// `local_address`.
    #[test]
    fn a_rejected_gateway_listener_says_whether_an_earlier_one_still_serves() {
        let reason =
            "error adding listener '0.0.0.0:15443': filter chain 'x' has the same matching rules defined as 'x'";
        let none = gateway_rejection("gw", 1, reason, r#"{"listener_statuses":[]}"#);
        assert!(none.contains("rejected its 15443 listener 0.0.0.0_15443"), "{none}");
        assert!(none.contains("has the same matching rules"), "{none}");
        assert!(none.contains("has no 15443 listener"), "{none}");
        let earlier = gateway_rejection(
            "gw",
            2,
            reason,
            r#"{"listener_statuses":[{"name":"0.0.0.0_15443","local_address":{"socket_address":{"address":"0.0.0.0","port_value":15443}}}]}"#,
        );
        assert!(earlier.contains("accepted earlier stays in place"), "{earlier}");
        assert!(earlier.contains("update_rejected = 2"), "{earlier}");
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::time::Duration;

    use super::{StartupError, await_ready_or_exit};
    use crate::provider::local::supervisor::{ChildOutput, Supervisor};

    #[test]
    fn an_envoy_that_exits_during_start_up_is_reported_at_once_with_the_cause_from_its_log() {
        let dir = std::env::temp_dir().join(format!("meshfed-startup-exit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut supervisor = Supervisor::new().unwrap();
        let mut dying = Command::new("sh");
        dying.args([
            "-c",
            "echo '[critical][main] error initializing configuration: no such field: bogus' >&2; \
             for n in $(seq 1 30); do echo \"[info] shutting down $n\"; done; exit 1",
        ]);
        supervisor
            .spawn(
                "envoy for pod bar-0 in cluster2",
                dying,
                None,
                ChildOutput::LogDir(dir.clone()),
            )
            .unwrap();
        // Far longer than this test may take: only the race against the exit ends the wait early,
        // and a timeout would come back as NotReady, not Exited.
        let ready_timeout = Duration::from_secs(120);
        let outcome = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(await_ready_or_exit(
                &mut supervisor,
                vec![("envoy for pod bar-0 in cluster2".into(), dir.join("never.sock"))],
                ready_timeout,
            ));
        let Err(StartupError::Exited(exit)) = outcome else {
            panic!("expected the exit, got {outcome:?}");
        };
        let message = StartupError::Exited(exit).to_string();
        assert!(
            message.starts_with("envoy for pod bar-0 in cluster2 exited during start-up"),
            "{message}"
        );
        assert!(message.contains("status 1"), "{message}");
        assert!(
            message.contains("[critical][main] error initializing configuration"),
            "{message}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
