//! [`LocalProvider`]: builds the `local` world (certificates, namespaces, apps, Envoys) and tears
//! it down. It must run inside the sandbox ([`super::sandbox::enter`]) so that everything it
//! creates dies with meshfed. The other jobs live in the submodules: [`apps`] (echo workloads),
//! [`proxies`] (Envoy configuration, readiness, stats), [`traffic`] (the client and its records),
//! [`isolation`] (the cross-cluster probe) and [`liveness`] (exited, stopped and silent processes).

mod apps;
pub mod capacity;
mod faults;
mod isolation;
mod kept;
mod liveness;
mod membership;
mod proxies;
mod termination;
mod traffic;

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::ads::AdsServer;
use super::control_plane;
use super::network::{self, ClusterNetwork, GatewayAddress, Network, NetworkSpec, PodAddress};
use super::sandbox::SandboxMode;
use super::supervisor::{ChildOutput, Supervisor};
use super::topology::{self, ClusterTopology, GATEWAY_POD, Topology};
use crate::change::ChangeKind;
use crate::change::WorldChange;
use crate::inventory::Inventory;
use crate::inventory::InventoryEvent;
use crate::pki::{self, MeshPki};
use crate::plan::Plan;
use crate::progress::Progress;
use crate::provider::capabilities::{Action, Capabilities, FaultKind};
use crate::provider::{IsolationProbe, PhaseSettings, Provider, ProviderError, ProviderInfo, TlsFailures, Traffic};
use crate::record::RequestRecord;
use crate::scenario::{FederationMode, Scenario};

/// How long an Envoy may take from launch to `/ready` = LIVE.
const ENVOY_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long an app may take to listen.
const APP_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pushed configuration may take to show up in Envoy's version stats.
const CONFIG_APPLIED_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of an isolation probe connect.
const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// How often a long phase reports how many requests are done (also when none finishes).
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// How often a phase checks that the world's apps and Envoys still run.
const LIVENESS_INTERVAL: Duration = Duration::from_millis(500);
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

use proxies::Proxy;
pub use proxies::ProxyRestart;
pub use termination::TERMINATION_DRAIN;

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
    /// Traffic started in the background and not yet collected.
    traffic: Option<traffic::RunningTraffic>,
    /// The last plan applied, with its phase settings: what pods added later are configured from.
    applied: Option<(Plan, PhaseSettings)>,
    /// PKIs of clusters that joined with a foreign root (`foreignRoot`), by cluster.
    foreign_roots: BTreeMap<String, MeshPki>,
    /// Pods out of every endpoint that still serve while their sidecar drains.
    terminating: Vec<termination::Terminating>,
    /// The control plane's ADS server every Envoy takes its configuration and secrets from.
    ads: AdsServer,
}

impl LocalProvider {
    /// What `local` supports: every phase-long fault (gatewayDown, scale and delay are made as
    /// changes at the phase's start and undone after its traffic), both phase actions, and every
    /// change a timed action can ask for.
    pub const CAPABILITIES: Capabilities = Capabilities {
        provider: "local",
        faults: &[
            FaultKind::GatewayDown,
            FaultKind::Scale,
            FaultKind::ForeignClientCert,
            FaultKind::Delay,
        ],
        actions: &[Action::ChangeEndpointWeights, Action::NewConnectionPerRequest],
        changes: &ChangeKind::ALL,
        federation_modes: &[FederationMode::Serviceentry, FederationMode::EndpointDiscovery],
    };

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
        world.supervisor.set_transient(id);
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

    /// The address and port a pod in `cluster` uses to call `service` (`name.namespace`): what
    /// its DNS lookup answers under the applied plan (a cluster IP, or with DNS proxying the
    /// ServiceEntry's address).
    pub fn service_address(&self, cluster: &str, service: &str, port: u16) -> Option<SocketAddrV4> {
        let world = self.world.as_ref()?;
        let ip = world.resolved_service_address(cluster, service).ok()?;
        Some(SocketAddrV4::new(ip, port))
    }

    /// Waits until every pod that is terminating (scaled away, or of a cluster that left) has
    /// drained ([`TERMINATION_DRAIN`] after its change) and ends it: its processes, namespace
    /// and files are gone when this returns. Without it they go at the next change, plan or
    /// traffic step after their drain, or at teardown.
    ///
    /// # Errors
    ///
    /// When a process cannot be ended or a namespace removed.
    pub async fn await_terminated(&mut self) -> Result<(), ProviderError> {
        let world = self.world()?;
        let terminated = world.await_terminated().await;
        world.explained(terminated)
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
    NetworkSpec {
        clusters: topology.clusters.iter().map(cluster_network).collect(),
        outside_cidr: topology.outside_cidr,
        router_outside_ip: topology.router_outside_ip,
    }
}

fn cluster_network(cluster: &ClusterTopology) -> ClusterNetwork {
    ClusterNetwork {
        name: cluster.name.clone(),
        pod_cidr: cluster.pod_cidr,
        service_cidr: cluster.service_cidr,
        router_ip: cluster.router_ip,
        pods: cluster.pods.iter().map(pod_address).collect(),
        gateway: GatewayAddress {
            name: GATEWAY_POD.to_owned(),
            pod_ip: cluster.gateway_pod_ip,
            outside_ip: cluster.gateway_outside_ip,
        },
    }
}

fn pod_address(pod: &topology::PodTopology) -> PodAddress {
    PodAddress {
        name: pod.name.clone(),
        ip: pod.ip,
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

    fn capabilities(&self) -> Capabilities {
        LocalProvider::CAPABILITIES
    }

    async fn create_world(
        &mut self,
        scenario: &Scenario,
        progress: &mut dyn Progress,
    ) -> Result<Inventory, ProviderError> {
        let topology = topology::topology(scenario).map_err(|error| failed("laying out addresses")(error.into()))?;
        let fits = capacity::check_memory_now(capacity::Demand {
            pods: topology.clusters.iter().map(|cluster| cluster.pods.len()).sum(),
            gateways: topology.clusters.len(),
        })
        .map_err(ProviderError::Unavailable)?;
        progress.step(&fits);
        let cluster_names = scenario.cluster_names();
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
        progress.step(&format!(
            "creating network namespaces for {} clusters",
            topology.clusters.len()
        ));
        let network =
            network::create_network(&spec).map_err(|error| failed("creating network namespaces")(error.into()))?;
        let supervisor = Supervisor::new().map_err(|error| failed("starting the process supervisor")(error.into()))?;
        let ads = AdsServer::start(&run_dir.join(ADS_SOCKET))
            .map_err(|error| failed("starting the ADS server")(error.into()))?;
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
            traffic: None,
            applied: None,
            foreign_roots: BTreeMap::new(),
            terminating: Vec::new(),
            ads,
        };
        progress.step("starting the apps");
        world.start_apps(&self.options)?;
        self.world = Some(world);
        Ok(inventory)
    }

    async fn apply_plan(
        &mut self,
        plan: &Plan,
        settings: &PhaseSettings,
        progress: &mut dyn Progress,
    ) -> Result<(), ProviderError> {
        let options = self.options.clone();
        let world = self.world()?;
        let drained = world.end_drained();
        world.explained(drained)?;
        let applied = world.apply_plan(&options, plan, settings).await;
        world.explained(applied)?;
        world.applied = Some((plan.clone(), settings.clone()));
        if !world.apps_ready {
            progress.step("proxies ready; waiting for the apps to listen");
            let listening = world.await_apps();
            world.explained(listening)?;
            world.apps_ready = true;
        }
        Ok(())
    }

    async fn check_isolation(&mut self) -> Result<Vec<IsolationProbe>, ProviderError> {
        self.world()?.check_isolation().await
    }

    async fn send_traffic(
        &mut self,
        traffic: &Traffic,
        progress: &mut dyn Progress,
    ) -> Result<Vec<RequestRecord>, ProviderError> {
        let meshfed = self.options.meshfed.clone();
        let world = self.world()?;
        let sent = world.send_traffic(&meshfed, traffic, progress).await;
        world.explained(sent)
    }

    async fn start_traffic(&mut self, traffic: &Traffic, _progress: &mut dyn Progress) -> Result<(), ProviderError> {
        let meshfed = self.options.meshfed.clone();
        let world = self.world()?;
        let started = world.start_traffic(&meshfed, traffic);
        world.explained(started)
    }

    async fn await_traffic(
        &mut self,
        until: Instant,
        progress: &mut dyn Progress,
    ) -> Result<Option<Vec<RequestRecord>>, ProviderError> {
        let world = self.world()?;
        let awaited = world.await_traffic(until, progress).await;
        world.explained(awaited)
    }

    async fn change_world(
        &mut self,
        change: &WorldChange,
        progress: &mut dyn Progress,
    ) -> Result<Vec<InventoryEvent>, ProviderError> {
        let options = self.options.clone();
        let world = self.world()?;
        let drained = world.end_drained();
        world.explained(drained)?;
        let changed = match change {
            WorldChange::Scale { .. } | WorldChange::JoinCluster { .. } | WorldChange::LeaveCluster { .. } => {
                world.change_membership(&options, change, progress).await
            }
            WorldChange::StopGateway { .. }
            | WorldChange::StartGateway { .. }
            | WorldChange::Partition { .. }
            | WorldChange::Heal { .. }
            | WorldChange::Delay { .. }
            | WorldChange::Kill { .. }
            | WorldChange::RotateIntermediate { .. }
            | WorldChange::Upgrade { .. } => world.change_data_plane(&options, change, progress).await,
        };
        world.explained(changed)
    }

    async fn tls_failures(&mut self, service: &str) -> Result<TlsFailures, ProviderError> {
        let world = self.world()?;
        let counted = world.tls_failures(service).await;
        world.explained(counted)
    }

    async fn check_alive(&mut self) -> Result<(), ProviderError> {
        self.world()?.check_alive()
    }

    async fn gateway_hops(&mut self) -> Result<Option<u64>, ProviderError> {
        let world = self.world()?;
        let counted = world.gateway_hops().await;
        world.explained(counted).map(Some)
    }

    async fn config_rejections(&mut self) -> Result<Vec<String>, ProviderError> {
        let world = self.world()?;
        let found = world.config_rejections().await;
        world.explained(found)
    }

    async fn stuck(&mut self) -> Vec<String> {
        match self.world.as_mut() {
            Some(world) => world.stuck().await,
            None => Vec::new(),
        }
    }

    async fn proxy_files(&mut self) -> Vec<crate::kept_logs::KeptFile> {
        match self.world.as_ref() {
            Some(world) => world.proxy_files().await,
            None => Vec::new(),
        }
    }

    async fn teardown(&mut self, _progress: &mut dyn Progress) -> Result<(), ProviderError> {
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

/// The ADS server's socket in the run directory (mode 0600; every pod's network namespace reaches
/// it through the file system).
const ADS_SOCKET: &str = "ads.sock";

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

    /// Where a pod in `cluster` reaches `service` (`name.namespace`), as its DNS lookup answers
    /// under the last applied plan ([`control_plane::resolved_service_address`]); before any plan,
    /// its cluster IP.
    fn resolved_service_address(&self, cluster: &str, service: &str) -> Result<Ipv4Addr, ProviderError> {
        let topology = self.cluster(cluster)?;
        let resolved = match self
            .applied
            .as_ref()
            .and_then(|(plan, _)| plan.clusters.iter().find(|planned| planned.cluster == cluster))
        {
            Some(planned) => control_plane::resolved_service_address(topology, planned, service),
            None => topology.service_ips.get(service).copied(),
        };
        resolved.ok_or_else(|| {
            ProviderError::Unsupported(format!(
                "{service} does not resolve in {cluster}: the plan has no Service for it there and no \
                 ServiceEntry address a DNS proxy could answer with"
            ))
        })
    }

    fn first_port(&self, service: &str) -> u16 {
        self.scenario
            .service(service)
            .and_then(|s| s.ports.first())
            .map_or(80, |port| port.number.value)
    }
}
