//! The `local` provider's network: one network namespace per pod, a bridge per cluster, a router
//! between clusters and an "outside" network where only the gateways have addresses.
//!
//! [`mk_network_commands`] is pure: it turns a [`NetworkSpec`] into `ip` batches and sysctls.
//! [`create_network`] runs them (inside the sandbox, see `sandbox`), [`Network::teardown`] removes
//! them. The topology reproduces the seed's premise, "pods can only connect to remote gateway IPs":
//!
//! - a pod has a connected route for its own pod CIDR and a route for the outside CIDR via its
//!   cluster's router address, and *no default route*, so connecting to another cluster's pod IP
//!   fails at once with `ENETUNREACH`;
//! - a gateway pod has `eth0` on its cluster's pod network and `eth1` on the outside network, routes
//!   the other clusters' pod CIDRs via the router's outside address (so replies get back), and does
//!   not forward (`ip_forward=0`);
//! - the router forwards, refuses pod-CIDR-to-other-pod-CIDR traffic (`ip rule … prohibit`) as a
//!   second line of defence, and does not rate-limit its ordinary ICMP errors (`icmp_ratelimit=0`
//!   and `icmp_ratemask=0`). The `prohibit` refusals themselves are still rate-limited per source
//!   by the kernel (`net.ipv4.route.error_burst`/`error_cost`: 5, then 1 per second; host-wide
//!   sysctls that a namespace cannot change), so past that a connect relying on the router times
//!   out instead of failing fast: *fast* failure comes from the pods having no route;
//! - every pod has a `local` route for its cluster's service CIDR on `lo`, so a sidecar can bind
//!   cluster IPs.
//!
//! Bridges live in the router's namespace, never in the host's.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::sandbox::NETNS_DIR;
pub use crate::scenario::Ipv4Cidr;

/// The whole `local` network: clusters and the outside network that joins their gateways.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// The clusters, each with its own pod network.
    pub clusters: Vec<ClusterNetwork>,
    /// The network between the router and the gateways' `eth1`.
    pub outside_cidr: Ipv4Cidr,
    /// The router's address on the outside network (inside `outside_cidr`).
    pub router_outside_ip: Ipv4Addr,
}

/// One cluster's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNetwork {
    /// Cluster name, e.g. `cluster1`; part of namespace names.
    pub name: String,
    /// The pod network; pods, the gateway's `eth0` and the router share it.
    pub pod_cidr: Ipv4Cidr,
    /// Cluster IPs; every pod gets a `local` route for it so sidecars can bind them.
    pub service_cidr: Ipv4Cidr,
    /// The router's address on this pod network (inside `pod_cidr`).
    pub router_ip: Ipv4Addr,
    /// The cluster's ordinary pods.
    pub pods: Vec<PodAddress>,
    /// The cluster's gateway pod.
    pub gateway: GatewayAddress,
}

/// An ordinary pod's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodAddress {
    /// Pod name, e.g. `bar-0`; unique within its cluster.
    pub name: String,
    /// Its IP in the cluster's pod CIDR.
    pub ip: Ipv4Addr,
}

/// The gateway pod's addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAddress {
    /// Pod name, e.g. `istio-ingressgateway`; unique within its cluster.
    pub name: String,
    /// Its `eth0` IP in the cluster's pod CIDR.
    pub pod_ip: Ipv4Addr,
    /// Its `eth1` IP in the outside CIDR: the address other clusters' ServiceEntries point at.
    pub outside_ip: Ipv4Addr,
}

/// A spec that cannot be built.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid network spec: {0}")]
pub struct NetworkSpecError(String);

/// A sysctl to set inside a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysctl {
    /// Path under `/proc/sys`, e.g. `net/ipv4/ip_forward`.
    pub key: String,
    /// The value written.
    pub value: String,
}

/// What to run inside one network namespace once it exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceSetup {
    /// The namespace's name (under `/run/netns`).
    pub netns: String,
    /// Sysctls, written before the `ip` batch runs.
    pub sysctls: Vec<Sysctl>,
    /// `ip -batch` lines run inside the namespace.
    pub ip_commands: Vec<String>,
}

/// Everything [`create_network`] runs, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkCommands {
    /// One `ip -batch` run in meshfed's own namespace first: creates every namespace and veth pair.
    pub create: Vec<String>,
    /// Then, independently of each other (in parallel), one setup per namespace.
    pub configure: Vec<NamespaceSetup>,
    /// Every namespace created, router first; what teardown deletes.
    pub netns_names: Vec<String>,
}

/// The namespace names of one network, derived from a per-run prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsNames {
    prefix: String,
}

impl NetnsNames {
    /// Names starting with `prefix` (e.g. `mf1234-`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The router's namespace name.
    pub fn router(&self) -> String {
        format!("{}router", self.prefix)
    }

    /// A pod's (or gateway's) namespace name.
    pub fn pod(&self, cluster: &str, pod: &str) -> String {
        format!("{}{cluster}-{pod}", self.prefix)
    }
}

/// Interface index of a pod's `eth0` (and a gateway's `eth1`), far above any the router's
/// namespace hands out. The kernel applies a veth's carrier change at once only when the veth's
/// index differs from its peer's (otherwise it batches it with link-watch work that runs at most
/// once a second, and a bridge port stays disabled meanwhile: measured as a first SYN lost and a
/// 1.02 s connect). In separate namespaces both ends would otherwise both get index 2.
const POD_ETH0_INDEX: u32 = 1_000_000;
/// See [`POD_ETH0_INDEX`].
const POD_ETH1_INDEX: u32 = 1_000_001;

/// Builds the commands that create the network described by `spec`, naming namespaces with `names`.
///
/// Pure: validates the spec (names usable in `ip` commands and file names, addresses inside their
/// networks, no duplicate addresses, no overlapping pod CIDRs) and returns the batches.
pub fn mk_network_commands(spec: &NetworkSpec, names: &NetnsNames) -> Result<NetworkCommands, NetworkSpecError> {
    validate(spec, names)?;
    let router = names.router();
    let mut create = vec![format!("netns add {router}")];
    let mut router_commands = vec!["link set lo up".to_string()];
    let mut router_bridge_ports = Vec::new();
    let mut configure = Vec::new();
    let mut netns_names = vec![router.clone()];
    let outside_bridge = "brout";

    for (cluster_index, cluster) in spec.clusters.iter().enumerate() {
        let bridge = format!("br{cluster_index}");
        router_commands.push(format!("link add {bridge} type bridge"));
        router_commands.push(format!("link set {bridge} up"));
        router_commands.push(format!(
            "addr add {}/{} dev {bridge}",
            cluster.router_ip, cluster.pod_cidr.prefix_len
        ));
        let service_route = format!("route add local {} dev lo", cluster.service_cidr);
        let pod_prefix = cluster.pod_cidr.prefix_len;

        for (pod_index, pod) in cluster.pods.iter().enumerate() {
            let netns = names.pod(&cluster.name, &pod.name);
            let router_port = format!("c{cluster_index}p{pod_index}");
            create.push(format!("netns add {netns}"));
            create.push(format!(
                "link add eth0 netns {netns} index {POD_ETH0_INDEX} type veth peer name {router_port} netns {router}"
            ));
            router_bridge_ports.push((router_port, bridge.clone()));
            configure.push(NamespaceSetup {
                netns: netns.clone(),
                sysctls: pod_sysctls(&["eth0"]),
                ip_commands: vec![
                    "link set lo up".to_string(),
                    format!("addr add {}/{pod_prefix} dev eth0", pod.ip),
                    "link set eth0 up".to_string(),
                    format!("route add {} via {} dev eth0", spec.outside_cidr, cluster.router_ip),
                    service_route.clone(),
                ],
            });
            netns_names.push(netns);
        }

        let gateway = &cluster.gateway;
        let netns = names.pod(&cluster.name, &gateway.name);
        let pod_port = format!("c{cluster_index}g");
        let outside_port = format!("c{cluster_index}o");
        create.push(format!("netns add {netns}"));
        create.push(format!(
            "link add eth0 netns {netns} index {POD_ETH0_INDEX} type veth peer name {pod_port} netns {router}"
        ));
        create.push(format!(
            "link add eth1 netns {netns} index {POD_ETH1_INDEX} type veth peer name {outside_port} netns {router}"
        ));
        router_bridge_ports.push((pod_port, bridge.clone()));
        router_bridge_ports.push((outside_port, outside_bridge.to_string()));
        let mut gateway_commands = vec![
            "link set lo up".to_string(),
            format!("addr add {}/{pod_prefix} dev eth0", gateway.pod_ip),
            "link set eth0 up".to_string(),
            format!(
                "addr add {}/{} dev eth1",
                gateway.outside_ip, spec.outside_cidr.prefix_len
            ),
            "link set eth1 up".to_string(),
        ];
        for other in spec.clusters.iter().filter(|other| other.name != cluster.name) {
            gateway_commands.push(format!(
                "route add {} via {} dev eth1",
                other.pod_cidr, spec.router_outside_ip
            ));
        }
        gateway_commands.push(service_route);
        configure.push(NamespaceSetup {
            netns: netns.clone(),
            sysctls: pod_sysctls(&["eth0", "eth1"]),
            ip_commands: gateway_commands,
        });
        netns_names.push(netns);
    }

    router_commands.push(format!("link add {outside_bridge} type bridge"));
    router_commands.push(format!("link set {outside_bridge} up"));
    router_commands.push(format!(
        "addr add {}/{} dev {outside_bridge}",
        spec.router_outside_ip, spec.outside_cidr.prefix_len
    ));
    for (port, bridge) in &router_bridge_ports {
        router_commands.push(format!("link set {port} master {bridge} up"));
    }
    for from in &spec.clusters {
        for to in spec.clusters.iter().filter(|to| to.name != from.name) {
            router_commands.push(format!("rule add from {} to {} prohibit", from.pod_cidr, to.pod_cidr));
        }
    }
    let mut router_sysctls = vec![
        sysctl("net/ipv4/ip_forward", "1"),
        sysctl("net/ipv4/icmp_ratelimit", "0"),
        // `icmp_ratelimit=0` only lifts the per-destination limit; the global one
        // (`icmp_msgs_per_sec`, burst 50) still turned the 51st refusal into a 1 s timeout.
        // An empty rate mask exempts every ICMP type from both.
        sysctl("net/ipv4/icmp_ratemask", "0"),
    ];
    router_sysctls.extend(rp_filter_off(&[]));
    configure.insert(
        0,
        NamespaceSetup {
            netns: router,
            sysctls: router_sysctls,
            ip_commands: router_commands,
        },
    );
    Ok(NetworkCommands {
        create,
        configure,
        netns_names,
    })
}

fn sysctl(key: &str, value: &str) -> Sysctl {
    Sysctl {
        key: key.to_string(),
        value: value.to_string(),
    }
}

/// New namespaces copy `conf/all` and `conf/default` from the host, which may have `rp_filter=1`
/// (strict): that would drop a gateway's traffic from its own cluster's pods arriving on `eth1`
/// (the reply route is `eth0`). Turn it off explicitly, for every interface already there.
fn rp_filter_off(interfaces: &[&str]) -> Vec<Sysctl> {
    ["all", "default"]
        .iter()
        .chain(interfaces)
        .map(|interface| sysctl(&format!("net/ipv4/conf/{interface}/rp_filter"), "0"))
        .collect()
}

/// The host's `ip_forward` is copied into new namespaces too; a pod or gateway must never forward.
fn pod_sysctls(interfaces: &[&str]) -> Vec<Sysctl> {
    let mut sysctls = vec![sysctl("net/ipv4/ip_forward", "0")];
    sysctls.extend(rp_filter_off(interfaces));
    sysctls
}

fn validate(spec: &NetworkSpec, names: &NetnsNames) -> Result<(), NetworkSpecError> {
    let fail = |message: String| Err(NetworkSpecError(message));
    let usable_name = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.')
    };
    if !usable_name(&names.prefix) && !names.prefix.is_empty() {
        return fail(format!(
            "namespace prefix {:?} must use only letters, digits, '-', '_' and '.'",
            names.prefix
        ));
    }
    if !spec.outside_cidr.contains(spec.router_outside_ip) {
        return fail(format!(
            "router outside IP {} is not in the outside CIDR {}",
            spec.router_outside_ip, spec.outside_cidr
        ));
    }
    let mut cluster_names = HashSet::new();
    let mut ips = HashSet::from([spec.router_outside_ip]);
    let mut duplicate_ip = |ip: Ipv4Addr, whose: String| {
        if ips.insert(ip) {
            Ok(())
        } else {
            Err(NetworkSpecError(format!("{whose} IP {ip} is used twice")))
        }
    };
    for (index, cluster) in spec.clusters.iter().enumerate() {
        if !usable_name(&cluster.name) {
            return fail(format!(
                "cluster name {:?} must be non-empty and use only letters, digits, '-', '_' and '.'",
                cluster.name
            ));
        }
        if !cluster_names.insert(cluster.name.as_str()) {
            return fail(format!("cluster {} appears twice", cluster.name));
        }
        if cluster.pod_cidr.overlaps(spec.outside_cidr) {
            return fail(format!(
                "pod CIDR {} of cluster {} overlaps the outside CIDR {}",
                cluster.pod_cidr, cluster.name, spec.outside_cidr
            ));
        }
        for other in &spec.clusters[..index] {
            if cluster.pod_cidr.overlaps(other.pod_cidr) {
                return fail(format!(
                    "pod CIDRs of clusters {} ({}) and {} ({}) overlap",
                    other.name, other.pod_cidr, cluster.name, cluster.pod_cidr
                ));
            }
        }
        if !cluster.pod_cidr.contains(cluster.router_ip) {
            return fail(format!(
                "router IP {} of cluster {} is not in its pod CIDR {}",
                cluster.router_ip, cluster.name, cluster.pod_cidr
            ));
        }
        duplicate_ip(cluster.router_ip, format!("cluster {} router", cluster.name))?;
        let mut pod_names = HashSet::new();
        let pods = cluster
            .pods
            .iter()
            .map(|pod| (&pod.name, pod.ip))
            .chain([(&cluster.gateway.name, cluster.gateway.pod_ip)]);
        for (name, ip) in pods {
            if !usable_name(name) {
                return fail(format!(
                    "pod name {name:?} in cluster {} must be non-empty and use only letters, digits, \
                     '-', '_' and '.'",
                    cluster.name
                ));
            }
            if !pod_names.insert(name.as_str()) {
                return fail(format!("pod {name} appears twice in cluster {}", cluster.name));
            }
            if !cluster.pod_cidr.contains(ip) {
                return fail(format!(
                    "pod {name} IP {ip} is not in cluster {}'s pod CIDR {}",
                    cluster.name, cluster.pod_cidr
                ));
            }
            duplicate_ip(ip, format!("pod {name} in cluster {}", cluster.name))?;
        }
        let gateway = &cluster.gateway;
        if !spec.outside_cidr.contains(gateway.outside_ip) {
            return fail(format!(
                "gateway {} outside IP {} is not in the outside CIDR {}",
                gateway.name, gateway.outside_ip, spec.outside_cidr
            ));
        }
        duplicate_ip(
            gateway.outside_ip,
            format!("gateway {} in cluster {} outside", gateway.name, cluster.name),
        )?;
    }
    Ok(())
}

/// Why the network could not be created or removed.
#[derive(Debug, Error)]
pub enum NetworkError {
    /// The spec is inconsistent.
    #[error(transparent)]
    InvalidSpec(#[from] NetworkSpecError),
    /// The `ip` binary (iproute2) could not be started.
    #[error("failed to run `ip` (iproute2) for namespace {netns}; is iproute2 installed?")]
    SpawnIp {
        /// Where it was meant to run (`sandbox` for meshfed's own namespace).
        netns: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// An `ip -batch` exited unsuccessfully.
    #[error("`ip -batch` in namespace {netns} failed ({status}): {stderr}")]
    IpFailed {
        /// Where it ran (`sandbox` for meshfed's own namespace).
        netns: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr (names the failing line).
        stderr: String,
    },
    /// Entering a namespace failed.
    #[error("failed to enter network namespace {netns}")]
    EnterNetns {
        /// The namespace.
        netns: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing a sysctl failed.
    #[error("failed to set sysctl {key}={value} in network namespace {netns}")]
    Sysctl {
        /// The namespace.
        netns: String,
        /// Path under `/proc/sys`.
        key: String,
        /// The value.
        value: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A namespace was still listed after teardown.
    #[error("network namespaces still present after teardown: {0:?}")]
    Leftover(Vec<String>),
}

/// A created network; its namespaces are under `/run/netns`.
///
/// Dropping it tears it down (best effort); [`Network::teardown`] does so and reports errors.
#[derive(Debug)]
pub struct Network {
    names: NetnsNames,
    netns_names: Vec<String>,
    torn_down: bool,
}

static NETWORKS_CREATED: AtomicUsize = AtomicUsize::new(0);

/// Creates the network described by `spec`, with namespace names prefixed per run
/// (`mf<pid>-<n>-`), and returns it.
///
/// Run it inside the sandbox (see `sandbox::enter`): it needs `CAP_NET_ADMIN`/`CAP_SYS_ADMIN` over
/// meshfed's namespaces, which rootless meshfed only has there. On failure, whatever was created is
/// removed again.
pub fn create_network(spec: &NetworkSpec) -> Result<Network, NetworkError> {
    let names = NetnsNames::new(format!(
        "mf{}-{}-",
        std::process::id(),
        NETWORKS_CREATED.fetch_add(1, Ordering::Relaxed)
    ));
    create_network_named(spec, names)
}

/// Like [`create_network`], with the caller's namespace names.
pub fn create_network_named(spec: &NetworkSpec, names: NetnsNames) -> Result<Network, NetworkError> {
    let commands = mk_network_commands(spec, &names)?;
    let network = Network {
        names,
        netns_names: commands.netns_names.clone(),
        torn_down: false,
    };
    // On error `network` is dropped here, which deletes whatever namespaces exist.
    run_ip_batch("sandbox", &[], &commands.create)?;
    std::thread::scope(|scope| {
        let setups: Vec<_> = commands
            .configure
            .iter()
            .map(|setup| scope.spawn(move || configure_namespace(setup)))
            .collect();
        setups.into_iter().try_for_each(|setup| match setup.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        })
    })?;
    Ok(network)
}

fn configure_namespace(setup: &NamespaceSetup) -> Result<(), NetworkError> {
    enter_netns_for_this_thread(&netns_path(&setup.netns)).map_err(|source| NetworkError::EnterNetns {
        netns: setup.netns.clone(),
        source,
    })?;
    for Sysctl { key, value } in &setup.sysctls {
        std::fs::write(Path::new("/proc/sys").join(key), value).map_err(|source| NetworkError::Sysctl {
            netns: setup.netns.clone(),
            key: key.clone(),
            value: value.clone(),
            source,
        })?;
    }
    // `ip` forked from this thread starts in the namespace this thread entered.
    run_ip_batch(&setup.netns, &[], &setup.ip_commands)
}

fn run_ip_batch(netns: &str, options: &[&str], commands: &[String]) -> Result<(), NetworkError> {
    let spawn_error = |source| NetworkError::SpawnIp {
        netns: netns.to_string(),
        source,
    };
    let mut ip = Command::new("ip")
        .args(options)
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let mut script = commands.join("\n");
    script.push('\n');
    // If `ip` stops at a failing line it closes its stdin; its exit status and stderr say more
    // than the broken pipe, so look at those first.
    let written = match ip.stdin.take() {
        Some(mut stdin) => stdin.write_all(script.as_bytes()),
        None => Ok(()),
    };
    let output = ip.wait_with_output().map_err(spawn_error)?;
    if output.status.success() {
        written.map_err(spawn_error)
    } else {
        Err(NetworkError::IpFailed {
            netns: netns.to_string(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

impl Network {
    /// The namespace of pod `pod` (or the gateway) of cluster `cluster`, or `None` if there is none.
    pub fn netns_path(&self, cluster: &str, pod: &str) -> Option<PathBuf> {
        let name = self.names.pod(cluster, pod);
        self.netns_names.contains(&name).then(|| netns_path(&name))
    }

    /// The router's namespace.
    pub fn router_netns_path(&self) -> PathBuf {
        netns_path(&self.names.router())
    }

    /// Every namespace of this network, router first.
    pub fn netns_names(&self) -> &[String] {
        &self.netns_names
    }

    /// Deletes every namespace (and with them their veths and bridges), then checks none is left.
    pub fn teardown(mut self) -> Result<(), NetworkError> {
        self.torn_down = true;
        delete_namespaces(&self.netns_names)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if !self.torn_down {
            let _ = delete_namespaces(&self.netns_names);
        }
    }
}

fn delete_namespaces(names: &[String]) -> Result<(), NetworkError> {
    let existing: Vec<&String> = names.iter().filter(|name| netns_path(name).exists()).collect();
    if existing.is_empty() {
        return Ok(());
    }
    let commands: Vec<String> = existing.iter().map(|name| format!("netns del {name}")).collect();
    // Keep going even if one line fails (`-force`), then check what is left.
    let result = run_ip_batch("sandbox", &["-force"], &commands);
    let left: Vec<String> = names.iter().filter(|name| netns_path(name).exists()).cloned().collect();
    if !left.is_empty() {
        return Err(NetworkError::Leftover(left));
    }
    result
}

/// Moves the calling *thread* into the network namespace at `netns`.
///
/// Only for threads that exist for this purpose (see [`run_in_netns`]): the thread stays there.
fn enter_netns_for_this_thread(netns: &Path) -> io::Result<()> {
    let file = File::open(netns)?;
    // SAFETY: setns on a descriptor we own; CLONE_NEWNET only affects the calling thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `work` on a short-lived thread inside the network namespace at `netns` and returns its
/// result. Sockets created there stay in that namespace after the thread ends, so this is how to
/// bind a listener or connect "from pod X".
pub fn run_in_netns<T, F>(netns: &Path, work: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                enter_netns_for_this_thread(netns)?;
                Ok(work())
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Binds a TCP listener on `addr` inside the namespace at `netns`.
pub fn bind_in_netns(netns: &Path, addr: SocketAddr) -> io::Result<TcpListener> {
    run_in_netns(netns, || TcpListener::bind(addr))?
}

/// Connects to `addr` from inside the namespace at `netns`, giving up after `timeout`.
pub fn connect_in_netns(netns: &Path, addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    run_in_netns(netns, || TcpStream::connect_timeout(&addr, timeout))?
}

/// Nothing accepted a connection before the deadline.
#[derive(Debug, Error)]
#[error("no TCP connection to {addr} from network namespace {netns} within {waited:?} ({attempts} attempts)")]
pub struct AwaitConnectError {
    /// The target.
    pub addr: SocketAddr,
    /// Where the connect was made from.
    pub netns: PathBuf,
    /// How long it tried.
    pub waited: Duration,
    /// How many connects it made.
    pub attempts: u32,
    /// The last connect's error.
    #[source]
    pub last_error: io::Error,
}

/// Connects to `addr` from inside `netns`, retrying until it succeeds or `deadline` passes
/// (e.g. until a freshly started Envoy listens). Blocking: call it from `spawn_blocking` in async code.
pub fn await_tcp_connect(netns: &Path, addr: SocketAddr, deadline: Instant) -> Result<TcpStream, AwaitConnectError> {
    let started = Instant::now();
    let mut attempts = 0;
    loop {
        attempts += 1;
        let remaining = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        let error = match connect_in_netns(netns, addr, remaining) {
            Ok(stream) => return Ok(stream),
            Err(error) => error,
        };
        if Instant::now() >= deadline {
            return Err(AwaitConnectError {
                addr,
                netns: netns.to_path_buf(),
                waited: started.elapsed(),
                attempts,
                last_error: error,
            });
        }
        std::thread::sleep(Duration::from_millis(5).min(deadline - Instant::now()));
    }
}

/// Creates and deletes one network namespace with a veth pair: what `meshfed setup` checks.
pub fn check_namespaces_work() -> Result<(), NetworkError> {
    let probe = "meshfed-setup-probe".to_owned();
    let result = run_ip_batch(
        "sandbox",
        &[],
        &[
            format!("netns add {probe}"),
            format!("link add eth0 netns {probe} type veth peer name probe0 netns {probe}"),
        ],
    );
    let deleted = delete_namespaces(std::slice::from_ref(&probe));
    result.and(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Cidr {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> Ipv4Addr {
        text.parse().unwrap()
    }

    fn two_clusters() -> NetworkSpec {
        let cluster = |index: u8| ClusterNetwork {
            name: format!("cluster{index}"),
            pod_cidr: net(&format!("10.{index}.0.0/24")),
            service_cidr: net(&format!("10.{}.0.0/16", 100 + index)),
            router_ip: ip(&format!("10.{index}.0.1")),
            pods: vec![
                PodAddress {
                    name: "foo-0".into(),
                    ip: ip(&format!("10.{index}.0.10")),
                },
                PodAddress {
                    name: "bar-0".into(),
                    ip: ip(&format!("10.{index}.0.11")),
                },
            ],
            gateway: GatewayAddress {
                name: "gateway".into(),
                pod_ip: ip(&format!("10.{index}.0.2")),
                outside_ip: ip(&format!("192.168.255.{}", 10 + index)),
            },
        };
        NetworkSpec {
            clusters: vec![cluster(1), cluster(2)],
            outside_cidr: net("192.168.255.0/24"),
            router_outside_ip: ip("192.168.255.1"),
        }
    }

    #[test]
    fn network_commands_for_two_clusters_match_golden() {
        let commands = mk_network_commands(&two_clusters(), &NetnsNames::new("t-")).unwrap();
        let mut text = String::from("# sandbox\n");
        for line in &commands.create {
            text.push_str(&format!("{line}\n"));
        }
        for setup in &commands.configure {
            text.push_str(&format!("# {}\n", setup.netns));
            for Sysctl { key, value } in &setup.sysctls {
                text.push_str(&format!("sysctl {key}={value}\n"));
            }
            for line in &setup.ip_commands {
                text.push_str(&format!("{line}\n"));
            }
        }
        insta::assert_snapshot!(text);
    }

    #[test]
    fn pods_get_no_default_route_and_only_gateways_reach_other_pod_cidrs() {
        let commands = mk_network_commands(&two_clusters(), &NetnsNames::new("t-")).unwrap();
        let setup = |name: &str| commands.configure.iter().find(|setup| setup.netns == name).unwrap();
        let pod = setup("t-cluster1-foo-0");
        assert!(pod.ip_commands.iter().all(|line| !line.contains("default")));
        assert!(pod.ip_commands.iter().all(|line| !line.contains("10.2.0.0")));
        let gateway = setup("t-cluster1-gateway");
        assert!(
            gateway
                .ip_commands
                .contains(&"route add 10.2.0.0/24 via 192.168.255.1 dev eth1".to_string())
        );
        assert!(gateway.sysctls.contains(&sysctl("net/ipv4/ip_forward", "0")));
        let router = setup("t-router");
        assert!(router.sysctls.contains(&sysctl("net/ipv4/ip_forward", "1")));
        assert!(
            router
                .ip_commands
                .contains(&"rule add from 10.2.0.0/24 to 10.1.0.0/24 prohibit".to_string())
        );
    }

    #[test]
    fn inconsistent_specs_are_refused_with_the_reason() {
        let names = NetnsNames::new("t-");
        let mut spec = two_clusters();
        spec.clusters[1].pods[0].ip = ip("10.1.0.50");
        let error = mk_network_commands(&spec, &names).unwrap_err();
        assert!(
            error.to_string().contains("not in cluster cluster2's pod CIDR"),
            "{error}"
        );

        let mut spec = two_clusters();
        spec.clusters[1].pod_cidr = net("10.1.0.0/16");
        let error = mk_network_commands(&spec, &names).unwrap_err();
        assert!(error.to_string().contains("overlap"), "{error}");

        let mut spec = two_clusters();
        spec.clusters[0].pods[1].name = "bad name".into();
        let error = mk_network_commands(&spec, &names).unwrap_err();
        assert!(error.to_string().contains("\"bad name\""), "{error}");

        let mut spec = two_clusters();
        spec.clusters[1].gateway.outside_ip = spec.clusters[0].gateway.outside_ip;
        let error = mk_network_commands(&spec, &names).unwrap_err();
        assert!(error.to_string().contains("used twice"), "{error}");
    }
}
