//! Expectations judged against a phase's measurements (pure). Every expectation the scenario sets
//! is evaluated and reported with its observed value, its bound and what was involved.

use serde::{Deserialize, Serialize};

use crate::measure::{PhaseMeasurement, Skew};
use crate::provider::TlsFailures;
use crate::scenario::{Expectations, SkewBasis};

/// The outcome of one expectation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpectationResult {
    /// What was expected, e.g. `mtls_rate >= 1`.
    pub expectation: String,
    /// The observed value, formatted.
    pub observed: String,
    /// The bound, formatted.
    pub bound: String,
    /// Whether it held.
    pub passed: bool,
    /// Who/what was involved: the pods, clusters, errors or identities behind the value.
    pub detail: String,
}

/// Judges every expectation set for a phase.
pub fn verdicts(expect: &Expectations, measurement: &PhaseMeasurement, tls: &TlsFailures) -> Vec<ExpectationResult> {
    let mut results = Vec::new();
    if let Some(bound) = &expect.mtls_rate_at_least {
        results.push(at_least(
            "mtls_rate",
            measurement.mtls_rate,
            bound.value,
            mtls_detail(measurement),
        ));
    }
    if let Some(bound) = &expect.success_rate_at_least {
        results.push(at_least(
            "success_rate",
            measurement.success_rate,
            bound.value,
            errors_detail(measurement),
        ));
    }
    if let Some(bound) = &expect.success_rate_at_most {
        results.push(at_most(
            "success_rate",
            measurement.success_rate,
            bound.value,
            errors_detail(measurement),
        ));
    }
    let (skew, basis) = match expect.skew_by {
        SkewBasis::Requests => (&measurement.request_skew, "requests"),
        SkewBasis::Connections => (&measurement.connection_skew, "connections"),
    };
    if let Some(bound) = &expect.max_skew_ratio_at_most {
        results.push(at_most(
            &format!("max_skew_ratio by {basis}"),
            skew.max_ratio,
            bound.value,
            skew_detail(measurement, skew, basis),
        ));
    }
    if let Some(bound) = &expect.max_skew_ratio_at_least {
        results.push(at_least(
            &format!("max_skew_ratio by {basis}"),
            skew.max_ratio,
            bound.value,
            skew_detail(measurement, skew, basis),
        ));
    }
    if let Some(clusters) = &expect.clusters_reached {
        let missing: Vec<&str> = clusters
            .value
            .iter()
            .filter(|cluster| !measurement.clusters_reached.contains(cluster))
            .map(String::as_str)
            .collect();
        results.push(ExpectationResult {
            expectation: "clusters_reached includes".to_owned(),
            observed: format!("[{}]", measurement.clusters_reached.join(", ")),
            bound: format!("[{}]", clusters.value.join(", ")),
            passed: missing.is_empty(),
            detail: if missing.is_empty() {
                String::new()
            } else {
                format!("never answered: {}", missing.join(", "))
            },
        });
    }
    if let Some(bound) = &expect.server_tls_failures_at_least {
        let observed = tls.client_cert_rejections();
        results.push(ExpectationResult {
            expectation: "server_tls_failures >=".to_owned(),
            observed: observed.to_string(),
            bound: bound.value.to_string(),
            passed: observed >= bound.value,
            detail: format!(
                "fail_verify_error {}, fail_verify_no_cert {}, gateway no_filter_chain_match {}",
                tls.fail_verify_error, tls.fail_verify_no_cert, tls.gateway_no_filter_chain_match
            ),
        });
    }
    results
}

fn at_least(what: &str, observed: f64, bound: f64, detail: String) -> ExpectationResult {
    compared(format!("{what} >="), observed, bound, observed >= bound, detail)
}

fn at_most(what: &str, observed: f64, bound: f64, detail: String) -> ExpectationResult {
    compared(format!("{what} <="), observed, bound, observed <= bound, detail)
}

fn compared(expectation: String, observed: f64, bound: f64, passed: bool, detail: String) -> ExpectationResult {
    ExpectationResult {
        expectation,
        observed: format!("{observed:.3}"),
        bound: format!("{bound:.3}"),
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
    parts.push(shares.join(", "));
    parts.push(format!(
        "tvd {:.3}, chi-square p {:.2e}",
        skew.total_variation_distance, skew.p_value
    ));
    if let (true, Some(note)) = (measurement.connection_limited, &measurement.connection_note) {
        parts.push(note.clone());
    }
    parts.join("; ")
}
