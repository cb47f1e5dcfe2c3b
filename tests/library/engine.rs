//! The scenario engine against a scripted provider: what it asks the provider to do, in which
//! order, and that every phase and expectation is judged even after a failure; that a death or
//! a phase overrunning its deadline ends the run naming what broke.

use crate::support::test_provider::test_provider_info;
use std::path::Path;
use std::time::{Duration, Instant};

use meshfed::change::WorldChange;
use meshfed::driver;
use meshfed::inventory::InventoryEvent;
use meshfed::inventory::{self, GatewayAddress, Inventory};
use meshfed::plan::{Object, Plan};
use meshfed::provider::local::LocalProvider;
use meshfed::provider::{IsolationProbe, PhaseSettings, Provider, ProviderError, ProviderInfo, TlsFailures, Traffic};
use meshfed::record::RequestRecord;
use meshfed::scenario::{self, Scenario};

/// Records every call; answers traffic with records from a fixed responder list (no responder:
/// every request fails unanswered).
#[derive(Default)]
struct ScriptedProvider {
    calls: Vec<String>,
    /// (pod, cluster, identity seen) per request, cycled.
    responders: Vec<(String, String, Option<String>)>,
    tls_counter: u64,
    /// After this many `send_traffic` calls, `check_alive` reports this process dead.
    dies_after_phases: Option<(usize, String)>,
    /// `send_traffic` never returns (a stuck proxy); `stuck` then names this.
    hangs_with_stuck: Option<String>,
    phases_sent: usize,
    /// The world as created, kept current by the changes made to it.
    inventory: Option<Inventory>,
    /// The inventory when the timed traffic started.
    inventory_at_start: Option<Inventory>,
    /// Every plan applied, in order.
    plans: Vec<Plan>,
    /// Traffic started in the background: what, when, and its length in ms at its rate.
    running: Option<(Traffic, Instant, u64)>,
    /// The offset (ms into the traffic) the engine last awaited: the moment the next change
    /// counts as made, so the records do not depend on how late the test machine runs.
    awaited_ms: u64,
    /// (offset ms, change) for every change made while traffic ran.
    timed_changes: Vec<(u64, WorldChange)>,
    /// The timed traffic ends after this many ms, earlier than its rate says (a client that
    /// stopped early, or a scheduler that ran the last request late and the action later).
    traffic_ends_after_ms: Option<u64>,
}

impl ScriptedProvider {
    /// Records of timed traffic: request `i` starts at `i / rate`; it goes round-robin to the
    /// target's pods as the changes made so far left them, and fails when it lands on a cluster
    /// whose gateway was stopped at that moment.
    fn timed_records(&self, traffic: &Traffic) -> Vec<RequestRecord> {
        let created = self.inventory_at_start.clone().expect("traffic was started");
        let rate = u64::from(traffic.rate_per_second.expect("timed traffic has a rate"));
        (0..traffic.requests)
            .map(|seq| {
                let started_us = seq * 1_000_000 / rate;
                let mut inventory = created.clone();
                let mut stopped = std::collections::BTreeSet::new();
                for (at_ms, change) in &self.timed_changes {
                    if at_ms * 1000 > started_us {
                        break;
                    }
                    match change {
                        WorldChange::StopGateway { cluster } => {
                            stopped.insert(cluster.clone());
                        }
                        WorldChange::StartGateway { cluster } => {
                            stopped.remove(cluster);
                        }
                        WorldChange::Scale {
                            cluster,
                            service,
                            replicas,
                        } => {
                            let pods = inventory
                                .clusters
                                .get_mut(cluster)
                                .unwrap()
                                .ready_pods
                                .entry(service.clone())
                                .or_default();
                            pods.truncate(*replicas as usize);
                        }
                        _ => {}
                    }
                }
                let pods: Vec<(String, String)> = inventory
                    .clusters
                    .iter()
                    .flat_map(|(cluster, contents)| {
                        contents
                            .ready_pods
                            .get(&traffic.to_service)
                            .into_iter()
                            .flatten()
                            .map(move |pod| (cluster.clone(), pod.name.clone()))
                    })
                    .collect();
                let (cluster, pod) = pods[seq as usize % pods.len()].clone();
                let reachable = cluster == traffic.from_cluster || !stopped.contains(&cluster);
                RequestRecord {
                    started_us,
                    seq,
                    target: "10.96.0.11:80".into(),
                    status: reachable.then_some(200),
                    error: (!reachable).then(|| "connect refused".to_owned()),
                    pod: reachable.then_some(pod),
                    cluster: reachable.then_some(cluster),
                    peer_identity: reachable.then(|| "spiffe://cluster.local/ns/ns1/sa/foo".to_owned()),
                    latency_us: 500,
                    connection: seq,
                    server_connection: reachable.then(|| format!("100.64.0.10:{}", 40000 + seq)),
                }
            })
            .collect()
    }
}

impl Provider for ScriptedProvider {
    fn info(&self) -> ProviderInfo {
        test_provider_info("scripted")
    }

    async fn create_world(
        &mut self,
        scenario: &Scenario,
        _progress: &mut dyn meshfed::progress::Progress,
    ) -> Result<Inventory, ProviderError> {
        self.calls.push("create_world".into());
        let created = inventory::from_scenario_with_gateways(scenario, |cluster| GatewayAddress {
            address: format!("192.0.2.{}", cluster.len()),
            port: 15443,
            placeholder: false,
        });
        self.inventory = Some(created.clone());
        Ok(created)
    }

    async fn start_traffic(
        &mut self,
        traffic: &Traffic,
        _progress: &mut dyn meshfed::progress::Progress,
    ) -> Result<(), ProviderError> {
        let rate = traffic.rate_per_second.expect("a phase with actions is paced");
        self.calls.push(format!(
            "start_traffic {} -> {} at {rate}/s",
            traffic.from_service, traffic.to_service
        ));
        let length_ms = self
            .traffic_ends_after_ms
            .unwrap_or(traffic.requests * 1000 / u64::from(rate));
        self.running = Some((traffic.clone(), Instant::now(), length_ms));
        self.awaited_ms = 0;
        self.timed_changes.clear();
        self.inventory_at_start = self.inventory.clone();
        Ok(())
    }

    async fn await_traffic(
        &mut self,
        until: Instant,
        _progress: &mut dyn meshfed::progress::Progress,
    ) -> Result<Option<Vec<RequestRecord>>, ProviderError> {
        let (traffic, started, length_ms) = self.running.clone().expect("traffic was started");
        let end = started + Duration::from_millis(length_ms);
        if until < end {
            tokio::time::sleep_until(until.into()).await;
            let offset_ms = (until - started).as_millis() as u64;
            self.awaited_ms = offset_ms;
            self.calls.push(format!("await_traffic +{offset_ms}ms"));
            return Ok(None);
        }
        tokio::time::sleep_until(end.into()).await;
        self.calls.push("await_traffic done".into());
        self.running = None;
        Ok(Some(self.timed_records(&traffic)))
    }

    async fn change_world(
        &mut self,
        change: &WorldChange,
        _progress: &mut dyn meshfed::progress::Progress,
    ) -> Result<Vec<InventoryEvent>, ProviderError> {
        self.calls
            .push(format!("change_world {} {}", change.kind().name(), change.cluster()));
        if self.running.is_some() {
            self.timed_changes.push((self.awaited_ms, change.clone()));
        }
        let inventory = self.inventory.as_mut().expect("create_world ran");
        Ok(match change {
            WorldChange::Scale {
                cluster,
                service,
                replicas,
            } => {
                let pods = inventory
                    .clusters
                    .get_mut(cluster)
                    .unwrap()
                    .ready_pods
                    .entry(service.clone())
                    .or_default();
                let mut events = Vec::new();
                while pods.len() > *replicas as usize {
                    let gone = pods.pop().unwrap();
                    events.push(InventoryEvent::PodGone {
                        cluster: cluster.clone(),
                        service: service.clone(),
                        pod: gone.name,
                    });
                }
                while pods.len() < *replicas as usize {
                    let pod = inventory::ReadyPod {
                        name: format!("{}-{}", service.split('.').next().unwrap(), pods.len()),
                        region: "region2".into(),
                        zone: "zone2a".into(),
                    };
                    pods.push(pod.clone());
                    events.push(InventoryEvent::PodReady {
                        cluster: cluster.clone(),
                        service: service.clone(),
                        pod,
                    });
                }
                events
            }
            WorldChange::Upgrade { cluster, to } => {
                // An upgrade takes time on a real cluster (istioctl waits for readiness): the
                // action's completed time must come from here, not from when it was asked.
                tokio::time::sleep(UPGRADE_TAKES).await;
                inventory.clusters.get_mut(cluster).unwrap().istio_version = *to;
                vec![InventoryEvent::IstioVersion {
                    cluster: cluster.clone(),
                    version: *to,
                }]
            }
            _ => Vec::new(),
        })
    }

    async fn apply_plan(
        &mut self,
        plan: &Plan,
        settings: &PhaseSettings,
        _progress: &mut dyn meshfed::progress::Progress,
    ) -> Result<(), ProviderError> {
        let weights: Vec<String> = plan.clusters[0]
            .objects
            .iter()
            .filter_map(|object| match object {
                Object::ServiceEntry(entry) => Some(
                    entry
                        .spec
                        .endpoints
                        .first()
                        .map_or("no-endpoint".to_owned(), |endpoint| format!("{:?}", endpoint.weight)),
                ),
                _ => None,
            })
            .collect();
        // The connection policy is a DestinationRule connectionPool in the plan.
        let new_connection_per_request = plan.clusters[0].objects.iter().any(|object| {
            matches!(object, Object::DestinationRule(rule)
                if rule.spec.traffic_policy.connection_pool.as_ref()
                    .and_then(|pool| pool.http.max_requests_per_connection) == Some(1))
        });
        self.calls.push(format!(
            "apply_plan weights={} new_conn={} foreign={:?}",
            weights.join(","),
            new_connection_per_request,
            settings.foreign_client_cert
        ));
        self.plans.push(plan.clone());
        Ok(())
    }

    async fn check_isolation(&mut self) -> Result<Vec<IsolationProbe>, ProviderError> {
        self.calls.push("check_isolation".into());
        Ok(Vec::new())
    }

    async fn send_traffic(
        &mut self,
        traffic: &Traffic,
        _progress: &mut dyn meshfed::progress::Progress,
    ) -> Result<Vec<RequestRecord>, ProviderError> {
        self.calls.push(format!(
            "send_traffic {} -> {}:{}",
            traffic.from_service, traffic.to_service, traffic.port
        ));
        self.phases_sent += 1;
        if self.hangs_with_stuck.is_some() {
            std::future::pending::<()>().await;
        }
        if self.responders.is_empty() {
            return Ok((0..traffic.requests)
                .map(|seq| RequestRecord {
                    started_us: 0,
                    seq,
                    target: "10.96.0.11:80".into(),
                    status: Some(503),
                    error: Some("no healthy upstream".into()),
                    pod: None,
                    cluster: None,
                    peer_identity: None,
                    latency_us: 1000,
                    connection: seq,
                    server_connection: None,
                })
                .collect());
        }
        Ok((0..traffic.requests)
            .map(|seq| {
                let (pod, cluster, identity) = &self.responders[seq as usize % self.responders.len()];
                RequestRecord {
                    started_us: 0,
                    seq,
                    target: "10.96.0.11:80".into(),
                    status: Some(200),
                    error: None,
                    pod: Some(pod.clone()),
                    cluster: Some(cluster.clone()),
                    peer_identity: identity.clone(),
                    latency_us: 1000,
                    connection: seq,
                    server_connection: Some(format!("100.64.0.10:{}", 40000 + seq)),
                }
            })
            .collect())
    }

    async fn tls_failures(&mut self, _service: &str) -> Result<TlsFailures, ProviderError> {
        self.tls_counter += 1;
        Ok(TlsFailures {
            fail_verify_error: self.tls_counter,
            ..TlsFailures::default()
        })
    }

    async fn check_alive(&mut self) -> Result<(), ProviderError> {
        self.calls.push("check_alive".into());
        match &self.dies_after_phases {
            Some((phases, process)) if self.phases_sent >= *phases => {
                Err(ProviderError::NotAlive(vec![process.clone()]))
            }
            _ => Ok(()),
        }
    }

    async fn stuck(&mut self) -> Vec<String> {
        self.calls.push("stuck".into());
        self.hangs_with_stuck.clone().into_iter().collect()
    }

    async fn teardown(&mut self, _progress: &mut dyn meshfed::progress::Progress) -> Result<(), ProviderError> {
        self.calls.push("teardown".into());
        Ok(())
    }
}

/// How long the scripted provider's upgrade takes.
const UPGRADE_TAKES: Duration = Duration::from_millis(60);

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
        .block_on(future)
}

fn skew() -> Scenario {
    scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/skew.yaml")).unwrap()
}

#[test]
fn proxies_are_reconfigured_only_when_a_phase_changes_weights_or_connections() {
    let mut provider = ScriptedProvider {
        responders: vec![(
            "bar-0".into(),
            "cluster2".into(),
            Some("spiffe://cluster.local/ns/ns1/sa/foo".into()),
        )],
        ..ScriptedProvider::default()
    };
    let mut lines = Vec::new();
    let mut progress = |line: &str| lines.push(line.to_owned());
    let report = block_on(driver::drive_scenario(
        &mut provider,
        &skew(),
        Path::new("skew.yaml"),
        &mut progress,
    ))
    .unwrap();
    assert_eq!(
        provider.calls,
        [
            "create_world",
            // The world starts with the first phase's plan: its connection policy is a
            // DestinationRule connectionPool, so nothing is reconfigured before it.
            "apply_plan weights=None new_conn=true foreign=None",
            "check_isolation",
            "check_alive",
            "send_traffic foo.ns1 -> bar.ns2:80",
            "check_alive",
            "check_alive",
            "apply_plan weights=Some(3) new_conn=true foreign=None",
            "send_traffic foo.ns1 -> bar.ns2:80",
            "check_alive",
            "check_alive",
            "apply_plan weights=Some(3) new_conn=false foreign=None",
            "send_traffic foo.ns1 -> bar.ns2:80",
            "check_alive",
        ]
    );
    assert_eq!(report.phases.len(), 3);
    assert!(
        lines.iter().any(|line| line.contains("reconfiguring proxies")),
        "{lines:?}"
    );
}

#[test]
fn every_phase_and_expectation_is_judged_after_a_failure_and_tls_counters_are_per_phase() {
    // Everything answered by cluster2's bar-0 with the right identity: the equal-weights phase's
    // skew-at-least holds (ratio 4), ready-pods' skew-at-most fails, clusters_reached fails.
    let mut provider = ScriptedProvider {
        responders: vec![(
            "bar-0".into(),
            "cluster2".into(),
            Some("spiffe://cluster.local/ns/ns1/sa/foo".into()),
        )],
        ..ScriptedProvider::default()
    };
    let report = block_on(driver::drive_scenario(
        &mut provider,
        &skew(),
        Path::new("skew.yaml"),
        &mut |_: &str| {},
    ))
    .unwrap();
    assert!(!report.passed);
    let verdicts: Vec<Vec<(String, bool)>> = report
        .phases
        .iter()
        .map(|phase| {
            phase
                .expectations
                .iter()
                .map(|result| (result.expectation.clone(), result.passed))
                .collect()
        })
        .collect();
    let expect = |items: &[(&str, bool)]| {
        items
            .iter()
            .map(|(name, passed)| (name.to_string(), *passed))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        verdicts,
        [
            expect(&[
                ("mtls_rate >=", true),
                ("success_rate >=", true),
                ("max_skew_ratio by requests >=", true),
                ("clusters_reached includes", false)
            ]),
            expect(&[
                ("mtls_rate >=", true),
                ("success_rate >=", true),
                ("max_skew_ratio by requests <=", false),
                ("clusters_reached includes", false)
            ]),
            expect(&[("mtls_rate >=", true), ("success_rate >=", true)]),
        ]
    );
    // The scripted counter grows by one per read: each phase sees exactly its own growth.
    assert!(
        report
            .phases
            .iter()
            .all(|phase| phase.tls_failures.fail_verify_error == 1)
    );
}

#[test]
fn a_wrong_identity_counts_as_success_but_not_as_mtls() {
    let mut provider = ScriptedProvider {
        responders: vec![
            (
                "bar-0".into(),
                "cluster1".into(),
                Some("spiffe://cluster.local/ns/ns1/sa/foo".into()),
            ),
            (
                "bar-0".into(),
                "cluster2".into(),
                Some("spiffe://cluster.local/ns/evil/sa/mallory".into()),
            ),
        ],
        ..ScriptedProvider::default()
    };
    let report = block_on(driver::drive_scenario(
        &mut provider,
        &skew(),
        Path::new("skew.yaml"),
        &mut |_: &str| {},
    ))
    .unwrap();
    let first = &report.phases[0];
    assert_eq!(first.measurement.success_rate, 1.0);
    assert_eq!(first.measurement.mtls_rate, 0.5);
    assert!(!first.expectations[0].passed);
    assert!(
        first.expectations[0].detail.contains("mallory"),
        "{}",
        first.expectations[0].detail
    );
}

#[test]
fn phase_long_faults_run_on_local_and_actions_are_refused_by_a_provider_without_that_change() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml"))
        .unwrap()
        .replacen(
            "    requests: 400\n",
            "    requests: 400\n    ratePerSecond: 200\n    faults:\n      - gatewayDown: { cluster: cluster2 }\n    \
             actions:\n      - { atMillis: 500, partition: { cluster: cluster2 } }\n",
            1,
        );
    let scenario = scenario::parse(Path::new("faulty.yaml"), &text).unwrap();
    driver::check_runnable(&scenario, Path::new("faulty.yaml"), &LocalProvider::CAPABILITIES).unwrap();
    let refusal = driver::check_runnable(
        &scenario,
        Path::new("faulty.yaml"),
        &meshfed::provider::kubeconfig::KubeconfigProvider::CAPABILITIES,
    )
    .unwrap_err()
    .to_string();
    assert!(
        refusal.starts_with("faulty.yaml:42:9: phase foo-to-bar-http: fault gatewayDown"),
        "{refusal}"
    );
    let without_fault = text.replacen("    faults:\n      - gatewayDown: { cluster: cluster2 }\n", "", 1);
    let scenario = scenario::parse(Path::new("acting.yaml"), &without_fault).unwrap();
    let refusal = driver::check_runnable(
        &scenario,
        Path::new("acting.yaml"),
        &meshfed::provider::kubeconfig::KubeconfigProvider::CAPABILITIES,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        refusal,
        "acting.yaml:42:37: phase foo-to-bar-http: action partition@500ms (partition at 500 ms) is not supported by \
         provider kubeconfig; it supports: scale, kill"
    );
}

/// A phase whose traffic spans 200 ms (200 requests at 1000/s) with a gateway stop and start and
/// a scale to zero under traffic; one window bound is wrong (cluster2's three pods fail while its
/// gateway is down, so 1 in 4 requests succeeds there).
const TIMED_PHASE: &str = "
  - name: gateway-stop
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 200
    ratePerSecond: 1000
    bucketMillis: 20
    actions:
      - { atMillis: 40, name: gw-down, stopGateway: { cluster: cluster2 } }
      - { atMillis: 80, name: gw-up, startGateway: { cluster: cluster2 } }
      - { atMillis: 120, name: scale-away, scale: { cluster: cluster2, service: bar.ns2, replicas: 0 } }
    expect:
      successRateAtLeast: 0.5
      windows:
        - { fromMillis: 0, toMillis: 40, successRateAtLeast: 1.0, clustersReached: [cluster1, cluster2] }
        - { fromMillis: 40, toMillis: 80, successRateAtLeast: 0.99 }
        - { fromMillis: 120, toMillis: 200, callsToClusterAtMost: { cluster: cluster2, calls: 0 } }
      everyBucket: { successRateAtLeast: 0.2 }
      recovery: { after: gw-up, successRateAtLeast: 1.0, withinMillis: 20 }
";

#[test]
fn actions_happen_at_their_offsets_in_order_and_the_reconciled_plan_is_applied() {
    let mut provider = ScriptedProvider::default();
    let report = block_on(driver::drive_scenario(
        &mut provider,
        &skew_with_phases(TIMED_PHASE),
        Path::new("timed.yaml"),
        &mut |_: &str| {},
    ))
    .unwrap();
    let during: Vec<&str> = provider
        .calls
        .iter()
        .map(String::as_str)
        .skip_while(|call| !call.starts_with("start_traffic"))
        .take_while(|call| *call != "await_traffic done")
        .collect();
    assert_eq!(
        during,
        [
            "start_traffic foo.ns1 -> bar.ns2 at 1000/s",
            "await_traffic +40ms",
            "change_world stopGateway cluster2",
            "await_traffic +80ms",
            "change_world startGateway cluster2",
            "await_traffic +120ms",
            "change_world scale cluster2",
            // The three PodGone events re-planned the federation: cluster1 has no ServiceEntry
            // for bar any more (no remote pods), applied live while the traffic runs.
            "apply_plan weights= new_conn=false foreign=None",
        ]
    );
    let bar_endpoints = |plan: &Plan| -> usize {
        plan.clusters
            .iter()
            .find(|cluster| cluster.cluster == "cluster1")
            .unwrap()
            .objects
            .iter()
            .filter_map(|object| match object {
                Object::ServiceEntry(entry) if entry.spec.hosts.iter().any(|host| host.starts_with("bar.")) => {
                    Some(entry.spec.endpoints.len())
                }
                _ => None,
            })
            .sum()
    };
    assert_eq!(
        bar_endpoints(&provider.plans[0]),
        1,
        "cluster2's gateway before the scale"
    );
    assert_eq!(bar_endpoints(provider.plans.last().unwrap()), 0, "and none after it");

    let timeline = report.phases[0]
        .timeline
        .as_ref()
        .expect("a phase with actions has a timeline");
    assert_eq!(timeline.bucket_ms, 20);
    let taken: Vec<(&str, &str, u64)> = timeline
        .actions
        .iter()
        .map(|action| (action.name.as_str(), action.kind.as_str(), action.at_ms))
        .collect();
    assert_eq!(
        taken,
        [
            ("gw-down", "stopGateway", 40),
            ("gw-up", "startGateway", 80),
            ("scale-away", "scale", 120)
        ]
    );
    for action in &timeline.actions {
        assert!(
            action.started_ms >= action.at_ms && action.completed_ms >= action.started_ms,
            "{action:?}"
        );
    }
    assert_eq!(timeline.actions[2].events.len(), 3, "three pods gone");
    let buckets: Vec<(u64, u64, u64)> = timeline
        .buckets
        .iter()
        .map(|bucket| (bucket.start_ms, bucket.requests, bucket.succeeded))
        .collect();
    assert_eq!(
        buckets,
        [
            (0, 20, 20),
            (20, 20, 20),
            (40, 20, 5),
            (60, 20, 5),
            (80, 20, 20),
            (100, 20, 20),
            (120, 20, 20),
            (140, 20, 20),
            (160, 20, 20),
            (180, 20, 20)
        ]
    );
}

/// An action the traffic never reached used to be skipped with one progress line and the
/// phase passed. Validation now refuses an `atMillis` after the last request's start, but the
/// traffic can still end first (a client ending early, a late scheduler); the phase then fails,
/// naming the action, in the report every output renders (summary, report.json, junit.xml,
/// report.html all list the phase's expectation results).
#[test]
fn an_action_the_traffic_ended_before_fails_its_phase_naming_the_action() {
    let phase = "
  - name: late-action
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 200
    ratePerSecond: 1000
    actions:
      - { atMillis: 40, name: gw-down, stopGateway: { cluster: cluster2 } }
      - { atMillis: 150, name: gw-up, startGateway: { cluster: cluster2 } }
";
    let mut provider = ScriptedProvider {
        traffic_ends_after_ms: Some(100),
        ..ScriptedProvider::default()
    };
    let report = block_on(driver::drive_scenario(
        &mut provider,
        &skew_with_phases(phase),
        Path::new("edited-skew.yaml"),
        &mut |_: &str| {},
    ))
    .unwrap();
    assert!(!report.passed, "a phase whose action was not taken must not pass");
    let phase = &report.phases[0];
    assert!(!phase.passed);
    let failed: Vec<(&str, &str, bool)> = phase
        .expectations
        .iter()
        .map(|result| (result.key.as_str(), result.expectation.as_str(), result.passed))
        .collect();
    assert_eq!(failed, [("actions[1]", "action gw-up taken, planned at ms", false)]);
    let summary = meshfed::report::summary(&report);
    assert!(
        summary.contains(
            "FAIL action gw-up taken, planned at ms 150 (observed none): phase late-action: the traffic ended before \
             action gw-up at 150 ms, so it was not taken and the phase did not test it"
        ),
        "{summary}"
    );
    assert!(summary.contains("verdict: FAIL"), "{summary}");
    let junit = meshfed::report::junit(&report);
    assert!(junit.contains("action gw-up taken, planned at ms"), "{junit}");
    let html = meshfed::report::html(&report);
    assert!(html.contains("action gw-up taken, planned at ms"), "{html}");
}

#[test]
fn a_wrong_change_expectation_fails_naming_phase_window_observed_and_bound_and_the_others_are_judged() {
    let mut provider = ScriptedProvider::default();
    let report = block_on(driver::drive_scenario(
        &mut provider,
        &skew_with_phases(TIMED_PHASE),
        Path::new("timed.yaml"),
        &mut |_: &str| {},
    ))
    .unwrap();
    assert!(!report.passed);
    let judged: Vec<(&str, String, bool)> = report.phases[0]
        .expectations
        .iter()
        .map(|result| (result.expectation.as_str(), result.observed_text(), result.passed))
        .collect();
    let keys: Vec<&str> = report.phases[0]
        .expectations
        .iter()
        .map(|result| result.key.as_str())
        .collect();
    // report.json names each result by its key as written in the scenario.
    assert_eq!(
        keys,
        [
            "successRateAtLeast",
            "windows[0].successRateAtLeast",
            "windows[0].clustersReached",
            "windows[1].successRateAtLeast",
            "windows[2].callsToClusterAtMost",
            "everyBucket.successRateAtLeast",
            "recovery",
        ]
    );
    assert_eq!(
        judged
            .iter()
            .map(|(expectation, observed, passed)| (*expectation, observed.as_str(), *passed))
            .collect::<Vec<_>>(),
        [
            ("success_rate >=", "0.850", true),
            ("window [0, 40) ms success_rate >=", "1.000", true),
            (
                "window [0, 40) ms clusters_reached includes",
                "[cluster1, cluster2]",
                true
            ),
            ("window [40, 80) ms success_rate >=", "0.250", false),
            ("window [120, 200) ms calls answered by cluster2 <=", "0", true),
            ("every bucket success_rate >=", "0.250", true),
            ("recovery after gw-up to success_rate 1 within ms <=", "0", true),
        ]
    );
    assert_eq!(report.failures(), 1);
    let summary = meshfed::report::summary(&report);
    assert!(
        summary.contains("phase gateway-stop: window [40, 80) ms success_rate >= 0.990 (observed 0.250)"),
        "{summary}"
    );
    assert!(
        summary.contains("FAIL window [40, 80) ms success_rate >= 0.990 (observed 0.250): phase gateway-stop, window [40, 80) ms: 10 of 40 succeeded"),
        "{summary}"
    );
    // The timeline is in the summary with the actions marked where they happened.
    assert!(summary.contains("<- gw-down (stopGateway cluster2 at "), "{summary}");
    assert!(summary.contains("<- scale-away (scale cluster2 at "), "{summary}");
}

#[test]
fn phase_long_faults_are_changes_made_before_the_traffic_and_undone_after_it() {
    let mut provider = ScriptedProvider {
        responders: vec![(
            "bar-0".into(),
            "cluster1".into(),
            Some("spiffe://cluster.local/ns/ns1/sa/foo".into()),
        )],
        ..ScriptedProvider::default()
    };
    let scenario = skew_with_phases(
        "
  - name: scaled-away
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 10
    faults:
      - scale: { cluster: cluster2, service: bar.ns2, replicas: 0 }
      - gatewayDown: { cluster: cluster2 }
    expect:
      successRateAtLeast: 1.0
",
    );
    let report = block_on(driver::drive_scenario(
        &mut provider,
        &scenario,
        Path::new("faults.yaml"),
        &mut |_: &str| {},
    ))
    .unwrap();
    assert!(report.passed, "{}", meshfed::report::summary(&report));
    let phase: Vec<&str> = provider
        .calls
        .iter()
        .map(String::as_str)
        .skip_while(|call| *call != "check_isolation")
        .skip(1)
        .collect();
    assert_eq!(
        phase,
        [
            "check_alive",
            "change_world scale cluster2",
            "change_world stopGateway cluster2",
            // The world starts with the phase's plan from the created inventory; scaling
            // cluster2's bar away re-plans it before the traffic.
            "apply_plan weights= new_conn=false foreign=None",
            "send_traffic foo.ns1 -> bar.ns2:80",
            "change_world startGateway cluster2",
            "change_world scale cluster2",
            "check_alive",
        ]
    );
    assert_eq!(
        provider.inventory.unwrap().clusters["cluster2"].ready_count("bar.ns2"),
        3,
        "the scale was undone to the replicas before the fault"
    );
    // docs/report.md: `faults[]` as written in the scenario (it used to be Rust's Debug text,
    // `Scale { cluster: "cluster2", ... }`).
    assert_eq!(
        report.phases[0].faults,
        [
            "scale: { cluster: cluster2, service: bar.ns2, replicas: 0 }",
            "gatewayDown: { cluster: cluster2 }"
        ]
    );
}

#[test]
fn summary_snapshot() {
    let mut provider = ScriptedProvider {
        responders: vec![
            (
                "bar-0".into(),
                "cluster1".into(),
                Some("spiffe://cluster.local/ns/ns1/sa/foo".into()),
            ),
            (
                "bar-1".into(),
                "cluster2".into(),
                Some("spiffe://cluster.local/ns/ns1/sa/foo".into()),
            ),
        ],
        ..ScriptedProvider::default()
    };
    let mut report = block_on(driver::drive_scenario(
        &mut provider,
        &skew(),
        Path::new("skew.yaml"),
        &mut |_: &str| {},
    ))
    .unwrap();
    // Durations vary from run to run; everything else is deterministic here.
    report.timings = Default::default();
    insta::assert_snapshot!(meshfed::report::summary(&report));
}

/// The skew scenario with `phases` instead of its own.
fn skew_with_phases(phases: &str) -> Scenario {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/skew.yaml")).unwrap();
    let world = &text[..text.find("\nphases:\n").expect("skew.yaml has phases")];
    scenario::parse(Path::new("edited-skew.yaml"), &format!("{world}\nphases:\n{phases}")).unwrap()
}

const SKEW_ONLY_PHASE: &str = "
  - name: skew-only
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 400
    expect:
      maxSkewRatioAtMost: 1.5
";

#[test]
fn a_skew_only_phase_in_which_no_request_was_answered_fails_and_says_so() {
    let mut provider = ScriptedProvider::default();
    let report = block_on(driver::drive_scenario(
        &mut provider,
        &skew_with_phases(SKEW_ONLY_PHASE),
        Path::new("edited-skew.yaml"),
        &mut |_: &str| {},
    ))
    .unwrap();
    assert!(!report.passed);
    let result = &report.phases[0].expectations[0];
    assert_eq!(result.expectation, "max_skew_ratio by requests <=");
    assert!(!result.passed, "{result:?}");
    assert!(
        result.detail.starts_with("no request was answered: 0 of 400"),
        "{result:?}"
    );
    let summary = meshfed::report::summary(&report);
    assert!(
        summary
            .contains("FAIL max_skew_ratio by requests <= 1.500 (observed 0.000): no request was answered: 0 of 400"),
        "{summary}"
    );
}

/// A phase with no expectations in which every request failed used to read `verdict: PASS`
/// with no word that it judged nothing.
#[test]
fn a_phase_without_expectations_says_it_judged_nothing() {
    let phase = "
  - name: unjudged
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 40
";
    let mut provider = ScriptedProvider::default();
    let report = block_on(driver::drive_scenario(
        &mut provider,
        &skew_with_phases(phase),
        Path::new("edited-skew.yaml"),
        &mut |_: &str| {},
    ))
    .unwrap();
    assert_eq!(
        report.phases[0].measurement.success_rate, 0.0,
        "no responder: every request failed"
    );
    let summary = meshfed::report::summary(&report);
    assert!(
        summary.contains(
            "  no expectations: this phase judged nothing (success rate 0.000 and mTLS rate 0.000 were not checked)"
        ),
        "{summary}"
    );
    assert!(
        summary.contains("judged nothing (no expectations): phase unjudged; the verdict says nothing about them"),
        "{summary}"
    );
}

#[test]
fn a_process_that_died_during_a_phase_ends_the_run_naming_it() {
    let dead = "app of pod bar-0 in cluster2 (pid 4242) exited with signal 9 (SIGKILL)";
    let mut provider = ScriptedProvider {
        responders: vec![(
            "bar-0".into(),
            "cluster2".into(),
            Some("spiffe://cluster.local/ns/ns1/sa/foo".into()),
        )],
        dies_after_phases: Some((1, dead.to_owned())),
        ..ScriptedProvider::default()
    };
    let error = block_on(driver::drive_scenario(
        &mut provider,
        &skew(),
        Path::new("skew.yaml"),
        &mut |_: &str| {},
    ))
    .unwrap_err();
    assert!(matches!(error, ProviderError::NotAlive(_)), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(dead), "{message}");
    assert!(
        message.contains("died or were stopped although no fault asked for it"),
        "{message}"
    );
    assert_eq!(
        provider
            .calls
            .iter()
            .filter(|call| call.starts_with("send_traffic"))
            .count(),
        1,
        "no phase runs after the death: {:?}",
        provider.calls
    );
}

#[test]
fn a_phase_that_overruns_its_deadline_ends_the_run_naming_what_is_stuck() {
    let mut provider = ScriptedProvider {
        hangs_with_stuck: Some("envoy of gateway istio-ingressgateway in cluster2 is stopped".into()),
        ..ScriptedProvider::default()
    };
    let scenario = skew_with_phases(&SKEW_ONLY_PHASE.replace("requests: 400", "requests: 400\n    timeoutSeconds: 1"));
    let error = block_on(driver::drive_scenario(
        &mut provider,
        &scenario,
        Path::new("edited-skew.yaml"),
        &mut |_: &str| {},
    ))
    .unwrap_err();
    assert!(matches!(error, ProviderError::DeadlineExceeded { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "phase skew-only did not finish within its deadline of 1 s; \
         stuck: envoy of gateway istio-ingressgateway in cluster2 is stopped"
    );
    assert_eq!(provider.calls.last().map(String::as_str), Some("stuck"));
}

#[test]
fn a_phase_deadline_allows_every_request_its_timeout_unless_the_phase_sets_one() {
    let derived = skew_with_phases(SKEW_ONLY_PHASE);
    // 30 s + ⌈400 ÷ 1⌉ × 5 s, capped at an hour.
    assert_eq!(driver::phase_deadline(&derived.phases[0]).as_secs(), 2030);
    let concurrent = skew_with_phases(&SKEW_ONLY_PHASE.replace("requests: 400", "requests: 400\n    concurrency: 4"));
    assert_eq!(driver::phase_deadline(&concurrent.phases[0]).as_secs(), 530);
    let huge = skew_with_phases(&SKEW_ONLY_PHASE.replace("requests: 400", "requests: 100000"));
    assert_eq!(driver::phase_deadline(&huge.phases[0]), driver::PHASE_DEADLINE_CAP);
    let overridden =
        skew_with_phases(&SKEW_ONLY_PHASE.replace("requests: 400", "requests: 400\n    timeoutSeconds: 7"));
    assert_eq!(driver::phase_deadline(&overridden.phases[0]).as_secs(), 7);
}

#[test]
fn a_phase_deadline_out_of_range_is_refused_with_its_position() {
    for (seconds, column) in [("0", 21), ("86401", 21)] {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/skew.yaml")).unwrap();
        let world = &text[..text.find("\nphases:\n").expect("skew.yaml has phases")];
        let phases = SKEW_ONLY_PHASE.replace(
            "requests: 400",
            &format!("requests: 400\n    timeoutSeconds: {seconds}"),
        );
        let edited = format!("{world}\nphases:\n{phases}");
        // The line of `timeoutSeconds` in the edited text (skew.yaml's header may grow).
        let line = edited.lines().position(|text| text.contains("timeoutSeconds")).unwrap() + 1;
        let error = scenario::parse(Path::new("edited-skew.yaml"), &edited)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            format!(
                "edited-skew.yaml:{line}:{column}: phase skew-only: timeoutSeconds {seconds} is out of range: \
                 a phase deadline is 1 to 86400 seconds"
            )
        );
    }
}

#[test]
fn predicted_share_follows_the_plans_endpoint_weights_while_fair_share_stays_equal() {
    let mut provider = ScriptedProvider::default();
    let report = block_on(driver::drive_scenario(
        &mut provider,
        &skew(),
        Path::new("skew.yaml"),
        &mut |_: &str| {},
    ))
    .unwrap();
    let shares = |phase: &str| -> Vec<(String, String, f64, Option<f64>)> {
        let phase = report.phases.iter().find(|candidate| candidate.name == phase).unwrap();
        phase
            .measurement
            .pods
            .iter()
            .map(|pod| {
                let round = |share: f64| (share * 1000.0).round() / 1000.0;
                (
                    pod.cluster.clone(),
                    pod.pod.clone(),
                    round(pod.expected_share),
                    pod.predicted_share.map(round),
                )
            })
            .collect()
    };
    let pod = |cluster: &str, name: &str, fair: f64, predicted: f64| {
        (cluster.to_owned(), name.to_owned(), fair, Some(predicted))
    };
    // Equal weights: the local pod weighs 1 and so does cluster2's gateway, whose 1 is split over
    // its three pods (the seed's skew), while the fair share is a quarter each.
    assert_eq!(
        shares("equal-weights"),
        [
            pod("cluster1", "bar-0", 0.25, 0.5),
            pod("cluster2", "bar-0", 0.25, 0.167),
            pod("cluster2", "bar-1", 0.25, 0.167),
            pod("cluster2", "bar-2", 0.25, 0.167),
        ]
    );
    // Ready-pods weights: the gateway weighs 3, so the prediction is the fair share.
    assert_eq!(
        shares("ready-pods-weights"),
        [
            pod("cluster1", "bar-0", 0.25, 0.25),
            pod("cluster2", "bar-0", 0.25, 0.25),
            pod("cluster2", "bar-1", 0.25, 0.25),
            pod("cluster2", "bar-2", 0.25, 0.25),
        ]
    );
    let cluster2 = report.phases[0]
        .measurement
        .clusters
        .iter()
        .find(|cluster| cluster.cluster == "cluster2")
        .unwrap();
    assert!((cluster2.predicted_share.unwrap() - 0.5).abs() < 1e-9, "{cluster2:?}");
}

#[test]
fn the_connection_limited_note_is_printed_only_where_pooled_connections_explain_a_request_skew() {
    let mut provider = ScriptedProvider::default();
    let mut report = block_on(driver::drive_scenario(
        &mut provider,
        &skew(),
        Path::new("skew.yaml"),
        &mut |_: &str| {},
    ))
    .unwrap();
    for phase in &mut report.phases {
        phase.measurement.connection_limited = true;
        phase.measurement.connection_note = Some(format!("NOTE-{}", phase.name));
    }
    let pooled = report
        .phases
        .iter()
        .position(|phase| phase.name == "pooled-connections")
        .unwrap();
    report.phases[pooled].measurement.request_skew.max_ratio = 2.0;
    let summary = meshfed::report::summary(&report);
    // New connection per request: few connections cannot be the reason, whatever the flag says.
    assert!(!summary.contains("NOTE-equal-weights"), "{summary}");
    // Pooled, and one pod got twice its fair share: the note explains it.
    assert!(summary.contains("note: NOTE-pooled-connections"), "{summary}");
    // Pooled but an even split and no skew bound: the note would change nothing.
    report.phases[pooled].measurement.request_skew.max_ratio = 1.05;
    let summary = meshfed::report::summary(&report);
    assert!(!summary.contains("NOTE-pooled-connections"), "{summary}");
}

/// docs/fidelity.md row 6b: on 1.8-1.9 istiod emits a multi-zone remote cluster's locality groups
/// in Go map order (sorted from 1.10, `pilot/pkg/xds/endpoint_builder.go@1.10.0`), so the report
/// says the shares are not predictable there; on 1.10+ it says nothing.
#[test]
fn the_report_says_multi_zone_shares_are_unpredictable_on_1_8_and_1_9_only() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/multi-zone-weight-bug.yaml");
    let run_at = |version: &str| {
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "    podCidr:",
            &format!("    istioVersion: \"{version}\"\n    podCidr:"),
        );
        let scenario = scenario::parse(&path, &text).unwrap();
        let mut provider = ScriptedProvider::default();
        block_on(driver::drive_scenario(
            &mut provider,
            &scenario,
            Path::new("multi-zone-weight-bug.yaml"),
            &mut |_: &str| {},
        ))
        .unwrap()
    };
    let old = run_at("1.8.6");
    assert_eq!(old.phases[0].caveats.len(), 1, "{:?}", old.phases[0].caveats);
    assert!(old.phases[0].caveats[0].contains("shares are not predictable on Istio 1.8.6"));
    assert!(meshfed::report::summary(&old).contains("note: shares are not predictable"));
    let sorted = run_at("1.10.6");
    assert!(sorted.phases[0].caveats.is_empty(), "{:?}", sorted.phases[0].caveats);
}

/// A paced phase with a phase-level `upgrade:` of both clusters (the spelling of
/// scenarios/upgrade.yaml).
const UPGRADE_PHASE: &str = "
  - name: during-upgrade
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 200
    ratePerSecond: 1000
    bucketMillis: 20
    upgrade: { to: 1.22.0 }
    expect:
      successRateAtLeast: 1.0
";

#[test]
fn a_phase_upgrade_is_the_upgrade_change_at_0_ms_per_cluster_timed_by_the_provider_and_notes_a_skipped_minor() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/skew.yaml")).unwrap();
    let world = &text[..text.find("\nphases:\n").expect("skew.yaml has phases")];
    let scenario = scenario::parse_with_istio_version(
        Path::new("upgrading.yaml"),
        &format!("{world}\nphases:\n{UPGRADE_PHASE}"),
        Some("1.21.0".parse().unwrap()),
    )
    .unwrap();
    let mut provider = ScriptedProvider::default();
    let mut progress = Vec::new();
    let report = block_on(driver::drive_scenario(
        &mut provider,
        &scenario,
        Path::new("upgrading.yaml"),
        &mut |line: &str| progress.push(line.to_owned()),
    ))
    .unwrap();
    let during: Vec<&str> = provider
        .calls
        .iter()
        .map(String::as_str)
        .skip_while(|call| !call.starts_with("start_traffic"))
        .filter(|call| call.starts_with("start_traffic") || call.starts_with("change_world"))
        .collect();
    assert_eq!(
        during,
        [
            "start_traffic foo.ns1 -> bar.ns2 at 1000/s",
            "change_world upgrade cluster1",
            "change_world upgrade cluster2",
        ],
        "the traffic runs across the upgrade, one cluster after the other"
    );
    let timeline = report.phases[0]
        .timeline
        .as_ref()
        .expect("an upgrading phase has a timeline");
    let actions: Vec<(&str, &str, &str, u64)> = timeline
        .actions
        .iter()
        .map(|action| {
            (
                action.name.as_str(),
                action.kind.as_str(),
                action.cluster.as_str(),
                action.at_ms,
            )
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("upgrade@0ms", "upgrade", "cluster1", 0),
            ("upgrade@0ms", "upgrade", "cluster2", 0)
        ]
    );
    for action in &timeline.actions {
        assert!(
            action.completed_ms - action.started_ms >= UPGRADE_TAKES.as_millis() as u64,
            "completed when the provider finished: {action:?}"
        );
        // 1.21 to 1.22 is one minor: what real Istio upgrades in place.
        assert_eq!(action.note, None);
    }
    assert!(timeline.actions[1].started_ms >= timeline.actions[0].completed_ms);

    // The same from 1.9: twelve minors at once, which only an emulation does; the report says so.
    let skipping = scenario::parse_with_istio_version(
        Path::new("upgrading.yaml"),
        &format!("{world}\nphases:\n{UPGRADE_PHASE}"),
        Some("1.9.9".parse().unwrap()),
    )
    .unwrap();
    let mut provider = ScriptedProvider::default();
    let report = block_on(driver::drive_scenario(
        &mut provider,
        &skipping,
        Path::new("upgrading.yaml"),
        &mut |_: &str| {},
    ))
    .unwrap();
    let timeline = report.phases[0].timeline.as_ref().unwrap();
    let note = timeline.actions[1].note.as_deref().expect("a skipped minor is noted");
    assert!(
        note.starts_with(
            "cluster2: Istio 1.9.9 to 1.22.0 skips minor versions, which real Istio does not upgrade in place"
        ),
        "{note}"
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["phases"][0]["timeline"]["actions"][1]["note"], note);
    let summary = meshfed::report::summary(&report);
    assert!(summary.contains(&format!("note: upgrade@0ms: {note}")), "{summary}");
}

/// An `upgrade` action to an older version used to be taken without a word; the
/// summary names the versions and says it is a downgrade (and not for a real upgrade).
#[test]
fn an_upgrade_action_to_an_older_version_is_named_a_downgrade() {
    let phase = "
  - name: versions
    from: { service: foo.ns1, cluster: cluster1 }
    to: { service: bar.ns2, port: http }
    requests: 200
    ratePerSecond: 1000
    actions:
      - { atMillis: 40, name: down, upgrade: { cluster: cluster2, to: 1.9.0 } }
      - { atMillis: 80, name: up, upgrade: { cluster: cluster2, to: 1.22.0 } }
";
    let mut provider = ScriptedProvider::default();
    let report = block_on(driver::drive_scenario(
        &mut provider,
        &skew_with_phases(phase),
        Path::new("edited-skew.yaml"),
        &mut |_: &str| {},
    ))
    .unwrap();
    let before = report
        .clusters
        .iter()
        .find(|cluster| cluster.name == "cluster2")
        .unwrap()
        .istio_version
        .clone();
    let summary = meshfed::report::summary(&report);
    assert!(
        summary.contains(&format!("<- down (upgrade cluster2 {before} -> 1.9.0, a downgrade at ")),
        "{summary}"
    );
    assert!(
        summary.contains("<- up (upgrade cluster2 1.9.0 -> 1.22.0 at "),
        "{summary}"
    );
}
