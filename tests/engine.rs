//! The scenario engine against a scripted provider: what it asks the provider to do, in which
//! order, and that every phase and expectation is judged even after a failure.

use std::path::Path;

use meshfed::engine;
use meshfed::inventory::{self, GatewayAddress, Inventory};
use meshfed::plan::{Object, Plan};
use meshfed::provider::{IsolationProbe, PhaseSettings, Provider, ProviderError, ProviderInfo, TlsFailures, Traffic};
use meshfed::record::RequestRecord;
use meshfed::scenario::{self, Scenario};

/// Records every call; answers traffic with records from a fixed responder list.
#[derive(Default)]
struct ScriptedProvider {
    calls: Vec<String>,
    /// (pod, cluster, identity seen) per request, cycled.
    responders: Vec<(String, String, Option<String>)>,
    tls_counter: u64,
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

    async fn create_world(&mut self, scenario: &Scenario) -> Result<Inventory, ProviderError> {
        self.calls.push("create_world".into());
        Ok(inventory::from_scenario_with_gateways(scenario, |cluster| {
            GatewayAddress {
                address: format!("192.0.2.{}", cluster.len()),
                port: 15443,
                placeholder: false,
            }
        }))
    }

    async fn apply_plan(&mut self, plan: &Plan, settings: &PhaseSettings) -> Result<(), ProviderError> {
        let weights: Vec<String> = plan.clusters[0]
            .objects
            .iter()
            .filter_map(|object| match object {
                Object::ServiceEntry(entry) => Some(format!("{:?}", entry.spec.endpoints[0].weight)),
                _ => None,
            })
            .collect();
        self.calls.push(format!(
            "apply_plan weights={} new_conn={} foreign={:?}",
            weights.join(","),
            settings.new_connection_per_request,
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
        Ok((0..traffic.requests)
            .map(|seq| {
                let (pod, cluster, identity) = &self.responders[seq as usize % self.responders.len()];
                RequestRecord {
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

    async fn teardown(&mut self) -> Result<(), ProviderError> {
        self.calls.push("teardown".into());
        Ok(())
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
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
            "apply_plan weights=None new_conn=false foreign=None",
            "check_isolation",
            "apply_plan weights=None new_conn=true foreign=None",
            "send_traffic foo.ns1 -> bar.ns2:80",
            "apply_plan weights=Some(3) new_conn=true foreign=None",
            "send_traffic foo.ns1 -> bar.ns2:80",
            "apply_plan weights=Some(3) new_conn=false foreign=None",
            "send_traffic foo.ns1 -> bar.ns2:80",
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
    let refusal = engine::check_runnable(&scenario, Path::new("faulty.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        refusal.starts_with("faulty.yaml:41:9: phase foo-to-bar-http: fault GatewayDown"),
        "{refusal}"
    );
    assert!(
        refusal.contains("not executed") && refusal.contains("foreignClientCert"),
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
