//! Expectations judged against a phase's measurements (pure). Every expectation the scenario sets
//! is evaluated and reported with its observed value, its bound and what was involved.
//!
//! A bound over nothing never holds: when no request was answered, every expectation fails and says
//! so ("no request was answered: 0 of 400"), except `successRateAtMost`, whose point is that
//! requests fail. A skew bound also fails when its unit (requests or connections) has no samples or
//! when no pod was expected to answer (a service with no pods), and `serverTlsFailuresAtLeast`,
//! whose samples are the servers' rejection counters, fails when they counted nothing.

mod change_judges;
mod phase_judges;
mod wording;

use serde::{Deserialize, Serialize};

use crate::measure::PhaseMeasurement;
use crate::measure::timeline::Timeline;
use crate::observation::TlsFailures;
use crate::record::RequestRecord;
use crate::scenario::Expectations;
use change_judges::{CHANGE_JUDGES, ChangeEvidence};
use phase_judges::{PHASE_JUDGES, PhaseEvidence};
use wording::over_nothing;

/// One judge in a table of judges: the expectation (or bound) it owns, by its key in the
/// scenario's `expect:`, and the function giving its verdicts (whose doc says what it checks).
/// The tables differ only in what their judges look at and how many verdicts they give:
/// [`phase_judges::PhaseJudge`], [`change_judges::ChangeJudge`], [`change_judges::WindowJudge`].
struct Judge<Verdicts> {
    /// The expectation's key, which its results carry.
    key: &'static str,
    /// Its verdicts, given the key.
    judge: Verdicts,
}

/// The outcome of one expectation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpectationResult {
    /// The expectation's key as written in the scenario's `expect:` (`mtlsRateAtLeast`,
    /// `windows[0].successRateAtLeast`, `everyBucket.mtlsRateAtLeast`, `recovery`).
    pub key: String,
    /// What was expected, in words, e.g. `mtls_rate >=`.
    pub expectation: String,
    /// What `observed` and `bound` count.
    pub unit: Unit,
    /// The observed value: a number, a list of clusters, or null when nothing was observed (a
    /// recovery or convergence that never happened).
    pub observed: Value,
    /// The bound, in the same unit.
    pub bound: Value,
    /// Whether it held.
    pub passed: bool,
    /// Who/what was involved: the pods, clusters, errors or identities behind the value.
    pub detail: String,
}

/// What an expectation's `observed` and `bound` count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// A rate or a ratio (a number, rates from 0 to 1).
    Ratio,
    /// A count of requests, calls or rejections.
    Count,
    /// Milliseconds.
    Ms,
    /// A list of cluster names.
    Clusters,
}

/// An observed value or a bound in report.json: a number, a list of clusters, or null.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Value {
    /// A number.
    Number(f64),
    /// Cluster names.
    Clusters(Vec<String>),
    /// Nothing was observed (serialised as null).
    Nothing,
}

impl Value {
    fn count(count: u64) -> Value {
        Value::Number(count as f64)
    }

    fn clusters<S: AsRef<str>>(clusters: &[S]) -> Value {
        Value::Clusters(clusters.iter().map(|cluster| cluster.as_ref().to_owned()).collect())
    }
}

impl ExpectationResult {
    /// `observed` as the summary shows it (`0.950`, `12`, `[cluster2]`, `none`).
    pub fn observed_text(&self) -> String {
        show(&self.observed, self.unit)
    }

    /// `bound` as the summary shows it.
    pub fn bound_text(&self) -> String {
        show(&self.bound, self.unit)
    }
}

fn show(value: &Value, unit: Unit) -> String {
    match value {
        Value::Number(number) if unit == Unit::Ratio && number.abs() < 1e15 => format!("{number:.3}"),
        Value::Number(number) => crate::printable::number(*number),
        Value::Clusters(clusters) => format!("[{}]", clusters.join(", ")),
        Value::Nothing => "none".to_owned(),
    }
}

/// Judges every expectation set for a phase, in the order of [`phase_judges::PHASE_JUDGES`].
pub fn verdicts(expect: &Expectations, measurement: &PhaseMeasurement, tls: &TlsFailures) -> Vec<ExpectationResult> {
    let evidence = PhaseEvidence::new(expect, measurement, tls);
    PHASE_JUDGES
        .iter()
        .filter_map(|judge| (judge.judge)(&evidence, judge.key))
        .collect()
}

/// Judges the phase's change expectations (windows, every bucket, recovery, convergence, calls
/// after a cluster left) on its records and timeline, in the order of
/// [`change_judges::CHANGE_JUDGES`]. A bound evaluated over zero samples fails (a window where no
/// request started, a recovery with no traffic after the action, no new pod that answered, no
/// reply after a cluster left). Every failure names the phase, the window or bucket (ms range), the
/// observed value and the bound.
pub fn change_verdicts(
    phase: &str,
    expect: &Expectations,
    records: &[RequestRecord],
    timeline: &Timeline,
    expected_identity: &str,
) -> Vec<ExpectationResult> {
    let evidence = ChangeEvidence {
        phase,
        expect,
        records,
        timeline,
        expected_identity,
    };
    CHANGE_JUDGES
        .iter()
        .flat_map(|judge| (judge.judge)(&evidence, judge.key))
        .collect()
}

/// Why the phase's request figures are about nothing, when they are: nothing was sent, or nothing
/// that was sent was answered (no reply named a pod or cluster, and none succeeded).
pub fn nothing_answered(measurement: &PhaseMeasurement) -> Option<String> {
    if measurement.attempted == 0 {
        Some("no request was sent".to_owned())
    } else if measurement.answered == 0 && measurement.succeeded == 0 {
        Some(format!("no request was answered: 0 of {}", measurement.attempted))
    } else {
        None
    }
}

/// A timed action as the phase planned it: its label (`name`, or `<kind>@<atMillis>ms`) and
/// `atMillis`.
pub struct PlannedAction {
    /// The action's label.
    pub label: String,
    /// When it was planned, in ms from the start of the traffic.
    pub at_ms: u64,
}

/// One failed result per planned action that was not taken: the driver takes actions in order
/// and stops at the first whose moment the traffic did not reach, so the first `taken` of
/// `planned` were taken and the rest were not. A change the scenario asked for that never
/// happened means the phase did not test what it says, so it fails, named (an action
/// at 3500 ms of traffic whose last request started at 3000 ms was skipped and the run passed).
pub fn actions_not_taken(phase: &str, planned: &[PlannedAction], taken: usize) -> Vec<ExpectationResult> {
    planned
        .iter()
        .enumerate()
        .skip(taken)
        .map(|(index, action)| {
            over_nothing(
                &format!("actions[{index}]"),
                format!("action {} taken, planned at ms", action.label),
                Unit::Ms,
                action.at_ms,
                &format!(
                    "phase {phase}: the traffic ended before action {} at {} ms, so it was not taken and the phase did not test it",
                    action.label, action.at_ms
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::tests::FOO;
    use crate::measure::{ExpectedPod, measure};
    use crate::record::RequestRecord;

    fn expectations(yaml: &str) -> Expectations {
        serde_saphyr::from_str(yaml).unwrap()
    }

    /// Every bound kind the scenario has, each set so that the observed 0 (or empty) would
    /// satisfy it if emptiness were not checked.
    const EVERY_BOUND_SATISFIED_BY_ZEROS: &str = "
mtlsRateAtLeast: 0.0
successRateAtLeast: 0.0
maxSkewRatioAtMost: 1.5
clustersReached: []
serverTlsFailuresAtLeast: 0
";

    /// A refused request, failing after 0.1 ms.
    fn unanswered(seq: u64) -> RequestRecord {
        RequestRecord {
            latency_us: 100,
            ..crate::measure::tests::failed(seq, "connection refused")
        }
    }

    /// A request bar's `pod` in cluster2 answered on its own connection, taking 0.1 ms.
    fn answered(seq: u64, pod: &str) -> RequestRecord {
        RequestRecord {
            latency_us: 100,
            ..crate::measure::tests::answered(seq, "cluster2", pod, &format!("c{seq}"))
        }
    }

    fn bar_pods() -> Vec<ExpectedPod> {
        ["bar-0", "bar-1"]
            .map(|pod| ExpectedPod {
                pod: pod.into(),
                cluster: "cluster2".into(),
                share: 0.5,
            })
            .to_vec()
    }

    fn judged(expect: &str, records: &[RequestRecord], pods: &[ExpectedPod]) -> Vec<ExpectationResult> {
        verdicts(
            &expectations(expect),
            &measure(records, pods, FOO),
            &TlsFailures::default(),
        )
    }

    /// Every change bound, each set so that zero samples would satisfy it if emptiness were not
    /// checked: windows over no request, a recovery, convergence and calls-after-leave with no
    /// action to judge.
    const EVERY_CHANGE_BOUND_SATISFIED_BY_ZEROS: &str = "
windows:
  - { fromMillis: 5000, toMillis: 6000, successRateAtLeast: 0.0, failedCallsAtMost: 0, mtlsRateAtLeast: 0.0,
      clustersReached: [], callsToClusterAtMost: { cluster: cluster2, calls: 0 } }
everyBucket: { successRateAtLeast: 0.0 }
recovery: { after: gw-down, successRateAtLeast: 0.0, withinMillis: 100000 }
convergenceMillisAtMost: 100000
callsAfterLeaveAtMost: 100000
";

    #[test]
    fn every_change_bound_over_zero_samples_fails_naming_the_phase_and_why() {
        let records: Vec<RequestRecord> = (0..10).map(|seq| answered(seq, "bar-0")).collect();
        let timeline = crate::measure::timeline::timeline(&[], 100, FOO, Vec::new());
        let results = change_verdicts(
            "p1",
            &expectations(EVERY_CHANGE_BOUND_SATISFIED_BY_ZEROS),
            &records,
            &timeline,
            FOO,
        );
        let shown: Vec<(&str, bool, &str)> = results
            .iter()
            .map(|result| (result.expectation.as_str(), result.passed, result.detail.as_str()))
            .collect();
        assert_eq!(results.len(), 9, "{shown:#?}");
        for result in &results {
            assert!(!result.passed, "{result:?}");
            assert!(
                result.detail.starts_with("phase p1: ") && result.detail.contains("a bound over nothing cannot hold"),
                "{result:?}"
            );
        }
        assert!(
            results[0]
                .detail
                .starts_with("phase p1: no request counted in window [5000, 6000) ms"),
            "{:?}",
            results[0]
        );
        assert_eq!(
            results[6].detail,
            "phase p1: action gw-down was not taken; a bound over nothing cannot hold"
        );
    }

    /// A request still in flight when a gateway stops fails or not depending
    /// on the machine's load; it must not decide the window that ends where the stop starts.
    #[test]
    fn a_request_in_flight_when_an_action_starts_counts_at_the_action_not_in_the_window_before_it() {
        let mut records: Vec<RequestRecord> = (0..99)
            .map(|seq| RequestRecord {
                started_us: seq * 10_000,
                latency_us: 2_000,
                ..answered(seq, "bar-0")
            })
            .collect();
        // Started at 995 ms, failed at 1015 ms: the gateway stopped at 1000 ms while it ran.
        records.push(RequestRecord {
            started_us: 995_000,
            latency_us: 20_000,
            ..unanswered(99)
        });
        let stop = crate::change::WorldChange::StopGateway {
            cluster: "cluster2".into(),
        };
        let gw_down = crate::measure::timeline::ActionRecord {
            name: "gw-down".into(),
            kind: stop.kind().name().into(),
            cluster: "cluster2".into(),
            at_ms: 1000,
            started_ms: 1000,
            completed_ms: 1002,
            replanned_ms: None,
            change: stop,
            events: Vec::new(),
            note: None,
        };
        let timeline = crate::measure::timeline::timeline(&records, 100, FOO, vec![gw_down]);
        let results = change_verdicts(
            "p1",
            &expectations(
                "windows:
  - { fromMillis: 0, toMillis: 1000, successRateAtLeast: 1.0 }
  - { fromMillis: 1000, toMillis: 2000, failedCallsAtMost: 0 }",
            ),
            &records,
            &timeline,
            FOO,
        );
        let shown: Vec<(&str, bool, String)> = results
            .iter()
            .map(|result| (result.key.as_str(), result.passed, result.observed_text()))
            .collect();
        assert_eq!(
            shown,
            [
                ("windows[0].successRateAtLeast", true, "1.000".to_owned()),
                ("windows[1].failedCallsAtMost", false, "1".to_owned()),
            ],
            "the straddling failure belongs to the stop: {results:#?}"
        );
    }

    #[test]
    fn every_bucket_reports_the_worst_bucket_and_lists_those_below() {
        let mut records: Vec<RequestRecord> = (0..10).map(|seq| answered(seq, "bar-0")).collect();
        for (index, record) in records.iter_mut().enumerate() {
            record.started_us = index as u64 * 50_000;
        }
        records[2] = RequestRecord {
            started_us: 100_000,
            ..unanswered(2)
        };
        let timeline = crate::measure::timeline::timeline(&records, 100, FOO, Vec::new());
        let results = change_verdicts(
            "p1",
            &expectations("everyBucket: { successRateAtLeast: 0.9, mtlsRateAtLeast: 0.5 }"),
            &records,
            &timeline,
            FOO,
        );
        assert_eq!(results[0].expectation, "every bucket success_rate >=");
        assert_eq!(results[0].key, "everyBucket.successRateAtLeast");
        assert_eq!(results[0].observed, Value::Number(0.5));
        assert_eq!(results[0].bound, Value::Number(0.9));
        assert!(!results[0].passed);
        assert_eq!(
            results[0].detail,
            "phase p1: 1 of 5 buckets below: [100, 200) ms 0.500; lowest in bucket [100, 200) ms"
        );
        assert!(results[1].passed, "{:?}", results[1]);
    }

    #[test]
    fn every_bound_over_unanswered_requests_fails_and_says_none_was_answered() {
        let records: Vec<RequestRecord> = (0..400).map(unanswered).collect();
        let results = judged(EVERY_BOUND_SATISFIED_BY_ZEROS, &records, &bar_pods());
        assert_eq!(results.len(), 5);
        for result in &results {
            assert!(!result.passed, "{result:?}");
            let reason = if result.expectation.starts_with("server_tls_failures") {
                "the servers counted no rejected client certificate"
            } else {
                "no request was answered: 0 of 400"
            };
            assert!(result.detail.starts_with(reason), "{result:?}");
            assert!(result.detail.contains("a bound over nothing cannot hold"), "{result:?}");
        }
    }

    #[test]
    fn every_bound_over_a_phase_that_sent_nothing_fails() {
        let mut yaml = EVERY_BOUND_SATISFIED_BY_ZEROS.to_owned();
        yaml.push_str("successRateAtMost: 1.0\nmaxSkewRatioAtLeast: 1.0\n");
        let results = judged(&yaml, &[], &bar_pods());
        assert_eq!(results.len(), 7);
        assert!(results.iter().all(|result| !result.passed), "{results:#?}");
        assert!(
            results
                .iter()
                .filter(|result| !result.expectation.starts_with("server_tls"))
                .all(|result| result.detail.starts_with("no request was sent")),
            "{results:#?}"
        );
    }

    #[test]
    fn skew_at_least_over_nothing_fails_too() {
        let records: Vec<RequestRecord> = (0..10).map(unanswered).collect();
        let results = judged("maxSkewRatioAtLeast: 1.0", &records, &bar_pods());
        assert!(!results[0].passed, "{results:?}");
        assert!(results[0].detail.starts_with("no request was answered: 0 of 10"));
    }

    #[test]
    fn success_rate_at_most_can_pass_when_nothing_was_answered() {
        let records: Vec<RequestRecord> = (0..20).map(unanswered).collect();
        let results = judged("successRateAtMost: 0.0", &records, &bar_pods());
        assert!(results[0].passed, "{results:?}");
        assert_eq!(results[0].observed, Value::Number(0.0));
        assert_eq!(results[0].observed_text(), "0.000");
    }

    #[test]
    fn a_skew_bound_toward_a_service_with_no_pods_fails_even_when_someone_answered() {
        // A stray responder answered, but no pod was expected: the max ratio is over nothing.
        let records: Vec<RequestRecord> = (0..20).map(|seq| answered(seq, "stray-0")).collect();
        let results = judged("maxSkewRatioAtMost: 1.5", &records, &[]);
        assert!(!results[0].passed, "{results:?}");
        assert!(
            results[0].detail.starts_with("no pod was expected to answer"),
            "{results:?}"
        );
    }

    #[test]
    fn a_connection_skew_bound_without_server_connections_fails() {
        let records: Vec<RequestRecord> = (0..20)
            .map(|seq| RequestRecord {
                server_connection: None,
                ..answered(seq, if seq % 2 == 0 { "bar-0" } else { "bar-1" })
            })
            .collect();
        let results = judged("maxSkewRatioAtMost: 1.5\nskewBy: connections", &records, &bar_pods());
        assert!(!results[0].passed, "{results:?}");
        assert!(
            results[0]
                .detail
                .starts_with("no server-side connection was recorded (20 of 20 requests answered)"),
            "{results:?}"
        );
    }

    #[test]
    fn answered_phases_are_judged_on_their_values() {
        let records: Vec<RequestRecord> = (0..20)
            .map(|seq| answered(seq, if seq % 2 == 0 { "bar-0" } else { "bar-1" }))
            .collect();
        let results = judged(
            "mtlsRateAtLeast: 1.0\nmaxSkewRatioAtMost: 1.5\nclustersReached: [cluster2]\nsuccessRateAtMost: 0.5",
            &records,
            &bar_pods(),
        );
        let passed: Vec<(String, bool)> = results
            .iter()
            .map(|result| (result.expectation.clone(), result.passed))
            .collect();
        assert_eq!(
            passed,
            [
                ("mtls_rate >=".to_owned(), true),
                ("success_rate <=".to_owned(), false),
                ("max_skew_ratio by requests <=".to_owned(), true),
                ("clusters_reached includes".to_owned(), true),
            ]
        );
    }

    /// The judge tables give the results' order and keys: a phase that sets every bound gets one
    /// result per judge, in the tables' order, under the key the scenario wrote.
    #[test]
    fn every_judge_reports_under_its_scenario_key_in_the_tables_order() {
        let every_phase_bound = "
mtlsRateAtLeast: 0.0
mtlsRateAtMost: 1.0
successRateAtLeast: 0.0
successRateAtMost: 1.0
maxSkewRatioAtMost: 1.5
maxSkewRatioAtLeast: 0.0
clustersReached: []
serverTlsFailuresAtLeast: 0
";
        let records: Vec<RequestRecord> = (0..10).map(|seq| answered(seq, "bar-0")).collect();
        let phase_keys: Vec<String> = judged(every_phase_bound, &records, &bar_pods())
            .into_iter()
            .map(|result| result.key)
            .collect();
        assert_eq!(
            phase_keys,
            [
                "mtlsRateAtLeast",
                "mtlsRateAtMost",
                "successRateAtLeast",
                "successRateAtMost",
                "maxSkewRatioAtMost",
                "maxSkewRatioAtLeast",
                "clustersReached",
                "serverTlsFailuresAtLeast",
            ]
        );
        let table: Vec<&str> = phase_judges::PHASE_JUDGES.iter().map(|judge| judge.key).collect();
        assert_eq!(phase_keys, table);

        let every_change_bound = EVERY_CHANGE_BOUND_SATISFIED_BY_ZEROS.replace(
            "everyBucket: { successRateAtLeast: 0.0 }",
            "everyBucket: { successRateAtLeast: 0.0, mtlsRateAtLeast: 0.0 }",
        );
        let timeline = crate::measure::timeline::timeline(&[], 100, FOO, Vec::new());
        let change_keys: Vec<String> =
            change_verdicts("p1", &expectations(&every_change_bound), &records, &timeline, FOO)
                .into_iter()
                .map(|result| result.key)
                .collect();
        assert_eq!(
            change_keys,
            [
                "windows[0].successRateAtLeast",
                "windows[0].failedCallsAtMost",
                "windows[0].mtlsRateAtLeast",
                "windows[0].clustersReached",
                "windows[0].callsToClusterAtMost",
                "everyBucket.successRateAtLeast",
                "everyBucket.mtlsRateAtLeast",
                "recovery",
                "convergenceMillisAtMost",
                "callsAfterLeaveAtMost",
            ]
        );
    }
}
