//! Checks of the phases: the traffic each sends (sender, target, requests, rate, concurrency), its
//! phase-long faults and upgrades, and the world (clusters joined or left) each phase starts in.

use std::collections::{BTreeMap, BTreeSet};

use serde_saphyr::Spanned;

use super::actions::check_actions;
use super::expectations::{check_change_expectations, check_expectations};
use super::{
    Checked, MAX_CONCURRENCY, MAX_DELAY_MILLIS, MAX_FAULTS_PER_PHASE, MAX_PHASE_TIMEOUT_SECONDS, MAX_PHASES, MAX_PODS,
    MAX_REQUESTS, check_string, check_unique, cluster_names, clusters_with_pods, known_cluster, known_service, listed,
    problem, quoted, service_names, service_pods, shown_port,
};
use crate::scenario::grammar::Grammar;
use crate::scenario::{Fault, NEWEST_EMULATED_ISTIO, OLDEST_EMULATED_ISTIO, Phase, Scenario};

pub(super) fn check_phases(scenario: &Scenario) -> Checked {
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
pub(super) struct WorldState {
    /// Clusters in the mesh.
    pub(super) present: BTreeSet<String>,
    /// Clusters that joined in an earlier action.
    pub(super) ever_joined: BTreeSet<String>,
    /// (cluster, service reference) -> replicas.
    pub(super) replicas: BTreeMap<(String, String), u32>,
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

    /// Replicas of `service` in `cluster` (0 when none).
    pub(super) fn replicas(&self, cluster: &str, service: &str) -> u32 {
        self.replicas
            .get(&(cluster.to_owned(), service.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Pods of every service in `cluster`.
    pub(super) fn pods_in(&self, cluster: &str) -> u64 {
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

pub(super) fn check_rate(rate: &Option<Spanned<f64>>) -> Checked {
    match rate {
        Some(rate) if !(0.0..=1.0).contains(&rate.value) => Err(problem(
            rate.referenced,
            format!("rate {} is out of range: rates are between 0 and 1", rate.value),
        )),
        _ => Ok(()),
    }
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

fn check_upgrade(scenario: &Scenario, phase: &Phase, upgrade: &crate::scenario::Upgrade) -> Checked {
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
