//! One phase of A against the same-named phase of B: settings, expectations, rates, shares,
//! latency, counters and configuration rejections.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    CounterDiff, Difference, ExpectationDiff, LatencyDiff, PhaseDiff, Presence, RateDiff, RejectionDiff, SettingChange,
    ShareCell, ShareDiff, Thresholds, changes, homogeneity_test,
};
use crate::measure::PhaseMeasurement;
use crate::report::PhaseReport;
use crate::scenario::ConnectionPolicy;

/// Compares phase `name` of A (`a`) with that of B (`b`); at least one is present. Flagged items
/// are appended to `differences`.
pub(super) fn phase_diff(
    name: &str,
    a: Option<&PhaseReport>,
    b: Option<&PhaseReport>,
    thresholds: &Thresholds,
    latency_judged: bool,
    differences: &mut Vec<Difference>,
) -> PhaseDiff {
    let (a, b) = match (a, b) {
        (Some(a), Some(b)) => (a, b),
        (only_a, _) => {
            let presence = if only_a.is_some() {
                Presence::OnlyInA
            } else {
                Presence::OnlyInB
            };
            differences.push(Difference {
                phase: Some(name.to_owned()),
                subject: "phase".to_owned(),
                detail: format!(
                    "phase {name} ran in {} only",
                    if presence == Presence::OnlyInA { "A" } else { "B" }
                ),
                threshold: "a phase in one report only".to_owned(),
            });
            return PhaseDiff {
                name: name.to_owned(),
                presence,
                settings: Vec::new(),
                expectations: Vec::new(),
                rates: Vec::new(),
                pod_shares: None,
                cluster_shares: None,
                pod_match: String::new(),
                latency: Vec::new(),
                counters: Vec::new(),
                config_rejections: RejectionDiff::default(),
            };
        }
    };
    let mut flag = |subject: String, detail: String, threshold: String| {
        differences.push(Difference {
            phase: Some(name.to_owned()),
            subject,
            detail,
            threshold,
        });
    };
    let expectations = expectation_diffs(a, b, &mut flag);
    let rates = rate_diffs(&a.measurement, &b.measurement, thresholds, &mut flag);
    let unit = share_unit(a, b);
    let (pod_shares, pod_match) = pod_share_diff(&a.measurement, &b.measurement, &unit, thresholds);
    let cluster_shares = Some(cluster_share_diff(&a.measurement, &b.measurement, &unit, thresholds));
    for shares in [&pod_shares, &cluster_shares].into_iter().flatten() {
        if shares.flagged {
            flag_shares(shares, thresholds, &mut flag);
        }
    }
    let latency = latency_diffs(&a.measurement, &b.measurement, thresholds, latency_judged, &mut flag);
    let counters = counter_diffs(a, b, thresholds, &mut flag);
    let config_rejections = rejection_diff(a, b, &mut flag);
    PhaseDiff {
        name: name.to_owned(),
        presence: Presence::Both,
        settings: setting_changes(a, b),
        expectations,
        rates,
        pod_shares,
        cluster_shares,
        pod_match,
        latency,
        counters,
        config_rejections,
    }
}

fn setting_changes(a: &PhaseReport, b: &PhaseReport) -> Vec<SettingChange> {
    changes([
        ("from", a.from.clone(), b.from.clone()),
        ("to", a.to.clone(), b.to.clone()),
        ("requests", a.requests.to_string(), b.requests.to_string()),
        ("concurrency", a.concurrency.to_string(), b.concurrency.to_string()),
        ("connections", a.connections.clone(), b.connections.clone()),
        (
            "endpoint_weights",
            a.endpoint_weights.clone(),
            b.endpoint_weights.clone(),
        ),
        ("faults", a.faults.join(", "), b.faults.join(", ")),
        (
            "expected_identity",
            a.expected_identity.clone(),
            b.expected_identity.clone(),
        ),
    ])
}

/// An expectation's key: its text and, for a text that repeats, its occurrence (1, 2, ...).
type ExpectationKey<'a> = (&'a str, usize);

/// Expectations keyed by their text and occurrence, in the phase's order.
fn keyed(phase: &PhaseReport) -> Vec<(ExpectationKey<'_>, &crate::verdict::ExpectationResult)> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    phase
        .expectations
        .iter()
        .map(|result| {
            let occurrence = seen.entry(result.expectation.as_str()).or_default();
            *occurrence += 1;
            ((result.expectation.as_str(), *occurrence), result)
        })
        .collect()
}

fn expectation_diffs(
    a: &PhaseReport,
    b: &PhaseReport,
    flag: &mut impl FnMut(String, String, String),
) -> Vec<ExpectationDiff> {
    let keyed_a = keyed(a);
    let keyed_b = keyed(b);
    // Matched through maps: a linear search per expectation made 20,000 of them quadratic.
    let by_key_a: BTreeMap<ExpectationKey<'_>, &crate::verdict::ExpectationResult> = keyed_a.iter().copied().collect();
    let by_key_b: BTreeMap<ExpectationKey<'_>, &crate::verdict::ExpectationResult> = keyed_b.iter().copied().collect();
    let mut order: Vec<ExpectationKey<'_>> = keyed_a.iter().map(|(key, _)| *key).collect();
    order.extend(
        keyed_b
            .iter()
            .map(|(key, _)| *key)
            .filter(|key| !by_key_a.contains_key(key)),
    );
    order
        .into_iter()
        .map(|key| {
            let in_a = by_key_a.get(&key).copied();
            let in_b = by_key_b.get(&key).copied();
            let presence = match (in_a, in_b) {
                (Some(_), Some(_)) => Presence::Both,
                (Some(_), None) => Presence::OnlyInA,
                _ => Presence::OnlyInB,
            };
            let passed_a = in_a.map(|result| result.passed);
            let passed_b = in_b.map(|result| result.passed);
            let flagged = passed_a != passed_b;
            let subject = format!("expectation {}", key.0);
            if flagged {
                let side = |result: Option<&crate::verdict::ExpectationResult>| match result {
                    Some(result) => format!(
                        "{} {} (observed {})",
                        verdict_word(result.passed),
                        result.bound_text(),
                        result.observed_text()
                    ),
                    None => "not judged".to_owned(),
                };
                let threshold = if presence == Presence::Both {
                    "any change of verdict"
                } else {
                    "an expectation judged in one report only"
                };
                flag(
                    subject,
                    format!("A: {}; B: {}", side(in_a), side(in_b)),
                    threshold.to_owned(),
                );
            }
            ExpectationDiff {
                expectation: key.0.to_owned(),
                presence,
                bound_a: in_a.map(crate::verdict::ExpectationResult::bound_text),
                bound_b: in_b.map(crate::verdict::ExpectationResult::bound_text),
                observed_a: in_a.map(crate::verdict::ExpectationResult::observed_text),
                observed_b: in_b.map(crate::verdict::ExpectationResult::observed_text),
                passed_a,
                passed_b,
                flagged,
            }
        })
        .collect()
}

pub(super) fn verdict_word(passed: bool) -> &'static str {
    if passed { "PASS" } else { "FAIL" }
}

fn rate_diffs(
    a: &PhaseMeasurement,
    b: &PhaseMeasurement,
    thresholds: &Thresholds,
    flag: &mut impl FnMut(String, String, String),
) -> Vec<RateDiff> {
    [
        ("mtls_rate", a.mtls_rate, b.mtls_rate),
        ("success_rate", a.success_rate, b.success_rate),
    ]
    .into_iter()
    .map(|(name, rate_a, rate_b)| {
        let delta = rate_b - rate_a;
        let flagged = delta.abs() > thresholds.rate_tolerance;
        if flagged {
            flag(
                name.to_owned(),
                format!("{rate_a:.3} in A, {rate_b:.3} in B ({delta:+.3})"),
                format!("rate tolerance {:.3}", thresholds.rate_tolerance),
            );
        }
        RateDiff {
            name: name.to_owned(),
            a: rate_a,
            b: rate_b,
            delta,
            flagged,
        }
    })
    .collect()
}

/// Share of a pooled run's requests that may share a server-side connection with another and
/// still count as one request per connection (a pooled phase with few requests per connection).
const COINCIDENT_CONNECTIONS: f64 = 0.01;

/// The unit the share test counts: requests are independent samples only when each rode its own
/// server-side connection; otherwise the connections are (a passthrough gateway balances them).
///
/// A phase whose policy is a new connection per request in both runs counts requests, whatever the
/// server-side `ip:port`s say: over a long phase the callee sees ephemeral source ports reused, so
/// distinct connections carry the same `ip:port` (measured: 593 for 600 requests). Otherwise the
/// records decide.
fn share_unit(a: &PhaseReport, b: &PhaseReport) -> (Unit, String) {
    let (ma, mb) = (&a.measurement, &b.measurement);
    let per_request = ConnectionPolicy::NewConnectionPerRequest.name();
    if a.connections == per_request && b.connections == per_request {
        return (
            Unit::Requests,
            format!(
                "requests: both runs opened a new connection per request ({} requests on {} distinct server-side ip:port in A, {} on {} in B; fewer ip:port than requests are reused source ports)",
                ma.request_skew.samples,
                ma.connection_skew.samples,
                mb.request_skew.samples,
                mb.connection_skew.samples
            ),
        );
    }
    let shared = |m: &PhaseMeasurement| {
        (m.connection_skew.samples as f64) < m.request_skew.samples as f64 * (1.0 - COINCIDENT_CONNECTIONS)
    };
    let none_recorded = |m: &PhaseMeasurement| m.connection_skew.samples == 0 && m.request_skew.samples > 0;
    if none_recorded(ma) || none_recorded(mb) {
        return (
            Unit::Requests,
            "requests: a run recorded no server-side connections, so the test assumes requests are independent"
                .to_owned(),
        );
    }
    match (shared(ma), shared(mb)) {
        (false, false) => (
            Unit::Requests,
            "requests: (nearly) every request rode its own server-side connection in both runs".to_owned(),
        ),
        _ => (
            Unit::Connections,
            format!(
                "connections: requests shared server-side connections ({} requests on {} connections in A, {} on {} in B), so requests are not independent samples",
                ma.request_skew.samples,
                ma.connection_skew.samples,
                mb.request_skew.samples,
                mb.connection_skew.samples
            ),
        ),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Requests,
    Connections,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Requests => "requests",
            Unit::Connections => "connections",
        }
    }
}

/// A row before the two runs are put side by side: (cluster, pod) → (count, expected share, expected).
type Tally = BTreeMap<(String, Option<String>), (u64, f64, bool)>;

fn pod_tally(m: &PhaseMeasurement, unit: Unit) -> Tally {
    let mut tally = Tally::new();
    for pod in &m.pods {
        let count = match unit {
            Unit::Requests => pod.requests,
            Unit::Connections => pod.connections,
        };
        tally.insert(
            (pod.cluster.clone(), Some(pod.pod.clone())),
            (count, pod.expected_share, true),
        );
    }
    for pod in &m.unexpected_responders {
        let count = match unit {
            Unit::Requests => pod.requests,
            Unit::Connections => pod.connections,
        };
        let entry = tally
            .entry((pod.cluster.clone(), Some(pod.pod.clone())))
            .or_insert((0, 0.0, false));
        entry.0 += count;
    }
    tally
}

fn cluster_tally(m: &PhaseMeasurement, unit: Unit) -> Tally {
    let mut tally = Tally::new();
    for cluster in &m.clusters {
        let count = match unit {
            Unit::Requests => cluster.requests,
            Unit::Connections => cluster.connections,
        };
        tally.insert(
            (cluster.cluster.clone(), None),
            (count, cluster.expected_share, cluster.pods > 0),
        );
    }
    for pod in &m.unexpected_responders {
        let count = match unit {
            Unit::Requests => pod.requests,
            Unit::Connections => pod.connections,
        };
        let entry = tally.entry((pod.cluster.clone(), None)).or_insert((0, 0.0, false));
        entry.0 += count;
    }
    tally
}

/// The expected pods of a run, by (cluster, pod).
fn expected_pods(m: &PhaseMeasurement) -> BTreeSet<(&str, &str)> {
    m.pods
        .iter()
        .map(|pod| (pod.cluster.as_str(), pod.pod.as_str()))
        .collect()
}

/// Per-pod comparison when both runs expected the same pods; otherwise `None` and why.
fn pod_share_diff(
    a: &PhaseMeasurement,
    b: &PhaseMeasurement,
    (unit, unit_reason): &(Unit, String),
    thresholds: &Thresholds,
) -> (Option<ShareDiff>, String) {
    let pods_a = expected_pods(a);
    let pods_b = expected_pods(b);
    if pods_a != pods_b {
        let only_a: Vec<String> = pods_a
            .difference(&pods_b)
            .map(|(cluster, pod)| format!("{cluster}/{pod}"))
            .collect();
        let only_b: Vec<String> = pods_b
            .difference(&pods_a)
            .map(|(cluster, pod)| format!("{cluster}/{pod}"))
            .collect();
        return (
            None,
            format!(
                "by cluster only: the expected pods differ between the runs (only in A: {}; only in B: {}), as on real clusters where pod names are generated",
                list_or_none(&only_a),
                list_or_none(&only_b)
            ),
        );
    }
    let shares = share_diff(
        "pod",
        *unit,
        unit_reason.clone(),
        pod_tally(a, *unit),
        pod_tally(b, *unit),
        thresholds,
    );
    (Some(shares), "by cluster and pod name".to_owned())
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

fn cluster_share_diff(
    a: &PhaseMeasurement,
    b: &PhaseMeasurement,
    (unit, unit_reason): &(Unit, String),
    thresholds: &Thresholds,
) -> ShareDiff {
    share_diff(
        "cluster",
        *unit,
        unit_reason.clone(),
        cluster_tally(a, *unit),
        cluster_tally(b, *unit),
        thresholds,
    )
}

fn share_diff(level: &str, unit: Unit, unit_reason: String, a: Tally, b: Tally, thresholds: &Thresholds) -> ShareDiff {
    let keys: BTreeSet<&(String, Option<String>)> = a.keys().chain(b.keys()).collect();
    let total_a: u64 = a.values().map(|(count, _, _)| count).sum();
    let total_b: u64 = b.values().map(|(count, _, _)| count).sum();
    let share = |count: u64, total: u64| if total == 0 { 0.0 } else { count as f64 / total as f64 };
    let cells: Vec<ShareCell> = keys
        .into_iter()
        .map(|key| {
            let (count_a, expected_share_a, expected_a) = a.get(key).copied().unwrap_or((0, 0.0, false));
            let (count_b, expected_share_b, expected_b) = b.get(key).copied().unwrap_or((0, 0.0, false));
            let share_a = share(count_a, total_a);
            let share_b = share(count_b, total_b);
            let delta = share_b - share_a;
            ShareCell {
                cluster: key.0.clone(),
                pod: key.1.clone(),
                expected: expected_a || expected_b,
                count_a,
                count_b,
                share_a,
                share_b,
                expected_share_a,
                expected_share_b,
                delta,
                // Both runs must have samples for a share to have moved.
                beyond_tolerance: total_a > 0 && total_b > 0 && delta.abs() > thresholds.share_tolerance,
            }
        })
        .collect();
    let counts_a: Vec<u64> = cells.iter().map(|cell| cell.count_a).collect();
    let counts_b: Vec<u64> = cells.iter().map(|cell| cell.count_b).collect();
    let test = homogeneity_test(&counts_a, &counts_b);
    let flagged = test.p_value < thresholds.alpha && cells.iter().any(|cell| cell.beyond_tolerance);
    ShareDiff {
        level: level.to_owned(),
        unit: unit.name().to_owned(),
        unit_reason,
        cells,
        test,
        flagged,
    }
}

pub(super) fn cell_name(cell: &ShareCell) -> String {
    match &cell.pod {
        Some(pod) => format!("{}/{pod}", cell.cluster),
        None => cell.cluster.clone(),
    }
}

fn flag_shares(shares: &ShareDiff, thresholds: &Thresholds, flag: &mut impl FnMut(String, String, String)) {
    let moved: Vec<String> = shares
        .cells
        .iter()
        .filter(|cell| cell.beyond_tolerance)
        .map(|cell| {
            format!(
                "{} {:.1}% -> {:.1}% ({:+.1} points)",
                cell_name(cell),
                cell.share_a * 100.0,
                cell.share_b * 100.0,
                cell.delta * 100.0
            )
        })
        .collect();
    flag(
        format!("{} shares by {}", shares.level, shares.unit),
        format!(
            "{}; chi-square {:.1} with {} degree(s) of freedom, p = {}",
            moved.join(", "),
            shares.test.chi_square,
            shares.test.degrees_of_freedom,
            format_p(shares.test.p_value)
        ),
        format!(
            "share tolerance {:.1} points and alpha {}",
            thresholds.share_tolerance * 100.0,
            thresholds.alpha
        ),
    );
}

/// A p-value readable at any size: `0.0312`, `1.2e-40`, `< 1e-300`.
pub(super) fn format_p(p_value: f64) -> String {
    if p_value == 0.0 {
        "< 1e-300".to_owned()
    } else if p_value < 1e-3 {
        format!("{p_value:.1e}")
    } else {
        format!("{p_value:.4}")
    }
}

fn latency_diffs(
    a: &PhaseMeasurement,
    b: &PhaseMeasurement,
    thresholds: &Thresholds,
    latency_judged: bool,
    flag: &mut impl FnMut(String, String, String),
) -> Vec<LatencyDiff> {
    let pick = |m: &PhaseMeasurement, index: usize| {
        m.latency
            .as_ref()
            .map(|latency| [latency.p50_us, latency.p90_us, latency.p99_us][index])
    };
    let samples = |m: &PhaseMeasurement| m.latency.as_ref().map_or(0, |latency| latency.samples);
    let fewest_samples = samples(a).min(samples(b));
    [("p50", 50), ("p90", 90), ("p99", 99)]
        .into_iter()
        .enumerate()
        .map(|(index, (percentile, percent))| {
            let a_us = pick(a, index);
            let b_us = pick(b, index);
            let relative_change = match (a_us, b_us) {
                (Some(a_us), Some(b_us)) if a_us > 0 => Some((b_us as f64 - a_us as f64) / a_us as f64),
                _ => None,
            };
            // Integer arithmetic: 100 × 0.1 is not 10 in floating point.
            let judged = latency_judged && fewest_samples * (100 - percent) >= MIN_TAIL_SAMPLES * 100;
            let flagged = match (a_us, b_us) {
                (Some(a_us), Some(b_us)) => {
                    let (low, high) = (a_us.min(b_us), a_us.max(b_us));
                    judged
                        && high - low > thresholds.latency_floor_us
                        && high as f64 > low as f64 * (1.0 + thresholds.latency_tolerance)
                }
                (None, None) => false,
                _ => latency_judged,
            };
            if flagged {
                let side = |us: Option<u64>| us.map_or("none (no request succeeded)".to_owned(), millis);
                flag(
                    format!("latency {percentile}"),
                    format!(
                        "{} in A, {} in B{}",
                        side(a_us),
                        side(b_us),
                        relative_change.map_or(String::new(), |change| format!(" ({:+.0}%)", change * 100.0))
                    ),
                    if a_us.is_some() && b_us.is_some() {
                        format!(
                            "latency tolerance {:.0}% (one run over {:.1}x the other) and floor {}",
                            thresholds.latency_tolerance * 100.0,
                            1.0 + thresholds.latency_tolerance,
                            millis(thresholds.latency_floor_us)
                        )
                    } else {
                        "a percentile in one run only".to_owned()
                    },
                );
            }
            LatencyDiff {
                percentile: percentile.to_owned(),
                a_us,
                b_us,
                relative_change,
                judged,
                flagged,
            }
        })
        .collect()
}

/// A percentile is judged only when at least this many successful requests lie beyond it in each
/// run: a p99 over 200 requests is the second-slowest request, and one scheduler hiccup on a loaded
/// machine moves it fivefold (measured: 10.1 ms then 1.7 ms for the same phase of seed.yaml).
const MIN_TAIL_SAMPLES: u64 = 10;

pub(super) fn millis(micros: u64) -> String {
    format!("{:.2}ms", micros as f64 / 1000.0)
}

fn counter_diffs(
    a: &PhaseReport,
    b: &PhaseReport,
    thresholds: &Thresholds,
    flag: &mut impl FnMut(String, String, String),
) -> Vec<CounterDiff> {
    let (tls_a, tls_b) = (&a.tls_failures, &b.tls_failures);
    let counters = [
        (
            "tls_failures.fail_verify_error",
            Some(tls_a.fail_verify_error),
            Some(tls_b.fail_verify_error),
        ),
        (
            "tls_failures.fail_verify_no_cert",
            Some(tls_a.fail_verify_no_cert),
            Some(tls_b.fail_verify_no_cert),
        ),
        (
            "tls_failures.connection_error",
            Some(tls_a.connection_error),
            Some(tls_b.connection_error),
        ),
        (
            "tls_failures.gateway_no_filter_chain_match",
            Some(tls_a.gateway_no_filter_chain_match),
            Some(tls_b.gateway_no_filter_chain_match),
        ),
        ("gateway_hops", a.gateway_hops, b.gateway_hops),
    ];
    let per_request = |count: Option<u64>, attempted: u64| {
        count.map(|count| {
            if attempted == 0 {
                0.0
            } else {
                count as f64 / attempted as f64
            }
        })
    };
    counters
        .into_iter()
        .map(|(name, count_a, count_b)| {
            let a_per_request = per_request(count_a, a.measurement.attempted);
            let b_per_request = per_request(count_b, b.measurement.attempted);
            // A counter one provider cannot count is not compared (kind counts no gateway hops).
            let flagged = match (a_per_request, b_per_request) {
                (Some(rate_a), Some(rate_b)) => (rate_b - rate_a).abs() > thresholds.rate_tolerance,
                _ => false,
            };
            if flagged {
                flag(
                    name.to_owned(),
                    format!(
                        "{} in A ({:.3} per request), {} in B ({:.3} per request)",
                        count_a.unwrap_or(0),
                        a_per_request.unwrap_or(0.0),
                        count_b.unwrap_or(0),
                        b_per_request.unwrap_or(0.0)
                    ),
                    format!("rate tolerance {:.3} per request", thresholds.rate_tolerance),
                );
            }
            CounterDiff {
                name: name.to_owned(),
                a: count_a,
                b: count_b,
                a_per_request,
                b_per_request,
                flagged,
            }
        })
        .collect()
}

fn rejection_diff(a: &PhaseReport, b: &PhaseReport, flag: &mut impl FnMut(String, String, String)) -> RejectionDiff {
    // A set per side: `contains` on the other run's list made 100,000 rejections take a minute.
    let only = |mine: &[String], theirs: &[String]| -> Vec<String> {
        let theirs: BTreeSet<&str> = theirs.iter().map(String::as_str).collect();
        mine.iter()
            .filter(|rejection| !theirs.contains(rejection.as_str()))
            .cloned()
            .collect()
    };
    let rejections = RejectionDiff {
        only_in_a: only(&a.config_rejections, &b.config_rejections),
        only_in_b: only(&b.config_rejections, &a.config_rejections),
    };
    for (side, list) in [("A", &rejections.only_in_a), ("B", &rejections.only_in_b)] {
        for rejection in list {
            flag(
                "config rejected".to_owned(),
                format!("in {side} only: {rejection}"),
                "a configuration rejection in one run only".to_owned(),
            );
        }
    }
    rejections
}
