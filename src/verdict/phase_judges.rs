//! The judges of a phase's measurement bounds (`mtlsRateAtLeast`, `maxSkewRatioAtMost`, ...): one
//! small function per expectation, listed in [`PHASE_JUDGES`] in the order the results are reported.

use super::wording::{at_least, at_most, empty_skew, errors_detail, mtls_detail, skew_detail, unless_empty};
use super::{ExpectationResult, Judge, Unit, Value, nothing_answered};
use crate::measure::{PhaseMeasurement, Skew};
use crate::observation::TlsFailures;
use crate::scenario::{Expectations, SkewBasis};

/// What every phase judge looks at: the bounds, the measurement, the servers' TLS counters, and
/// what the bounds over requests and over the chosen skew would be judged on.
pub(super) struct PhaseEvidence<'a> {
    /// The phase's `expect:`.
    pub(super) expect: &'a Expectations,
    /// The phase's measurement.
    pub(super) measurement: &'a PhaseMeasurement,
    /// The servers' TLS rejection counters.
    pub(super) tls: &'a TlsFailures,
    /// Why the request figures are about nothing, when they are ([`nothing_answered`]).
    pub(super) nothing: Option<String>,
    /// The skew the bounds judge (`skewBy`: by requests or by connections).
    pub(super) skew: &'a Skew,
    /// `requests` or `connections`.
    pub(super) basis: &'static str,
    /// Why that skew is about nothing, when it is.
    pub(super) skew_empty: Option<String>,
}

impl<'a> PhaseEvidence<'a> {
    /// The evidence of one phase.
    pub(super) fn new(expect: &'a Expectations, measurement: &'a PhaseMeasurement, tls: &'a TlsFailures) -> Self {
        let nothing = nothing_answered(measurement);
        let (skew, basis) = match expect.skew_by {
            SkewBasis::Requests => (&measurement.request_skew, "requests"),
            SkewBasis::Connections => (&measurement.connection_skew, "connections"),
        };
        let skew_empty = nothing.clone().or_else(|| empty_skew(measurement, skew, basis));
        PhaseEvidence {
            expect,
            measurement,
            tls,
            nothing,
            skew,
            basis,
            skew_empty,
        }
    }
}

/// One judge of a phase: its verdict (given the key), or `None` when the scenario does not set
/// the expectation.
pub(super) type PhaseJudge = Judge<fn(&PhaseEvidence<'_>, &'static str) -> Option<ExpectationResult>>;

/// Every phase judge, in the order their results are reported.
pub(super) const PHASE_JUDGES: [PhaseJudge; 8] = [
    PhaseJudge {
        key: "mtlsRateAtLeast",
        judge: mtls_rate_at_least,
    },
    PhaseJudge {
        key: "mtlsRateAtMost",
        judge: mtls_rate_at_most,
    },
    PhaseJudge {
        key: "successRateAtLeast",
        judge: success_rate_at_least,
    },
    PhaseJudge {
        key: "successRateAtMost",
        judge: success_rate_at_most,
    },
    PhaseJudge {
        key: "maxSkewRatioAtMost",
        judge: max_skew_ratio_at_most,
    },
    PhaseJudge {
        key: "maxSkewRatioAtLeast",
        judge: max_skew_ratio_at_least,
    },
    PhaseJudge {
        key: "clustersReached",
        judge: clusters_reached,
    },
    PhaseJudge {
        key: "serverTlsFailuresAtLeast",
        judge: server_tls_failures_at_least,
    },
];

/// A ratio the phase bounds from below or above: its name in the results, its value, what
/// explains it, and why it is about nothing (when it is).
struct Ratio<'a> {
    what: String,
    observed: f64,
    detail: String,
    empty: Option<&'a str>,
}

impl Ratio<'_> {
    /// The result of `key`: the ratio is at least `bound`.
    fn at_least(self, key: &'static str, bound: f64) -> ExpectationResult {
        unless_empty(
            at_least(key.to_owned(), &self.what, self.observed, bound, self.detail),
            self.empty,
        )
    }

    /// The result of `key`: the ratio is at most `bound`.
    fn at_most(self, key: &'static str, bound: f64) -> ExpectationResult {
        unless_empty(
            at_most(key.to_owned(), &self.what, self.observed, bound, self.detail),
            self.empty,
        )
    }
}

/// The share of requests verified over mTLS with the caller's identity.
fn mtls_rate<'a>(evidence: &'a PhaseEvidence<'_>) -> Ratio<'a> {
    Ratio {
        what: "mtls_rate".to_owned(),
        observed: evidence.measurement.mtls_rate,
        detail: mtls_detail(evidence.measurement),
        empty: evidence.nothing.as_deref(),
    }
}

/// The share of requests that succeeded.
fn success_rate<'a>(evidence: &'a PhaseEvidence<'_>) -> Ratio<'a> {
    Ratio {
        what: "success_rate".to_owned(),
        observed: evidence.measurement.success_rate,
        detail: errors_detail(evidence.measurement),
        empty: evidence.nothing.as_deref(),
    }
}

/// How far the most over-served pod's observed share exceeds its expected share.
fn max_skew_ratio<'a>(evidence: &'a PhaseEvidence<'_>) -> Ratio<'a> {
    Ratio {
        what: format!("max_skew_ratio by {}", evidence.basis),
        observed: evidence.skew.max_ratio,
        detail: skew_detail(evidence.measurement, evidence.skew, evidence.basis),
        empty: evidence.skew_empty.as_deref(),
    }
}

/// `mtlsRateAtLeast`: the share of requests verified over mTLS with the caller's identity is at least the bound.
fn mtls_rate_at_least(evidence: &PhaseEvidence<'_>, key: &'static str) -> Option<ExpectationResult> {
    let bound = evidence.expect.mtls_rate_at_least.as_ref()?;
    Some(mtls_rate(evidence).at_least(key, bound.value))
}

/// `mtlsRateAtMost`: the share of requests verified over mTLS is at most the bound (plain text must get through).
fn mtls_rate_at_most(evidence: &PhaseEvidence<'_>, key: &'static str) -> Option<ExpectationResult> {
    let bound = evidence.expect.mtls_rate_at_most.as_ref()?;
    // Plain text must still have been answered: an empty phase proves nothing about it.
    Some(mtls_rate(evidence).at_most(key, bound.value))
}

/// `successRateAtLeast`: the share of requests that succeeded is at least the bound.
fn success_rate_at_least(evidence: &PhaseEvidence<'_>, key: &'static str) -> Option<ExpectationResult> {
    let bound = evidence.expect.success_rate_at_least.as_ref()?;
    Some(success_rate(evidence).at_least(key, bound.value))
}

/// `successRateAtMost`: the share of requests that succeeded is at most the bound (requests are meant to fail).
fn success_rate_at_most(evidence: &PhaseEvidence<'_>, key: &'static str) -> Option<ExpectationResult> {
    let bound = evidence.expect.success_rate_at_most.as_ref()?;
    // Failing requests are the point of this bound; only a phase that sent nothing is empty.
    let nothing_sent = (evidence.measurement.attempted == 0).then_some("no request was sent");
    let ratio = Ratio {
        empty: nothing_sent,
        ..success_rate(evidence)
    };
    Some(ratio.at_most(key, bound.value))
}

/// `maxSkewRatioAtMost`: no pod's observed share exceeds its expected share by more than the ratio.
fn max_skew_ratio_at_most(evidence: &PhaseEvidence<'_>, key: &'static str) -> Option<ExpectationResult> {
    let bound = evidence.expect.max_skew_ratio_at_most.as_ref()?;
    Some(max_skew_ratio(evidence).at_most(key, bound.value))
}

/// `maxSkewRatioAtLeast`: some pod's observed share exceeds its expected share by at least the ratio (a skew shows).
fn max_skew_ratio_at_least(evidence: &PhaseEvidence<'_>, key: &'static str) -> Option<ExpectationResult> {
    let bound = evidence.expect.max_skew_ratio_at_least.as_ref()?;
    Some(max_skew_ratio(evidence).at_least(key, bound.value))
}

/// `clustersReached`: every listed cluster answered at least one request.
fn clusters_reached(evidence: &PhaseEvidence<'_>, key: &'static str) -> Option<ExpectationResult> {
    let clusters = evidence.expect.clusters_reached.as_ref()?;
    let reached = &evidence.measurement.clusters_reached;
    let missing: Vec<&str> = clusters
        .value
        .iter()
        .filter(|cluster| !reached.contains(cluster))
        .map(String::as_str)
        .collect();
    let result = ExpectationResult {
        key: key.to_owned(),
        expectation: "clusters_reached includes".to_owned(),
        unit: Unit::Clusters,
        observed: Value::clusters(reached),
        bound: Value::clusters(&clusters.value),
        passed: missing.is_empty(),
        detail: if missing.is_empty() {
            String::new()
        } else {
            format!("never answered: {}", missing.join(", "))
        },
    };
    Some(unless_empty(result, evidence.nothing.as_deref()))
}

/// `serverTlsFailuresAtLeast`: the servers rejected at least this many client certificates.
fn server_tls_failures_at_least(evidence: &PhaseEvidence<'_>, key: &'static str) -> Option<ExpectationResult> {
    let bound = evidence.expect.server_tls_failures_at_least.as_ref()?;
    let tls = evidence.tls;
    let observed = tls.client_cert_rejections();
    let result = ExpectationResult {
        key: key.to_owned(),
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
    Some(unless_empty(result, none_counted))
}
