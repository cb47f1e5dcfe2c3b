//! Comparing two run reports (pure, no I/O): what changed between run A and run B of the same
//! scenario, phase by phase and expectation by expectation, and whether the change is beyond the
//! [`Thresholds`]: the engine behind `meshfed diff` (documented in `docs/diff.md`).
//!
//! Every compared quantity carries whether it was flagged and, when it was, which threshold it
//! crossed; [`ReportDiff::differences`] lists the flagged ones in words. Renderings are separate:
//! [`summary`] for people, serde JSON (schema [`DIFF_SCHEMA`]) for machines; an HTML A-versus-B page
//! renders the same [`ReportDiff`].

#![forbid(unsafe_code)]

mod homogeneity;
mod phase;
mod summary;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::report::{REPORT_SCHEMA, Report};

pub use homogeneity::{HomogeneityTest, homogeneity_test};
pub use summary::summary;

/// Schema identifier of `meshfed diff --format json`; bumped on any incompatible change.
pub const DIFF_SCHEMA: &str = "meshfed.diff/v1";

/// When a difference between A and B counts. Defaults: [`Thresholds::default`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Largest change of a pod's or cluster's share that is not a difference, as a fraction
    /// (0.05 = 5 percentage points). A share change is flagged only when it exceeds this *and* the
    /// homogeneity test rejects at `alpha`.
    pub share_tolerance: f64,
    /// Significance level of the homogeneity test: the two splits are called different only when
    /// the p-value is below it.
    pub alpha: f64,
    /// Largest change of a rate (mTLS, success, TLS failures per request, gateway hops per request)
    /// that is not a difference, as a fraction (0.01 = 1 percentage point).
    pub rate_tolerance: f64,
    /// Largest relative change of a latency percentile that is not a difference: 1.0 means one run
    /// may take up to twice as long as the other.
    pub latency_tolerance: f64,
    /// Latency changes smaller than this many microseconds are never a difference, whatever their
    /// relative size (sub-millisecond percentiles move with machine load).
    pub latency_floor_us: u64,
    /// Judge latency also when a run comes from an emulation (`local`): off by default, because
    /// there latency is this machine's scheduling, not the mesh's (identical runs under load
    /// measured p90 2.5 ms then 8.2 ms).
    pub judge_emulated_latency: bool,
}

impl Default for Thresholds {
    /// Chosen so that the same scenario run twice on a loaded 2-core machine diffs clean (the
    /// figures behind them are in `docs/diff.md`).
    fn default() -> Self {
        Thresholds {
            share_tolerance: 0.05,
            alpha: 0.001,
            rate_tolerance: 0.01,
            latency_tolerance: 1.0,
            latency_floor_us: 5_000,
            judge_emulated_latency: false,
        }
    }
}

/// Why two reports cannot be compared (`meshfed diff` exits 2).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Incomparable {
    /// A report of a schema this meshfed does not read.
    #[error(
        "{label} has report schema {schema:?}; this meshfed compares {REPORT_SCHEMA:?} reports only (compare reports written by the same meshfed schema version)"
    )]
    UnsupportedSchema {
        /// Which report (its path).
        label: String,
        /// Its schema.
        schema: String,
    },
    /// Reports of two schema versions.
    #[error(
        "the reports have different schema versions ({schema_a:?} in {label_a}, {schema_b:?} in {label_b}): fields may mean different things, so they are not compared"
    )]
    SchemaMismatch {
        /// Path of A.
        label_a: String,
        /// Schema of A.
        schema_a: String,
        /// Path of B.
        label_b: String,
        /// Schema of B.
        schema_b: String,
    },
    /// Reports of two scenarios.
    #[error(
        "the reports are of different scenarios ({scenario_a:?} in {label_a}, {scenario_b:?} in {label_b}): a diff compares runs of the same scenario (same `name:`)"
    )]
    ScenarioMismatch {
        /// Path of A.
        label_a: String,
        /// Scenario of A.
        scenario_a: String,
        /// Path of B.
        label_b: String,
        /// Scenario of B.
        scenario_b: String,
    },
}

/// The comparison of run A with run B. Part of `meshfed diff --format json`: field names are schema.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportDiff {
    /// [`DIFF_SCHEMA`].
    pub schema: String,
    /// The scenario both runs ran.
    pub scenario: String,
    /// Run A (the baseline).
    pub a: RunInfo,
    /// Run B (compared against A).
    pub b: RunInfo,
    /// The thresholds applied.
    pub thresholds: Thresholds,
    /// Differences in how the runs were made (provider, proxy, meshfed version): context, never
    /// flagged by themselves.
    pub context: Vec<SettingChange>,
    /// Isolation probes, matched by (from cluster, to cluster).
    pub isolation: Vec<IsolationDiff>,
    /// Whether latency percentiles can be flagged: both runs on real Istio (kind, kubeconfig), or
    /// [`Thresholds::judge_emulated_latency`]. Otherwise they are shown, never flagged.
    pub latency_judged: bool,
    /// Every phase of A in A's order, then those only in B; matched by name.
    pub phases: Vec<PhaseDiff>,
    /// Every flagged difference in words, with the threshold it crossed, in phase order.
    pub differences: Vec<Difference>,
    /// True when something differs beyond the thresholds (`meshfed diff` exits 1).
    pub differs: bool,
}

/// What a report says about its run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// How the report was named on the command line (its path).
    pub label: String,
    /// Provider name (`local`, `kind`, `kubeconfig`).
    pub provider: String,
    /// The proxy (`envoy 1.40.0`).
    pub proxy: String,
    /// meshfed's version.
    pub meshfed_version: String,
    /// The run's verdict.
    pub passed: bool,
}

/// A setting that differs between the runs: `field` was `a` in A and `b` in B.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingChange {
    /// What it is (`endpoint_weights`, `provider`, ...).
    pub field: String,
    /// Its value in A.
    pub a: String,
    /// Its value in B.
    pub b: String,
}

/// One flagged difference in words.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    /// The phase, or `None` for run-wide items (isolation).
    pub phase: Option<String>,
    /// What differs (`pod shares by requests`, `success_rate`, `expectation mtls_rate >=`).
    pub subject: String,
    /// A versus B, with the figures.
    pub detail: String,
    /// The threshold crossed, with its value (`share tolerance 0.050 and alpha 0.001`).
    pub threshold: String,
}

/// One isolation probe pair compared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationDiff {
    /// Cluster probed from.
    pub from_cluster: String,
    /// Cluster probed.
    pub to_cluster: String,
    /// Whether A found the pair isolated; `None` when A has no such probe.
    pub isolated_a: Option<bool>,
    /// Whether B found the pair isolated; `None` when B has no such probe.
    pub isolated_b: Option<bool>,
    /// The verdicts differ (or the probe is in one report only).
    pub flagged: bool,
}

/// Which report a phase (or expectation) is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Presence {
    /// Both.
    Both,
    /// A only.
    OnlyInA,
    /// B only.
    OnlyInB,
}

/// One phase compared. For a phase in one report only, every list is empty.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseDiff {
    /// Phase name.
    pub name: String,
    /// Which reports have it; a phase in one report only is a difference.
    pub presence: Presence,
    /// Settings that differ (weights, connections, requests, faults, ...): context for what
    /// follows, not differences by themselves.
    pub settings: Vec<SettingChange>,
    /// Each expectation, matched by its text (and, when it repeats, its order).
    pub expectations: Vec<ExpectationDiff>,
    /// `mtls_rate` and `success_rate`.
    pub rates: Vec<RateDiff>,
    /// Per-pod split with its homogeneity test; `None` when the pods differ between the runs
    /// (`pod_match` says why) or the phase is in one report only.
    pub pod_shares: Option<ShareDiff>,
    /// Per-cluster split with its homogeneity test.
    pub cluster_shares: Option<ShareDiff>,
    /// How pods were matched: `by cluster and pod name`, or why only clusters were compared.
    pub pod_match: String,
    /// p50, p90, p99.
    pub latency: Vec<LatencyDiff>,
    /// TLS failure counters and gateway hops, per attempted request.
    pub counters: Vec<CounterDiff>,
    /// Proxy configuration rejections found in one run only.
    pub config_rejections: RejectionDiff,
}

/// One expectation compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpectationDiff {
    /// The expectation (`mtls_rate >=`).
    pub expectation: String,
    /// Which reports judged it.
    pub presence: Presence,
    /// Bound in A, if judged there.
    pub bound_a: Option<String>,
    /// Bound in B, if judged there.
    pub bound_b: Option<String>,
    /// Observed value in A.
    pub observed_a: Option<String>,
    /// Observed value in B.
    pub observed_b: Option<String>,
    /// Verdict in A.
    pub passed_a: Option<bool>,
    /// Verdict in B.
    pub passed_b: Option<bool>,
    /// The verdict changed, or the expectation is in one report only.
    pub flagged: bool,
}

/// A rate compared against [`Thresholds::rate_tolerance`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateDiff {
    /// `mtls_rate` or `success_rate`.
    pub name: String,
    /// In A.
    pub a: f64,
    /// In B.
    pub b: f64,
    /// `b − a`.
    pub delta: f64,
    /// `|delta|` exceeds the rate tolerance.
    pub flagged: bool,
}

/// A split of one unit (requests or connections) over pods or clusters, A against B.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShareDiff {
    /// `pod` or `cluster`.
    pub level: String,
    /// `requests` or `connections`: the unit counted and tested.
    pub unit: String,
    /// Why this unit: requests are independent samples only when each rode its own connection.
    pub unit_reason: String,
    /// One row per pod (or cluster) that answered in either run, sorted by cluster then pod.
    pub cells: Vec<ShareCell>,
    /// Chi-square homogeneity test of the 2×k table of counts.
    pub test: HomogeneityTest,
    /// Flagged: some share moved by more than the share tolerance and the test rejects at alpha.
    pub flagged: bool,
}

/// One pod's (or cluster's) count and share in A and B.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShareCell {
    /// Cluster.
    pub cluster: String,
    /// Pod; `None` at cluster level.
    pub pod: Option<String>,
    /// Whether this pod was expected to answer (in either run); at cluster level, whether the
    /// cluster has expected pods.
    pub expected: bool,
    /// Count in A.
    pub count_a: u64,
    /// Count in B.
    pub count_b: u64,
    /// `count_a` ÷ A's total of the unit.
    pub share_a: f64,
    /// `count_b` ÷ B's total.
    pub share_b: f64,
    /// The expected share in A (0 for an unexpected responder).
    pub expected_share_a: f64,
    /// The expected share in B.
    pub expected_share_b: f64,
    /// `share_b − share_a`.
    pub delta: f64,
    /// `|delta|` exceeds the share tolerance.
    pub beyond_tolerance: bool,
}

/// A latency percentile compared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyDiff {
    /// `p50`, `p90` or `p99`.
    pub percentile: String,
    /// In A, microseconds; `None` when no request succeeded in A.
    pub a_us: Option<u64>,
    /// In B.
    pub b_us: Option<u64>,
    /// `(b − a) ÷ a`; `None` unless both exist and `a > 0`.
    pub relative_change: Option<f64>,
    /// Latency is judged in this diff ([`ReportDiff::latency_judged`]) and both runs have at least
    /// 10 successful requests beyond this percentile (p99: 1,000
    /// requests; p90: 100; p50: 20); a percentile over fewer is shown but never flagged, since a
    /// handful of slow requests decide it.
    pub judged: bool,
    /// Judged, and one run took more than `1 + latency_tolerance` times as long as the other, by
    /// more than the latency floor; or only one run has the percentile.
    pub flagged: bool,
}

/// A counter of the phase compared per attempted request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CounterDiff {
    /// `tls_failures.fail_verify_error`, ..., `gateway_hops`.
    pub name: String,
    /// In A; `None` when A's provider cannot count it.
    pub a: Option<u64>,
    /// In B.
    pub b: Option<u64>,
    /// `a` ÷ A's attempted requests.
    pub a_per_request: Option<f64>,
    /// `b` ÷ B's attempted requests.
    pub b_per_request: Option<f64>,
    /// The per-request rates differ by more than the rate tolerance.
    pub flagged: bool,
}

/// Configuration rejections (each naming the proxy and its reason) found in one run only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectionDiff {
    /// Rejected in A, not in B.
    pub only_in_a: Vec<String>,
    /// Rejected in B, not in A.
    pub only_in_b: Vec<String>,
}

/// Compares run A (`a`, named `label_a`) with run B. Fails when the two cannot be compared: a
/// schema other than [`REPORT_SCHEMA`], or different scenario names.
///
/// ```
/// # use meshfed::diff::{diff, Thresholds};
/// # fn reports() -> (meshfed::report::Report, meshfed::report::Report) { unimplemented!() }
/// # fn no_run() -> Result<(), meshfed::diff::Incomparable> {
/// let (before, after) = reports();
/// let compared = diff(&before, "before/report.json", &after, "after/report.json", &Thresholds::default())?;
/// if compared.differs {
///     print!("{}", meshfed::diff::summary(&compared));
/// }
/// # Ok(()) }
/// ```
pub fn diff(
    a: &Report,
    label_a: &str,
    b: &Report,
    label_b: &str,
    thresholds: &Thresholds,
) -> Result<ReportDiff, Incomparable> {
    check_comparable(a, label_a, b, label_b)?;
    let mut differences = Vec::new();
    let isolation = isolation_diffs(a, b, &mut differences);
    let latency_judged =
        thresholds.judge_emulated_latency || (a.provider.emulates.is_none() && b.provider.emulates.is_none());
    let mut phases = Vec::new();
    let b_phases: BTreeMap<&str, &crate::report::PhaseReport> =
        b.phases.iter().map(|phase| (phase.name.as_str(), phase)).collect();
    for phase_a in &a.phases {
        let compared = phase::phase_diff(
            &phase_a.name,
            Some(phase_a),
            b_phases.get(phase_a.name.as_str()).copied(),
            thresholds,
            latency_judged,
            &mut differences,
        );
        phases.push(compared);
    }
    // Looked up by key, never by scanning: a hostile or huge report must not make the diff
    // quadratic (a scan made 100,000 rejections take 64 s).
    let a_names: std::collections::BTreeSet<&str> = a.phases.iter().map(|phase| phase.name.as_str()).collect();
    for phase_b in &b.phases {
        if !a_names.contains(phase_b.name.as_str()) {
            phases.push(phase::phase_diff(
                &phase_b.name,
                None,
                Some(phase_b),
                thresholds,
                latency_judged,
                &mut differences,
            ));
        }
    }
    Ok(ReportDiff {
        schema: DIFF_SCHEMA.to_owned(),
        scenario: a.scenario.name.clone(),
        a: run_info(a, label_a),
        b: run_info(b, label_b),
        thresholds: *thresholds,
        context: context_changes(a, b),
        isolation,
        latency_judged,
        phases,
        differs: !differences.is_empty(),
        differences,
    })
}

fn check_comparable(a: &Report, label_a: &str, b: &Report, label_b: &str) -> Result<(), Incomparable> {
    if a.schema != b.schema {
        return Err(Incomparable::SchemaMismatch {
            label_a: label_a.to_owned(),
            schema_a: a.schema.clone(),
            label_b: label_b.to_owned(),
            schema_b: b.schema.clone(),
        });
    }
    for (report, label) in [(a, label_a), (b, label_b)] {
        if report.schema != REPORT_SCHEMA {
            return Err(Incomparable::UnsupportedSchema {
                label: label.to_owned(),
                schema: report.schema.clone(),
            });
        }
    }
    if a.scenario.name != b.scenario.name {
        return Err(Incomparable::ScenarioMismatch {
            label_a: label_a.to_owned(),
            scenario_a: a.scenario.name.clone(),
            label_b: label_b.to_owned(),
            scenario_b: b.scenario.name.clone(),
        });
    }
    Ok(())
}

fn run_info(report: &Report, label: &str) -> RunInfo {
    RunInfo {
        label: label.to_owned(),
        provider: report.provider.name.clone(),
        proxy: report.provider.proxy.clone(),
        meshfed_version: report.meshfed_version.clone(),
        passed: report.passed,
    }
}

/// Provider, proxy and meshfed version: what a comparison across providers or versions is about.
fn context_changes(a: &Report, b: &Report) -> Vec<SettingChange> {
    let pairs = [
        ("provider", a.provider.name.clone(), b.provider.name.clone()),
        (
            "emulates",
            a.provider.emulates.clone().unwrap_or_else(|| "-".to_owned()),
            b.provider.emulates.clone().unwrap_or_else(|| "-".to_owned()),
        ),
        ("provider mode", a.provider.mode.clone(), b.provider.mode.clone()),
        ("proxy", a.provider.proxy.clone(), b.provider.proxy.clone()),
        ("meshfed version", a.meshfed_version.clone(), b.meshfed_version.clone()),
    ];
    changes(pairs)
}

/// The pairs whose values differ.
fn changes<const N: usize>(pairs: [(&str, String, String); N]) -> Vec<SettingChange> {
    pairs
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(field, a, b)| SettingChange {
            field: field.to_owned(),
            a,
            b,
        })
        .collect()
}

fn isolation_diffs(a: &Report, b: &Report, differences: &mut Vec<Difference>) -> Vec<IsolationDiff> {
    let mut pairs: BTreeMap<(String, String), (Option<bool>, Option<bool>)> = BTreeMap::new();
    for probe in &a.isolation {
        pairs
            .entry((probe.from_cluster.clone(), probe.to_cluster.clone()))
            .or_default()
            .0 = Some(probe.isolated);
    }
    for probe in &b.isolation {
        pairs
            .entry((probe.from_cluster.clone(), probe.to_cluster.clone()))
            .or_default()
            .1 = Some(probe.isolated);
    }
    pairs
        .into_iter()
        .map(|((from_cluster, to_cluster), (isolated_a, isolated_b))| {
            let flagged = isolated_a != isolated_b;
            if flagged {
                differences.push(Difference {
                    phase: None,
                    subject: format!("isolation {from_cluster} -> {to_cluster}"),
                    detail: format!(
                        "{} in A, {} in B",
                        isolation_word(isolated_a),
                        isolation_word(isolated_b)
                    ),
                    threshold: "any change of verdict".to_owned(),
                });
            }
            IsolationDiff {
                from_cluster,
                to_cluster,
                isolated_a,
                isolated_b,
                flagged,
            }
        })
        .collect()
}

fn isolation_word(isolated: Option<bool>) -> &'static str {
    match isolated {
        Some(true) => "isolated (PASS)",
        Some(false) => "not isolated (FAIL)",
        None => "not probed",
    }
}

#[cfg(test)]
mod tests;
