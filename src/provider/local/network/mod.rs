//! The `local` provider's network: one network namespace per pod, a bridge per cluster, a router
//! between clusters and an "outside" network where only the gateways have addresses.
//!
//! One job per module: [`commands`] is pure, it turns a [`NetworkSpec`] into `ip` batches and
//! sysctls; [`executor`] runs them ([`create_network`], inside the sandbox, see `sandbox`), each
//! batch with a deadline, and removes them ([`Network::teardown`]); [`netns`] runs work inside a
//! namespace (bind, connect). The topology reproduces the seed's premise, "pods can only connect
//! to remote gateway IPs":
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

pub mod commands;
pub mod executor;
pub mod netns;

pub use crate::scenario::Ipv4Cidr;
pub use commands::{
    ClusterCommands, ClusterNetwork, GatewayAddress, NamespaceSetup, NetnsNames, NetworkCommands, NetworkSpec,
    NetworkSpecError, PodAddress, PodCommands, Sysctl, mk_add_cluster_commands, mk_add_pod_commands,
    mk_network_commands, mk_remove_cluster_router_commands,
};
pub use executor::{
    IP_BATCH_TIMEOUT, Network, NetworkError, check_namespaces_work, create_network, create_network_named,
};
pub use netns::{AwaitConnectError, await_tcp_connect, bind_in_netns, connect_in_netns, run_in_netns};
