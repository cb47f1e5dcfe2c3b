//! Checks of a phase's timed actions: each change names what exists in the world at that moment,
//! comes at or before the last request, and is one of the known kinds.

use std::collections::BTreeSet;

use serde_saphyr::{Location, Spanned};

use super::phases::WorldState;
use super::{
    Checked, MAX_ACTIONS_PER_PHASE, MAX_BUCKET_MILLIS, MAX_DELAY_MILLIS, MAX_PODS, MAX_RATE_PER_SECOND,
    MIN_BUCKET_MILLIS, check_string, cluster_names, listed, problem, quoted, service_names,
};
use crate::scenario::grammar::Grammar;
use crate::scenario::{NEWEST_EMULATED_ISTIO, OLDEST_EMULATED_ISTIO, Phase, Scenario, address_layout};

const CHANGE_KEYS: &str = "stopGateway, startGateway, partition, heal, scale, delay, kill, rotateIntermediate, \
                           joinCluster, leaveCluster, upgrade";

pub(super) fn check_actions(scenario: &Scenario, phase: &Phase, world: &mut WorldState) -> Checked {
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
fn cluster_at(action: &crate::scenario::PhaseAction, fallback: Location) -> Location {
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
    action: &Spanned<crate::scenario::PhaseAction>,
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
                (0..count).any(|index| crate::value_types::pod_name(&service.name.value, index) == *pod)
            });
            if !exists {
                let pods: Vec<String> = scenario
                    .services
                    .iter()
                    .flat_map(|service| {
                        let count = world.replicas(cluster_name, &service.reference()).min(4);
                        (0..count).map(|index| crate::value_types::pod_name(&service.name.value, index))
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
