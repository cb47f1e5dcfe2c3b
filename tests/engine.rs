//! The scenario engine against a scripted provider: what it asks the provider to do, in which
//! order, and that every phase and expectation is judged even after a failure; that a death or
//! a phase overrunning its deadline ends the run naming what broke.

use std::path::Path;

use meshfed::engine;
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
}

impl Provider for ScriptedProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            name: "scripted".into(),
            emulates: None,
            mode: "test".into(),
            proxy: "none".into(),
        }
    }

    async fn create_world(
        &mut self,
        scenario: &Scenario,
        _progress: &mut dyn meshfed::progress::Progress,
    ) -> Result<Inventory, ProviderError> {
        self.calls.push("create_world".into());
        Ok(inventory::from_scenario_with_gateways(scenario, |cluster| {
            GatewayAddress {
                address: format!("192.0.2.{}", cluster.len()),
                port: 15443,
                placeholder: false,
            }
        }))
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
                Object::ServiceEntry(entry) => Some(format!("{:?}", entry.spec.endpoints[0].weight)),
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
    let report = block_on(engine::run_scenario(
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
    let report = block_on(engine::run_scenario(
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
    let report = block_on(engine::run_scenario(
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
fn faults_that_are_not_executed_yet_are_refused_before_anything_runs() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml"))
        .unwrap()
        .replacen(
            "    requests: 400\n",
            "    requests: 400\n    faults:\n      - gatewayDown: { cluster: cluster2 }\n",
            1,
        );
    let scenario = scenario::parse(Path::new("faulty.yaml"), &text).unwrap();
    let refusal = engine::check_runnable(&scenario, Path::new("faulty.yaml"), &LocalProvider::CAPABILITIES)
        .unwrap_err()
        .to_string();
    assert!(
        refusal.starts_with("faulty.yaml:41:9: phase foo-to-bar-http: fault gatewayDown"),
        "{refusal}"
    );
    assert!(
        refusal.contains("not supported by provider local") && refusal.contains("it supports: foreignClientCert"),
        "{refusal}"
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
    let mut report = block_on(engine::run_scenario(
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
    let report = block_on(engine::run_scenario(
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
    let error = block_on(engine::run_scenario(
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
    let error = block_on(engine::run_scenario(
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
    assert_eq!(engine::phase_deadline(&derived.phases[0]).as_secs(), 2030);
    let concurrent = skew_with_phases(&SKEW_ONLY_PHASE.replace("requests: 400", "requests: 400\n    concurrency: 4"));
    assert_eq!(engine::phase_deadline(&concurrent.phases[0]).as_secs(), 530);
    let huge = skew_with_phases(&SKEW_ONLY_PHASE.replace("requests: 400", "requests: 100000"));
    assert_eq!(engine::phase_deadline(&huge.phases[0]), engine::PHASE_DEADLINE_CAP);
    let overridden =
        skew_with_phases(&SKEW_ONLY_PHASE.replace("requests: 400", "requests: 400\n    timeoutSeconds: 7"));
    assert_eq!(engine::phase_deadline(&overridden.phases[0]).as_secs(), 7);
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
        let error = scenario::parse(Path::new("edited-skew.yaml"), &format!("{world}\nphases:\n{phases}"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            format!(
                "edited-skew.yaml:42:{column}: phase skew-only: timeoutSeconds {seconds} is out of range: \
                 a phase deadline is 1 to 86400 seconds"
            )
        );
    }
}
