//! `junit.xml`: the report in the JUnit XML form GitHub, GitLab and Jenkins read (pure rendering,
//! plus one atomic write). One `<testsuite>` for the isolation probes and one per phase; one
//! `<testcase>` per probe and per expectation; a failed one carries the observed value, the bound
//! and the detail.

use std::fmt::Write as _;

use super::markup::escape;
use super::{PhaseReport, Report};
use crate::atomic_files;
use crate::observation::IsolationProbe;

/// File name of the JUnit report, next to `report.json`.
pub const JUNIT_FILE: &str = "junit.xml";

/// The JUnit XML document for a report.
pub fn junit(report: &Report) -> String {
    let mut suites = String::new();
    let mut tests = 0;
    let mut failures = 0;
    let class_prefix = format!("meshfed.{}", report.scenario.name);
    if !report.isolation.is_empty() {
        let failed = report.isolation.iter().filter(|probe| !probe.isolated).count();
        tests += report.isolation.len();
        failures += failed;
        let _ = writeln!(
            suites,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" skipped=\"0\">",
            escape(&format!("{class_prefix}.isolation")),
            report.isolation.len()
        );
        for probe in &report.isolation {
            isolation_case(&mut suites, &class_prefix, probe);
        }
        suites.push_str("  </testsuite>\n");
    }
    for phase in &report.phases {
        let failed = phase.expectations.iter().filter(|result| !result.passed).count();
        tests += phase.expectations.len();
        failures += failed;
        phase_suite(&mut suites, &class_prefix, phase, failed);
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" time=\"{:.3}\">",
        escape(&class_prefix),
        report.timings.total_ms as f64 / 1000.0
    );
    out.push_str(&suites);
    out.push_str("</testsuites>\n");
    out
}

fn isolation_case(out: &mut String, class_prefix: &str, probe: &IsolationProbe) {
    let name = format!(
        "{}/{} cannot reach {} except through its gateway",
        probe.from_cluster, probe.from_pod, probe.to_cluster
    );
    let _ = write!(
        out,
        "    <testcase classname=\"{}\" name=\"{}\"",
        escape(&format!("{class_prefix}.isolation")),
        escape(&name)
    );
    if probe.isolated {
        out.push_str("/>\n");
        return;
    }
    let observed = probe.observed();
    let _ = writeln!(
        out,
        ">\n      <failure message=\"{}\" type=\"isolation\">observed: {}\nbound: pod unreachable, gateway connected</failure>\n    </testcase>",
        escape(&format!(
            "observed {observed}; bound: pod unreachable, gateway connected"
        )),
        escape(&observed)
    );
}

fn phase_suite(out: &mut String, class_prefix: &str, phase: &PhaseReport, failed: usize) {
    let classname = format!("{class_prefix}.phase.{}", phase.name);
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\" errors=\"0\" skipped=\"0\">",
        escape(&classname),
        phase.expectations.len()
    );
    for result in &phase.expectations {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\"",
            escape(&classname),
            escape(&format!("{} {}", result.expectation, result.bound_text()))
        );
        if result.passed {
            out.push_str("/>\n");
            continue;
        }
        let message = format!(
            "observed {}; bound {} {}",
            result.observed_text(),
            result.expectation,
            result.bound_text()
        );
        let _ = writeln!(
            out,
            ">\n      <failure message=\"{}\" type=\"expectation\">observed: {}\nbound: {} {}\ndetail: {}</failure>\n    </testcase>",
            escape(&message),
            escape(&result.observed_text()),
            escape(&result.expectation),
            escape(&result.bound_text()),
            escape(&result.detail)
        );
    }
    out.push_str("  </testsuite>\n");
}

/// Writes [`junit`] of `report` to `dir/junit.xml` in one step (temp file, fsync, rename): an
/// earlier file there stays whole if the write fails.
///
/// # Errors
/// When the file cannot be created, written, synced or renamed into place (e.g. the disk is full
/// or `dir` is read-only).
pub fn write_junit(dir: &atomic_files::Dir, report: &Report) -> std::io::Result<()> {
    dir.write_file_atomic(JUNIT_FILE, junit(report).as_bytes(), 0o644)
}
