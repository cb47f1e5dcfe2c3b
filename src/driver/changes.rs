//! The changes a phase makes to the world: its timed actions, taken at their offsets while the
//! traffic flows, and its phase-long faults, made before the traffic and undone after it.

use std::time::{Duration, Instant};

use super::elapsed_ms;
use crate::change::WorldChange;
use crate::inventory::Inventory;
use crate::kept_logs::Evidence;
use crate::measure::timeline::ActionRecord;
use crate::plan;
use crate::progress::Progress;
use crate::provider::{PhaseSettings, Provider, ProviderError, Traffic};
use crate::reconcile::Controller;
use crate::record::RequestRecord;
use crate::scenario::{Fault, Phase, Scenario};

/// How often the driver asks a provider about traffic that runs past the last action: each call
/// checks that the world lives.
const TRAFFIC_POLL: Duration = Duration::from_secs(1);

/// A change made at an offset into a phase's traffic: a timed action, or one cluster's part of
/// the phase's `upgrade:`.
pub(super) struct TimedChange {
    /// The action's label; `upgrade@0ms` for the phase's `upgrade:`.
    pub(super) label: String,
    /// Milliseconds from the start of the traffic.
    pub(super) at_ms: u64,
    change: WorldChange,
}

/// The changes a phase makes while its traffic runs, in time order. A phase's `upgrade:` is the
/// same change as an `upgrade` action, one per upgraded cluster (in scenario order), at 0 ms: one
/// mechanism, so both spellings run wherever a provider can upgrade.
pub(super) fn timed_changes(scenario: &Scenario, phase: &Phase) -> Result<Vec<TimedChange>, ProviderError> {
    let mut timed = Vec::new();
    if let Some(upgrade) = &phase.upgrade {
        let named = &upgrade.value.clusters;
        for cluster in &scenario.clusters {
            let name = &cluster.name.value;
            if named.is_empty() || named.iter().any(|upgraded| &upgraded.value == name) {
                timed.push(TimedChange {
                    label: "upgrade@0ms".to_owned(),
                    at_ms: 0,
                    change: WorldChange::Upgrade {
                        cluster: name.clone(),
                        to: upgrade.value.to.value,
                    },
                });
            }
        }
    }
    for action in &phase.actions {
        let action = &action.value;
        let change = action.change().ok_or_else(|| {
            ProviderError::Unsupported(format!(
                "phase {}: action {} names no change",
                phase.name.value,
                action.label()
            ))
        })?;
        timed.push(TimedChange {
            label: action.label(),
            at_ms: action.at_millis.value,
            change,
        });
    }
    // Stable: actions written at one offset keep their order.
    timed.sort_by_key(|change| change.at_ms);
    Ok(timed)
}

/// What the report says about `change` when real Istio would not make it: an upgrade that skips
/// a minor version in place ([`plan::upgrade_rules`]), which an emulation still carries out.
fn unlike_real_istio(change: &WorldChange, inventory: &Inventory) -> Option<String> {
    let WorldChange::Upgrade { cluster, to } = change else {
        return None;
    };
    let from = inventory.clusters.get(cluster)?.istio_version;
    plan::upgrade_rules::in_place_upgrade_skips_minors(&from, to).then(|| {
        format!(
            "{cluster}: Istio {from} to {to} skips minor versions, which real Istio does not upgrade in place \
             (istio.io in-place upgrades: at most one minor version up; a canary upgrade otherwise); \
             made anyway"
        )
    })
}

/// Runs a phase with timed changes: starts the traffic, makes each change at its offset, lets the
/// reconcile loop re-plan from what the change did and applies the new plan when it differs,
/// then collects the traffic's records. If the traffic ends before a change's offset, the
/// remaining changes are not made (their expectations then fail as not taken).
pub(super) async fn run_actions<P: Provider>(
    provider: &mut P,
    (reconciler, applied, evidence): (&mut Controller, &mut (plan::Plan, PhaseSettings), &mut Evidence),
    (phase, timed): (&Phase, &[TimedChange]),
    traffic: &Traffic,
    progress: &mut dyn Progress,
) -> Result<(Vec<RequestRecord>, Vec<ActionRecord>), ProviderError> {
    provider.start_traffic(traffic, progress).await?;
    let started = Instant::now();
    let mut taken = Vec::new();
    for TimedChange { label, at_ms, change } in timed {
        let at_ms = *at_ms;
        if let Some(records) = provider
            .await_traffic(started + Duration::from_millis(at_ms), progress)
            .await?
        {
            progress.step(&format!(
                "phase {}: the traffic ended before {label} at {at_ms} ms; the remaining actions were not taken",
                phase.name.value,
            ));
            return Ok((records, taken));
        }
        let note = unlike_real_istio(change, reconciler.inventory());
        let started_ms = elapsed_ms(started);
        progress.step(&format!(
            "phase {}: at {started_ms} ms: {label} ({} {})",
            phase.name.value,
            change.kind().name(),
            change.cluster()
        ));
        if let Some(note) = &note {
            progress.step(&format!("phase {}: note: {note}", phase.name.value));
        }
        let events = provider.change_world(change, progress).await?;
        let completed_ms = elapsed_ms(started);
        tracing::debug!(?change, ?events, started_ms, completed_ms, "change made");
        let reconciled = reconciler.observe(&events);
        tracing::debug!(changes = ?reconciled.changes, "reconciled");
        let replanned = reconciled.plan;
        // A pod or cluster that left still serves while it drains (on `local` as on Kubernetes):
        // the re-plan is pushed now, and calls after a leave count from when it is in force.
        let mut replanned_ms = None;
        if replanned != applied.0 {
            progress.step(&format!(
                "phase {}: the inventory changed; applying the re-planned federation",
                phase.name.value
            ));
            provider.apply_plan(&replanned, &applied.1, progress).await?;
            replanned_ms = Some(elapsed_ms(started));
            applied.0 = replanned;
            evidence.plan_in_force(&phase.name.value, &applied.0);
        }
        taken.push(ActionRecord {
            name: label.clone(),
            kind: change.kind().name().to_owned(),
            cluster: change.cluster().to_owned(),
            at_ms,
            started_ms,
            completed_ms,
            replanned_ms,
            change: change.clone(),
            events,
            note,
        });
    }
    loop {
        if let Some(records) = provider.await_traffic(Instant::now() + TRAFFIC_POLL, progress).await? {
            return Ok((records, taken));
        }
    }
}

/// The changes that start a phase's phase-long faults, made before its traffic; returns the
/// changes that undo them (made after the traffic), in reverse order. `foreignClientCert` is a
/// proxy setting, not a change.
pub(super) async fn start_phase_faults<P: Provider>(
    provider: &mut P,
    reconciler: &mut Controller,
    phase: &Phase,
    progress: &mut dyn Progress,
) -> Result<Vec<WorldChange>, ProviderError> {
    let mut undo = Vec::new();
    for fault in &phase.faults {
        let Some((start, end)) = fault_changes(&fault.value, reconciler.inventory()) else {
            continue;
        };
        progress.step(&format!(
            "phase {}: fault: {} {}",
            phase.name.value,
            start.kind().name(),
            start.cluster()
        ));
        let events = provider.change_world(&start, progress).await?;
        let _reconciled = reconciler.observe(&events);
        undo.push(end);
    }
    undo.reverse();
    Ok(undo)
}

/// A phase-long fault as the change that starts it and the change that undoes it, given the
/// inventory before it.
pub fn fault_changes(fault: &Fault, inventory: &Inventory) -> Option<(WorldChange, WorldChange)> {
    match fault {
        Fault::GatewayDown { cluster } => Some((
            WorldChange::StopGateway {
                cluster: cluster.clone(),
            },
            WorldChange::StartGateway {
                cluster: cluster.clone(),
            },
        )),
        Fault::Scale {
            cluster,
            service,
            replicas,
        } => {
            let before = inventory
                .clusters
                .get(cluster)
                .map_or(0, |cluster| cluster.ready_count(service));
            Some((
                WorldChange::Scale {
                    cluster: cluster.clone(),
                    service: service.clone(),
                    replicas: *replicas,
                },
                WorldChange::Scale {
                    cluster: cluster.clone(),
                    service: service.clone(),
                    replicas: u32::try_from(before).unwrap_or(u32::MAX),
                },
            ))
        }
        Fault::Delay {
            cluster,
            service,
            millis,
        } => Some((
            WorldChange::Delay {
                cluster: cluster.clone(),
                service: service.clone(),
                millis: *millis,
            },
            WorldChange::Delay {
                cluster: cluster.clone(),
                service: service.clone(),
                millis: 0,
            },
        )),
        Fault::ForeignClientCert {} => None,
    }
}
