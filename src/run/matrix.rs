//! A version matrix: the same scenario once per Istio version (every cluster overridden), each
//! run in its own helper process through [`super::Run`], so each local world gets a fresh sandbox
//! and the deadline, teardown and report reading of a library run. Comparing and printing are the
//! caller's; this module only runs.

use std::path::{Path, PathBuf};

use crate::scenario::IstioVersion;

use super::{Error, ProviderKind, Run, RunReport, ScenarioSource};

/// What to run once per version.
pub(crate) struct Matrix<'matrix> {
    /// The scenario file.
    pub scenario_path: &'matrix Path,
    /// The versions, in the order to run and compare them (each pair of neighbours is diffed).
    pub versions: &'matrix [IstioVersion],
    /// Where the clusters come from.
    pub provider: ProviderKind,
    /// Each version's report goes to `<report_dir>/<version>/`.
    pub report_dir: Option<&'matrix Path>,
    /// kind/kubeconfig: the image foo and bar run.
    pub image: Option<String>,
}

/// One finished run of the matrix.
pub(crate) struct VersionRun {
    /// The Istio version every cluster ran.
    pub version: IstioVersion,
    /// Its report directory, if one was asked for.
    pub report_dir: Option<PathBuf>,
    /// What it found.
    pub report: RunReport,
}

/// `<report_dir>/<version>/`: e.g. `reports/1.13.9/`.
pub(crate) fn version_report_dir(report_dir: &Path, version: IstioVersion) -> PathBuf {
    report_dir.join(version.to_string())
}

/// Checks, before anything is created, that every version's report directory
/// (`<report_dir>/<version>/`) can take a report: absent, or a directory that no other run holds
/// and in which no report file's name is taken by a directory. Bad input (exit 2) otherwise,
/// naming the directory and what is in the way.
pub(crate) fn check_report_dirs(report_dir: &Path, versions: &[IstioVersion]) -> Result<(), String> {
    use crate::atomic_files::{Dir, EntryKind};
    for &version in versions {
        let dir = version_report_dir(report_dir, version);
        let unusable = |why: String| {
            format!(
                "the report directory of Istio {version}, {}, {why}; nothing was created. Move it away or \
                 choose another --report-dir",
                dir.display()
            )
        };
        match std::fs::metadata(&dir) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                if std::fs::symlink_metadata(&dir).is_ok() {
                    return Err(unusable("is a symlink to nothing".to_owned()));
                }
                continue;
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotADirectory => {
                return Err(unusable(format!(
                    "cannot exist: {} is not a directory",
                    report_dir.display()
                )));
            }
            Err(error) => return Err(unusable(format!("cannot be read: {error}"))),
            Ok(metadata) if !metadata.is_dir() => return Err(unusable("is not a directory".to_owned())),
            Ok(_) => {}
        }
        let handle = Dir::open(&dir).map_err(|error| unusable(format!("cannot be opened: {error}")))?;
        for name in super::report_dir::REPORT_FILES {
            match handle.entry(name) {
                Ok(None | Some(EntryKind::File | EntryKind::Symlink)) => {}
                Ok(Some(_)) => return Err(unusable(format!("holds a {name} that is not a file"))),
                Err(error) => return Err(unusable(format!("cannot be read: {error}"))),
            }
        }
        match handle.try_lock() {
            Ok(Some(_free)) => {}
            Ok(None) => return Err(unusable("is in use by another meshfed run".to_owned())),
            Err(error) => return Err(unusable(format!("cannot be locked: {error}"))),
        }
    }
    Ok(())
}

/// Runs the scenario once per version, in order, calling `finished` after each run (so its summary
/// shows while the next one runs). Stops at the first run that gives no report (bad input,
/// infrastructure, interrupt), returning the version it was for: a matrix with a hole compares
/// nothing.
pub(crate) fn matrix(
    matrix: Matrix<'_>,
    interrupted: impl Fn() -> bool,
    mut finished: impl FnMut(&VersionRun),
) -> Result<Vec<VersionRun>, (IstioVersion, Error)> {
    let mut runs = Vec::with_capacity(matrix.versions.len());
    for (index, &version) in matrix.versions.iter().enumerate() {
        if interrupted() {
            return Err((version, Error::Interrupted));
        }
        // The run's own progress goes to its helper's captured output: say what is running.
        tracing::info!(
            "meshfed: Istio {version} ({} of {}): running {}",
            index + 1,
            matrix.versions.len(),
            matrix.scenario_path.display()
        );
        let report_dir = matrix
            .report_dir
            .map(|report_dir| version_report_dir(report_dir, version));
        let mut run = Run::new(ScenarioSource::file(matrix.scenario_path))
            .provider(matrix.provider)
            .istio_version(version);
        if let Some(dir) = &report_dir {
            run = run.report_dir(dir);
        }
        if let Some(image) = &matrix.image {
            run = run.image(image);
        }
        let version_run = VersionRun {
            version,
            report_dir,
            report: run.run().map_err(|error| (version, error))?,
        };
        finished(&version_run);
        runs.push(version_run);
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_version_reports_into_a_directory_named_after_it() {
        assert_eq!(
            version_report_dir(Path::new("reports"), IstioVersion::new(1, 14, 0)),
            Path::new("reports/1.14.0")
        );
    }
}
