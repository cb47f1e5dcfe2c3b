//! Expectations judged against a phase's measurements (pure). Every expectation the scenario sets
//! is evaluated and reported with its observed value, its bound and what was involved.
//!
//! A bound over nothing never holds: when no request was answered, every expectation fails and says
//! so ("no request was answered: 0 of 400"), except `successRateAtMost`, whose point is that
//! requests fail. A skew bound also fails when its unit (requests or connections) has no samples or
//! when no pod was expected to answer (a service with no pods), and `serverTlsFailuresAtLeast`,
//! whose samples are the servers' rejection counters, fails when they counted nothing.

use serde::{Deserialize, Serialize};

use crate::measure::timeline::{Bucket, Recovery, Timeline};
use crate::measure::{self, PhaseMeasurement, Skew};
use crate::provider::TlsFailures;
use crate::record::RequestRecord;
use crate::scenario::{Expectations, SkewBasis};

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

/// Judges every expectation set for a phase.
pub fn verdicts(expect: &Expectations, measurement: &PhaseMeasurement, tls: &TlsFailures) -> Vec<ExpectationResult> {
    let nothing = nothing_answered(measurement);
    let mut results = Vec::new();
    if let Some(bound) = &expect.mtls_rate_at_least {
        results.push(unless_empty(
            at_least(
                "mtlsRateAtLeast".to_owned(),
                "mtls_rate",
                measurement.mtls_rate,
                bound.value,
                mtls_detail(measurement),
            ),
            nothing.as_deref(),
        ));
    }
    if let Some(bound) = &expect.mtls_rate_at_most {
        // Plain text must still have been answered: an empty phase proves nothing about it.
        results.push(unless_empty(
            at_most(
                "mtlsRateAtMost".to_owned(),
                "mtls_rate",
                measurement.mtls_rate,
                bound.value,
                mtls_detail(measurement),
            ),
            nothing.as_deref(),
        ));
    }
    if let Some(bound) = &expect.success_rate_at_least {
        results.push(unless_empty(
            at_least(
                "successRateAtLeast".to_owned(),
                "success_rate",
                measurement.success_rate,
                bound.value,
                errors_detail(measurement),
            ),
            nothing.as_deref(),
        ));
    }
    if let Some(bound) = &expect.success_rate_at_most {
        // Failing requests are the point of this bound; only a phase that sent nothing is empty.
        let nothing_sent = (measurement.attempted == 0).then_some("no request was sent");
        results.push(unless_empty(
            at_most(
                "successRateAtMost".to_owned(),
                "success_rate",
                measurement.success_rate,
                bound.value,
                errors_detail(measurement),
            ),
            nothing_sent,
        ));
    }
    let (skew, basis) = match expect.skew_by {
        SkewBasis::Requests => (&measurement.request_skew, "requests"),
        SkewBasis::Connections => (&measurement.connection_skew, "connections"),
    };
    let skew_empty = nothing.clone().or_else(|| empty_skew(measurement, skew, basis));
    if let Some(bound) = &expect.max_skew_ratio_at_most {
        results.push(unless_empty(
            at_most(
                "maxSkewRatioAtMost".to_owned(),
                &format!("max_skew_ratio by {basis}"),
                skew.max_ratio,
                bound.value,
                skew_detail(measurement, skew, basis),
            ),
            skew_empty.as_deref(),
        ));
    }
    if let Some(bound) = &expect.max_skew_ratio_at_least {
        results.push(unless_empty(
            at_least(
                "maxSkewRatioAtLeast".to_owned(),
                &format!("max_skew_ratio by {basis}"),
                skew.max_ratio,
                bound.value,
                skew_detail(measurement, skew, basis),
            ),
            skew_empty.as_deref(),
        ));
    }
    if let Some(clusters) = &expect.clusters_reached {
        let missing: Vec<&str> = clusters
            .value
            .iter()
            .filter(|cluster| !measurement.clusters_reached.contains(cluster))
            .map(String::as_str)
            .collect();
        let result = ExpectationResult {
            key: "clustersReached".to_owned(),
            expectation: "clusters_reached includes".to_owned(),
            unit: Unit::Clusters,
            observed: Value::clusters(&measurement.clusters_reached),
            bound: Value::clusters(&clusters.value),
            passed: missing.is_empty(),
            detail: if missing.is_empty() {
                String::new()
            } else {
                format!("never answered: {}", missing.join(", "))
            },
        };
        results.push(unless_empty(result, nothing.as_deref()));
    }
    if let Some(bound) = &expect.server_tls_failures_at_least {
        let observed = tls.client_cert_rejections();
        let result = ExpectationResult {
            key: "serverTlsFailuresAtLeast".to_owned(),
            expectation: "server_tls_failures >=".to_owned(),
            unit: Unit::Count,
            observed: Value::count(observed),
            bound: Value::count(bound.value),
            passed: observed >= bound.value,
            detail: format!(
                "fail_verify_error {}, fail_verify_no_cert {}, gateway no_filter_chain_match {}",
                tls.fail_verify_error, tls.fail_verify_no_cert, tls.gateway_no_filter_chain_match
            ),
        };
        let none_counted = (observed == 0).then_some("the servers counted no rejected client certificate");
        results.push(unless_empty(result, none_counted));
    }
    results
}

/// Judges the phase's change expectations (windows, every bucket, recovery, convergence, calls
/// after a cluster left) on its records and timeline. A bound evaluated over zero samples fails
/// (a window where no request started, a recovery with no traffic after the action, no new pod
/// that answered, no reply after a cluster left). Every failure names the phase, the window or
/// bucket (ms range), the observed value and the bound.
pub fn change_verdicts(
    phase: &str,
    expect: &Expectations,
    records: &[RequestRecord],
    timeline: &Timeline,
    expected_identity: &str,
) -> Vec<ExpectationResult> {
    let mut results = Vec::new();
    for (index, window) in expect.windows.iter().enumerate() {
        let key = |name: &str| format!("windows[{index}].{name}");
        let window = &window.value;
        let (from, to) = (window.from_millis.value, window.to_millis.value);
        let range = format!("[{from}, {to}) ms");
        let tally = measure::timeline::window(records, &timeline.actions, from, to, expected_identity);
        let empty = (tally.requests == 0).then(|| format!("phase {phase}: no request counted in window {range}"));
        let mut judge = |mut result: ExpectationResult| {
            if !result.passed && empty.is_none() {
                result.detail = format!("phase {phase}, window {range}: {}", result.detail)
                    .trim_end_matches(": ")
                    .to_owned();
            }
            results.push(unless_empty(result, empty.as_deref()));
        };
        if let Some(bound) = &window.success_rate_at_least {
            judge(at_least(
                key("successRateAtLeast"),
                &format!("window {range} success_rate"),
                tally.success_rate(),
                bound.value,
                format!("{} of {} succeeded", tally.succeeded, tally.requests),
            ));
        }
        if let Some(bound) = &window.failed_calls_at_most {
            judge(ExpectationResult {
                key: key("failedCallsAtMost"),
                expectation: format!("window {range} failed_calls <="),
                unit: Unit::Count,
                observed: Value::count(tally.failed()),
                bound: Value::count(bound.value),
                passed: tally.failed() <= bound.value,
                detail: format!("{} of {} failed", tally.failed(), tally.requests),
            });
        }
        if let Some(bound) = &window.mtls_rate_at_least {
            judge(at_least(
                key("mtlsRateAtLeast"),
                &format!("window {range} mtls_rate"),
                tally.mtls_rate(),
                bound.value,
                format!("{} of {} verified over mTLS", tally.mtls, tally.requests),
            ));
        }
        if let Some(clusters) = &window.clusters_reached {
            let reached: Vec<&str> = tally.per_cluster.keys().map(String::as_str).collect();
            let missing: Vec<&str> = clusters
                .value
                .iter()
                .filter(|cluster| !tally.per_cluster.contains_key(*cluster))
                .map(String::as_str)
                .collect();
            judge(ExpectationResult {
                key: key("clustersReached"),
                expectation: format!("window {range} clusters_reached includes"),
                unit: Unit::Clusters,
                observed: Value::clusters(&reached),
                bound: Value::clusters(&clusters.value),
                passed: missing.is_empty(),
                detail: if missing.is_empty() {
                    String::new()
                } else {
                    format!("never answered: {}", missing.join(", "))
                },
            });
        }
        if let Some(calls) = &window.calls_to_cluster_at_most {
            let observed = tally.per_cluster.get(&calls.value.cluster).copied().unwrap_or(0);
            judge(ExpectationResult {
                key: key("callsToClusterAtMost"),
                expectation: format!("window {range} calls answered by {} <=", calls.value.cluster),
                unit: Unit::Count,
                observed: Value::count(observed),
                bound: Value::count(calls.value.calls),
                passed: observed <= calls.value.calls,
                detail: format!("{observed} of {} requests", tally.requests),
            });
        }
    }
    if let Some(bounds) = &expect.every_bucket {
        let width = timeline.bucket_ms;
        let rates: [(&str, &str, Option<f64>, BucketRate); 2] = [
            (
                "success_rate",
                "everyBucket.successRateAtLeast",
                bounds.value.success_rate_at_least.as_ref().map(|bound| bound.value),
                Bucket::success_rate,
            ),
            (
                "mtls_rate",
                "everyBucket.mtlsRateAtLeast",
                bounds.value.mtls_rate_at_least.as_ref().map(|bound| bound.value),
                Bucket::mtls_rate,
            ),
        ];
        for (what, key, bound, rate_of) in rates {
            let Some(bound) = bound else { continue };
            let worst = timeline
                .buckets
                .iter()
                .min_by(|left, right| rate_of(left).total_cmp(&rate_of(right)));
            let below: Vec<&Bucket> = timeline
                .buckets
                .iter()
                .filter(|bucket| rate_of(bucket) < bound)
                .collect();
            let result = match worst {
                None => unless_empty(
                    at_least(
                        key.to_owned(),
                        &format!("every bucket {what}"),
                        0.0,
                        bound,
                        String::new(),
                    ),
                    Some(&format!("phase {phase}: no bucket holds a request")),
                ),
                Some(worst) => {
                    let range = |bucket: &Bucket| format!("[{}, {}) ms", bucket.start_ms, bucket.start_ms + width);
                    let shown: Vec<String> = below
                        .iter()
                        .take(5)
                        .map(|bucket| format!("{} {:.3}", range(bucket), rate_of(bucket)))
                        .collect();
                    ExpectationResult {
                        key: key.to_owned(),
                        expectation: format!("every bucket {what} >="),
                        unit: Unit::Ratio,
                        observed: Value::Number(rate_of(worst)),
                        bound: Value::Number(bound),
                        passed: below.is_empty(),
                        detail: if below.is_empty() {
                            format!("lowest in bucket {}", range(worst))
                        } else {
                            format!(
                                "phase {phase}: {} of {} buckets below: {}{}; lowest in bucket {}",
                                below.len(),
                                timeline.buckets.len(),
                                shown.join(", "),
                                if below.len() > shown.len() { ", ..." } else { "" },
                                range(worst)
                            )
                        },
                    }
                }
            };
            results.push(result);
        }
    }
    if let Some(recovery) = &expect.recovery {
        let recovery = &recovery.value;
        let after = &recovery.after.value;
        let rate = recovery.success_rate_at_least.value;
        let within = recovery.within_millis.value;
        let expectation = format!("recovery after {after} to success_rate {rate} within ms <=");
        let completed = timeline
            .actions
            .iter()
            .find(|action| &action.name == after)
            .map(|action| action.completed_ms);
        let result = match (measure::timeline::recovery(timeline, after, rate), completed) {
            (Some(Recovery::Recovered { at_ms, after_ms }), Some(completed)) => ExpectationResult {
                key: "recovery".to_owned(),
                expectation,
                unit: Unit::Ms,
                observed: Value::count(after_ms),
                bound: Value::count(within),
                passed: after_ms <= within,
                detail: format!(
                    "phase {phase}: {after} completed at {completed} ms; success stayed at or above {rate} from bucket [{at_ms}, {}) ms on",
                    at_ms + timeline.bucket_ms
                ),
            },
            (Some(Recovery::Never { best }), Some(completed)) => ExpectationResult {
                key: "recovery".to_owned(),
                expectation,
                unit: Unit::Ms,
                observed: Value::Nothing,
                bound: Value::count(within),
                passed: false,
                detail: format!(
                    "phase {phase}: after {after} completed at {completed} ms success never stayed at or above {rate} (best bucket {best:.3})"
                ),
            },
            (Some(Recovery::NoTraffic), Some(completed)) => over_nothing(
                "recovery",
                expectation,
                Unit::Ms,
                within,
                &format!("phase {phase}: no request started after {after} completed at {completed} ms"),
            ),
            _ => over_nothing(
                "recovery",
                expectation,
                Unit::Ms,
                within,
                &format!("phase {phase}: action {after} was not taken"),
            ),
        };
        results.push(result);
    }
    if let Some(bound) = &expect.convergence_millis_at_most {
        let convergences = measure::timeline::convergences(timeline, records);
        if convergences.is_empty() {
            results.push(over_nothing(
                "convergenceMillisAtMost",
                "convergence ms <=".to_owned(),
                Unit::Ms,
                bound.value,
                &format!("phase {phase}: no action brought new ready pods"),
            ));
        }
        for convergence in convergences {
            let expectation = format!("convergence after {} ms <=", convergence.action);
            results.push(match convergence.millis {
                Some(millis) => ExpectationResult {
                    key: "convergenceMillisAtMost".to_owned(),
                    expectation,
                    unit: Unit::Ms,
                    observed: Value::count(millis),
                    bound: Value::count(bound.value),
                    passed: millis <= bound.value,
                    detail: format!(
                        "phase {phase}: first request answered by one of {} new pods started {millis} ms after {} completed",
                        convergence.new_pods, convergence.action
                    ),
                },
                None => over_nothing(
                    "convergenceMillisAtMost",
                    expectation,
                    Unit::Ms,
                    bound.value,
                    &format!(
                        "phase {phase}: none of the {} new pods of {} answered a request",
                        convergence.new_pods, convergence.action
                    ),
                ),
            });
        }
    }
    if let Some(bound) = &expect.calls_after_leave_at_most {
        let leaves = measure::timeline::calls_after_leave(timeline, records);
        if leaves.is_empty() {
            results.push(over_nothing(
                "callsAfterLeaveAtMost",
                "calls after leave <=".to_owned(),
                Unit::Count,
                bound.value,
                &format!("phase {phase}: no leaveCluster action was taken"),
            ));
        }
        for leave in leaves {
            let result = ExpectationResult {
                key: "callsAfterLeaveAtMost".to_owned(),
                expectation: format!("calls answered by {} after {} <=", leave.cluster, leave.action),
                unit: Unit::Count,
                observed: Value::count(leave.from_cluster),
                bound: Value::count(bound.value),
                passed: leave.from_cluster <= bound.value,
                detail: format!(
                    "phase {phase}: {} of {} requests started from {} ms on (the federation without {} applied) were answered by {}",
                    leave.from_cluster, leave.requests_after, leave.from_ms, leave.cluster, leave.cluster
                ),
            };
            let empty = (leave.requests_after == 0).then(|| {
                format!(
                    "phase {phase}: no request started from {} ms on (after {})",
                    leave.from_ms, leave.action
                )
            });
            results.push(unless_empty(result, empty.as_deref()));
        }
    }
    results
}

/// One of a bucket's rates.
type BucketRate = fn(&Bucket) -> f64;

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

/// Why a skew over `basis` has nothing to judge although requests were answered: no sample of
/// that unit, or no pod expected to answer (so every ratio is over nothing).
fn empty_skew(measurement: &PhaseMeasurement, skew: &Skew, basis: &str) -> Option<String> {
    if skew.samples == 0 {
        return Some(match basis {
            "connections" => format!(
                "no server-side connection was recorded ({} of {} requests answered)",
                measurement.answered, measurement.attempted
            ),
            _ => format!("no request was answered: 0 of {}", measurement.attempted),
        });
    }
    if skew.max_ratio_at.is_none() {
        return Some(format!(
            "no pod was expected to answer (the target service has no ready pod), so there is no split to judge; {} {basis} went to unexpected responders",
            skew.unexpected_samples
        ));
    }
    None
}

/// A timed action as the phase planned it: its label (`name`, or `<kind>@<atMillis>ms`) and
/// `atMillis`.
pub struct PlannedAction {
    /// The action's label.
    pub label: String,
    /// When it was planned, in ms from the start of the traffic.
    pub at_ms: u64,
}

/// One failed result per planned action that was not taken: the engine takes actions in order
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

/// A bound with nothing to judge it on: failed, observing nothing, saying why.
fn over_nothing(key: &str, expectation: String, unit: Unit, bound: u64, why: &str) -> ExpectationResult {
    unless_empty(
        ExpectationResult {
            key: key.to_owned(),
            expectation,
            unit,
            observed: Value::Nothing,
            bound: Value::count(bound),
            passed: false,
            detail: String::new(),
        },
        Some(why),
    )
}

/// `result`, or a failure saying why, when the bound was evaluated over nothing.
fn unless_empty(mut result: ExpectationResult, empty: Option<&str>) -> ExpectationResult {
    if let Some(why) = empty {
        result.passed = false;
        result.detail = if result.detail.is_empty() {
            format!("{why}; a bound over nothing cannot hold")
        } else {
            format!("{why}; a bound over nothing cannot hold; {}", result.detail)
        };
    }
    result
}

fn at_least(key: String, what: &str, observed: f64, bound: f64, detail: String) -> ExpectationResult {
    compared(key, format!("{what} >="), observed, bound, observed >= bound, detail)
}

fn at_most(key: String, what: &str, observed: f64, bound: f64, detail: String) -> ExpectationResult {
    compared(key, format!("{what} <="), observed, bound, observed <= bound, detail)
}

fn compared(
    key: String,
    expectation: String,
    observed: f64,
    bound: f64,
    passed: bool,
    detail: String,
) -> ExpectationResult {
    ExpectationResult {
        key,
        expectation,
        unit: Unit::Ratio,
        observed: Value::Number(observed),
        bound: Value::Number(bound),
        passed,
        detail,
    }
}

fn mtls_detail(measurement: &PhaseMeasurement) -> String {
    let mut parts = vec![format!(
        "{} of {} verified",
        measurement.mtls_verified, measurement.attempted
    )];
    for identity in &measurement.unverified_identities {
        parts.push(format!(
            "{} seen as {}",
            identity.count,
            identity.identity.as_deref().unwrap_or("no identity")
        ));
    }
    parts.extend(
        measurement
            .errors
            .iter()
            .map(|error| format!("{} x {}", error.count, error.message)),
    );
    parts.join("; ")
}

fn errors_detail(measurement: &PhaseMeasurement) -> String {
    let mut parts = vec![format!(
        "{} of {} succeeded",
        measurement.succeeded, measurement.attempted
    )];
    parts.extend(
        measurement
            .errors
            .iter()
            .map(|error| format!("{} x {}", error.count, error.message)),
    );
    parts.join("; ")
}

fn skew_detail(measurement: &PhaseMeasurement, skew: &Skew, basis: &str) -> String {
    let mut parts = Vec::new();
    if let Some(at) = &skew.max_ratio_at {
        parts.push(format!("largest at {at}"));
    }
    let shares: Vec<String> = measurement
        .pods
        .iter()
        .map(|pod| {
            let observed = if basis == "connections" {
                pod.connection_share
            } else {
                pod.request_share
            };
            format!(
                "{}/{} {:.1}% (expected {:.1}%)",
                pod.cluster,
                pod.pod,
                observed * 100.0,
                pod.expected_share * 100.0
            )
        })
        .collect();
    if !shares.is_empty() {
        parts.push(shares.join(", "));
    }
    parts.push(format!(
        "tvd {:.3}, chi-square p {:.2e}",
        skew.total_variation_distance, skew.p_value
    ));
    if let (true, Some(note)) = (measurement.connection_limited, &measurement.connection_note) {
        parts.push(note.clone());
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::{ExpectedPod, measure};
    use crate::record::RequestRecord;

    const FOO: &str = "spiffe://cluster.local/ns/ns1/sa/foo";

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

    fn unanswered(seq: u64) -> RequestRecord {
        RequestRecord {
            started_us: 0,
            seq,
            target: "10.96.0.10:80".into(),
            status: None,
            error: Some("connection refused".into()),
            pod: None,
            cluster: None,
            peer_identity: None,
            latency_us: 100,
            connection: seq,
            server_connection: None,
        }
    }

    fn answered(seq: u64, pod: &str) -> RequestRecord {
        RequestRecord {
            started_us: 0,
            seq,
            target: "10.96.0.10:80".into(),
            status: Some(200),
            error: None,
            pod: Some(pod.into()),
            cluster: Some("cluster2".into()),
            peer_identity: Some(FOO.into()),
            latency_us: 100,
            connection: seq,
            server_connection: Some(format!("c{seq}")),
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
}
