//! Checks of a phase's expectations: the bounds of its measurements, and the change expectations
//! (windows, every bucket, recovery, convergence, calls after leave) against its actions.

use super::phases::check_rate;
use super::{Checked, MAX_WINDOWS_PER_PHASE, cluster_names, listed, problem, quoted};
use crate::scenario::{Phase, Scenario};

pub(super) fn check_change_expectations(scenario: &Scenario, phase: &Phase) -> Checked {
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

pub(super) fn check_expectations(scenario: &Scenario, phase: &Phase) -> Checked {
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
