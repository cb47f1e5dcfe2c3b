//! Semantic checks of a parsed scenario: every count is within what a provider can run, every
//! string fits the place it ends up, references resolve, generated names don't collide, and the
//! networks fit the address layout and don't clash.

use std::collections::{BTreeMap, BTreeSet};

use serde_saphyr::{Location, Spanned};

use super::address_layout;
use super::grammar::Grammar;
use super::spans::{self, ScenarioSpans};
use super::{
    Cluster, Fault, FederationMode, Ipv4Cidr, IstioVersion, MAX_PROXY_CONCURRENCY, MAX_ZONES_PER_CLUSTER,
    NEWEST_EMULATED_ISTIO, OLDEST_EMULATED_ISTIO, Phase, Scenario, Service,
};

/// Most clusters in a scenario. Every cluster runs at least a gateway and a router (a node or a
/// whole cluster on a real provider), and the plan grows with the square of the clusters: every
/// cluster gets a gateway endpoint per remote cluster for the services there. 64 is beyond any
/// multicluster mesh meshfed is meant to test and above the 50-cluster planning benchmark.
pub const MAX_CLUSTERS: usize = 64;
/// Most services in a scenario: every service is replicated into every cluster (a Service, a
/// cluster IP and a ServiceEntry each); the planning benchmark uses 2,000.
pub const MAX_SERVICES: usize = 2048;
/// Most ports per service: every port is a listener in every sidecar.
pub const MAX_PORTS_PER_SERVICE: usize = 32;
/// Most service ports the plan holds: every port of every service is replicated into every
/// cluster (clusters × all ports), and the whole plan is kept in memory while it is written.
pub const MAX_PLANNED_PORTS: u64 = 500_000;
/// Most pods in a scenario, over all services and clusters. The plan and the inventory hold every
/// pod, and every pod runs its own Envoy sidecar (about 65 MB each on `local`, which also refuses
/// more Envoys than its inotify limit allows before starting anything).
pub const MAX_PODS: u64 = 16_384;
/// Most requests per phase: the record of every request (about 400 bytes: target, pod, cluster,
/// identity, latency) is kept in memory until the phase is measured, about 400 MB at this bound.
pub const MAX_REQUESTS: u64 = 1_000_000;
/// Most requests in flight at once: every one is a connection or stream held open by the client
/// and both sidecars.
pub const MAX_CONCURRENCY: u32 = 1024;
/// Most phases in a scenario: phases run one after the other and each is reported.
pub const MAX_PHASES: usize = 256;
/// Most faults per phase.
pub const MAX_FAULTS_PER_PHASE: usize = 16;
/// Longest delay fault: longer delays would only hit the phase deadline.
pub const MAX_DELAY_MILLIS: u32 = 60_000;
/// The longest deadline a phase may set (`timeoutSeconds`): a day.
pub const MAX_PHASE_TIMEOUT_SECONDS: u64 = 86_400;
/// Most timed actions per phase: each is a change to the world and a re-plan.
pub const MAX_ACTIONS_PER_PHASE: usize = 64;
/// Most requests started per second (`ratePerSecond`): beyond what one client in one pod sends.
pub const MAX_RATE_PER_SECOND: u32 = 100_000;
/// Narrowest time bucket: finer buckets hold too few requests to say anything.
pub const MIN_BUCKET_MILLIS: u64 = 10;
/// Widest time bucket: a minute.
pub const MAX_BUCKET_MILLIS: u64 = 60_000;
/// Most `windows` per phase.
pub const MAX_WINDOWS_PER_PHASE: usize = 64;
/// Longest pod name: pods are named `<service>-<index>` and a pod's hostname is a DNS label.
const MAX_POD_NAME_LEN: usize = 63;

const _: () = assert!(MAX_CLUSTERS as u32 <= address_layout::MAX_OUTSIDE_GATEWAYS);

/// One semantic problem: where it is and what is wrong and allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where in the file.
    pub at: Location,
    /// What is wrong, and what is allowed.
    pub message: String,
}

type Checked = Result<(), Problem>;

fn problem(at: Location, message: impl Into<String>) -> Problem {
    Problem {
        at,
        message: message.into(),
    }
}

/// Checks everything the YAML schema alone cannot; returns the first problem, in the order top
/// level, clusters, services, networks, phases. `spans` says where the plain fields were written.
/// Every count is checked against its bound before anything iterates over what it counts.
pub fn validate(scenario: &Scenario, spans: &ScenarioSpans) -> Checked {
    check_top(scenario, spans)?;
    check_clusters(scenario, spans)?;
    check_services(scenario, spans)?;
    check_networks(scenario)?;
    super::resilience::check_resilience(scenario).map_err(|(at, message)| problem(at, message))?;
    check_phases(scenario)
}

/// Where a problem is reported when its field was not read back (cannot happen for a required
/// field of text the model accepted); the error then says it has no position.
const NOWHERE: Location = Location::UNKNOWN;

fn check_top(scenario: &Scenario, spans: &ScenarioSpans) -> Checked {
    let name_at = spans::at(spans.name.as_ref(), NOWHERE);
    check_string(&scenario.name, Grammar::LabelValue, "scenario name", name_at)?;
    if let Some(description) = &scenario.description {
        check_string(
            description,
            Grammar::Text,
            "description",
            spans::at(spans.description.as_ref(), name_at),
        )?;
    }
    check_string(
        &scenario.trust_domain,
        Grammar::TrustDomain,
        "trustDomain",
        spans::at(spans.trust_domain.as_ref(), name_at),
    )
}

/// Checks `text` against `grammar`; the message quotes the text with escapes, so a control
/// character is never printed raw.
/// A cluster's `zones`: label values, distinct, at most [`MAX_ZONES_PER_CLUSTER`].
fn check_zones(cluster: &Cluster) -> Checked {
    if let Some(extra) = cluster.zones.get(MAX_ZONES_PER_CLUSTER) {
        return Err(problem(
            extra.referenced,
            format!(
                "cluster {} lists {} zones, more than the {MAX_ZONES_PER_CLUSTER} allowed",
                cluster.name.value,
                cluster.zones.len()
            ),
        ));
    }
    for (index, zone) in cluster.zones.iter().enumerate() {
        check_string(&zone.value, Grammar::LabelValue, "zone", zone.referenced)?;
        if cluster.zones[..index].iter().any(|earlier| earlier.value == zone.value) {
            return Err(problem(
                zone.referenced,
                format!(
                    "zone {} is listed twice in cluster {}: each zone once (replicas go round-robin over the list)",
                    quoted(&zone.value),
                    cluster.name.value
                ),
            ));
        }
    }
    Ok(())
}

fn check_string(text: &str, grammar: Grammar, what: &str, at: Location) -> Checked {
    if grammar.accepts(text) {
        Ok(())
    } else {
        Err(problem(
            at,
            format!("invalid {what} {}: use {}", quoted(text), grammar.allowed()),
        ))
    }
}

/// `text` in double quotes (`"` and `\` escaped, then through the one escaper,
/// [`crate::printable`]), shortened to 80 characters.
fn quoted(text: &str) -> String {
    const SHOWN: usize = 80;
    let shown: String = text
        .chars()
        .take(SHOWN)
        .flat_map(|c| match c {
            '"' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    let shown = crate::printable::printable(&shown);
    if text.chars().count() > SHOWN {
        format!("\"{shown}\"... ({} characters)", text.chars().count())
    } else {
        format!("\"{shown}\"")
    }
}

/// Istio version from which multi-network endpoint discovery through an east-west gateway exists.
const ENDPOINT_DISCOVERY_SINCE: IstioVersion = IstioVersion::new(1, 8, 0);
/// DNS proxying in the sidecar (`ISTIO_META_DNS_CAPTURE`): Istio 1.8.0's release note
/// `releasenotes/notes/agent-dns-capture.yaml`.
const DNS_PROXYING_SINCE: IstioVersion = IstioVersion::new(1, 8, 0);

fn check_clusters(scenario: &Scenario, spans: &ScenarioSpans) -> Checked {
    if scenario.clusters.is_empty() {
        return Err(problem(
            spans::at(spans.clusters.as_ref(), NOWHERE),
            "`clusters` is empty: a scenario needs at least one cluster",
        ));
    }
    if let Some(extra) = scenario.clusters.get(MAX_CLUSTERS) {
        return Err(problem(
            extra.name.referenced,
            format!(
                "{} clusters are more than the {MAX_CLUSTERS} allowed: every cluster runs at least a gateway \
                 and a router, and the plan grows with the square of the clusters",
                scenario.clusters.len()
            ),
        ));
    }
    if let Some(flag) = scenario.federation.dns_proxying.as_ref().filter(|flag| flag.value)
        && scenario.federation.mode.value == FederationMode::EndpointDiscovery
    {
        return Err(problem(
            flag.referenced,
            "dnsProxying applies to mode serviceentry: endpoint discovery writes no ServiceEntry whose host the \
             proxy could resolve; remove dnsProxying or use mode serviceentry",
        ));
    }
    for (index, cluster) in scenario.clusters.iter().enumerate() {
        check_dns_label(&cluster.name, "cluster name")?;
        check_istio_version(cluster)?;
        if let Some(concurrency) = cluster
            .proxy_concurrency
            .as_ref()
            .filter(|count| !(1..=MAX_PROXY_CONCURRENCY).contains(&count.value))
        {
            return Err(problem(
                concurrency.referenced,
                format!(
                    "proxyConcurrency {} of cluster {} is out of range: use 1 to {MAX_PROXY_CONCURRENCY} Envoy workers",
                    concurrency.value, cluster.name.value
                ),
            ));
        }
        let cluster_spans = spans.cluster(index);
        let fallback = cluster.name.referenced;
        let at = |span: fn(&super::spans::ClusterSpans) -> Option<&Spanned<String>>| {
            spans::at(cluster_spans.and_then(span), fallback)
        };
        check_string(
            &cluster.region,
            Grammar::LabelValue,
            "region",
            at(|c| c.region.as_ref()),
        )?;
        check_string(&cluster.zone, Grammar::LabelValue, "zone", at(|c| c.zone.as_ref()))?;
        check_zones(cluster)?;
        if let Some(network) = &cluster.network {
            check_string(network, Grammar::LabelValue, "network", at(|c| c.network.as_ref()))?;
        }
        if let Some(context) = &cluster.context {
            check_string(context, Grammar::ContextName, "context", at(|c| c.context.as_ref()))?;
        }
        if scenario.federation.mode.value == FederationMode::EndpointDiscovery
            && cluster.istio_version.value < ENDPOINT_DISCOVERY_SINCE
        {
            return Err(problem(
                version_at(cluster),
                format!(
                    "federation mode endpoint-discovery needs Istio {ENDPOINT_DISCOVERY_SINCE} or newer, cluster {} has {}; \
                     use mode serviceentry for older versions",
                    cluster.name.value, cluster.istio_version.value
                ),
            ));
        }
        if let Some(flag) = scenario.federation.dns_proxying.as_ref().filter(|flag| flag.value)
            && cluster.istio_version.value < DNS_PROXYING_SINCE
        {
            return Err(problem(
                flag.referenced,
                format!(
                    "dnsProxying needs Istio {DNS_PROXYING_SINCE} or newer (the sidecar's DNS proxy came in 1.8), \
                     cluster {} has {}; remove dnsProxying or use 1.8 or newer",
                    cluster.name.value, cluster.istio_version.value
                ),
            ));
        }
        for (network, what) in [(&cluster.pod_cidr, "podCidr"), (&cluster.service_cidr, "serviceCidr")] {
            if let Some((reserved, why)) = address_layout::reserved_range(network.value) {
                return Err(problem(
                    network.referenced,
                    format!(
                        "{what} {} of {} overlaps {reserved}: {why}; use a private range such as 10.0.0.0/8, \
                         172.16.0.0/12 or 192.168.0.0/16",
                        network.value, cluster.name.value
                    ),
                ));
            }
        }
    }
    check_unique(scenario.clusters.iter().map(|cluster| &cluster.name), "cluster name")
}

/// Pod and service networks: disjoint, each big enough for the address layout, and leaving a
/// free /24 for the outside network the gateways share.
fn check_networks(scenario: &Scenario) -> Checked {
    check_networks_disjoint(&scenario.clusters)?;
    check_pod_networks_fit(scenario)?;
    check_service_networks_fit(scenario)?;
    let taken: Vec<Ipv4Cidr> = scenario
        .clusters
        .iter()
        .flat_map(|cluster| [cluster.pod_cidr.value, cluster.service_cidr.value])
        .collect();
    if address_layout::outside_network(&taken).is_none() {
        let covering = scenario
            .clusters
            .iter()
            .flat_map(|cluster| [&cluster.pod_cidr, &cluster.service_cidr])
            .find(|network| network.value.overlaps(address_layout::OUTSIDE_POOL))
            .map_or(NOWHERE, |network| network.referenced);
        return Err(problem(
            covering,
            format!(
                "the pod and service networks leave no free /24 in {} for the network the local gateways \
                 share: keep at least one /24 of it free",
                address_layout::OUTSIDE_POOL
            ),
        ));
    }
    Ok(())
}

/// Where a cluster's Istio version is written, or the cluster's name when it is not (the default,
/// or a version `--istio-version` set): an error about the version always has a position.
fn version_at(cluster: &Cluster) -> Location {
    if cluster.istio_version.referenced.line() == 0 {
        cluster.name.referenced
    } else {
        cluster.istio_version.referenced
    }
}

/// Versions outside the emulated range would get behaviour nobody checked against Istio's source.
fn check_istio_version(cluster: &Cluster) -> Checked {
    let version = cluster.istio_version.value;
    let oldest = (OLDEST_EMULATED_ISTIO.major, OLDEST_EMULATED_ISTIO.minor);
    let newest = (NEWEST_EMULATED_ISTIO.major, NEWEST_EMULATED_ISTIO.minor);
    if (version.major, version.minor) < oldest || (version.major, version.minor) > newest {
        return Err(problem(
            version_at(cluster),
            format!(
                "istioVersion {version} of cluster {} is outside the emulated range: use {}.{} to {}.{} (any patch; see docs/fidelity.md)",
                cluster.name.value, oldest.0, oldest.1, newest.0, newest.1
            ),
        ));
    }
    Ok(())
}

fn check_networks_disjoint(clusters: &[Cluster]) -> Checked {
    let networks: Vec<(&Spanned<super::Ipv4Cidr>, String)> = clusters
        .iter()
        .flat_map(|cluster| {
            [
                (&cluster.pod_cidr, format!("podCidr of {}", cluster.name.value)),
                (&cluster.service_cidr, format!("serviceCidr of {}", cluster.name.value)),
            ]
        })
        .collect();
    for (index, (later, later_what)) in networks.iter().enumerate() {
        for (earlier, earlier_what) in &networks[..index] {
            if later.value.overlaps(earlier.value) {
                return Err(problem(
                    later.referenced,
                    format!(
                        "{later_what} {} overlaps {earlier_what} {}: every pod and service network must be disjoint",
                        later.value, earlier.value
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_services(scenario: &Scenario, spans: &ScenarioSpans) -> Checked {
    if let Some(extra) = scenario.services.get(MAX_SERVICES) {
        return Err(problem(
            extra.name.referenced,
            format!(
                "{} services are more than the {MAX_SERVICES} allowed: every service is replicated into every cluster",
                scenario.services.len()
            ),
        ));
    }
    let mut seen = BTreeSet::new();
    for (index, service) in scenario.services.iter().enumerate() {
        check_service_name(&service.name)?;
        check_dns_label(&service.namespace, "namespace")?;
        if !seen.insert(service.reference()) {
            return Err(problem(
                service.name.referenced,
                format!(
                    "duplicate service {}: each name.namespace may be declared once",
                    service.reference()
                ),
            ));
        }
        let service_spans = spans.service(index);
        if let Some(account) = &service.service_account {
            let at = spans::at(
                service_spans.and_then(|s| s.service_account.as_ref()),
                service.name.referenced,
            );
            check_string(account, Grammar::ServiceAccount, "serviceAccount", at)?;
        }
        let ports_at = spans::at(service_spans.and_then(|s| s.ports.as_ref()), service.name.referenced);
        check_ports(service, ports_at)?;
        check_replicas(scenario, service)?;
    }
    check_injection_per_namespace(scenario)?;
    check_pod_count(scenario)?;
    check_planned_ports(scenario)?;
    check_pod_names(scenario)
}

/// Clusters × all ports of all services is at most [`MAX_PLANNED_PORTS`]; reported at the ports
/// of the service that crosses it.
/// Sidecar injection is a namespace label in the plan, so a namespace is in the mesh or not.
fn check_injection_per_namespace(scenario: &Scenario) -> Checked {
    for (index, service) in scenario.services.iter().enumerate() {
        let Some(earlier) = scenario.services[..index]
            .iter()
            .find(|earlier| earlier.namespace.value == service.namespace.value)
        else {
            continue;
        };
        if earlier.has_sidecar() != service.has_sidecar() {
            let at = service
                .sidecar
                .as_ref()
                .map_or(service.name.referenced, |sidecar| sidecar.referenced);
            return Err(problem(
                at,
                format!(
                    "service {} says sidecar: {} but {} in the same namespace says {}: injection is per namespace \
                     (label istio-injection), so put services outside the mesh in their own namespace",
                    service.reference(),
                    service.has_sidecar(),
                    earlier.reference(),
                    earlier.has_sidecar()
                ),
            ));
        }
    }
    Ok(())
}

fn check_planned_ports(scenario: &Scenario) -> Checked {
    let clusters = scenario.clusters.len() as u64;
    let mut ports = 0u64;
    for service in &scenario.services {
        ports += service.ports.len() as u64;
        if clusters * ports > MAX_PLANNED_PORTS {
            let at = service
                .ports
                .first()
                .map_or(service.name.referenced, |port| port.name.referenced);
            return Err(problem(
                at,
                format!(
                    "{ports} service ports (up to {}) in {clusters} clusters make {} ports in the plan, more than the \
                     {MAX_PLANNED_PORTS} allowed: every port of every service is replicated into every cluster and \
                     the plan is held in memory; use fewer ports, services or clusters",
                    service.reference(),
                    clusters * ports
                ),
            ));
        }
    }
    Ok(())
}

fn check_service_name(name: &Spanned<String>) -> Checked {
    check_string(&name.value, Grammar::Dns1035Label, "service name", name.referenced)
}

/// The total of all replicas is at most [`MAX_PODS`]; reported at the entry that crosses it.
fn check_pod_count(scenario: &Scenario) -> Checked {
    let mut total = 0u64;
    for service in &scenario.services {
        for count in service.replicas.values() {
            total += u64::from(count.value);
            if total > MAX_PODS {
                return Err(problem(
                    count.referenced,
                    format!(
                        "replicas {} bring the scenario to {total} pods, more than the {MAX_PODS} allowed: \
                         the plan and inventory hold every pod, and every pod runs its own Envoy \
                         sidecar (about 65 MB each on local)",
                        count.value
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Pods are named `<service>-<index>` in their cluster (whatever their namespace), and the local
/// provider keys pods by cluster and name: two services of one name cannot both have pods in one
/// cluster, and every pod name must be a DNS label.
fn check_pod_names(scenario: &Scenario) -> Checked {
    let mut owners: BTreeMap<(&str, &str), &Service> = BTreeMap::new();
    for service in &scenario.services {
        for (cluster, count) in &service.replicas {
            if count.value == 0 {
                continue;
            }
            let last_pod = crate::inventory::pod_name(&service.name.value, count.value - 1);
            if last_pod.len() > MAX_POD_NAME_LEN {
                return Err(problem(
                    count.referenced,
                    format!(
                        "pod name {last_pod} would be {} characters, more than the {MAX_POD_NAME_LEN} of a DNS label \
                         (pods are named <service>-<index>): shorten the service name {}",
                        last_pod.len(),
                        service.name.value
                    ),
                ));
            }
            if let Some(other) = owners.insert((cluster.as_str(), service.name.value.as_str()), service) {
                return Err(problem(
                    count.referenced,
                    format!(
                        "{} and {} both have pods in {cluster}, and pods are named <service>-<index> per cluster, \
                         so both would have a pod {}: rename one service or give them pods in different clusters",
                        other.reference(),
                        service.reference(),
                        crate::inventory::pod_name(&service.name.value, 0)
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_ports(service: &Service, ports_at: Location) -> Checked {
    if service.ports.is_empty() {
        return Err(problem(
            ports_at,
            format!("service {} has no ports: declare at least one", service.reference()),
        ));
    }
    if let Some(extra) = service.ports.get(MAX_PORTS_PER_SERVICE) {
        return Err(problem(
            extra.name.referenced,
            format!(
                "service {} has {} ports, more than the {MAX_PORTS_PER_SERVICE} allowed: every port is a listener \
                 in every sidecar",
                service.reference(),
                service.ports.len()
            ),
        ));
    }
    for port in &service.ports {
        check_string(&port.name.value, Grammar::PortName, "port name", port.name.referenced)?;
    }
    check_unique(service.ports.iter().map(|port| &port.name), "port name")?;
    let mut numbers = BTreeSet::new();
    for port in &service.ports {
        if port.number.value == 0 {
            return Err(problem(
                port.number.referenced,
                "port number 0 is not allowed: use 1-65535",
            ));
        }
        if !numbers.insert(port.number.value) {
            return Err(problem(
                port.number.referenced,
                format!(
                    "duplicate port number {} in service {}: port numbers must be unique within a service",
                    port.number.value,
                    service.reference()
                ),
            ));
        }
    }
    Ok(())
}

fn check_replicas(scenario: &Scenario, service: &Service) -> Checked {
    for (cluster, count) in &service.replicas {
        if scenario.cluster(cluster).is_none() {
            return Err(problem(
                count.referenced,
                format!(
                    "replicas of {} for unknown cluster {}: clusters are {}",
                    service.reference(),
                    quoted(cluster),
                    cluster_names(scenario)
                ),
            ));
        }
        if u64::from(count.value) > MAX_PODS {
            return Err(problem(
                count.referenced,
                format!(
                    "replicas {} of {} in {cluster} is more than the {MAX_PODS} pods a scenario may have: \
                     the plan and inventory hold every pod, and every pod runs its own Envoy sidecar \
                     (about 65 MB each on local)",
                    count.value,
                    service.reference()
                ),
            ));
        }
    }
    Ok(())
}

/// Every pod network holds its pods in the local address layout (checked with the layout's own
/// arithmetic, so validation and layout can never disagree).
fn check_pod_networks_fit(scenario: &Scenario) -> Checked {
    for cluster in &scenario.clusters {
        let pods: u64 = scenario
            .services
            .iter()
            .map(|service| u64::from(service.replicas_in(&cluster.name.value)))
            .sum();
        let needed = address_layout::pod_addresses_needed(pods);
        let network = cluster.pod_cidr.value;
        if network.size() < needed {
            return Err(problem(
                cluster.pod_cidr.referenced,
                format!(
                    "podCidr {network} of {} has {} addresses, but the local address layout needs {needed} for its \
                     {pods} pods: the network address, hosts 1-{} (router, gateway, kept free), one per pod, and the \
                     broadcast address; use a /{} or shorter prefix",
                    cluster.name.value,
                    network.size(),
                    address_layout::FIRST_POD_HOST - 1,
                    longest_prefix_for(needed)
                ),
            ));
        }
    }
    Ok(())
}

/// Every service network holds a cluster IP for every service in the local address layout.
fn check_service_networks_fit(scenario: &Scenario) -> Checked {
    let services = scenario.services.len() as u64;
    let needed = address_layout::service_addresses_needed(services);
    for cluster in &scenario.clusters {
        let network = cluster.service_cidr.value;
        if network.size() < needed {
            return Err(problem(
                cluster.service_cidr.referenced,
                format!(
                    "serviceCidr {network} of {} has {} addresses, but the local address layout needs {needed} for \
                     the {services} services (every service has a cluster IP in every cluster): the network address, \
                     hosts 1-{} (kept free), one per service, and the broadcast address; use a /{} or shorter prefix",
                    cluster.name.value,
                    network.size(),
                    address_layout::FIRST_SERVICE_HOST - 1,
                    longest_prefix_for(needed)
                ),
            ));
        }
    }
    Ok(())
}

/// The longest prefix whose network has at least `addresses` addresses.
fn longest_prefix_for(addresses: u64) -> u8 {
    (0..=32u8)
        .rev()
        .find(|&prefix_len| (1u64 << (32 - u32::from(prefix_len))) >= addresses)
        .unwrap_or(0)
}

fn check_phases(scenario: &Scenario) -> Checked {
    if let Some(extra) = scenario.phases.get(MAX_PHASES) {
        return Err(problem(
            extra.name.referenced,
            format!(
                "{} phases are more than the {MAX_PHASES} allowed",
                scenario.phases.len()
            ),
        ));
    }
    check_unique(scenario.phases.iter().map(|phase| &phase.name), "phase name")?;
    check_membership_flags(scenario)?;
    let mut world = WorldState::at_start(scenario);
    for phase in &scenario.phases {
        check_phase(scenario, phase)?;
        check_sender_present(phase, &world)?;
        check_actions(scenario, phase, &mut world)?;
        check_change_expectations(scenario, phase)?;
    }
    if let Some(never) = scenario
        .clusters
        .iter()
        .find(|cluster| cluster.joins_later && !world.ever_joined.contains(&cluster.name.value))
    {
        return Err(problem(
            never.name.referenced,
            format!(
                "cluster {} says joinsLater but no phase has a joinCluster action for it: add one, or drop joinsLater",
                never.name.value
            ),
        ));
    }
    Ok(())
}

/// `joinsLater` and `foreignRoot` leave a mesh to join: some cluster is there from the start and
/// some cluster uses the mesh root.
fn check_membership_flags(scenario: &Scenario) -> Checked {
    if let Some(last) = scenario.clusters.last()
        && scenario.clusters.iter().all(|cluster| cluster.joins_later)
    {
        return Err(problem(
            last.name.referenced,
            "every cluster says joinsLater: at least one cluster must be in the mesh from the start",
        ));
    }
    if let Some(last) = scenario.clusters.last()
        && scenario.clusters.iter().all(|cluster| cluster.foreign_root)
    {
        return Err(problem(
            last.name.referenced,
            "every cluster says foreignRoot: at least one cluster must use the mesh root for the others to be foreign to",
        ));
    }
    Ok(())
}

/// The world as the actions leave it, phase after phase: which clusters are in the mesh and how
/// many pods each service runs where.
struct WorldState {
    present: BTreeSet<String>,
    ever_joined: BTreeSet<String>,
    /// (cluster, service reference) -> replicas.
    replicas: BTreeMap<(String, String), u32>,
}

impl WorldState {
    fn at_start(scenario: &Scenario) -> WorldState {
        let mut replicas = BTreeMap::new();
        for service in &scenario.services {
            for (cluster, count) in &service.replicas {
                replicas.insert((cluster.clone(), service.reference()), count.value);
            }
        }
        WorldState {
            present: scenario
                .clusters
                .iter()
                .filter(|cluster| !cluster.joins_later)
                .map(|cluster| cluster.name.value.clone())
                .collect(),
            ever_joined: BTreeSet::new(),
            replicas,
        }
    }

    fn replicas(&self, cluster: &str, service: &str) -> u32 {
        self.replicas
            .get(&(cluster.to_owned(), service.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    fn pods_in(&self, cluster: &str) -> u64 {
        self.replicas
            .iter()
            .filter(|((name, _), _)| name == cluster)
            .map(|(_, count)| u64::from(*count))
            .sum()
    }
}

fn check_sender_present(phase: &Phase, world: &WorldState) -> Checked {
    let cluster = &phase.from.cluster;
    if !world.present.contains(&cluster.value) {
        return Err(problem(
            cluster.referenced,
            format!(
                "phase {}: cluster {} is not in the mesh when the phase starts (it joins later or has left), \
                 so it cannot send; clusters in the mesh then: {}",
                phase.name.value,
                cluster.value,
                listed(world.present.iter().map(String::as_str))
            ),
        ));
    }
    if world.replicas(&cluster.value, &phase.from.service.value) == 0 {
        return Err(problem(
            cluster.referenced,
            format!(
                "phase {}: {} has no pods in {} when the phase starts (an earlier action scaled it to 0)",
                phase.name.value, phase.from.service.value, cluster.value
            ),
        ));
    }
    Ok(())
}

fn listed<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

const CHANGE_KEYS: &str = "stopGateway, startGateway, partition, heal, scale, delay, kill, rotateIntermediate, \
                           joinCluster, leaveCluster, upgrade";

fn check_actions(scenario: &Scenario, phase: &Phase, world: &mut WorldState) -> Checked {
    let phase_name = &phase.name.value;
    if let Some(bucket) = &phase.bucket_millis
        && !(MIN_BUCKET_MILLIS..=MAX_BUCKET_MILLIS).contains(&bucket.value)
    {
        return Err(problem(
            bucket.referenced,
            format!(
                "phase {phase_name}: bucketMillis {} is out of range: use {MIN_BUCKET_MILLIS} to {MAX_BUCKET_MILLIS}",
                bucket.value
            ),
        ));
    }
    if let Some(rate) = &phase.rate_per_second
        && !(1..=MAX_RATE_PER_SECOND).contains(&rate.value)
    {
        return Err(problem(
            rate.referenced,
            format!(
                "phase {phase_name}: ratePerSecond {} is out of range: use 1 to {MAX_RATE_PER_SECOND} requests started per second",
                rate.value
            ),
        ));
    }
    let Some(first) = phase.actions.first() else {
        return Ok(());
    };
    if let Some(extra) = phase.actions.get(MAX_ACTIONS_PER_PHASE) {
        return Err(problem(
            extra.referenced,
            format!(
                "phase {phase_name} has {} actions, more than the {MAX_ACTIONS_PER_PHASE} allowed",
                phase.actions.len()
            ),
        ));
    }
    let Some(traffic_millis) = phase.traffic_millis() else {
        return Err(problem(
            first.referenced,
            format!(
                "phase {phase_name} has actions but no ratePerSecond: actions happen at offsets into the traffic, \
                 so the traffic must span time; set ratePerSecond (requests started per second)"
            ),
        ));
    };
    let mut names = BTreeSet::new();
    let mut previous_at = 0;
    for action in &phase.actions {
        let changes = action.value.changes();
        let (at, change) = match changes.as_slice() {
            [] => {
                return Err(problem(
                    action.referenced,
                    format!("phase {phase_name}: the action names no change: use exactly one of {CHANGE_KEYS}"),
                ));
            }
            [one] => one.clone(),
            [first, second, ..] => {
                return Err(problem(
                    second.0,
                    format!(
                        "phase {phase_name}: the action sets both {} and {}: one change per action (add a second \
                         action at the same atMillis)",
                        first.1.kind().name(),
                        second.1.kind().name()
                    ),
                ));
            }
        };
        let at_millis = &action.value.at_millis;
        let last_start = phase.last_request_start_millis().unwrap_or(0);
        if at_millis.value > last_start {
            return Err(problem(
                at_millis.referenced,
                format!(
                    "phase {phase_name}: atMillis {} is after the last request starts: request {} of {} starts at \
                     {last_start} ms (the traffic, {} requests at ratePerSecond {}, lasts {traffic_millis} ms), and an \
                     action later than that may find the traffic over and never be taken: use 0 to {last_start}",
                    at_millis.value,
                    phase.requests.value,
                    phase.requests.value,
                    phase.requests.value,
                    phase.rate_per_second.as_ref().map_or(0, |rate| rate.value),
                ),
            ));
        }
        if at_millis.value < previous_at {
            return Err(problem(
                at_millis.referenced,
                format!(
                    "phase {phase_name}: atMillis {} comes before the previous action's {previous_at}: list actions \
                     in atMillis order",
                    at_millis.value
                ),
            ));
        }
        previous_at = at_millis.value;
        if let Some(name) = &action.value.name {
            check_string(&name.value, Grammar::LabelValue, "action name", name.referenced)?;
            if !names.insert(name.value.clone()) {
                return Err(problem(
                    name.referenced,
                    format!(
                        "phase {phase_name}: duplicate action name {}: names must be unique within a phase",
                        quoted(&name.value)
                    ),
                ));
            }
        }
        check_change(scenario, phase, action, at, &change, world)?;
    }
    Ok(())
}

/// Where the change's cluster was written, else the change key.
fn cluster_at(action: &super::PhaseAction, fallback: Location) -> Location {
    let spans = [
        action.stop_gateway.as_ref().map(|c| c.value.cluster.referenced),
        action.start_gateway.as_ref().map(|c| c.value.cluster.referenced),
        action.partition.as_ref().map(|c| c.value.cluster.referenced),
        action.heal.as_ref().map(|c| c.value.cluster.referenced),
        action.rotate_intermediate.as_ref().map(|c| c.value.cluster.referenced),
        action.join_cluster.as_ref().map(|c| c.value.cluster.referenced),
        action.leave_cluster.as_ref().map(|c| c.value.cluster.referenced),
        action.scale.as_ref().map(|c| c.value.cluster.referenced),
        action.delay.as_ref().map(|c| c.value.cluster.referenced),
        action.kill.as_ref().map(|c| c.value.cluster.referenced),
        action.upgrade.as_ref().map(|c| c.value.cluster.referenced),
    ];
    spans.into_iter().flatten().next().unwrap_or(fallback)
}

fn check_change(
    scenario: &Scenario,
    phase: &Phase,
    action: &Spanned<super::PhaseAction>,
    at: Location,
    change: &crate::change::WorldChange,
    world: &mut WorldState,
) -> Checked {
    use crate::change::WorldChange;
    let phase_name = &phase.name.value;
    let kind = change.kind().name();
    let cluster_name = change.cluster();
    let cluster_at = cluster_at(&action.value, at);
    let Some(cluster) = scenario.cluster(cluster_name) else {
        return Err(problem(
            cluster_at,
            format!(
                "phase {phase_name}: {kind} names unknown cluster {}: clusters are {}",
                quoted(cluster_name),
                cluster_names(scenario)
            ),
        ));
    };
    let present = world.present.contains(cluster_name);
    if let WorldChange::JoinCluster { .. } = change {
        if !cluster.joins_later {
            return Err(problem(
                cluster_at,
                format!(
                    "phase {phase_name}: joinCluster {cluster_name}: the cluster is in the mesh from the start; \
                     a cluster that joins says joinsLater: true"
                ),
            ));
        }
        if present {
            return Err(problem(
                cluster_at,
                format!("phase {phase_name}: joinCluster {cluster_name}: the cluster has already joined"),
            ));
        }
        world.present.insert(cluster_name.to_owned());
        world.ever_joined.insert(cluster_name.to_owned());
        return Ok(());
    }
    if !present {
        return Err(problem(
            cluster_at,
            format!(
                "phase {phase_name}: {kind} on cluster {cluster_name}, which is not in the mesh at atMillis {} \
                 (it joins later or has left); clusters in the mesh then: {}",
                action.value.at_millis.value,
                listed(world.present.iter().map(String::as_str))
            ),
        ));
    }
    match change {
        WorldChange::LeaveCluster { .. } => {
            if *cluster_name == phase.from.cluster.value {
                return Err(problem(
                    cluster_at,
                    format!(
                        "phase {phase_name}: leaveCluster {cluster_name}: the phase sends from that cluster; \
                         send from another cluster"
                    ),
                ));
            }
            world.present.remove(cluster_name);
        }
        WorldChange::Scale { service, replicas, .. } => {
            let scale = action.value.scale.as_ref().map(|scale| &scale.value);
            let service_at = scale.map_or(at, |scale| scale.service.referenced);
            if scenario.service(service).is_none() {
                return Err(problem(
                    service_at,
                    format!(
                        "phase {phase_name}: scale names unknown service {}: services are {}",
                        quoted(service),
                        service_names(scenario)
                    ),
                ));
            }
            let replicas_at = scale.map_or(at, |scale| scale.replicas.referenced);
            if u64::from(*replicas) > MAX_PODS {
                return Err(problem(
                    replicas_at,
                    format!(
                        "phase {phase_name}: scale to {replicas} replicas is more than the {MAX_PODS} pods a scenario may have"
                    ),
                ));
            }
            if *cluster_name == phase.from.cluster.value && *service == phase.from.service.value && *replicas == 0 {
                return Err(problem(
                    replicas_at,
                    format!(
                        "phase {phase_name}: scale {service} in {cluster_name} to 0 removes the pod that sends the \
                         phase's traffic"
                    ),
                ));
            }
            let others = world.pods_in(cluster_name) - u64::from(world.replicas(cluster_name, service));
            let pods = others + u64::from(*replicas);
            let needed = address_layout::pod_addresses_needed(pods);
            if cluster.pod_cidr.value.size() < needed {
                return Err(problem(
                    replicas_at,
                    format!(
                        "phase {phase_name}: scale {service} in {cluster_name} to {replicas} makes {pods} pods, but \
                         podCidr {} has room for {} in the local address layout (it needs {needed} addresses); \
                         use a larger podCidr",
                        cluster.pod_cidr.value,
                        cluster
                            .pod_cidr
                            .value
                            .size()
                            .saturating_sub(address_layout::pod_addresses_needed(0)),
                    ),
                ));
            }
            world
                .replicas
                .insert((cluster_name.to_owned(), service.clone()), *replicas);
        }
        WorldChange::Delay { service, millis, .. } => {
            let delay = action.value.delay.as_ref().map(|delay| &delay.value);
            if scenario.service(service).is_none() {
                return Err(problem(
                    delay.map_or(at, |delay| delay.service.referenced),
                    format!(
                        "phase {phase_name}: delay names unknown service {}: services are {}",
                        quoted(service),
                        service_names(scenario)
                    ),
                ));
            }
            if *millis > MAX_DELAY_MILLIS {
                return Err(problem(
                    delay.map_or(at, |delay| delay.millis.referenced),
                    format!(
                        "phase {phase_name}: delay of {millis} ms is over the {MAX_DELAY_MILLIS} ms allowed: use 0 to {MAX_DELAY_MILLIS}"
                    ),
                ));
            }
        }
        WorldChange::Kill { pod, .. } => {
            let exists = scenario.services.iter().any(|service| {
                let count = world.replicas(cluster_name, &service.reference());
                (0..count).any(|index| crate::inventory::pod_name(&service.name.value, index) == *pod)
            });
            if !exists {
                let pods: Vec<String> = scenario
                    .services
                    .iter()
                    .flat_map(|service| {
                        let count = world.replicas(cluster_name, &service.reference()).min(4);
                        (0..count).map(|index| crate::inventory::pod_name(&service.name.value, index))
                    })
                    .collect();
                return Err(problem(
                    action.value.kill.as_ref().map_or(at, |kill| kill.value.pod.referenced),
                    format!(
                        "phase {phase_name}: kill names pod {}, which cluster {cluster_name} does not run at that \
                         point; pods are named <service>-<index>, e.g. {}",
                        quoted(pod),
                        listed(pods.iter().map(String::as_str))
                    ),
                ));
            }
        }
        WorldChange::Upgrade { to, .. } => {
            let oldest = (OLDEST_EMULATED_ISTIO.major, OLDEST_EMULATED_ISTIO.minor);
            let newest = (NEWEST_EMULATED_ISTIO.major, NEWEST_EMULATED_ISTIO.minor);
            if (to.major, to.minor) < oldest || (to.major, to.minor) > newest {
                return Err(problem(
                    action
                        .value
                        .upgrade
                        .as_ref()
                        .map_or(at, |upgrade| upgrade.value.to.referenced),
                    format!(
                        "phase {phase_name}: upgrade to {to} is outside the emulated range: use {}.{} to {}.{}",
                        oldest.0, oldest.1, newest.0, newest.1
                    ),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_rate(rate: &Option<Spanned<f64>>) -> Checked {
    match rate {
        Some(rate) if !(0.0..=1.0).contains(&rate.value) => Err(problem(
            rate.referenced,
            format!("rate {} is out of range: rates are between 0 and 1", rate.value),
        )),
        _ => Ok(()),
    }
}

fn check_change_expectations(scenario: &Scenario, phase: &Phase) -> Checked {
    let expect = &phase.expect;
    let phase_name = &phase.name.value;
    if let Some(extra) = expect.windows.get(MAX_WINDOWS_PER_PHASE) {
        return Err(problem(
            extra.referenced,
            format!(
                "phase {phase_name} has {} windows, more than the {MAX_WINDOWS_PER_PHASE} allowed",
                expect.windows.len()
            ),
        ));
    }
    for window in &expect.windows {
        let bounds = &window.value;
        if bounds.from_millis.value >= bounds.to_millis.value {
            return Err(problem(
                bounds.to_millis.referenced,
                format!(
                    "phase {phase_name}: window toMillis {} is not after fromMillis {}: a window is [fromMillis, toMillis)",
                    bounds.to_millis.value, bounds.from_millis.value
                ),
            ));
        }
        if let Some(traffic_millis) = phase.traffic_millis()
            && bounds.from_millis.value >= traffic_millis
        {
            return Err(problem(
                bounds.from_millis.referenced,
                format!(
                    "phase {phase_name}: window fromMillis {} is not within the traffic, which lasts {traffic_millis} ms \
                     (requests / ratePerSecond): no request would start in it",
                    bounds.from_millis.value
                ),
            ));
        }
        check_rate(&bounds.success_rate_at_least)?;
        check_rate(&bounds.mtls_rate_at_least)?;
        if bounds.success_rate_at_least.is_none()
            && bounds.failed_calls_at_most.is_none()
            && bounds.mtls_rate_at_least.is_none()
            && bounds.clusters_reached.is_none()
            && bounds.calls_to_cluster_at_most.is_none()
        {
            return Err(problem(
                window.referenced,
                format!(
                    "phase {phase_name}: the window sets no bound: use successRateAtLeast, failedCallsAtMost, \
                     mtlsRateAtLeast, clustersReached or callsToClusterAtMost"
                ),
            ));
        }
        let named = bounds
            .clusters_reached
            .iter()
            .flat_map(|clusters| clusters.value.iter().map(move |name| (name, clusters.referenced)))
            .chain(
                bounds
                    .calls_to_cluster_at_most
                    .iter()
                    .map(|calls| (&calls.value.cluster, calls.referenced)),
            );
        for (name, at) in named {
            if scenario.cluster(name).is_none() {
                return Err(problem(
                    at,
                    format!(
                        "phase {phase_name}: window names unknown cluster {}: clusters are {}",
                        quoted(name),
                        cluster_names(scenario)
                    ),
                ));
            }
        }
    }
    if let Some(bucket) = &expect.every_bucket {
        check_rate(&bucket.value.success_rate_at_least)?;
        check_rate(&bucket.value.mtls_rate_at_least)?;
        if bucket.value.success_rate_at_least.is_none() && bucket.value.mtls_rate_at_least.is_none() {
            return Err(problem(
                bucket.referenced,
                format!("phase {phase_name}: everyBucket sets no bound: use successRateAtLeast or mtlsRateAtLeast"),
            ));
        }
    }
    let has_action = |kinds: &[crate::change::ChangeKind]| {
        phase
            .actions
            .iter()
            .filter_map(|action| action.value.change())
            .any(|change| kinds.contains(&change.kind()))
    };
    if let Some(bound) = &expect.convergence_millis_at_most
        && !has_action(&[crate::change::ChangeKind::Scale, crate::change::ChangeKind::JoinCluster])
    {
        return Err(problem(
            bound.referenced,
            format!(
                "phase {phase_name}: convergenceMillisAtMost needs a scale or joinCluster action in the phase \
                 (convergence runs from new pods ready to their first reply)"
            ),
        ));
    }
    if let Some(bound) = &expect.calls_after_leave_at_most
        && !has_action(&[crate::change::ChangeKind::LeaveCluster])
    {
        return Err(problem(
            bound.referenced,
            format!("phase {phase_name}: callsAfterLeaveAtMost needs a leaveCluster action in the phase"),
        ));
    }
    if let Some(recovery) = &expect.recovery {
        let after = &recovery.value.after;
        let names: Vec<&str> = phase
            .actions
            .iter()
            .filter_map(|action| action.value.name.as_ref().map(|name| name.value.as_str()))
            .collect();
        if !names.contains(&after.value.as_str()) {
            return Err(problem(
                after.referenced,
                format!(
                    "phase {phase_name}: recovery.after names no action of the phase: {} is not among the named actions ({})",
                    quoted(&after.value),
                    listed(names.iter().copied())
                ),
            ));
        }
        check_rate(&Some(recovery.value.success_rate_at_least.clone()))?;
    }
    Ok(())
}

fn check_phase(scenario: &Scenario, phase: &Phase) -> Checked {
    check_string(
        &phase.name.value,
        Grammar::LabelValue,
        "phase name",
        phase.name.referenced,
    )?;
    let source = known_service(scenario, &phase.from.service)?;
    let source_cluster = known_cluster(scenario, &phase.from.cluster)?;
    if source.replicas_in(&source_cluster.name.value) == 0 {
        return Err(problem(
            phase.from.cluster.referenced,
            format!(
                "phase {}: {} has no pods in {} to send from; it has pods in: {}",
                phase.name.value,
                source.reference(),
                source_cluster.name.value,
                clusters_with_pods(service_pods(source))
            ),
        ));
    }
    let target = known_service(scenario, &phase.to.service)?;
    if target.port(&phase.to.port.value).is_none() {
        let declared: Vec<String> = target
            .ports
            .iter()
            .map(|port| format!("{} ({})", port.name.value, port.number.value))
            .collect();
        return Err(problem(
            phase.to.port.referenced,
            format!(
                "phase {}: port {} is not declared by {}; declared ports: {}",
                phase.name.value,
                shown_port(&phase.to.port.value),
                target.reference(),
                declared.join(", ")
            ),
        ));
    }
    if phase.requests.value == 0 || phase.requests.value > MAX_REQUESTS {
        return Err(problem(
            phase.requests.referenced,
            format!(
                "requests {} is out of range: use 1 to {MAX_REQUESTS}; the record of every request is kept in \
                 memory until the phase is measured (about 400 bytes each)",
                phase.requests.value
            ),
        ));
    }
    if phase.concurrency.value == 0 || phase.concurrency.value > MAX_CONCURRENCY {
        return Err(problem(
            phase.concurrency.referenced,
            format!(
                "concurrency {} is out of range: use 1 to {MAX_CONCURRENCY}; every request in flight holds a \
                 connection or stream open in the client and both sidecars",
                phase.concurrency.value
            ),
        ));
    }
    if let Some(seconds) = phase
        .timeout_seconds
        .as_ref()
        .filter(|seconds| !(1..=MAX_PHASE_TIMEOUT_SECONDS).contains(&seconds.value))
    {
        return Err(problem(
            seconds.referenced,
            format!(
                "phase {}: timeoutSeconds {} is out of range: a phase deadline is 1 to {MAX_PHASE_TIMEOUT_SECONDS} seconds",
                phase.name.value, seconds.value
            ),
        ));
    }
    if let Some(extra) = phase.faults.get(MAX_FAULTS_PER_PHASE) {
        return Err(problem(
            extra.referenced,
            format!(
                "phase {} has {} faults, more than the {MAX_FAULTS_PER_PHASE} allowed",
                phase.name.value,
                phase.faults.len()
            ),
        ));
    }
    for fault in &phase.faults {
        check_fault(scenario, fault)?;
    }
    if let Some(upgrade) = &phase.upgrade {
        check_upgrade(scenario, phase, &upgrade.value)?;
    }
    check_expectations(scenario, phase)
}

fn check_fault(scenario: &Scenario, fault: &Spanned<Fault>) -> Checked {
    let unknown_cluster = |cluster: &str| {
        problem(
            fault.referenced,
            format!(
                "fault names unknown cluster {}: clusters are {}",
                quoted(cluster),
                cluster_names(scenario)
            ),
        )
    };
    let unknown_service = |service: &str| {
        problem(
            fault.referenced,
            format!(
                "fault names unknown service {}: services are {}",
                quoted(service),
                service_names(scenario)
            ),
        )
    };
    match &fault.value {
        Fault::GatewayDown { cluster } => scenario
            .cluster(cluster)
            .map(drop)
            .ok_or_else(|| unknown_cluster(cluster)),
        Fault::Scale { replicas, .. } if u64::from(*replicas) > MAX_PODS => Err(problem(
            fault.referenced,
            format!(
                "scale to {replicas} replicas is more than the {MAX_PODS} pods a scenario may have: every pod runs \
                 its own Envoy sidecar"
            ),
        )),
        Fault::Delay { millis, .. } if *millis > MAX_DELAY_MILLIS => Err(problem(
            fault.referenced,
            format!("delay of {millis} ms is over the {MAX_DELAY_MILLIS} ms allowed: use 0 to {MAX_DELAY_MILLIS}"),
        )),
        Fault::Scale { cluster, service, .. } | Fault::Delay { cluster, service, .. } => {
            scenario.cluster(cluster).ok_or_else(|| unknown_cluster(cluster))?;
            scenario
                .service(service)
                .map(drop)
                .ok_or_else(|| unknown_service(service))
        }
        Fault::ForeignClientCert {} => Ok(()),
    }
}

fn check_upgrade(scenario: &Scenario, phase: &Phase, upgrade: &super::Upgrade) -> Checked {
    // The same range as an `upgrade` action's: `local` emulates the version upgraded to.
    let to = upgrade.to.value;
    let oldest = (OLDEST_EMULATED_ISTIO.major, OLDEST_EMULATED_ISTIO.minor);
    let newest = (NEWEST_EMULATED_ISTIO.major, NEWEST_EMULATED_ISTIO.minor);
    if (to.major, to.minor) < oldest || (to.major, to.minor) > newest {
        return Err(problem(
            upgrade.to.referenced,
            format!(
                "phase {}: upgrade to {to} is outside the emulated range: use {}.{} to {}.{}",
                phase.name.value, oldest.0, oldest.1, newest.0, newest.1
            ),
        ));
    }
    check_unique(upgrade.clusters.iter(), "upgraded cluster")?;
    for name in &upgrade.clusters {
        known_cluster(scenario, name)?;
    }
    let upgraded = scenario.clusters.iter().filter(|cluster| {
        upgrade.clusters.is_empty() || upgrade.clusters.iter().any(|name| name.value == cluster.name.value)
    });
    for cluster in upgraded {
        if cluster.istio_version.value >= upgrade.to.value {
            return Err(problem(
                upgrade.to.referenced,
                format!(
                    "phase {}: upgrade to {} is not newer than {}'s Istio {}; an upgrade goes to a newer version",
                    phase.name.value, upgrade.to.value, cluster.name.value, cluster.istio_version.value
                ),
            ));
        }
    }
    Ok(())
}

fn check_expectations(scenario: &Scenario, phase: &Phase) -> Checked {
    let expect = &phase.expect;
    for rate in [
        &expect.mtls_rate_at_least,
        &expect.mtls_rate_at_most,
        &expect.success_rate_at_least,
        &expect.success_rate_at_most,
    ]
    .into_iter()
    .flatten()
    {
        if !(0.0..=1.0).contains(&rate.value) {
            return Err(problem(
                rate.referenced,
                format!("rate {} is out of range: rates are between 0 and 1", rate.value),
            ));
        }
    }
    for ratio in [&expect.max_skew_ratio_at_most, &expect.max_skew_ratio_at_least]
        .into_iter()
        .flatten()
    {
        if !ratio.value.is_finite() || ratio.value < 1.0 {
            return Err(problem(
                ratio.referenced,
                format!(
                    "skew ratio bound {} is impossible: the largest observed/expected share is always at least 1",
                    ratio.value
                ),
            ));
        }
    }
    if let Some(clusters) = &expect.clusters_reached {
        for cluster in &clusters.value {
            if scenario.cluster(cluster).is_none() {
                return Err(problem(
                    clusters.referenced,
                    format!(
                        "clustersReached names unknown cluster {}: clusters are {}",
                        quoted(cluster),
                        cluster_names(scenario)
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn known_service<'a>(scenario: &'a Scenario, reference: &Spanned<String>) -> Result<&'a Service, Problem> {
    scenario.service(&reference.value).ok_or_else(|| {
        problem(
            reference.referenced,
            format!(
                "unknown service {}: refer to services as name.namespace, one of {}",
                quoted(&reference.value),
                service_names(scenario)
            ),
        )
    })
}

fn known_cluster<'a>(scenario: &'a Scenario, name: &Spanned<String>) -> Result<&'a Cluster, Problem> {
    scenario.cluster(&name.value).ok_or_else(|| {
        problem(
            name.referenced,
            format!(
                "unknown cluster {}: clusters are {}",
                quoted(&name.value),
                cluster_names(scenario)
            ),
        )
    })
}

/// A port reference as written, quoted with escapes unless it is a valid port name or a number.
fn shown_port(port: &super::PortRef) -> String {
    match port {
        super::PortRef::Name(name) if !Grammar::PortName.accepts(name) => quoted(name),
        other => other.to_string(),
    }
}

fn service_pods(service: &Service) -> impl Iterator<Item = &str> {
    service
        .replicas
        .iter()
        .filter(|(_, count)| count.value > 0)
        .map(|(cluster, _)| cluster.as_str())
}

fn clusters_with_pods<'a>(clusters: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = clusters.collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn cluster_names(scenario: &Scenario) -> String {
    scenario
        .clusters
        .iter()
        .map(|cluster| cluster.name.value.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn service_names(scenario: &Scenario) -> String {
    let names: Vec<String> = scenario.services.iter().map(Service::reference).collect();
    if names.is_empty() {
        "none declared".to_owned()
    } else {
        names.join(", ")
    }
}

fn check_unique<'a>(names: impl Iterator<Item = &'a Spanned<String>>, what: &str) -> Checked {
    let mut seen = BTreeSet::new();
    for name in names {
        if !seen.insert(name.value.as_str()) {
            return Err(problem(
                name.referenced,
                format!("duplicate {what} {}: names must be unique", quoted(&name.value)),
            ));
        }
    }
    Ok(())
}

/// RFC 1123 label: what Kubernetes allows for namespaces and (by meshfed) cluster names.
fn check_dns_label(name: &Spanned<String>, what: &str) -> Checked {
    check_string(&name.value, Grammar::Dns1123Label, what, name.referenced)
}
