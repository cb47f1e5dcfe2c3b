//! Behaviour of [`diff`](super::diff) on reports built from synthetic request records.

use super::*;
use crate::measure::{ExpectedPod, measure};
use crate::observation::{ProviderInfo, TlsFailures};
use crate::record::RequestRecord;
use crate::report::{PhaseReport, ScenarioInfo, Timings};
use crate::verdict::ExpectationResult;

const FOO: &str = "spiffe://cluster.local/ns/ns1/sa/foo";

/// How the synthetic requests reach the pods.
#[derive(Clone, Copy)]
enum Connections {
    /// Every request on its own server-side connection.
    PerRequest,
    /// All requests to a pod on one server-side connection.
    OnePerPod,
}

impl Connections {
    /// The connection policy a phase that behaves like this names in its report.
    fn policy(self) -> &'static str {
        match self {
            Connections::PerRequest => "new-connection-per-request",
            Connections::OnePerPod => "pooled",
        }
    }
}

/// A phase's request records and the connection policy that produced them.
struct Records {
    records: Vec<RequestRecord>,
    connections: Connections,
}

/// `count` requests answered by each `(cluster, pod, count)`, taking `latency_us` each.
fn records(counts: &[(&str, &str, u64)], connections: Connections, latency_us: u64) -> Records {
    let mut records = Vec::new();
    for (cluster, pod, count) in counts {
        for _ in 0..*count {
            let seq = records.len() as u64;
            let server_connection = match connections {
                Connections::PerRequest => format!("10.0.0.1:{seq}"),
                Connections::OnePerPod => format!("{cluster}/{pod}"),
            };
            records.push(RequestRecord {
                seq,
                target: "10.96.0.10:80".into(),
                status: Some(200),
                error: None,
                pod: Some((*pod).into()),
                cluster: Some((*cluster).into()),
                peer_identity: Some(FOO.into()),
                started_us: 0,
                latency_us,
                connection: seq,
                server_connection: Some(server_connection),
            });
        }
    }
    Records { records, connections }
}

/// bar-0 in cluster1 and bar-0..2 in cluster2, a quarter each.
fn skew_pods() -> Vec<ExpectedPod> {
    [
        ("cluster1", "bar-0"),
        ("cluster2", "bar-0"),
        ("cluster2", "bar-1"),
        ("cluster2", "bar-2"),
    ]
    .into_iter()
    .map(|(cluster, pod)| ExpectedPod {
        pod: pod.into(),
        cluster: cluster.into(),
        share: 0.25,
    })
    .collect()
}

fn phase(name: &str, records: &Records, expected: &[ExpectedPod]) -> PhaseReport {
    let Records { records, connections } = records;
    PhaseReport {
        name: name.into(),
        from: "foo.ns1@cluster1".into(),
        to: "bar.ns2:80 (http)".into(),
        requests: records.len() as u64,
        concurrency: 1,
        connections: connections.policy().into(),
        endpoint_weights: "ready-pods".into(),
        faults: Vec::new(),
        expected_identity: FOO.into(),
        measurement: measure(records, expected, FOO),
        tls_failures: TlsFailures::default(),
        gateway_hops: Some(0),
        config_rejections: Vec::new(),
        timeline: None,
        caveats: Vec::new(),
        expectations: vec![ExpectationResult {
            key: "mtlsRateAtLeast".into(),
            expectation: "mtls_rate >=".into(),
            unit: crate::verdict::Unit::Ratio,
            observed: crate::verdict::Value::Number(1.0),
            bound: crate::verdict::Value::Number(1.0),
            passed: true,
            detail: String::new(),
        }],
        passed: true,
    }
}

fn report(scenario: &str, phases: Vec<PhaseReport>) -> Report {
    Report {
        schema: REPORT_SCHEMA.into(),
        meshfed_version: "0.1.0".into(),
        started_at: "2026-11-29T18:00:00Z".into(),
        host: None,
        exit_code: 0,
        clusters: Vec::new(),
        scenario: ScenarioInfo {
            name: scenario.into(),
            file: format!("{scenario}.yaml"),
            description: None,
        },
        provider: ProviderInfo {
            name: "local".into(),
            emulates: Some("istio-gateway-connectivity".into()),
            mode: "root".into(),
            proxy: "envoy 1.40.0".into(),
        },
        timings: Timings::default(),
        service_entries: Vec::new(),
        isolation: Vec::new(),
        passed: phases.iter().all(|phase| phase.passed),
        phases,
    }
}

fn even_split(name: &str, per_pod: u64) -> PhaseReport {
    phase(
        name,
        &records(
            &[
                ("cluster1", "bar-0", per_pod),
                ("cluster2", "bar-0", per_pod),
                ("cluster2", "bar-1", per_pod),
                ("cluster2", "bar-2", per_pod),
            ],
            Connections::PerRequest,
            2_000,
        ),
        &skew_pods(),
    )
}

/// The same report as a real-Istio provider's (latency is judged only there by default).
fn on_kind(mut report: Report) -> Report {
    report.provider.name = "kind".into();
    report.provider.emulates = None;
    report.provider.proxy = "istio 1.30.0".into();
    report
}

fn compare(a: &Report, b: &Report) -> ReportDiff {
    diff(a, "a/report.json", b, "b/report.json", &Thresholds::default()).expect("comparable")
}

#[test]
fn homogeneity_test_matches_a_hand_computed_table() {
    // Row totals 40 and 40, column totals 50 and 30: expected 25 and 15 in each row, so
    // chi-square = 2 × (5²/25 + 5²/15) = 16/3; with 1 degree of freedom p = erfc(√(8/3)) ≈ 0.020921.
    let test = homogeneity_test(&[30, 10], &[20, 20]);
    assert!((test.chi_square - 16.0 / 3.0).abs() < 1e-12, "{test:?}");
    assert_eq!(test.degrees_of_freedom, 1);
    assert!((test.p_value - 0.020_921).abs() < 1e-5, "{test:?}");
    assert!((test.min_expected_count - 15.0).abs() < 1e-12);
}

#[test]
fn homogeneity_test_of_proportional_rows_is_zero_and_ignores_empty_columns() {
    let test = homogeneity_test(&[10, 0, 30], &[20, 0, 60]);
    assert_eq!(test.chi_square, 0.0);
    assert_eq!(test.degrees_of_freedom, 1);
    assert_eq!(test.p_value, 1.0);
}

#[test]
fn homogeneity_test_with_an_empty_run_tests_nothing() {
    let test = homogeneity_test(&[0, 0], &[5, 7]);
    assert_eq!((test.degrees_of_freedom, test.p_value), (0, 1.0));
}

#[test]
fn identical_reports_diff_clean() {
    let a = report("skew", vec![even_split("weights", 300)]);
    let compared = compare(&a, &a.clone());
    assert!(!compared.differs, "{:#?}", compared.differences);
    assert!(compared.differences.is_empty());
    let phase = &compared.phases[0];
    assert_eq!(phase.presence, Presence::Both);
    let pods = phase.pod_shares.as_ref().expect("same pods are compared per pod");
    assert_eq!(pods.cells.len(), 4);
    assert_eq!(pods.test.p_value, 1.0);
    assert!(summary(&compared).contains("no difference beyond the thresholds"));
}

#[test]
fn equal_against_ready_pods_weights_flags_the_pods_their_shares_and_the_p_value() {
    // Equal weights: the local pod takes half, each remote pod a sixth (skew.yaml's first phase).
    let equal = phase(
        "weights",
        &records(
            &[
                ("cluster1", "bar-0", 600),
                ("cluster2", "bar-0", 200),
                ("cluster2", "bar-1", 200),
                ("cluster2", "bar-2", 200),
            ],
            Connections::PerRequest,
            2_000,
        ),
        &skew_pods(),
    );
    let a = report("skew", vec![equal]);
    let b = report("skew", vec![even_split("weights", 300)]);
    let compared = compare(&a, &b);
    assert!(compared.differs);
    let pods = compared.phases[0].pod_shares.as_ref().unwrap();
    assert!(pods.flagged);
    assert_eq!(pods.unit, "requests");
    assert!(pods.test.p_value < 1e-30, "{:?}", pods.test);
    let local = pods.cells.iter().find(|cell| cell.cluster == "cluster1").unwrap();
    assert!((local.share_a - 0.5).abs() < 1e-12 && (local.share_b - 0.25).abs() < 1e-12);
    assert!(local.beyond_tolerance);
    let pod_difference = compared
        .differences
        .iter()
        .find(|difference| difference.subject == "pod shares by requests")
        .expect("the pod split is a difference");
    assert!(
        pod_difference
            .detail
            .contains("cluster1/bar-0 50.0% -> 25.0% (-25.0 points)"),
        "{pod_difference:?}"
    );
    assert!(pod_difference.detail.contains("p = "), "{pod_difference:?}");
    assert_eq!(pod_difference.threshold, "share tolerance 5.0 points and alpha 0.001");
    // Local versus remote moved too: 50/50 to 25/75.
    assert!(compared.phases[0].cluster_shares.as_ref().unwrap().flagged);
    let text = summary(&compared);
    assert!(
        text.contains("[crossed: share tolerance 5.0 points and alpha 0.001]"),
        "{text}"
    );
}

#[test]
fn a_significant_share_change_within_the_tolerance_is_not_a_difference() {
    // 100,000 requests: a 2-point move is highly significant but smaller than 5 points.
    let tilted = phase(
        "weights",
        &records(
            &[
                ("cluster1", "bar-0", 27_000),
                ("cluster2", "bar-0", 25_000),
                ("cluster2", "bar-1", 25_000),
                ("cluster2", "bar-2", 23_000),
            ],
            Connections::PerRequest,
            2_000,
        ),
        &skew_pods(),
    );
    let compared = compare(
        &report("skew", vec![even_split("weights", 25_000)]),
        &report("skew", vec![tilted]),
    );
    let pods = compared.phases[0].pod_shares.as_ref().unwrap();
    assert!(pods.test.p_value < 1e-10, "{:?}", pods.test);
    assert!(!pods.flagged);
    assert!(!compared.differs, "{:#?}", compared.differences);
}

#[test]
fn a_large_share_change_over_few_samples_is_not_significant() {
    let few = phase(
        "weights",
        &records(
            &[
                ("cluster1", "bar-0", 4),
                ("cluster2", "bar-0", 2),
                ("cluster2", "bar-1", 2),
            ],
            Connections::PerRequest,
            2_000,
        ),
        &skew_pods(),
    );
    let compared = compare(
        &report("skew", vec![even_split("weights", 2)]),
        &report("skew", vec![few]),
    );
    let pods = compared.phases[0].pod_shares.as_ref().unwrap();
    assert!(pods.cells.iter().any(|cell| cell.beyond_tolerance));
    assert!(pods.test.p_value > 0.001, "{:?}", pods.test);
    assert!(!compared.differs, "{:#?}", compared.differences);
}

#[test]
fn pooled_requests_are_tested_by_connections_so_where_three_connections_landed_is_no_difference() {
    // skew.yaml's pooled phase: 600 requests on 3 connections; which pod missed out is chance.
    let pooled = |idle: &str| {
        let counts: Vec<(&str, &str, u64)> = [
            ("cluster1", "bar-0"),
            ("cluster2", "bar-0"),
            ("cluster2", "bar-1"),
            ("cluster2", "bar-2"),
        ]
        .into_iter()
        .filter(|(_, pod)| *pod != idle)
        .map(|(cluster, pod)| (cluster, pod, 200))
        .collect();
        phase("pooled", &records(&counts, Connections::OnePerPod, 2_000), &skew_pods())
    };
    let compared = compare(
        &report("skew", vec![pooled("bar-2")]),
        &report("skew", vec![pooled("bar-1")]),
    );
    let pods = compared.phases[0].pod_shares.as_ref().unwrap();
    assert_eq!(pods.unit, "connections");
    assert!(
        pods.unit_reason.contains("600 requests on 3 connections"),
        "{}",
        pods.unit_reason
    );
    assert!(!pods.flagged, "{pods:?}");
    assert!(!compared.differs, "{:#?}", compared.differences);
}

#[test]
fn pods_with_other_names_are_compared_per_cluster() {
    let renamed: Vec<ExpectedPod> = skew_pods()
        .into_iter()
        .map(|mut pod| {
            pod.pod = format!("{}-7f9c", pod.pod);
            pod
        })
        .collect();
    let b_phase = phase(
        "weights",
        &records(
            &[
                ("cluster1", "bar-0-7f9c", 600),
                ("cluster2", "bar-0-7f9c", 200),
                ("cluster2", "bar-1-7f9c", 200),
                ("cluster2", "bar-2-7f9c", 200),
            ],
            Connections::PerRequest,
            2_000,
        ),
        &renamed,
    );
    let compared = compare(
        &report("skew", vec![even_split("weights", 300)]),
        &report("skew", vec![b_phase]),
    );
    let phase = &compared.phases[0];
    assert!(phase.pod_shares.is_none());
    assert!(phase.pod_match.starts_with("by cluster only"), "{}", phase.pod_match);
    assert!(phase.pod_match.contains("cluster1/bar-0-7f9c"), "{}", phase.pod_match);
    let clusters = phase.cluster_shares.as_ref().unwrap();
    assert!(clusters.flagged, "25% -> 50% local: {clusters:?}");
    assert!(
        compared
            .differences
            .iter()
            .any(|difference| difference.subject == "cluster shares by requests")
    );
}

#[test]
fn a_phase_in_one_report_only_is_a_named_difference() {
    let a = report("skew", vec![even_split("weights", 100), even_split("extra", 100)]);
    let b = report("skew", vec![even_split("weights", 100), even_split("later", 100)]);
    let compared = compare(&a, &b);
    let presences: Vec<(&str, Presence)> = compared
        .phases
        .iter()
        .map(|phase| (phase.name.as_str(), phase.presence))
        .collect();
    assert_eq!(
        presences,
        [
            ("weights", Presence::Both),
            ("extra", Presence::OnlyInA),
            ("later", Presence::OnlyInB)
        ]
    );
    let details: Vec<&str> = compared.differences.iter().map(|d| d.detail.as_str()).collect();
    assert_eq!(details, ["phase extra ran in A only", "phase later ran in B only"]);
}

#[test]
fn an_expectation_whose_verdict_changed_is_flagged_with_both_observations() {
    let a = report("skew", vec![even_split("weights", 100)]);
    let mut b = a.clone();
    b.phases[0].expectations[0].passed = false;
    b.phases[0].expectations[0].observed = crate::verdict::Value::Number(0.9);
    let compared = compare(&a, &b);
    let difference = &compared.differences[0];
    assert_eq!(difference.subject, "expectation mtls_rate >=");
    assert_eq!(difference.threshold, "any change of verdict");
    assert!(
        difference
            .detail
            .contains("A: PASS 1.000 (observed 1.000); B: FAIL 1.000 (observed 0.900)"),
        "{difference:?}"
    );
}

#[test]
fn rates_latency_and_counters_are_flagged_only_beyond_their_thresholds() {
    let base = on_kind(report("skew", vec![even_split("weights", 100)]));
    let mut b = base.clone();
    let measurement = &mut b.phases[0].measurement;
    measurement.success_rate = 0.995; // within the 0.01 rate tolerance
    measurement.mtls_rate = 0.95; // beyond it
    let latency = measurement.latency.as_mut().unwrap();
    latency.p50_us = 3_900; // 2 ms -> 3.9 ms: under twice as slow
    latency.p90_us = 9_000; // 4.5x, but only 7 ms more: beyond the 5 ms floor
    latency.p99_us = 6_500; // 3.25x but 4.5 ms more: under the floor
    b.phases[0].tls_failures.fail_verify_no_cert = 40; // 40 of 400 requests: 0.1 per request
    b.phases[0].tls_failures.connection_error = 2; // 0.005 per request: within
    let compared = compare(&base, &b);
    let subjects: Vec<(&str, &str)> = compared
        .differences
        .iter()
        .map(|difference| (difference.subject.as_str(), difference.threshold.as_str()))
        .collect();
    assert_eq!(
        subjects,
        [
            ("mtls_rate", "rate tolerance 0.010"),
            (
                "latency p90",
                "latency tolerance 100% (one run over 2.0x the other) and floor 5.00ms"
            ),
            ("tls_failures.fail_verify_no_cert", "rate tolerance 0.010 per request"),
        ]
    );
}

#[test]
fn a_counter_one_provider_cannot_count_is_not_compared() {
    let a = report("skew", vec![even_split("weights", 100)]);
    let mut b = a.clone();
    b.phases[0].gateway_hops = None;
    let compared = compare(&a, &b);
    assert!(!compared.differs);
    let hops = compared.phases[0]
        .counters
        .iter()
        .find(|counter| counter.name == "gateway_hops")
        .unwrap();
    assert_eq!((hops.a, hops.b, hops.flagged), (Some(0), None, false));
}

#[test]
fn a_config_rejection_in_one_run_only_is_a_difference() {
    let a = report("gateway-loop", vec![even_split("loop", 50)]);
    let mut b = a.clone();
    b.phases[0].config_rejections = vec!["cluster1 gateway: listener 0.0.0.0_15443 rejected".into()];
    let compared = compare(&a, &b);
    assert_eq!(
        compared.phases[0].config_rejections.only_in_b,
        ["cluster1 gateway: listener 0.0.0.0_15443 rejected"]
    );
    assert_eq!(compared.differences.len(), 1);
}

#[test]
fn reports_of_different_scenarios_or_schemas_cannot_be_compared() {
    let seed = report("seed", vec![even_split("weights", 10)]);
    let skew = report("skew", vec![even_split("weights", 10)]);
    let error = diff(&seed, "a.json", &skew, "b.json", &Thresholds::default()).unwrap_err();
    assert!(matches!(error, Incomparable::ScenarioMismatch { .. }));
    assert!(
        error.to_string().contains("\"seed\" in a.json, \"skew\" in b.json"),
        "{error}"
    );

    let mut future = seed.clone();
    future.schema = "meshfed.report/v99".into();
    let error = diff(&seed, "a.json", &future, "b.json", &Thresholds::default()).unwrap_err();
    assert!(matches!(error, Incomparable::SchemaMismatch { .. }), "{error}");
    let error = diff(&future, "a.json", &future, "b.json", &Thresholds::default()).unwrap_err();
    assert!(matches!(error, Incomparable::UnsupportedSchema { .. }), "{error}");
}

#[test]
fn provider_and_setting_changes_are_context_not_differences() {
    let a = report("skew", vec![even_split("weights", 100)]);
    let mut b = a.clone();
    b.provider.name = "kind".into();
    b.provider.proxy = "istio 1.30.0".into();
    b.phases[0].endpoint_weights = "equal".into();
    let compared = compare(&a, &b);
    assert!(!compared.differs);
    let fields: Vec<&str> = compared.context.iter().map(|change| change.field.as_str()).collect();
    assert_eq!(fields, ["provider", "proxy"]);
    assert_eq!(compared.phases[0].settings[0].field, "endpoint_weights");
    assert!(summary(&compared).contains("settings differ: endpoint_weights ready-pods -> equal"));
}

#[test]
fn the_json_form_round_trips_and_names_its_schema() {
    let a = report("skew", vec![even_split("weights", 100)]);
    let compared = compare(&a, &a.clone());
    let json = serde_json::to_value(&compared).unwrap();
    assert_eq!(json["schema"], DIFF_SCHEMA);
    assert_eq!(json["differs"], false);
    let back: ReportDiff = serde_json::from_value(json).unwrap();
    assert_eq!(back, compared);
}

/// 300 requests to each of cluster1/bar-0 and cluster2/bar-0, each on its own server-side
/// connection, under the new-connection-per-request policy.
fn one_connection_per_request_on_two_pods() -> Records {
    records(
        &[("cluster1", "bar-0", 300), ("cluster2", "bar-0", 300)],
        Connections::PerRequest,
        2_000,
    )
}

#[test]
fn a_new_connection_per_request_counts_requests_even_where_source_ports_were_reused() {
    // CI saw 600 requests of a new-connection-per-request phase on 593 distinct server-side
    // ip:port (ephemeral ports reused): still one connection per request, so requests are counted.
    let mut per_request = one_connection_per_request_on_two_pods();
    for record in per_request.records.iter_mut().take(8) {
        record.server_connection = Some("10.0.0.1:40000".into());
    }
    let expected = &skew_pods()[..2];
    let a = report("skew", vec![phase("p", &per_request, expected)]);
    let compared = compare(&a, &a.clone());
    let pods = compared.phases[0].pod_shares.as_ref().unwrap();
    assert_eq!(pods.unit, "requests", "{}", pods.unit_reason);
    assert!(
        pods.unit_reason
            .contains("600 requests on 593 distinct server-side ip:port in A"),
        "{}",
        pods.unit_reason
    );
}

#[test]
fn in_a_pooled_phase_a_few_coincident_connections_still_count_as_requests_but_a_tenth_is_pooling() {
    // Records with one connection per request under the pooled policy: the records decide.
    let mut pooled = one_connection_per_request_on_two_pods();
    pooled.connections = Connections::OnePerPod;
    pooled.records[1].server_connection = pooled.records[0].server_connection.clone();
    let expected = &skew_pods()[..2];
    let a = report("skew", vec![phase("p", &pooled, expected)]);
    let compared = compare(&a, &a.clone());
    assert_eq!(compared.phases[0].pod_shares.as_ref().unwrap().unit, "requests");
    // A tenth of them sharing is pooling: tested by connections.
    for record in pooled.records.iter_mut().take(60) {
        record.server_connection = Some("10.0.0.1:1".into());
    }
    let b = report("skew", vec![phase("p", &pooled, expected)]);
    let compared = compare(&a, &b);
    assert_eq!(compared.phases[0].pod_shares.as_ref().unwrap().unit, "connections");
}

#[test]
fn a_percentile_with_fewer_than_ten_requests_beyond_it_is_shown_but_not_judged() {
    // 400 requests: 4 lie beyond p99, so a fivefold p99 is two slow requests, not a difference.
    let base = on_kind(report("seed", vec![even_split("http", 100)]));
    let mut b = base.clone();
    b.phases[0].measurement.latency.as_mut().unwrap().p99_us = 10_100;
    let compared = compare(&base, &b);
    let p99 = &compared.phases[0].latency[2];
    assert_eq!((p99.judged, p99.flagged), (false, false), "{p99:?}");
    assert!(compared.phases[0].latency[1].judged, "40 requests lie beyond p90");
    assert!(summary(&compared).contains("p99 2.00ms -> 10.10ms (+405%) (too few samples to judge)"));
    // 1,000 requests: 10 beyond p99, judged, and the same change is a difference.
    let base = on_kind(report("seed", vec![even_split("http", 250)]));
    let mut b = base.clone();
    b.phases[0].measurement.latency.as_mut().unwrap().p99_us = 10_100;
    let compared = compare(&base, &b);
    assert!(compared.phases[0].latency[2].flagged);
    assert_eq!(compared.differences[0].subject, "latency p99");
}

#[test]
fn latency_of_an_emulation_is_shown_but_judged_only_when_asked() {
    // On `local` latency is this machine's load: identical runs measured p90 2.5 ms then 8.2 ms.
    let base = report("seed", vec![even_split("http", 250)]);
    let mut slower = base.clone();
    let latency = slower.phases[0].measurement.latency.as_mut().unwrap();
    latency.p50_us = 20_000;
    latency.p90_us = 30_000;
    let compared = compare(&base, &slower);
    assert!(!compared.latency_judged);
    assert!(!compared.differs, "{:#?}", compared.differences);
    assert!(summary(&compared).contains("latency: shown, not judged"));
    let thresholds = Thresholds {
        judge_emulated_latency: true,
        ..Thresholds::default()
    };
    let judged = diff(&base, "a", &slower, "b", &thresholds).unwrap();
    let subjects: Vec<&str> = judged.differences.iter().map(|d| d.subject.as_str()).collect();
    assert_eq!(subjects, ["latency p50", "latency p90"]);
}
