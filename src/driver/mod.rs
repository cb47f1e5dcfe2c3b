//! The scenario driver: drives any [`Provider`] through a scenario (world, plan, isolation check,
//! phases with their settings) and turns what it observes into a [`Report`]. Every expectation of
//! every phase is evaluated, even after one fails.
//!
//! Before and after every phase the provider is asked whether every process of the world is alive
//! and not stopped; a death no fault caused ends the run with [`ProviderError::NotAlive`]. Each
//! phase has a deadline ([`phase_deadline`]); when it passes, the provider names what is stuck and
//! the run ends with [`ProviderError::DeadlineExceeded`].
//!
//! A phase's changes to the world (timed actions, phase-long faults) are in `changes.rs`; the
//! shares each pod should get (equal, and as the plan's weights predict) in `expected_shares.rs`.

mod changes;
mod expected_shares;

use std::path::Path;
use std::time::{Duration, Instant};

use crate::inventory::Inventory;
use crate::kept_logs::Evidence;
use crate::measure;
use crate::pki::spiffe_id;
use crate::plan;
pub use crate::progress::Progress;
use crate::provider::capabilities::Capabilities;
use crate::provider::{PhaseSettings, Provider, ProviderError, REQUEST_TIMEOUT, Traffic};
use crate::reconcile::Controller;
use crate::report::{ClusterInfo, PhaseReport, REPORT_SCHEMA, Report, ScenarioInfo, ServiceEntrySummary, Timings};
use crate::scenario::{ConnectionPolicy, EndpointWeights, Fault, Phase, Scenario, ScenarioError};
use crate::verdict;

pub use crate::scenario::MAX_PHASE_TIMEOUT_SECONDS;
pub use changes::fault_changes;
use changes::{run_actions, start_phase_faults, timed_changes};
use expected_shares::{expected_pods, fill_predicted_shares, predicted_shares};

/// Refuses a scenario whose faults or phase actions the chosen provider does not support
/// (`capabilities`), before anything is created. (Phase deadlines are range-checked by validation.)
pub fn check_runnable(scenario: &Scenario, file: &Path, capabilities: &Capabilities) -> Result<(), ScenarioError> {
    capabilities.check(scenario, file)
}

/// What a phase's deadline allows on top of its requests' own time (stats reads, the client's
/// start and end).
pub const PHASE_DEADLINE_BASE: Duration = Duration::from_secs(30);
/// No derived phase deadline is longer; a longer phase sets `timeoutSeconds`.
pub const PHASE_DEADLINE_CAP: Duration = Duration::from_secs(3600);

/// How long `phase` may take: its `timeoutSeconds` when set; otherwise generous enough for every
/// request to run into the client's per-request timeout, one round of `concurrency` requests at a
/// time: [`PHASE_DEADLINE_BASE`] + ⌈requests ÷ concurrency⌉ × [`REQUEST_TIMEOUT`], at most
/// [`PHASE_DEADLINE_CAP`], plus the paced traffic's length (`requests / ratePerSecond`) when set.
/// E.g. 400 requests at concurrency 4: 30 s + 100 × 5 s = 530 s.
pub fn phase_deadline(phase: &Phase) -> Duration {
    if let Some(seconds) = &phase.timeout_seconds {
        return Duration::from_secs(seconds.value);
    }
    let rounds = phase.requests.value.div_ceil(u64::from(phase.concurrency.value.max(1)));
    let rounds = u32::try_from(rounds).unwrap_or(u32::MAX);
    // A paced phase cannot end before its last request starts.
    let paced = Duration::from_millis(phase.traffic_millis().unwrap_or(0));
    (PHASE_DEADLINE_BASE + paced + REQUEST_TIMEOUT.saturating_mul(rounds)).min(PHASE_DEADLINE_CAP)
}

/// Runs the scenario on the provider. The caller tears the provider down afterwards, whatever
/// this returns.
pub async fn drive_scenario<P: Provider>(
    provider: &mut P,
    scenario: &Scenario,
    scenario_file: &Path,
    progress: &mut dyn Progress,
) -> Result<Report, ProviderError> {
    drive_scenario_noting(provider, scenario, scenario_file, progress, &mut Evidence::default()).await
}

/// [`drive_scenario`], noting in `evidence` the plan in force in each phase and its records (kept
/// for `--keep-logs`); what was noted stays there when the run fails part-way.
pub async fn drive_scenario_noting<P: Provider>(
    provider: &mut P,
    scenario: &Scenario,
    scenario_file: &Path,
    progress: &mut dyn Progress,
    evidence: &mut Evidence,
) -> Result<Report, ProviderError> {
    let started = Instant::now();
    let started_at = crate::report::rfc3339_utc(std::time::SystemTime::now());
    progress.step(&format!(
        "creating the world for scenario {} ({} clusters)",
        scenario.name,
        scenario.clusters.len()
    ));
    let inventory = provider.create_world(scenario, &mut *progress).await?;
    let clusters = inventory
        .clusters
        .iter()
        .map(|(name, cluster)| ClusterInfo {
            name: name.clone(),
            istio_version: cluster.istio_version.to_string(),
        })
        .collect();
    let mut reconciler = Controller::new(scenario, inventory.clone());
    // The world starts with the first phase's plan, so a first phase needs no reconfiguration.
    let first_plan = match scenario.phases.first() {
        Some(phase) => plan::plan_phase(scenario, &inventory, phase),
        None => plan::plan(scenario, &inventory),
    };
    let mut applied = (first_plan.clone(), PhaseSettings::default());
    progress.step("applying the federation plan");
    provider.apply_plan(&first_plan, &applied.1, &mut *progress).await?;
    let world_ms = elapsed_ms(started);
    progress.step(&format!("world ready in {world_ms} ms; checking isolation"));
    let isolation = provider.check_isolation().await?;
    let mut phases = Vec::new();
    let mut to_first_request_ms = None;
    for phase in &scenario.phases {
        provider.check_alive().await?;
        // The reconcile loop plans with this phase's traffic settings from here on.
        reconciler = Controller::with_settings(
            scenario,
            reconciler.inventory().clone(),
            plan::TrafficSettings::of_phase(scenario, phase),
        );
        let undo = start_phase_faults(provider, &mut reconciler, phase, &mut *progress).await?;
        let inventory = reconciler.inventory().clone();
        let traffic_settings = plan::TrafficSettings::of_phase(scenario, phase);
        let weights = traffic_settings.weights;
        let settings = phase_settings(phase, &inventory)?;
        let phase_plan = plan::plan_phase(scenario, &inventory, phase);
        if applied.0 != phase_plan || applied.1 != settings {
            progress.step(&format!(
                "phase {}: reconfiguring proxies (endpoint weights {}, {}{})",
                phase.name.value,
                weights_name(weights),
                match traffic_settings.connections {
                    ConnectionPolicy::NewConnectionPerRequest => "DestinationRule maxRequestsPerConnection: 1",
                    ConnectionPolicy::Pooled => "pooled connections",
                },
                if settings.foreign_client_cert.is_some() {
                    ", caller with a foreign-root certificate"
                } else {
                    ""
                }
            ));
            provider.apply_plan(&phase_plan, &settings, &mut *progress).await?;
            applied = (phase_plan, settings);
        }
        evidence.plan_in_force(&phase.name.value, &applied.0);
        to_first_request_ms.get_or_insert_with(|| elapsed_ms(started));
        let deadline = phase_deadline(phase);
        progress.step(&format!(
            "phase {}: {} requests {} -> {} (deadline {} s)",
            phase.name.value,
            phase.requests.value,
            phase.from.service.value,
            phase.to.service.value,
            deadline.as_secs()
        ));
        let judged = tokio::time::timeout(
            deadline,
            run_phase(
                provider,
                scenario,
                PhaseWorld {
                    inventory: &inventory,
                    reconciler: &mut reconciler,
                    applied: &mut applied,
                    evidence: &mut *evidence,
                },
                phase,
                weights,
                &mut *progress,
            ),
        )
        .await;
        match judged {
            Ok(report) => phases.push(report?),
            Err(_) => {
                let stuck = provider.stuck().await;
                return Err(ProviderError::DeadlineExceeded {
                    what: format!("phase {}", phase.name.value),
                    deadline,
                    stuck: if stuck.is_empty() {
                        "no process of the world was found stopped or silent, so the phase was only slower \
                         than its deadline: set a larger timeoutSeconds on it"
                            .to_owned()
                    } else {
                        format!("stuck: {}", stuck.join("; "))
                    },
                });
            }
        }
        for change in undo {
            progress.step(&format!(
                "phase {}: undoing fault: {} {}",
                phase.name.value,
                change.kind().name(),
                change.cluster()
            ));
            let events = provider.change_world(&change, &mut *progress).await?;
            let _reconciled = reconciler.observe(&events);
        }
        provider.check_alive().await?;
    }
    let passed = isolation.iter().all(|probe| probe.isolated) && phases.iter().all(|phase| phase.passed);
    Ok(Report {
        schema: REPORT_SCHEMA.to_owned(),
        meshfed_version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at,
        // The kernel's UTS name; the sandbox shares the host's UTS namespace.
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty()),
        exit_code: if passed { 0 } else { 1 },
        clusters,
        scenario: ScenarioInfo {
            name: scenario.name.clone(),
            file: scenario_file.display().to_string(),
            description: scenario.description.clone(),
        },
        provider: provider.info(),
        timings: Timings {
            world_ms,
            to_first_request_ms: to_first_request_ms.unwrap_or(0),
            total_ms: elapsed_ms(started),
        },
        service_entries: service_entry_summaries(&first_plan),
        isolation,
        phases,
        passed,
    })
}

fn service_entry_summaries(plan: &plan::Plan) -> Vec<ServiceEntrySummary> {
    plan.clusters
        .iter()
        .flat_map(|cluster| {
            cluster.objects.iter().filter_map(move |object| match object {
                plan::Object::ServiceEntry(entry) => Some(ServiceEntrySummary {
                    cluster: cluster.cluster.clone(),
                    host: entry.spec.hosts.join(","),
                    endpoints: entry
                        .spec
                        .endpoints
                        .iter()
                        .map(|endpoint| {
                            let ports: std::collections::BTreeSet<u16> = endpoint.ports.values().copied().collect();
                            let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                            let weight = endpoint
                                .weight
                                .map(|weight| format!(" weight {weight}"))
                                .unwrap_or_default();
                            format!("{}:{}{weight}", endpoint.address, ports.join("/"))
                        })
                        .collect(),
                }),
                _ => None,
            })
        })
        .collect()
}

/// The weights as the scenario spells them.
fn weights_name(weights: EndpointWeights) -> &'static str {
    match weights {
        EndpointWeights::Equal => "equal",
        EndpointWeights::ReadyPods => "ready-pods",
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The pod that sends a phase's traffic: the first ready pod of the sending service in the sending
/// cluster, as the live inventory names it.
pub fn sending_pod(inventory: &Inventory, cluster: &str, service: &str) -> Result<String, ProviderError> {
    inventory
        .clusters
        .get(cluster)
        .and_then(|cluster_inventory| cluster_inventory.ready_pods.get(service))
        .and_then(|pods| pods.first())
        .map(|pod| pod.name.clone())
        .ok_or_else(|| {
            ProviderError::Unsupported(format!(
                "{service} has no ready pod in cluster {cluster} to send from (the live inventory lists none)"
            ))
        })
}

fn phase_settings(phase: &Phase, inventory: &Inventory) -> Result<PhaseSettings, ProviderError> {
    let foreign = phase
        .faults
        .iter()
        .any(|fault| matches!(fault.value, Fault::ForeignClientCert {}));
    let foreign_client_cert = if foreign {
        let cluster = &phase.from.cluster.value;
        Some((
            cluster.clone(),
            sending_pod(inventory, cluster, &phase.from.service.value)?,
        ))
    } else {
        None
    };
    Ok(PhaseSettings { foreign_client_cert })
}

/// What a phase runs against: the inventory at its start, the loop that keeps the plan true as
/// actions change the world, and the plan and settings the proxies have now.
struct PhaseWorld<'a> {
    inventory: &'a Inventory,
    reconciler: &'a mut Controller,
    applied: &'a mut (plan::Plan, PhaseSettings),
    evidence: &'a mut Evidence,
}

async fn run_phase<P: Provider>(
    provider: &mut P,
    scenario: &Scenario,
    world: PhaseWorld<'_>,
    phase: &Phase,
    weights: EndpointWeights,
    progress: &mut dyn Progress,
) -> Result<PhaseReport, ProviderError> {
    let source = scenario
        .service(&phase.from.service.value)
        .ok_or_else(|| ProviderError::Unsupported(format!("unknown service {}", phase.from.service.value)))?;
    let target = scenario
        .service(&phase.to.service.value)
        .ok_or_else(|| ProviderError::Unsupported(format!("unknown service {}", phase.to.service.value)))?;
    let port = target
        .port(&phase.to.port.value)
        .ok_or_else(|| ProviderError::Unsupported(format!("unknown port {}", phase.to.port.value)))?;
    let traffic = Traffic {
        from_cluster: phase.from.cluster.value.clone(),
        from_service: source.reference(),
        from_pod: sending_pod(world.inventory, &phase.from.cluster.value, &source.reference())?,
        to_service: target.reference(),
        port: port.number.value,
        protocol: port.protocol,
        requests: phase.requests.value,
        concurrency: phase.concurrency.value,
        connections: phase.connections,
        rate_per_second: phase.rate_per_second.as_ref().map(|rate| rate.value),
    };
    let predicted = predicted_shares(&world.applied.0, world.inventory, &traffic);
    let caveats: Vec<String> = world
        .applied
        .0
        .clusters
        .iter()
        .find(|cluster| cluster.cluster == traffic.from_cluster)
        .and_then(|cluster| {
            plan::version_warnings::unpredictable_shares(
                scenario,
                &traffic.from_cluster,
                &traffic.to_service,
                cluster.install.istio_version,
            )
        })
        .into_iter()
        .collect();
    let before = provider.tls_failures(&traffic.to_service).await?;
    let hops_before = provider.gateway_hops().await?;
    let timed = timed_changes(scenario, phase)?;
    let (records, actions) = if timed.is_empty() {
        (provider.send_traffic(&traffic, progress).await?, Vec::new())
    } else {
        run_actions(
            provider,
            (world.reconciler, world.applied, &mut *world.evidence),
            (phase, &timed),
            &traffic,
            progress,
        )
        .await?
    };
    let records = world.evidence.records(&phase.name.value, records);
    let tls_failures = provider.tls_failures(&traffic.to_service).await?.since(&before);
    let gateway_hops = match (hops_before, provider.gateway_hops().await?) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let config_rejections = provider.config_rejections().await?;
    let expected_identity = spiffe_id(
        &scenario.trust_domain,
        &source.namespace.value,
        source.service_account(),
    );
    let mut measurement = measure::measure(
        records,
        &expected_pods(world.inventory, &traffic.to_service),
        &expected_identity,
    );
    if let Some(predicted) = &predicted {
        fill_predicted_shares(&mut measurement, predicted);
    }
    let timeline = measure::timeline::timeline(records, phase.bucket_millis(), &expected_identity, actions);
    let mut expectations = verdict::verdicts(&phase.expect, &measurement, &tls_failures);
    expectations.extend(verdict::change_verdicts(
        &phase.name.value,
        &phase.expect,
        records,
        &timeline,
        &expected_identity,
    ));
    // Every timed change (a phase's upgrade at 0 ms, then the actions), in the order they are taken.
    let planned: Vec<verdict::PlannedAction> = timed
        .iter()
        .map(|change| verdict::PlannedAction {
            label: change.label.clone(),
            at_ms: change.at_ms,
        })
        .collect();
    expectations.extend(verdict::actions_not_taken(
        &phase.name.value,
        &planned,
        timeline.actions.len(),
    ));
    let shows_timeline = !timed.is_empty()
        || !phase.faults.is_empty()
        || phase.rate_per_second.is_some()
        || phase.bucket_millis.is_some()
        || has_change_expectations(&phase.expect);
    Ok(PhaseReport {
        name: phase.name.value.clone(),
        from: format!("{}@{}", traffic.from_service, traffic.from_cluster),
        to: format!(
            "{}:{} ({})",
            traffic.to_service,
            traffic.port,
            port.protocol.istio_name().to_ascii_lowercase()
        ),
        requests: traffic.requests,
        concurrency: traffic.concurrency,
        connections: phase.connections.name().to_owned(),
        endpoint_weights: weights_name(weights).to_owned(),
        faults: phase.faults.iter().map(|fault| fault.value.to_string()).collect(),
        expected_identity,
        passed: expectations.iter().all(|result| result.passed),
        measurement,
        tls_failures,
        gateway_hops,
        config_rejections,
        timeline: shows_timeline.then_some(timeline),
        caveats,
        expectations,
    })
}

fn has_change_expectations(expect: &crate::scenario::Expectations) -> bool {
    !expect.windows.is_empty()
        || expect.every_bucket.is_some()
        || expect.recovery.is_some()
        || expect.convergence_millis_at_most.is_some()
        || expect.calls_after_leave_at_most.is_some()
}
