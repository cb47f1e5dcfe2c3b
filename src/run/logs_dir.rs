//! Where a run's diagnostics ([`crate::kept_logs`]) go: `--keep-logs DIR`, and a failed run's
//! `<report-dir>/logs/`. Each is a directory meshfed replaces as a whole (built next to it, then
//! swapped in) and recognises by the marker file [`LOGS_MARKER`] it writes into it: only an
//! absent or empty directory, or one holding that marker, is ever replaced or removed. A user's
//! own `logs/` in the report directory is never touched; a failed run then keeps its
//! diagnostics in `meshfed-logs/` instead.

use std::path::{Path, PathBuf};

use crate::atomic_files::{self, Existing, OutDir};
use crate::kept_logs::{self, KeptFile};

use super::failure::RunFailure;

/// The file that marks a directory as diagnostics meshfed kept (and may replace).
pub(crate) const LOGS_MARKER: &str = ".meshfed-logs";

/// Where a failed run keeps its diagnostics in the report directory, in order of preference: the
/// second when the first is someone else's.
pub(crate) const FAILED_RUN_LOGS: [&str; 2] = ["logs", "meshfed-logs"];

/// A directory of kept diagnostics, resolved and checked before the run starts.
#[derive(Debug)]
pub(crate) struct LogsDir {
    out: OutDir,
}

/// Why a directory cannot hold kept diagnostics.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogsDirError {
    /// It holds files meshfed did not keep there.
    #[error(
        "{path} exists and is not a directory of diagnostics meshfed kept (it has no {LOGS_MARKER} file); \
         meshfed never replaces or removes it"
    )]
    Foreign {
        /// The directory.
        path: PathBuf,
    },
    /// The path cannot be an output directory.
    #[error(transparent)]
    Out(#[from] atomic_files::OutDirError),
    /// Reading it failed.
    #[error("cannot read {path}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl LogsDir {
    /// Resolves `path` and checks it may be replaced: absent, empty, or marked by meshfed.
    pub(crate) fn resolve(path: &Path) -> Result<LogsDir, LogsDirError> {
        let out = OutDir::resolve(path)?;
        let io_error = |source| LogsDirError::Io {
            path: path.to_owned(),
            source,
        };
        if let Existing::Directory(old) = out.existing().map_err(io_error)? {
            let marked = old.entry(LOGS_MARKER).map_err(io_error)? == Some(atomic_files::EntryKind::File);
            if !marked && !old.names().map_err(io_error)?.is_empty() {
                return Err(LogsDirError::Foreign { path: path.to_owned() });
            }
        }
        Ok(LogsDir { out })
    }

    /// The absolute path it resolved to.
    pub(crate) fn path(&self) -> &Path {
        self.out.path()
    }

    /// Replaces the directory with `files` (and the marker) in one step, skipping any file that
    /// holds a private key; returns the paths withheld.
    pub(crate) fn replace(&self, files: &[KeptFile]) -> anyhow::Result<Vec<PathBuf>> {
        let staged = self.out.stage(0o755)?;
        staged
            .dir()
            .create_file(LOGS_MARKER, b"diagnostics kept by meshfed run\n", 0o644)?;
        let withheld = kept_logs::write_kept(staged.dir(), files)?;
        staged.commit()?;
        Ok(withheld)
    }

    /// Removes the directory if meshfed kept it (it holds the marker); anything else stays.
    pub(crate) fn remove_if_kept_by_meshfed(&self) -> std::io::Result<bool> {
        self.out.remove_if_marked(LOGS_MARKER)
    }
}

/// The failed-run logs directory of the report directory `report_dir` (resolved): `logs/`, or
/// `meshfed-logs/` when `logs/` is someone else's; `None` (with a warning) when neither can be.
pub(crate) fn failed_run_logs(report_dir: &Path) -> Option<LogsDir> {
    let mut foreign = Vec::new();
    for name in FAILED_RUN_LOGS {
        match LogsDir::resolve(&report_dir.join(name)) {
            Ok(logs) => {
                if !foreign.is_empty() {
                    tracing::info!(
                        "meshfed: {} is not meshfed's: a failed run keeps its diagnostics in {} instead",
                        foreign.join(", "),
                        logs.path().display()
                    );
                }
                return Some(logs);
            }
            Err(LogsDirError::Foreign { path }) => foreign.push(path.display().to_string()),
            Err(error) => {
                tracing::warn!(
                    "meshfed: a failed run cannot keep its diagnostics in the report directory: {:#}",
                    anyhow::Error::new(error)
                );
                return None;
            }
        }
    }
    tracing::warn!(
        "meshfed: {} are not meshfed's, so a failed run keeps no diagnostics in the report directory; \
         pass --keep-logs DIR to keep them elsewhere",
        foreign.join(" and ")
    );
    None
}

/// Bad input when `--keep-logs` would swallow the report directory (it is the report directory
/// or contains it): replacing it would replace the reports.
pub(crate) fn check_apart(keep: &LogsDir, report_dir: &Path) -> Result<(), RunFailure> {
    if report_dir.starts_with(keep.path()) {
        return Err(RunFailure::BadInput(format!(
            "--keep-logs {} is (or contains) the report directory {}: meshfed replaces the --keep-logs \
             directory as a whole; choose a directory of its own, e.g. {}",
            keep.path().display(),
            report_dir.display(),
            report_dir.join("kept").display()
        )));
    }
    Ok(())
}
