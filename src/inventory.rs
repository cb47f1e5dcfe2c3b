//! What each cluster really has: ready pods per service with their locality, the gateway address,
//! the Istio version. The plan is computed from a scenario plus an inventory.
//!
//! A provider builds the inventory from the live world; [`from_scenario`] derives one from the
//! scenario alone (replicas as ready pods, gateway addresses as marked placeholders), and [`parse`]
//! reads one a user wrote (`meshfed plan --inventory FILE`). What a change to the world does to it
//! arrives as [`InventoryEvent`]s.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

use crate::scenario::{Cluster, Scenario, ScenarioError};
pub use crate::value_types::pod_name;
use crate::value_types::{IstioVersion, NEWEST_EMULATED_ISTIO, OLDEST_EMULATED_ISTIO};

/// The inventory of every cluster, by cluster name.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inventory {
    /// Per cluster.
    pub clusters: BTreeMap<String, ClusterInventory>,
}

/// What one cluster has.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterInventory {
    /// Where other clusters reach this cluster's gateway (the 15443 passthrough port).
    pub gateway: GatewayAddress,
    /// Istio version running in the cluster; picks the API generation of the plan's objects.
    pub istio_version: IstioVersion,
    /// Region of the cluster (used as the locality of its gateway endpoint).
    pub region: String,
    /// Zone of the cluster.
    pub zone: String,
    /// Ready pods per service (`name.namespace`).
    #[serde(default)]
    pub ready_pods: BTreeMap<String, Vec<ReadyPod>>,
}

impl ClusterInventory {
    /// Number of ready pods of the service `name.namespace` in this cluster.
    pub fn ready_count(&self, service: &str) -> usize {
        self.ready_pods.get(service).map_or(0, Vec::len)
    }
}

/// The address of a cluster's gateway as other clusters see it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayAddress {
    /// IP address (or a placeholder when not known yet).
    pub address: String,
    /// Port of the SNI passthrough listener.
    #[serde(default = "default_gateway_port")]
    pub port: u16,
    /// True when `address` is a placeholder, not a real address.
    #[serde(default)]
    pub placeholder: bool,
}

/// A ready pod of a service.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadyPod {
    /// Pod name.
    pub name: String,
    /// Region the pod runs in.
    pub region: String,
    /// Zone the pod runs in.
    pub zone: String,
}

/// Port of Istio's gateway for cross-cluster mTLS passthrough.
pub const GATEWAY_PORT: u16 = 15443;

fn default_gateway_port() -> u16 {
    GATEWAY_PORT
}

/// The placeholder written where a cluster's gateway address is not known.
pub fn gateway_placeholder(cluster: &str) -> String {
    format!("<gateway-address-of-{cluster}>")
}

/// An inventory from the scenario alone: every replica ready in its cluster's locality, gateway
/// addresses unknown (placeholders).
pub fn from_scenario(scenario: &Scenario) -> Inventory {
    from_scenario_with_gateways(scenario, |cluster| GatewayAddress {
        address: gateway_placeholder(cluster),
        port: GATEWAY_PORT,
        placeholder: true,
    })
}

/// An inventory from the scenario with the gateway addresses a provider knows. Clusters declared
/// `joinsLater` are left out: they are not in the mesh until they join.
pub fn from_scenario_with_gateways(
    scenario: &Scenario,
    mut gateway_of: impl FnMut(&str) -> GatewayAddress,
) -> Inventory {
    let clusters = scenario
        .clusters
        .iter()
        .filter(|cluster| !cluster.joins_later)
        .map(|cluster| {
            let name = cluster.name.value.clone();
            let inventory = cluster_from_scenario(scenario, cluster, gateway_of(&name));
            (name, inventory)
        })
        .collect();
    Inventory { clusters }
}

/// One cluster's inventory from the scenario (every replica ready in the cluster's locality),
/// with its gateway at `gateway`: what a cluster brings when it joins.
pub fn cluster_from_scenario(scenario: &Scenario, cluster: &Cluster, gateway: GatewayAddress) -> ClusterInventory {
    let name = cluster.name.value.as_str();
    let ready_pods = scenario
        .services_in(name)
        .map(|service| {
            let pods = (0..service.replicas_in(name))
                .map(|index| ReadyPod {
                    name: pod_name(&service.name.value, index),
                    region: cluster.region.clone(),
                    zone: cluster.zone_of_replica(index).to_owned(),
                })
                .collect();
            (service.reference(), pods)
        })
        .collect();
    ClusterInventory {
        gateway,
        istio_version: cluster.istio_version.value,
        region: cluster.region.clone(),
        zone: cluster.zone.clone(),
        ready_pods,
    }
}

/// Reads an inventory file (a regular file of at most [`crate::scenario::MAX_INPUT_BYTES`]) and
/// checks it covers exactly the scenario's clusters (a `joinsLater` one may be missing).
pub fn load(path: &Path, scenario: &Scenario) -> Result<Inventory, ScenarioError> {
    let text = crate::scenario::read_text(path, "inventory file")?;
    parse(&text, scenario).map_err(|problem| ScenarioError {
        file: path.to_owned(),
        line: problem.at.line(),
        column: problem.at.column(),
        message: problem.message,
    })
}

/// What is wrong in an inventory and where.
#[derive(Debug)]
struct InventoryProblem {
    at: Location,
    message: String,
}

/// Where the inventory's clusters were written (a second pass over the same text).
#[derive(Default, Deserialize)]
struct InventorySpans {
    #[serde(default)]
    clusters: Option<Spanned<BTreeMap<String, Spanned<serde::de::IgnoredAny>>>>,
}

/// Where each cluster's gateway address and Istio version were written.
#[derive(Default, Deserialize)]
struct ValueSpans {
    #[serde(default)]
    clusters: BTreeMap<String, ClusterSpans>,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ClusterSpans {
    #[serde(default)]
    gateway: Option<GatewaySpans>,
    #[serde(default)]
    istio_version: Option<Spanned<serde::de::IgnoredAny>>,
}

#[derive(Default, Deserialize)]
struct GatewaySpans {
    #[serde(default)]
    address: Option<Spanned<serde::de::IgnoredAny>>,
}

/// docs/inventory.md's promises about each cluster's values: the gateway address is an IP address
/// (it becomes a `resolution: STATIC` ServiceEntry endpoint, where a host name is not resolved)
/// unless `placeholder: true` marks it unknown, and the Istio version is in the emulated range.
fn check_values(inventory: &Inventory, text: &str) -> Result<(), InventoryProblem> {
    let spans: ValueSpans =
        serde_saphyr::from_str_with_options(text, crate::scenario::spans::lenient_options()).unwrap_or_default();
    for (name, cluster) in &inventory.clusters {
        let spans = spans.clusters.get(name);
        let gateway = &cluster.gateway;
        if !gateway.placeholder && gateway.address.parse::<std::net::IpAddr>().is_err() {
            let at = spans
                .and_then(|spans| spans.gateway.as_ref())
                .and_then(|gateway| gateway.address.as_ref())
                .map_or(Location::UNKNOWN, |address| address.referenced);
            return Err(InventoryProblem {
                at,
                message: format!(
                    "cluster {name}: gateway address {:?} is not an IP address: the ServiceEntry endpoint it becomes \
                     has resolution STATIC, so use an IPv4 or IPv6 address (e.g. 172.18.255.10), or set \
                     `placeholder: true` if it is not known yet",
                    gateway.address
                ),
            });
        }
        let version = cluster.istio_version;
        let (oldest, newest) = (OLDEST_EMULATED_ISTIO, NEWEST_EMULATED_ISTIO);
        if (version.major, version.minor) < (oldest.major, oldest.minor)
            || (version.major, version.minor) > (newest.major, newest.minor)
        {
            let at = spans
                .and_then(|spans| spans.istio_version.as_ref())
                .map_or(Location::UNKNOWN, |version| version.referenced);
            return Err(InventoryProblem {
                at,
                message: format!(
                    "cluster {name}: istioVersion {version} is outside the range meshfed plans for: use {}.{} to {}.{} \
                     (any patch; see docs/fidelity.md)",
                    oldest.major, oldest.minor, newest.major, newest.minor
                ),
            });
        }
    }
    Ok(())
}

fn parse(text: &str, scenario: &Scenario) -> Result<Inventory, InventoryProblem> {
    let inventory: Inventory = serde_saphyr::from_str(text).map_err(|yaml| InventoryProblem {
        at: yaml.location().unwrap_or(Location::UNKNOWN),
        // The message without serde-saphyr's own "line L column C:" prefix: the error carries
        // the position once.
        message: crate::scenario::syntax_message(&yaml),
    })?;
    let spans: InventorySpans =
        serde_saphyr::from_str_with_options(text, crate::scenario::spans::lenient_options()).unwrap_or_default();
    let clusters_at = spans
        .clusters
        .as_ref()
        .map_or(Location::UNKNOWN, |clusters| clusters.referenced);
    // A `joinsLater` cluster may be listed (it joined) or not.
    for cluster in scenario.clusters.iter().filter(|cluster| !cluster.joins_later) {
        if !inventory.clusters.contains_key(&cluster.name.value) {
            return Err(InventoryProblem {
                at: clusters_at,
                message: format!(
                    "the inventory has no entry for cluster {}: it needs one per scenario cluster",
                    cluster.name.value
                ),
            });
        }
    }
    if let Some(extra) = inventory.clusters.keys().find(|name| scenario.cluster(name).is_none()) {
        let at = spans
            .clusters
            .as_ref()
            .and_then(|clusters| clusters.value.get(extra))
            .map_or(clusters_at, |entry| entry.referenced);
        return Err(InventoryProblem {
            at,
            message: format!(
                "the inventory names cluster {extra:?}, which the scenario does not declare: it may name only {}",
                scenario.cluster_names().join(", ")
            ),
        });
    }
    check_values(&inventory, text)?;
    Ok(inventory)
}

/// Something that changed in a cluster's inventory: what a provider reports after a change (and
/// what a watch on a real cluster would see). The reconcile loop re-plans from these.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum InventoryEvent {
    /// A pod of the service became ready.
    PodReady {
        /// The cluster.
        cluster: String,
        /// The service, `name.namespace`.
        service: String,
        /// The pod.
        pod: ReadyPod,
    },
    /// A pod of the service is no longer ready (deleted, scaled away, failing).
    PodGone {
        /// The cluster.
        cluster: String,
        /// The service, `name.namespace`.
        service: String,
        /// The pod's name.
        pod: String,
    },
    /// The cluster's gateway is reachable at a (new) address.
    GatewayAddress {
        /// The cluster.
        cluster: String,
        /// Where other clusters now reach it.
        gateway: GatewayAddress,
    },
    /// A cluster joined the mesh with this inventory.
    ClusterJoined {
        /// The cluster.
        cluster: String,
        /// What it has.
        inventory: ClusterInventory,
    },
    /// A cluster left the mesh.
    ClusterLeft {
        /// The cluster.
        cluster: String,
    },
    /// The cluster now runs this Istio version (after an upgrade).
    IstioVersion {
        /// The cluster.
        cluster: String,
        /// The version.
        version: IstioVersion,
    },
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn skew() -> Scenario {
        crate::scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/skew.yaml")).unwrap()
    }

    #[test]
    fn inventory_errors_carry_their_position_once() {
        let problem = parse("clusters:\n  cluster1: [\n", &skew()).expect_err("a syntax error");
        assert!(problem.at.line() > 0, "a syntax error has a position");
        assert!(
            !problem.message.starts_with("line ") && !problem.message.contains(" column "),
            "the position is not repeated in the message: {}",
            problem.message
        );
    }

    const CLUSTER: &str = "gateway: { address: 10.0.0.1 }\n    istioVersion: 1.24.3\n    region: r\n    zone: z";

    /// docs/inventory.md promised an IP address and a version in range, and neither used to be
    /// checked (`address: gw.example.com` became a `resolution: STATIC` ServiceEntry endpoint).
    #[test]
    fn a_host_name_address_or_a_version_out_of_range_is_refused_at_its_position() {
        let scenario = skew();
        let two = |first: &str| format!("clusters:\n  cluster1:\n    {first}\n  cluster2:\n    {CLUSTER}\n");
        let problem = parse(&two(&CLUSTER.replace("10.0.0.1", "gw.example.com")), &scenario)
            .expect_err("a host name is not an IP address");
        assert!(
            problem
                .message
                .contains("gateway address \"gw.example.com\" is not an IP address"),
            "{}",
            problem.message
        );
        assert_eq!((problem.at.line(), problem.at.column()), (3, 25), "the address");
        let placeholder = CLUSTER.replace("{ address: 10.0.0.1 }", "{ address: gw-tbd, placeholder: true }");
        parse(&two(&placeholder), &scenario).expect("a placeholder may be anything");
        parse(&two(&CLUSTER.replace("10.0.0.1", "fd00::1")), &scenario).expect("IPv6 is an IP address");
        let problem = parse(&two(&CLUSTER.replace("1.24.3", "1.99.0")), &scenario).expect_err("out of range");
        assert!(
            problem
                .message
                .contains("istioVersion 1.99.0 is outside the range meshfed plans for: use 1.1 to 1.30"),
            "{}",
            problem.message
        );
        assert_eq!((problem.at.line(), problem.at.column()), (4, 19), "the version");
    }

    /// docs/inventory.md: `placeholder: true` gives the plan the `meshfed.io/placeholders`
    /// annotation, whatever the address is spelled like (only `<...>` addresses got it).
    #[test]
    fn placeholder_true_annotates_the_service_entries_that_use_it() {
        let scenario = skew();
        let placeholder = CLUSTER.replace("{ address: 10.0.0.1 }", "{ address: 10.0.0.9, placeholder: true }");
        let text = format!(
            "clusters:\n  cluster1:\n    {CLUSTER}\n  cluster2:\n    {placeholder}\n    readyPods:\n      bar.ns2: [{{ name: bar-0, region: r, zone: z }}]\n"
        );
        let inventory = parse(&text, &scenario).unwrap();
        let plan = crate::plan::plan(&scenario, &inventory);
        let rendered = crate::plan::render(&plan).unwrap();
        let annotated: Vec<&str> = rendered
            .iter()
            .filter(|file| file.yaml.contains(crate::plan::PLACEHOLDER_ANNOTATION))
            .map(|file| file.path.to_str().unwrap())
            .collect();
        assert!(
            annotated
                .iter()
                .any(|path| path.starts_with("cluster1/") && path.contains("serviceentry")),
            "{annotated:?}"
        );
    }

    #[test]
    fn a_missing_or_extra_cluster_points_at_the_clusters() {
        let scenario = skew();
        let text =
            format!("clusters:\n  cluster1:\n    {CLUSTER}\n  cluster2:\n    {CLUSTER}\n  cluster9:\n    {CLUSTER}\n");
        let problem = parse(&text, &scenario).expect_err("cluster9 is not in the scenario");
        assert!(
            problem
                .message
                .contains("\"cluster9\", which the scenario does not declare"),
            "{}",
            problem.message
        );
        assert_eq!(
            (problem.at.line(), problem.at.column()),
            (13, 5),
            "the first line of the entry of cluster9"
        );

        let text = format!("clusters:\n  cluster1:\n    {CLUSTER}\n");
        let problem = parse(&text, &scenario).expect_err("cluster2 is missing");
        assert!(
            problem.message.contains("no entry for cluster cluster2"),
            "{}",
            problem.message
        );
        assert_eq!((problem.at.line(), problem.at.column()), (2, 3), "the clusters mapping");
    }
}
