//! `meshfed run SCENARIO` on one Istio version: the run itself is the library's; here its summary is printed, its
//! report written, an optional comparison made and the verdict mapped to the exit code.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::args::{ProviderName, RunArgs};
use super::{CliError, diff, infrastructure_or_interrupted, report_file, version_matrix};
use crate::interrupt;
use crate::run::lifecycle::{self, RunRequest};
use crate::run::matrix::Matrix;
use crate::scenario;

/// `meshfed run`: a kind dry run, a version matrix (in [`diff`]), or one version's run.
pub(super) fn run_command(args: RunArgs) -> Result<(), CliError> {
    let RunArgs {
        scenario,
        provider,
        report_dir,
        image,
        image_command,
        reuse,
        compare_to,
        istio_versions,
        thresholds,
        dry_run,
        keep_logs,
    } = args;
    if dry_run {
        if provider != ProviderName::Kind || istio_versions.len() > 1 {
            return Err(CliError::BadInput(
                "--dry-run shows a kind run: use it with --provider kind and at most one --istio-version".to_owned(),
            ));
        }
        print!(
            "{}",
            lifecycle::kind_dry_run(&scenario, istio_versions.first().copied())?
        );
        return Ok(());
    }
    if istio_versions.len() > 1 {
        if reuse || compare_to.is_some() || keep_logs.is_some() || image_command != "meshfed" {
            return Err(CliError::BadInput(
                "a version matrix (--istio-version given twice or more) takes neither --reuse, --compare-to, \
                 --keep-logs nor --image-command: run one version with them, or diff the matrix's reports with meshfed diff"
                    .to_owned(),
            ));
        }
        return version_matrix::matrix_command(
            Matrix {
                scenario_path: &scenario,
                versions: &istio_versions,
                provider: provider.into(),
                report_dir: report_dir.as_deref(),
                image,
            },
            &thresholds.thresholds(),
        );
    }
    let comparison = compare_to.map(|baseline| (baseline, thresholds.thresholds()));
    run_one_version(
        &scenario,
        provider,
        (report_dir.as_deref(), keep_logs.as_deref()),
        (image, image_command),
        reuse,
        (istio_versions.first().copied(), comparison),
    )
}

/// `meshfed run` on one version: the run happens in the library ([`lifecycle::run_scenario_file`]); here the
/// summary is printed, the report written and the verdict mapped to the exit code.
fn run_one_version(
    scenario_path: &Path,
    provider: ProviderName,
    (report_dir, keep_logs): (Option<&Path>, Option<&Path>),
    (image, image_command): (Option<String>, String),
    reuse: bool,
    (istio_version, compare_to): (
        Option<scenario::IstioVersion>,
        Option<(PathBuf, crate::diff::Thresholds)>,
    ),
) -> Result<(), CliError> {
    // The baseline is read and checked first: one that cannot be compared changes nothing.
    let baseline = match compare_to {
        Some((path, thresholds)) => {
            let name = scenario::load_with_istio_version(scenario_path, istio_version)?.name;
            Some((report_file::read_baseline(&path, scenario_path, &name)?, thresholds))
        }
        None => None,
    };
    let finished = lifecycle::run_scenario_file(RunRequest {
        scenario_path,
        provider: provider.into(),
        report_dir,
        image,
        image_command,
        reuse,
        istio_version,
        keep_logs,
    })?;
    print!("{}", crate::report::summary(&finished.report));
    finished.write_report()?;
    let run_failed = (!finished.report.passed).then(|| format!("{} check(s) failed", finished.report.failures()));
    let mut differs = None;
    if let Some(((label, baseline), thresholds)) = baseline {
        // The README promises exit 130 for an interrupt at any moment: the comparison and its
        // output (which may block on a slow reader) are moments too.
        check_interrupt()?;
        let new_label = report_dir.map_or_else(
            || "this run".to_owned(),
            |dir| dir.join("report.json").display().to_string(),
        );
        let (summary, differ) = diff::compare((&label, &baseline), (&new_label, &finished.report), &thresholds)?;
        check_interrupt()?;
        let mut stdout = std::io::stdout().lock();
        write!(
            stdout,
            "\ncompared to {}:\n{summary}",
            crate::printable::printable(&label)
        )
        .and_then(|()| stdout.flush())
        .map_err(|error| {
            infrastructure_or_interrupted(anyhow::Error::new(error).context("cannot print the comparison"))
        })?;
        check_interrupt()?;
        differs = differ.then(|| format!("this run differs from {label} beyond the thresholds"));
    }
    match (run_failed, differs) {
        (None, None) => Ok(()),
        (run_failed, differs) => Err(CliError::ExpectationFailed(format!(
            "{}; see the summary above",
            run_failed.into_iter().chain(differs).collect::<Vec<_>>().join("; ")
        ))),
    }
}

/// Exit 130 if an interrupt came since the last look.
fn check_interrupt() -> Result<(), CliError> {
    if interrupt::is_interrupted() {
        Err(CliError::Interrupted)
    } else {
        Ok(())
    }
}
