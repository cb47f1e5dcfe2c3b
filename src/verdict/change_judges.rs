//! The judges of a phase's change expectations (windows, every bucket, recovery, convergence, calls
//! after a cluster left): one small function per expectation, listed in [`CHANGE_JUDGES`] in the
//! order the results are reported; a window's bounds have their own table, [`WINDOW_JUDGES`].

use super::wording::{at_least, over_nothing, unless_empty};
use super::{ExpectationResult, Judge, Unit, Value};
use crate::measure::timeline::{self, Bucket, Recovery, Tally, Timeline};
use crate::record::RequestRecord;
use crate::scenario::{Expectations, WindowExpectation};

/// What every change judge looks at.
pub(super) struct ChangeEvidence<'a> {
    /// The phase's name, which failures name.
    pub(super) phase: &'a str,
    /// The phase's `expect:`.
    pub(super) expect: &'a Expectations,
    /// The phase's request records.
    pub(super) records: &'a [RequestRecord],
    /// The phase's timeline: buckets and the actions taken.
    pub(super) timeline: &'a Timeline,
    /// The identity an mTLS request must show.
    pub(super) expected_identity: &'a str,
}

/// One judge of a phase's change expectations: none when the scenario does not set the
/// expectation; one per window bound, bucket rate, convergence or leave otherwise. Its results
/// carry the key as a prefix for `windows[N].` and `everyBucket.`.
pub(super) type ChangeJudge = Judge<fn(&ChangeEvidence<'_>, &'static str) -> Vec<ExpectationResult>>;

/// Every change judge, in the order their results are reported.
pub(super) const CHANGE_JUDGES: [ChangeJudge; 5] = [
    ChangeJudge {
        key: "windows",
        judge: windows,
    },
    ChangeJudge {
        key: "everyBucket",
        judge: every_bucket,
    },
    ChangeJudge {
        key: "recovery",
        judge: recovery,
    },
    ChangeJudge {
        key: "convergenceMillisAtMost",
        judge: convergence_millis_at_most,
    },
    ChangeJudge {
        key: "callsAfterLeaveAtMost",
        judge: calls_after_leave_at_most,
    },
];

/// What a window's judges look at: its bounds, its time range and the requests started in it.
pub(super) struct WindowEvidence<'a> {
    /// The window's bounds.
    pub(super) window: &'a WindowExpectation,
    /// `[from, to) ms`.
    pub(super) range: &'a str,
    /// The requests counted in the window.
    pub(super) tally: &'a Tally,
}

/// One judge of a window: its key is the bound's inside the window (`windows[N].<key>`); its
/// verdict (given the whole key), or `None` when the window does not set the bound.
pub(super) type WindowJudge = Judge<fn(&WindowEvidence<'_>, String) -> Option<ExpectationResult>>;

/// Every window judge, in the order their results are reported.
pub(super) const WINDOW_JUDGES: [WindowJudge; 5] = [
    WindowJudge {
        key: "successRateAtLeast",
        judge: window_success_rate_at_least,
    },
    WindowJudge {
        key: "failedCallsAtMost",
        judge: window_failed_calls_at_most,
    },
    WindowJudge {
        key: "mtlsRateAtLeast",
        judge: window_mtls_rate_at_least,
    },
    WindowJudge {
        key: "clustersReached",
        judge: window_clusters_reached,
    },
    WindowJudge {
        key: "callsToClusterAtMost",
        judge: window_calls_to_cluster_at_most,
    },
];

/// `windows`: each window's bounds over the requests started in its time range.
fn windows(evidence: &ChangeEvidence<'_>, key: &'static str) -> Vec<ExpectationResult> {
    let phase = evidence.phase;
    let mut results = Vec::new();
    for (index, window) in evidence.expect.windows.iter().enumerate() {
        let window = &window.value;
        let (from, to) = (window.from_millis.value, window.to_millis.value);
        let range = format!("[{from}, {to}) ms");
        let tally = timeline::window(
            evidence.records,
            &evidence.timeline.actions,
            from,
            to,
            evidence.expected_identity,
        );
        let empty = (tally.requests == 0).then(|| format!("phase {phase}: no request counted in window {range}"));
        let window_evidence = WindowEvidence {
            window,
            range: &range,
            tally: &tally,
        };
        for window_judge in &WINDOW_JUDGES {
            let Some(mut result) =
                (window_judge.judge)(&window_evidence, format!("{key}[{index}].{}", window_judge.key))
            else {
                continue;
            };
            if !result.passed && empty.is_none() {
                result.detail = format!("phase {phase}, window {range}: {}", result.detail)
                    .trim_end_matches(": ")
                    .to_owned();
            }
            results.push(unless_empty(result, empty.as_deref()));
        }
    }
    results
}

/// `successRateAtLeast`: the share of the window's requests that succeeded is at least the bound.
fn window_success_rate_at_least(evidence: &WindowEvidence<'_>, key: String) -> Option<ExpectationResult> {
    let bound = evidence.window.success_rate_at_least.as_ref()?;
    let tally = evidence.tally;
    Some(at_least(
        key,
        &format!("window {} success_rate", evidence.range),
        tally.success_rate(),
        bound.value,
        format!("{} of {} succeeded", tally.succeeded, tally.requests),
    ))
}

/// `failedCallsAtMost`: at most this many of the window's requests failed.
fn window_failed_calls_at_most(evidence: &WindowEvidence<'_>, key: String) -> Option<ExpectationResult> {
    let bound = evidence.window.failed_calls_at_most.as_ref()?;
    let tally = evidence.tally;
    Some(ExpectationResult {
        key,
        expectation: format!("window {} failed_calls <=", evidence.range),
        unit: Unit::Count,
        observed: Value::count(tally.failed()),
        bound: Value::count(bound.value),
        passed: tally.failed() <= bound.value,
        detail: format!("{} of {} failed", tally.failed(), tally.requests),
    })
}

/// `mtlsRateAtLeast`: the share of the window's requests verified over mTLS is at least the bound.
fn window_mtls_rate_at_least(evidence: &WindowEvidence<'_>, key: String) -> Option<ExpectationResult> {
    let bound = evidence.window.mtls_rate_at_least.as_ref()?;
    let tally = evidence.tally;
    Some(at_least(
        key,
        &format!("window {} mtls_rate", evidence.range),
        tally.mtls_rate(),
        bound.value,
        format!("{} of {} verified over mTLS", tally.mtls, tally.requests),
    ))
}

/// `clustersReached`: every listed cluster answered a request of the window.
fn window_clusters_reached(evidence: &WindowEvidence<'_>, key: String) -> Option<ExpectationResult> {
    let clusters = evidence.window.clusters_reached.as_ref()?;
    let tally = evidence.tally;
    let reached: Vec<&str> = tally.per_cluster.keys().map(String::as_str).collect();
    let missing: Vec<&str> = clusters
        .value
        .iter()
        .filter(|cluster| !tally.per_cluster.contains_key(*cluster))
        .map(String::as_str)
        .collect();
    Some(ExpectationResult {
        key,
        expectation: format!("window {} clusters_reached includes", evidence.range),
        unit: Unit::Clusters,
        observed: Value::clusters(&reached),
        bound: Value::clusters(&clusters.value),
        passed: missing.is_empty(),
        detail: if missing.is_empty() {
            String::new()
        } else {
            format!("never answered: {}", missing.join(", "))
        },
    })
}

/// `callsToClusterAtMost`: the named cluster answered at most this many of the window's requests.
fn window_calls_to_cluster_at_most(evidence: &WindowEvidence<'_>, key: String) -> Option<ExpectationResult> {
    let calls = evidence.window.calls_to_cluster_at_most.as_ref()?;
    let tally = evidence.tally;
    let observed = tally.per_cluster.get(&calls.value.cluster).copied().unwrap_or(0);
    Some(ExpectationResult {
        key,
        expectation: format!("window {} calls answered by {} <=", evidence.range, calls.value.cluster),
        unit: Unit::Count,
        observed: Value::count(observed),
        bound: Value::count(calls.value.calls),
        passed: observed <= calls.value.calls,
        detail: format!("{observed} of {} requests", tally.requests),
    })
}

/// One of a bucket's rates.
type BucketRate = fn(&Bucket) -> f64;

/// `everyBucket`: the success and mTLS rates of every time bucket are at least the bounds.
fn every_bucket(evidence: &ChangeEvidence<'_>, key: &'static str) -> Vec<ExpectationResult> {
    let Some(bounds) = &evidence.expect.every_bucket else {
        return Vec::new();
    };
    let (phase, timeline) = (evidence.phase, evidence.timeline);
    let width = timeline.bucket_ms;
    let rates: [(&str, &str, Option<f64>, BucketRate); 2] = [
        (
            "success_rate",
            "successRateAtLeast",
            bounds.value.success_rate_at_least.as_ref().map(|bound| bound.value),
            Bucket::success_rate,
        ),
        (
            "mtls_rate",
            "mtlsRateAtLeast",
            bounds.value.mtls_rate_at_least.as_ref().map(|bound| bound.value),
            Bucket::mtls_rate,
        ),
    ];
    let mut results = Vec::new();
    for (what, bound_key, bound, rate_of) in rates {
        let Some(bound) = bound else { continue };
        let key = format!("{key}.{bound_key}");
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
                at_least(key, &format!("every bucket {what}"), 0.0, bound, String::new()),
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
                    key,
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
    results
}

/// `recovery`: after the named action, success stays at or above the rate within the time given.
fn recovery(evidence: &ChangeEvidence<'_>, key: &'static str) -> Vec<ExpectationResult> {
    let Some(recovery) = &evidence.expect.recovery else {
        return Vec::new();
    };
    let (phase, timeline) = (evidence.phase, evidence.timeline);
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
    let result = match (timeline::recovery(timeline, after, rate), completed) {
        (Some(Recovery::Recovered { at_ms, after_ms }), Some(completed)) => ExpectationResult {
            key: key.to_owned(),
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
            key: key.to_owned(),
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
            key,
            expectation,
            Unit::Ms,
            within,
            &format!("phase {phase}: no request started after {after} completed at {completed} ms"),
        ),
        _ => over_nothing(
            key,
            expectation,
            Unit::Ms,
            within,
            &format!("phase {phase}: action {after} was not taken"),
        ),
    };
    vec![result]
}

/// `convergenceMillisAtMost`: new ready pods answer their first request within the time given.
fn convergence_millis_at_most(evidence: &ChangeEvidence<'_>, key: &'static str) -> Vec<ExpectationResult> {
    let Some(bound) = &evidence.expect.convergence_millis_at_most else {
        return Vec::new();
    };
    let phase = evidence.phase;
    let convergences = timeline::convergences(evidence.timeline, evidence.records);
    if convergences.is_empty() {
        return vec![over_nothing(
            key,
            "convergence ms <=".to_owned(),
            Unit::Ms,
            bound.value,
            &format!("phase {phase}: no action brought new ready pods"),
        )];
    }
    convergences
        .into_iter()
        .map(|convergence| {
            let expectation = format!("convergence after {} ms <=", convergence.action);
            match convergence.millis {
                Some(millis) => ExpectationResult {
                    key: key.to_owned(),
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
                    key,
                    expectation,
                    Unit::Ms,
                    bound.value,
                    &format!(
                        "phase {phase}: none of the {} new pods of {} answered a request",
                        convergence.new_pods, convergence.action
                    ),
                ),
            }
        })
        .collect()
}

/// `callsAfterLeaveAtMost`: a cluster that left answers at most this many requests afterwards.
fn calls_after_leave_at_most(evidence: &ChangeEvidence<'_>, key: &'static str) -> Vec<ExpectationResult> {
    let Some(bound) = &evidence.expect.calls_after_leave_at_most else {
        return Vec::new();
    };
    let phase = evidence.phase;
    let leaves = timeline::calls_after_leave(evidence.timeline, evidence.records);
    if leaves.is_empty() {
        return vec![over_nothing(
            key,
            "calls after leave <=".to_owned(),
            Unit::Count,
            bound.value,
            &format!("phase {phase}: no leaveCluster action was taken"),
        )];
    }
    leaves
        .into_iter()
        .map(|leave| {
            let result = ExpectationResult {
                key: key.to_owned(),
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
            unless_empty(result, empty.as_deref())
        })
        .collect()
}
