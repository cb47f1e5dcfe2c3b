//! Semantic checks of a parsed scenario: every count is within what a provider can run, every
//! string fits the place it ends up, references resolve, generated names don't collide, and the
//! networks fit the address layout and don't clash.
//!
//! By what they check: `clusters`, `services`, `networks`, `phases` (traffic, faults, upgrades,
//! the world each phase starts in), `actions` (timed changes) and `expectations`; here the bounds,
//! the order of the checks ([`validate`]) and the helpers they share.

mod actions;
mod clusters;
mod expectations;
mod networks;
mod phases;
mod services;

use std::collections::BTreeSet;

use serde_saphyr::{Location, Spanned};

use super::address_layout;
use super::grammar::Grammar;
use super::spans::{self, ScenarioSpans};
use super::{Cluster, Ipv4Cidr, Scenario, Service};
use clusters::check_clusters;
use networks::check_networks;
use phases::check_phases;
use services::check_services;

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

fn listed<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
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
    scenario.cluster_names().join(", ")
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
