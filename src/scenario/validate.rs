//! Semantic checks of a parsed scenario: references resolve, names are unique, networks don't clash.

use std::collections::BTreeSet;

use serde_saphyr::{Location, Spanned};

use super::{
    Cluster, Fault, FederationMode, IstioVersion, MAX_PROXY_CONCURRENCY, NEWEST_EMULATED_ISTIO, OLDEST_EMULATED_ISTIO,
    Phase, Scenario, Service,
};

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

/// Checks everything the YAML schema alone cannot; returns the first problem in file order of
/// the sections (clusters, services, phases).
pub fn validate(scenario: &Scenario) -> Checked {
    check_clusters(scenario)?;
    check_services(scenario)?;
    check_phases(scenario)
}

/// Istio version from which multi-network endpoint discovery through an east-west gateway exists.
const ENDPOINT_DISCOVERY_SINCE: IstioVersion = IstioVersion::new(1, 8, 0);

/// Addresses a cluster's pod network needs besides pods: network, router, gateway, broadcast.
const POD_NETWORK_OVERHEAD: u64 = 4;

fn check_clusters(scenario: &Scenario) -> Checked {
    if scenario.clusters.is_empty() {
        return Err(problem(
            Location::UNKNOWN,
            "`clusters` is empty: a scenario needs at least one cluster",
        ));
    }
    if scenario.trust_domain.is_empty() {
        return Err(problem(
            Location::UNKNOWN,
            "`trustDomain` is empty: use e.g. cluster.local",
        ));
    }
    check_unique(scenario.clusters.iter().map(|cluster| &cluster.name), "cluster name")?;
    for cluster in &scenario.clusters {
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
        if scenario.federation.mode == FederationMode::EndpointDiscovery
            && cluster.istio_version.value < ENDPOINT_DISCOVERY_SINCE
        {
            return Err(problem(
                cluster.istio_version.referenced,
                format!(
                    "federation mode endpoint-discovery needs Istio {ENDPOINT_DISCOVERY_SINCE} or newer, cluster {} has {}; \
                     use mode serviceentry for older versions",
                    cluster.name.value, cluster.istio_version.value
                ),
            ));
        }
    }
    check_networks_disjoint(&scenario.clusters)
}

/// Versions outside the emulated range would get behaviour nobody checked against Istio's source.
fn check_istio_version(cluster: &Cluster) -> Checked {
    let version = cluster.istio_version.value;
    let oldest = (OLDEST_EMULATED_ISTIO.major, OLDEST_EMULATED_ISTIO.minor);
    let newest = (NEWEST_EMULATED_ISTIO.major, NEWEST_EMULATED_ISTIO.minor);
    if (version.major, version.minor) < oldest || (version.major, version.minor) > newest {
        return Err(problem(
            cluster.istio_version.referenced,
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

fn check_services(scenario: &Scenario) -> Checked {
    let mut seen = BTreeSet::new();
    for service in &scenario.services {
        check_dns_label(&service.name, "service name")?;
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
        check_ports(service)?;
        check_replicas(scenario, service)?;
    }
    check_injection_per_namespace(scenario)?;
    check_pod_networks_fit(scenario)
}

fn check_ports(service: &Service) -> Checked {
    if service.ports.is_empty() {
        return Err(problem(
            service.name.referenced,
            format!("service {} has no ports: declare at least one", service.reference()),
        ));
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
                    "duplicate port number {} in service {}",
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
                    "replicas of {} for unknown cluster {cluster:?}: clusters are {}",
                    service.reference(),
                    cluster_names(scenario)
                ),
            ));
        }
    }
    Ok(())
}

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

fn check_pod_networks_fit(scenario: &Scenario) -> Checked {
    for cluster in &scenario.clusters {
        let pods: u64 = scenario
            .services
            .iter()
            .map(|service| u64::from(service.replicas_in(&cluster.name.value)))
            .sum();
        let needed = pods + POD_NETWORK_OVERHEAD;
        if cluster.pod_cidr.value.size() < needed {
            return Err(problem(
                cluster.pod_cidr.referenced,
                format!(
                    "podCidr {} of {} has {} addresses but its {pods} pods, router and gateway need {needed}: use a shorter prefix",
                    cluster.pod_cidr.value,
                    cluster.name.value,
                    cluster.pod_cidr.value.size()
                ),
            ));
        }
    }
    Ok(())
}

fn check_phases(scenario: &Scenario) -> Checked {
    check_unique(scenario.phases.iter().map(|phase| &phase.name), "phase name")?;
    for phase in &scenario.phases {
        check_phase(scenario, phase)?;
    }
    Ok(())
}

fn check_phase(scenario: &Scenario, phase: &Phase) -> Checked {
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
                phase.to.port.value,
                target.reference(),
                declared.join(", ")
            ),
        ));
    }
    if phase.requests.value == 0 {
        return Err(problem(phase.requests.referenced, "requests must be at least 1"));
    }
    if phase.concurrency.value == 0 || phase.concurrency.value > 1024 {
        return Err(problem(
            phase.concurrency.referenced,
            "concurrency must be between 1 and 1024",
        ));
    }
    for fault in &phase.faults {
        check_fault(scenario, fault)?;
    }
    check_expectations(scenario, phase)
}

fn check_fault(scenario: &Scenario, fault: &Spanned<Fault>) -> Checked {
    let unknown_cluster = |cluster: &str| {
        problem(
            fault.referenced,
            format!(
                "fault names unknown cluster {cluster:?}: clusters are {}",
                cluster_names(scenario)
            ),
        )
    };
    let unknown_service = |service: &str| {
        problem(
            fault.referenced,
            format!(
                "fault names unknown service {service:?}: services are {}",
                service_names(scenario)
            ),
        )
    };
    match &fault.value {
        Fault::GatewayDown { cluster } => scenario
            .cluster(cluster)
            .map(drop)
            .ok_or_else(|| unknown_cluster(cluster)),
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
                        "clustersReached names unknown cluster {cluster:?}: clusters are {}",
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
                "unknown service {:?}: refer to services as name.namespace, one of {}",
                reference.value,
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
                "unknown cluster {:?}: clusters are {}",
                name.value,
                cluster_names(scenario)
            ),
        )
    })
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
                format!("duplicate {what} {:?}: names must be unique", name.value),
            ));
        }
    }
    Ok(())
}

/// RFC 1123 label: what Kubernetes allows for namespace, service and (by meshfed) cluster names.
fn check_dns_label(name: &Spanned<String>, what: &str) -> Checked {
    let text = &name.value;
    let valid = !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(problem(
            name.referenced,
            format!(
                "invalid {what} {text:?}: use 1-63 lowercase letters, digits and '-', starting and ending alphanumeric"
            ),
        ))
    }
}
