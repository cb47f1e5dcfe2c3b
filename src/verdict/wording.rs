//! What the judges share: a bound compared with what was observed, the failure of a bound over
//! nothing, and the detail each kind of result gives (who was verified, what failed, the shares).

use super::{ExpectationResult, Unit, Value};
use crate::measure::{PhaseMeasurement, Skew};

/// Why a skew over `basis` has nothing to judge although requests were answered: no sample of
/// that unit, or no pod expected to answer (so every ratio is over nothing).
pub(super) fn empty_skew(measurement: &PhaseMeasurement, skew: &Skew, basis: &str) -> Option<String> {
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

/// A bound with nothing to judge it on: failed, observing nothing, saying why.
pub(super) fn over_nothing(key: &str, expectation: String, unit: Unit, bound: u64, why: &str) -> ExpectationResult {
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
pub(super) fn unless_empty(mut result: ExpectationResult, empty: Option<&str>) -> ExpectationResult {
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

/// A ratio bound that holds when `observed >= bound`.
pub(super) fn at_least(key: String, what: &str, observed: f64, bound: f64, detail: String) -> ExpectationResult {
    compared(key, format!("{what} >="), observed, bound, observed >= bound, detail)
}

/// A ratio bound that holds when `observed <= bound`.
pub(super) fn at_most(key: String, what: &str, observed: f64, bound: f64, detail: String) -> ExpectationResult {
    compared(key, format!("{what} <="), observed, bound, observed <= bound, detail)
}

/// A ratio compared with its bound.
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

/// Who was verified over mTLS, who was seen with another identity, and the errors.
pub(super) fn mtls_detail(measurement: &PhaseMeasurement) -> String {
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
    parts.extend(error_counts(measurement));
    parts.join("; ")
}

/// How many succeeded, and the errors.
pub(super) fn errors_detail(measurement: &PhaseMeasurement) -> String {
    let mut parts = vec![format!(
        "{} of {} succeeded",
        measurement.succeeded, measurement.attempted
    )];
    parts.extend(error_counts(measurement));
    parts.join("; ")
}

/// Each error with how often it happened, as the details list them.
fn error_counts(measurement: &PhaseMeasurement) -> impl Iterator<Item = String> + '_ {
    measurement
        .errors
        .iter()
        .map(|error| format!("{} x {}", error.count, error.message))
}

/// Where the skew is largest, every pod's observed and expected share, and the statistics.
pub(super) fn skew_detail(measurement: &PhaseMeasurement, skew: &Skew, basis: &str) -> String {
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
