//! What a finished run hands a test: the typed report with questions a test asks of it
//! (`phase("x").mtls_rate()`, shares per pod and per cluster) and [`RunReport::assert_passed`].

use std::collections::BTreeMap;

use crate::measure::PhaseMeasurement;
use crate::report::{PhaseReport, Report};
use crate::verdict::ExpectationResult;

/// A finished run: `report.json` as typed values, plus the summary `meshfed run` prints.
///
/// A run whose expectations failed is still `Ok(RunReport)`: the test decides, usually with
/// [`RunReport::assert_passed`].
///
/// Asking [`RunReport::passed`] without looking at the answer asserts nothing; the compiler says
/// so (`#[must_use]`):
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// fn check(report: &meshfed::RunReport) {
///     report.passed(); // meant: assert!(report.passed())
/// }
/// ```
///
/// ```
/// #![deny(unused_must_use)]
/// fn check(report: &meshfed::RunReport) {
///     assert!(report.passed(), "{}", report.failures().join("\n"));
/// }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a run's report says whether it passed: check it, e.g. with `assert_passed()`"]
pub struct RunReport {
    report: Report,
    summary: String,
}

impl RunReport {
    pub(crate) fn new(report: Report, summary: String) -> RunReport {
        RunReport { report, summary }
    }

    /// Every expectation held and every isolation probe passed.
    #[must_use = "`passed()` asserts nothing by itself: use `assert!(report.passed())` or `report.assert_passed()`"]
    pub fn passed(&self) -> bool {
        self.report.passed
    }

    /// The human summary `meshfed run` prints (one table per phase, every verdict).
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// The whole report, as written to `report.json` (fields in docs/report.md).
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The phase called `name`.
    ///
    /// # Panics
    /// If the scenario has no such phase; the message lists the phases it has. Use
    /// [`RunReport::try_phase`] to ask instead.
    pub fn phase(&self, name: &str) -> PhaseResult<'_> {
        self.try_phase(name).unwrap_or_else(|| {
            let names: Vec<&str> = self.report.phases.iter().map(|phase| phase.name.as_str()).collect();
            panic!(
                "scenario {} has no phase {name:?}; its phases are: {}",
                self.report.scenario.name,
                names.join(", ")
            )
        })
    }

    /// The phase called `name`, if the scenario has one.
    #[must_use]
    pub fn try_phase(&self, name: &str) -> Option<PhaseResult<'_>> {
        self.report
            .phases
            .iter()
            .find(|phase| phase.name == name)
            .map(|phase| PhaseResult { phase })
    }

    /// Every phase, in the order they ran.
    pub fn phases(&self) -> impl Iterator<Item = PhaseResult<'_>> {
        self.report.phases.iter().map(|phase| PhaseResult { phase })
    }

    /// One line per check that failed: isolation probes, then each phase's expectations with the
    /// observed value, the bound and the detail. Empty when the run passed.
    #[must_use = "`failures()` asserts nothing by itself: use `report.assert_passed()`"]
    pub fn failures(&self) -> Vec<String> {
        let isolation = self
            .report
            .isolation
            .iter()
            .filter(|probe| !probe.isolated)
            .map(|probe| format!("isolation {}: {}", probe.route(), probe.observed()));
        let expectations = self.phases().flat_map(|phase| {
            phase
                .expectations()
                .iter()
                .filter(|result| !result.passed)
                .map(move |result| {
                    format!(
                        "phase {}: {} observed {} (bound {}){}",
                        phase.name(),
                        result.expectation,
                        result.observed_text(),
                        result.bound_text(),
                        if result.detail.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", result.detail)
                        }
                    )
                })
                .collect::<Vec<_>>()
        });
        isolation.chain(expectations).collect()
    }

    /// Panics unless the run passed; the message lists every failed check, then the summary.
    #[track_caller]
    pub fn assert_passed(&self) {
        if self.passed() {
            return;
        }
        let failures = self.failures();
        panic!(
            "meshfed scenario {} failed {} check(s):\n  {}\n{}",
            self.report.scenario.name,
            failures.len(),
            failures.join("\n  "),
            self.summary
        );
    }
}

/// One phase of a finished run.
#[derive(Clone, Copy, Debug)]
pub struct PhaseResult<'report> {
    phase: &'report PhaseReport,
}

impl<'report> PhaseResult<'report> {
    /// The phase's name, as written in the scenario.
    pub fn name(&self) -> &'report str {
        &self.phase.name
    }

    /// All its expectations held.
    #[must_use = "`passed()` asserts nothing by itself: use `assert!(phase.passed())`"]
    pub fn passed(&self) -> bool {
        self.phase.passed
    }

    /// Requests that succeeded with exactly the expected caller identity, over requests sent
    /// (failed requests count against it; 0 when nothing was sent).
    pub fn mtls_rate(&self) -> f64 {
        self.measurement().mtls_rate
    }

    /// Requests that got a complete, successful reply, over requests sent.
    pub fn success_rate(&self) -> f64 {
        self.measurement().success_rate
    }

    /// Requests the client sent.
    pub fn requests_sent(&self) -> u64 {
        self.measurement().attempted
    }

    /// Share of the answered requests each expected pod answered, keyed `cluster/pod` (pods that
    /// got nothing are there with 0).
    pub fn pod_shares(&self) -> BTreeMap<String, f64> {
        self.measurement()
            .pods
            .iter()
            .map(|pod| (format!("{}/{}", pod.cluster, pod.pod), pod.request_share))
            .collect()
    }

    /// Share of the answered requests pod `pod` of cluster `cluster` answered; `None` if it was
    /// not an expected pod of the phase.
    pub fn pod_share(&self, cluster: &str, pod: &str) -> Option<f64> {
        self.measurement()
            .pods
            .iter()
            .find(|load| load.cluster == cluster && load.pod == pod)
            .map(|load| load.request_share)
    }

    /// Share of the answered requests each cluster's expected pods answered together.
    pub fn cluster_shares(&self) -> BTreeMap<String, f64> {
        self.measurement()
            .clusters
            .iter()
            .map(|cluster| (cluster.cluster.clone(), cluster.request_share))
            .collect()
    }

    /// Share of the answered requests cluster `cluster`'s expected pods answered; `None` if it
    /// has none.
    pub fn cluster_share(&self, cluster: &str) -> Option<f64> {
        self.measurement()
            .clusters
            .iter()
            .find(|load| load.cluster == cluster)
            .map(|load| load.request_share)
    }

    /// Clusters that answered at least one request, sorted.
    pub fn clusters_reached(&self) -> &'report [String] {
        &self.measurement().clusters_reached
    }

    /// Every expectation of the phase, judged.
    pub fn expectations(&self) -> &'report [ExpectationResult] {
        &self.phase.expectations
    }

    /// Everything measured in the phase.
    pub fn measurement(&self) -> &'report PhaseMeasurement {
        &self.phase.measurement
    }

    /// The phase as it is in the report.
    pub fn report(&self) -> &'report PhaseReport {
        self.phase
    }
}
