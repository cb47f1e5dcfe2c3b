//! Checks of the services: names, ports, replicas per cluster, sidecar injection per namespace, and
//! the counts (pods, planned ports) a provider can run.

use std::collections::{BTreeMap, BTreeSet};

use serde_saphyr::{Location, Spanned};

use super::{
    Checked, MAX_PLANNED_PORTS, MAX_POD_NAME_LEN, MAX_PODS, MAX_PORTS_PER_SERVICE, MAX_SERVICES, check_dns_label,
    check_string, check_unique, cluster_names, problem, quoted,
};
use crate::scenario::grammar::Grammar;
use crate::scenario::spans::{self, ScenarioSpans};
use crate::scenario::{Scenario, Service};

pub(super) fn check_services(scenario: &Scenario, spans: &ScenarioSpans) -> Checked {
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
            let last_pod = crate::value_types::pod_name(&service.name.value, count.value - 1);
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
                        crate::value_types::pod_name(&service.name.value, 0)
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
