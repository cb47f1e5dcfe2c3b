//! The pure half of the network: a [`NetworkSpec`] in, the `ip` batches and sysctls that build it
//! out, with namespace names that cannot collide.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use thiserror::Error;

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

impl NetworkSpecError {
    /// A spec problem described by `message`.
    pub fn new(message: impl Into<String>) -> Self {
        NetworkSpecError(message.into())
    }
}

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

/// Separates cluster and pod in a namespace name; [`mk_network_commands`] refuses names that contain it.
const NETNS_SEPARATOR: char = '.';

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

    /// A pod's (or gateway's) namespace name: `{prefix}{cluster}.{pod}`. Cluster and pod names are
    /// DNS labels, which cannot contain '.', so different (cluster, pod) pairs always get different
    /// names (with '-' as separator, `c1` + `x-y-0` and `c1-x` + `y-0` would not), and none is the
    /// router's.
    pub fn pod(&self, cluster: &str, pod: &str) -> String {
        format!("{}{cluster}{NETNS_SEPARATOR}{pod}", self.prefix)
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
    let outside_bridge = OUTSIDE_BRIDGE;

    for (cluster_index, cluster) in spec.clusters.iter().enumerate() {
        let bridge = cluster_bridge(cluster_index);
        router_commands.push(format!(
            "link add {bridge} address {} type bridge",
            bridge_mac(Some(cluster_index))
        ));
        router_commands.push(format!("link set {bridge} up"));
        router_commands.push(format!(
            "addr add {}/{} dev {bridge}",
            cluster.router_ip, cluster.pod_cidr.prefix_len
        ));
        for (pod_index, pod) in cluster.pods.iter().enumerate() {
            let router_port = format!("c{cluster_index}p{pod_index}");
            let (pod_create, setup) = mk_pod_setup(spec.outside_cidr, cluster, pod, &router_port, names);
            create.extend(pod_create);
            router_bridge_ports.push((router_port, bridge.clone()));
            netns_names.push(setup.netns.clone());
            configure.push(setup);
        }

        let (pod_port, outside_port) = (format!("c{cluster_index}g"), format!("c{cluster_index}o"));
        let (gateway_create, setup) = mk_gateway_setup(spec, cluster, &pod_port, &outside_port, names);
        create.extend(gateway_create);
        router_bridge_ports.push((pod_port, bridge.clone()));
        router_bridge_ports.push((outside_port, OUTSIDE_BRIDGE.to_string()));
        netns_names.push(setup.netns.clone());
        configure.push(setup);
    }

    router_commands.push(format!(
        "link add {outside_bridge} address {} type bridge",
        bridge_mac(None)
    ));
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

/// The bridge in the router's namespace that joins the gateways' `eth1`.
const OUTSIDE_BRIDGE: &str = "brout";

/// The bridge of the `cluster_index`-th cluster (never reused in a run, even after it left).
fn cluster_bridge(cluster_index: usize) -> String {
    format!("br{cluster_index}")
}

/// A fixed, locally administered MAC address for the bridge of the `cluster_index`-th cluster
/// (`None`: the outside bridge). A bridge without one takes the lowest MAC of its ports and
/// changes it when that port goes (a pod scaled away, a cluster's gateway leaving): the
/// neighbours' ARP entries for the router's address then point nowhere and their connections
/// hang for seconds until the entries are probed again. Measured: four calls timed out 5 s after
/// a cluster left, when its gateway's port left the outside bridge.
fn bridge_mac(cluster_index: Option<usize>) -> String {
    match cluster_index {
        Some(index) => format!("02:6d:66:00:{:02x}:{:02x}", (index >> 8) & 0xff, index & 0xff),
        None => "02:6d:66:ff:00:00".to_owned(),
    }
}

/// An ordinary pod: the `ip` lines (run in meshfed's namespace) that create its namespace and its
/// `eth0`, whose peer `router_port` lands in the router's namespace, and its own set-up.
fn mk_pod_setup(
    outside_cidr: Ipv4Cidr,
    cluster: &ClusterNetwork,
    pod: &PodAddress,
    router_port: &str,
    names: &NetnsNames,
) -> (Vec<String>, NamespaceSetup) {
    let netns = names.pod(&cluster.name, &pod.name);
    let router = names.router();
    let create = vec![
        format!("netns add {netns}"),
        format!(
            "link add eth0 netns {netns} index {POD_ETH0_INDEX} address {} type veth peer name {router_port} netns {router}",
            pod_mac(pod.ip)
        ),
    ];
    let setup = NamespaceSetup {
        netns,
        sysctls: pod_sysctls(&["eth0"]),
        ip_commands: vec![
            "link set lo up".to_string(),
            format!("addr add {}/{} dev eth0", pod.ip, cluster.pod_cidr.prefix_len),
            "link set eth0 up".to_string(),
            format!("route add {} via {} dev eth0", outside_cidr, cluster.router_ip),
            format!("route add local {} dev lo", cluster.service_cidr),
            // ServiceEntry addresses (Istio's 240.240.0.0/16) are virtual like cluster IPs: the
            // sidecar serves them, so they are local to every pod.
            format!("route add local {SERVICE_ENTRY_ADDRESSES} dev lo"),
        ],
    };
    (create, setup)
}

/// Where the plan's ServiceEntry addresses live (`federation.dnsProxying`): Istio's range for
/// them, `pilot/pkg/serviceregistry/serviceentry/controller.go@1.20.8`.
const SERVICE_ENTRY_ADDRESSES: &str = "240.240.0.0/16";

/// The MAC address of a pod's `eth0`: derived from its IP (locally administered, `02:00:` and the
/// IP's four bytes), so a pod that takes over the address of a removed one (a scale down and up)
/// also has its MAC, and the neighbours' ARP entries for the address stay right. With a random
/// MAC, the gateway kept sending to the removed pod's MAC: connects timed out for tens of seconds
/// (measured) until its entry expired.
fn pod_mac(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("02:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

/// A cluster's gateway pod: `eth0` on its pod network (peer `pod_port`), `eth1` on the outside
/// network (peer `outside_port`), routes to every other cluster of `spec` via the router.
fn mk_gateway_setup(
    spec: &NetworkSpec,
    cluster: &ClusterNetwork,
    pod_port: &str,
    outside_port: &str,
    names: &NetnsNames,
) -> (Vec<String>, NamespaceSetup) {
    let gateway = &cluster.gateway;
    let netns = names.pod(&cluster.name, &gateway.name);
    let router = names.router();
    let create = vec![
        format!("netns add {netns}"),
        format!("link add eth0 netns {netns} index {POD_ETH0_INDEX} type veth peer name {pod_port} netns {router}"),
        format!("link add eth1 netns {netns} index {POD_ETH1_INDEX} type veth peer name {outside_port} netns {router}"),
    ];
    let mut ip_commands = vec![
        "link set lo up".to_string(),
        format!("addr add {}/{} dev eth0", gateway.pod_ip, cluster.pod_cidr.prefix_len),
        "link set eth0 up".to_string(),
        format!(
            "addr add {}/{} dev eth1",
            gateway.outside_ip, spec.outside_cidr.prefix_len
        ),
        "link set eth1 up".to_string(),
    ];
    for other in spec.clusters.iter().filter(|other| other.name != cluster.name) {
        ip_commands.push(format!(
            "route add {} via {} dev eth1",
            other.pod_cidr, spec.router_outside_ip
        ));
    }
    ip_commands.push(format!("route add local {} dev lo", cluster.service_cidr));
    let setup = NamespaceSetup {
        netns,
        sysctls: pod_sysctls(&["eth0", "eth1"]),
        ip_commands,
    };
    (create, setup)
}

/// What adds one pod to a running network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCommands {
    /// Run in meshfed's namespace: the pod's namespace and veth pair.
    pub create: Vec<String>,
    /// Inside the pod's namespace.
    pub setup: NamespaceSetup,
    /// Inside the router's namespace: the veth's peer joins the cluster's bridge.
    pub router: NamespaceSetup,
}

/// Commands that add `pod` to the cluster at `cluster_index` of `spec`, whose bridge is number
/// `bridge_index`, in a running network (a scale-up). The router's end of its veth is named
/// `c<bridge>n<added>`, `added` counting the pods added in the run: a removed pod's end may
/// outlive its namespace for a moment (the kernel destroys a namespace's devices asynchronously),
/// so a name is never used twice.
pub fn mk_add_pod_commands(
    spec: &NetworkSpec,
    cluster_index: usize,
    bridge_index: usize,
    pod: &PodAddress,
    added: usize,
    names: &NetnsNames,
) -> Result<PodCommands, NetworkSpecError> {
    let cluster = spec
        .clusters
        .get(cluster_index)
        .ok_or_else(|| NetworkSpecError(format!("no cluster at index {cluster_index}")))?;
    if !cluster.pod_cidr.contains(pod.ip) {
        return Err(NetworkSpecError(format!(
            "pod {} IP {} is not in cluster {}'s pod CIDR {}",
            pod.name, pod.ip, cluster.name, cluster.pod_cidr
        )));
    }
    let router_port = format!("c{bridge_index}n{added}");
    let (create, setup) = mk_pod_setup(spec.outside_cidr, cluster, pod, &router_port, names);
    let router = NamespaceSetup {
        netns: names.router(),
        sysctls: Vec::new(),
        ip_commands: vec![format!(
            "link set {router_port} master {} up",
            cluster_bridge(bridge_index)
        )],
    };
    Ok(PodCommands { create, setup, router })
}

/// What adds a whole cluster to a running network (a cluster that joins), or removes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterCommands {
    /// Run in meshfed's namespace: the namespaces and veth pairs of its pods and gateway.
    pub create: Vec<String>,
    /// One set-up per new namespace, then the router's and the other gateways' changes.
    pub configure: Vec<NamespaceSetup>,
    /// The cluster's namespaces.
    pub netns_names: Vec<String>,
}

/// Commands that add the cluster at `cluster_index` of `spec` (which lists every cluster of the
/// network, the new one included) to a running network with bridge number `bridge_index` (one no
/// cluster of the run has had): its bridge, pods and gateway, the router's refusals between its
/// pod network and the others', and the routes the other gateways need to answer it.
pub fn mk_add_cluster_commands(
    spec: &NetworkSpec,
    cluster_index: usize,
    bridge_index: usize,
    names: &NetnsNames,
) -> Result<ClusterCommands, NetworkSpecError> {
    validate(spec, names)?;
    let cluster = spec
        .clusters
        .get(cluster_index)
        .ok_or_else(|| NetworkSpecError(format!("no cluster at index {cluster_index}")))?;
    let bridge = cluster_bridge(bridge_index);
    let mut create = Vec::new();
    let mut configure = Vec::new();
    let mut netns_names = Vec::new();
    let mut router_commands = vec![
        format!(
            "link add {bridge} address {} type bridge",
            bridge_mac(Some(bridge_index))
        ),
        format!("link set {bridge} up"),
        format!(
            "addr add {}/{} dev {bridge}",
            cluster.router_ip, cluster.pod_cidr.prefix_len
        ),
    ];
    for pod in &cluster.pods {
        let host = u32::from(pod.ip) - u32::from(cluster.pod_cidr.network);
        let router_port = format!("c{bridge_index}a{host}");
        let (pod_create, setup) = mk_pod_setup(spec.outside_cidr, cluster, pod, &router_port, names);
        create.extend(pod_create);
        router_commands.push(format!("link set {router_port} master {bridge} up"));
        netns_names.push(setup.netns.clone());
        configure.push(setup);
    }
    let (pod_port, outside_port) = (format!("c{bridge_index}g"), format!("c{bridge_index}o"));
    let (gateway_create, setup) = mk_gateway_setup(spec, cluster, &pod_port, &outside_port, names);
    create.extend(gateway_create);
    router_commands.push(format!("link set {pod_port} master {bridge} up"));
    router_commands.push(format!("link set {outside_port} master {OUTSIDE_BRIDGE} up"));
    netns_names.push(setup.netns.clone());
    configure.push(setup);
    for other in spec.clusters.iter().filter(|other| other.name != cluster.name) {
        router_commands.push(format!(
            "rule add from {} to {} prohibit",
            cluster.pod_cidr, other.pod_cidr
        ));
        router_commands.push(format!(
            "rule add from {} to {} prohibit",
            other.pod_cidr, cluster.pod_cidr
        ));
        configure.push(NamespaceSetup {
            netns: names.pod(&other.name, &other.gateway.name),
            sysctls: Vec::new(),
            ip_commands: vec![format!(
                "route add {} via {} dev eth1",
                cluster.pod_cidr, spec.router_outside_ip
            )],
        });
    }
    configure.push(NamespaceSetup {
        netns: names.router(),
        sysctls: Vec::new(),
        ip_commands: router_commands,
    });
    Ok(ClusterCommands {
        create,
        configure,
        netns_names,
    })
}

/// The router's commands that remove what [`mk_add_cluster_commands`] (or the network's creation)
/// gave the cluster at `cluster_index` of `spec` (bridge number `bridge_index`) there: its bridge
/// and its refusals. Its namespaces are deleted separately; the other gateways' routes to its pod
/// network lead nowhere and stay.
pub fn mk_remove_cluster_router_commands(
    spec: &NetworkSpec,
    cluster_index: usize,
    bridge_index: usize,
    names: &NetnsNames,
) -> Option<NamespaceSetup> {
    let cluster = spec.clusters.get(cluster_index)?;
    let mut ip_commands = vec![format!("link del {}", cluster_bridge(bridge_index))];
    for other in spec.clusters.iter().filter(|other| other.name != cluster.name) {
        ip_commands.push(format!(
            "rule del from {} to {} prohibit",
            cluster.pod_cidr, other.pod_cidr
        ));
        ip_commands.push(format!(
            "rule del from {} to {} prohibit",
            other.pod_cidr, cluster.pod_cidr
        ));
    }
    Some(NamespaceSetup {
        netns: names.router(),
        sysctls: Vec::new(),
        ip_commands,
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
    let usable_prefix = |name: &str| {
        name.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && !name.starts_with('.')
    };
    // No NETNS_SEPARATOR in cluster and pod names: that keeps namespace names injective.
    let usable_name = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    };
    if !usable_prefix(&names.prefix) {
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
                "cluster name {:?} must be non-empty and use only letters, digits, '-' and '_'",
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
                     '-' and '_'",
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
        let pod = setup("t-cluster1.foo-0");
        assert!(pod.ip_commands.iter().all(|line| !line.contains("default")));
        assert!(pod.ip_commands.iter().all(|line| !line.contains("10.2.0.0")));
        let gateway = setup("t-cluster1.gateway");
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

    #[test]
    fn namespace_names_of_different_pods_never_collide() {
        let names = NetnsNames::new("t-");
        // With '-' as the separator these two were both "t-c1-x-y-0".
        assert_ne!(names.pod("c1", "x-y-0"), names.pod("c1-x", "y-0"));
        assert_eq!(names.pod("c1", "x-y-0"), "t-c1.x-y-0");
        // Exhaustively over short names of the allowed alphabet: distinct pairs, distinct names,
        // and never the router's.
        let alphabet = ["a", "-", "0", "_"];
        let mut words: Vec<String> = alphabet.iter().map(|c| c.to_string()).collect();
        for first in alphabet {
            for second in alphabet {
                for third in alphabet {
                    words.push(format!("{first}{second}{third}"));
                }
            }
        }
        let mut seen = std::collections::HashMap::new();
        for cluster in &words {
            for pod in &words {
                let name = names.pod(cluster, pod);
                assert_ne!(name, names.router());
                if let Some(previous) = seen.insert(name.clone(), (cluster.clone(), pod.clone())) {
                    panic!("{name} names both {previous:?} and {:?}", (cluster, pod));
                }
            }
        }
    }

    #[test]
    fn a_name_with_the_separator_is_refused() {
        let names = NetnsNames::new("t-");
        let mut spec = two_clusters();
        spec.clusters[0].name = "c1.x".into();
        let error = mk_network_commands(&spec, &names).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("\"c1.x\" must be non-empty and use only letters, digits, '-' and '_'"),
            "{error}"
        );
        let mut spec = two_clusters();
        spec.clusters[0].pods[0].name = "foo.0".into();
        let error = mk_network_commands(&spec, &names).unwrap_err();
        assert!(error.to_string().contains("\"foo.0\""), "{error}");
    }
}
