//! `meshfed run SCENARIO --istio-version A --istio-version B [...]`: the scenario once per version,
//! each version's report diffed against the one before it.

use std::io::Write as _;

use super::CliError;
use super::diff::compare;
use crate::diff::Thresholds;
use crate::run::matrix::{self, Matrix};
use crate::scenario::{self, IstioVersion};

/// Runs the scenario once per version and diffs each version against the one before it. Exit 0
/// when every run passed and no diff flagged anything, 1 otherwise; every version is checked
/// against the scenario (exit 2, nothing run) before the first run starts; `thresholds` say how
/// much may change between neighbouring versions.
pub(super) fn matrix_command(wanted: Matrix<'_>, thresholds: &Thresholds) -> Result<(), CliError> {
    let versions = wanted.versions;
    for (index, version) in versions.iter().enumerate() {
        if versions[..index].contains(version) {
            return Err(CliError::BadInput(format!(
                "--istio-version {version} is given twice: each version runs once (its report goes to <report-dir>/{version}/)"
            )));
        }
        scenario::load_with_istio_version(wanted.scenario_path, Some(*version))
            .map_err(|error| CliError::BadInput(format!("with --istio-version {version}: {error}")))?;
    }
    // Every version's report directory is checked before anything is created, then the matrix's
    // own directory is locked for the whole matrix (each version's run locks its own).
    let _report_dir = match wanted.report_dir {
        Some(dir) => {
            matrix::check_report_dirs(dir, versions).map_err(CliError::BadInput)?;
            Some(crate::run::report_dir::open(dir)?)
        }
        None => None,
    };
    let print = |text: &str| {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|error| CliError::Infrastructure(anyhow::Error::new(error).context("cannot write to stdout")))
    };
    let mut print_error = None;
    let runs = matrix::matrix(wanted, crate::interrupt::is_interrupted, |run| {
        let written = run
            .report_dir
            .as_ref()
            .map_or_else(String::new, |dir| format!(" (report in {})", dir.display()));
        if let Err(error) = print(&format!(
            "=== Istio {}{written} ===\n{}\n",
            run.version,
            run.report.summary().trim_end()
        )) {
            print_error.get_or_insert(error);
        }
    })
    .map_err(|(version, error)| match error {
        crate::run::Error::BadInput { message } => CliError::BadInput(format!("the run on Istio {version}: {message}")),
        crate::run::Error::Interrupted => CliError::Interrupted,
        other => CliError::Infrastructure(anyhow::Error::new(other).context(format!("the run on Istio {version}"))),
    })?;
    if let Some(error) = print_error {
        return Err(error);
    }
    let failed_runs: Vec<String> = runs
        .iter()
        .filter(|run| !run.report.passed())
        .map(|run| run.version.to_string())
        .collect();
    let mut differing_pairs = Vec::new();
    for pair in runs.windows(2) {
        let label = |run: &matrix::VersionRun| match &run.report_dir {
            Some(dir) => format!("{} ({})", run.version, dir.display()),
            None => run.version.to_string(),
        };
        let (label_a, label_b) = (label(&pair[0]), label(&pair[1]));
        let (summary, differs) = compare(
            (&label_a, pair[0].report.report()),
            (&label_b, pair[1].report.report()),
            thresholds,
        )?;
        print(&format!(
            "=== diff Istio {} -> {} ===\n{}\n",
            pair[0].version,
            pair[1].version,
            summary.trim_end()
        ))?;
        if differs {
            differing_pairs.push(format!("{} -> {}", pair[0].version, pair[1].version));
        }
    }
    if failed_runs.is_empty() && differing_pairs.is_empty() {
        print(&format!(
            "matrix: every run passed on {} and no neighbouring versions differ beyond the thresholds\n",
            versions_list(versions)
        ))?;
        return Ok(());
    }
    let mut reasons = Vec::new();
    if !failed_runs.is_empty() {
        reasons.push(format!("checks failed on Istio {}", failed_runs.join(", ")));
    }
    if !differing_pairs.is_empty() {
        reasons.push(format!(
            "differences beyond the thresholds: {}",
            differing_pairs.join(", ")
        ));
    }
    Err(CliError::ExpectationFailed(format!("matrix: {}", reasons.join("; "))))
}

fn versions_list(versions: &[IstioVersion]) -> String {
    versions.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}
