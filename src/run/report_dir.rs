//! The report directory of a run (`--report-dir`): created, checked and locked before anything
//! starts, and where `report.json`, `junit.xml` and `report.html` are replaced in one step.
//!
//! The lock (`flock` on the directory, [`atomic_files::DirLock`]) lasts the whole run, so a second run
//! into the same directory is refused up front (exit 2) naming the holder, which each run writes
//! into [`HOLDER_FILE`] while it holds the lock. Holding it also makes every temporary sibling of
//! the report files there a leftover of a run that was killed: they are removed.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::atomic_files::{self, DirLock, EntryKind};
use crate::report::{HTML_FILE, JUNIT_FILE, Report};

use super::failure::RunFailure;

/// `report.json`.
pub(crate) const REPORT_FILE: &str = "report.json";

/// The files a run replaces in its report directory.
pub(crate) const REPORT_FILES: [&str; 3] = [REPORT_FILE, JUNIT_FILE, HTML_FILE];

/// Who holds the directory's lock: one line written by the holder, removed when it ends.
pub(crate) const HOLDER_FILE: &str = ".meshfed-run";

/// An open, checked report directory, locked by this run until dropped.
#[derive(Debug)]
pub(crate) struct ReportDir {
    dir: atomic_files::Dir,
    /// Where the directory resolved to (absolute, symlinks resolved).
    resolved: PathBuf,
    /// `None` on a file system without `flock` (then concurrent runs are not kept apart).
    _lock: Option<DirLock>,
}

impl ReportDir {
    /// Its absolute path with symlinks resolved, to compare with other directories of the run.
    pub(crate) fn resolved(&self) -> &Path {
        &self.resolved
    }
}

impl Drop for ReportDir {
    fn drop(&mut self) {
        // Before the lock goes (field order): the next holder writes its own.
        let _ = self.dir.remove_tree(HOLDER_FILE);
    }
}

/// Creates, opens, locks and checks the report directory: exit 2 if it cannot be used (held by
/// another run, not writable, a report file's name taken by a directory), 3 if its disk is full.
/// Nothing is changed in it when this fails.
pub(crate) fn open(path: &Path) -> Result<ReportDir, RunFailure> {
    let dir = atomic_files::Dir::create_all(path).map_err(|error| {
        let message = format!("cannot create the report directory {}: {error}", path.display());
        if atomic_files::is_out_of_space(&error) {
            RunFailure::Infrastructure(anyhow::anyhow!(message))
        } else {
            RunFailure::BadInput(message)
        }
    })?;
    let cannot_read = |error: std::io::Error| {
        RunFailure::BadInput(format!(
            "cannot use {} as the report directory: {error}",
            path.display()
        ))
    };
    let lock = match dir.try_lock() {
        Ok(lock) => lock.map(Some),
        // A file system without flock (some network file systems): run unlocked, and say so.
        Err(error)
            if matches!(
                error.raw_os_error().map(Errno::from_raw),
                Some(Errno::ENOLCK | Errno::EOPNOTSUPP | Errno::ENOSYS)
            ) =>
        {
            tracing::warn!(
                "meshfed: cannot lock the report directory {} ({error}); another run writing there at the same \
                 time would not be refused",
                path.display()
            );
            Some(None)
        }
        Err(error) => return Err(cannot_read(error)),
    };
    let Some(lock) = lock else {
        return Err(RunFailure::BadInput(format!(
            "the report directory {} is in use by another meshfed run ({}); nothing was changed. \
             Wait for that run to end or choose another --report-dir",
            path.display(),
            await_holder_note(&dir)
        )));
    };
    // Said at once, before any check, so a run refused meanwhile can name this one.
    let holder = format!(
        "pid {} on {}, since {}: {}",
        std::process::id(),
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "this host".to_owned(), |host| host.trim().to_owned()),
        crate::report::rfc3339_utc(std::time::SystemTime::now()),
        std::env::args().collect::<Vec<_>>().join(" ")
    );
    dir.write_file_atomic(HOLDER_FILE, format!("{holder}\n").as_bytes(), 0o644)
        .map_err(|error| {
            RunFailure::Infrastructure(
                anyhow::Error::new(error).context("cannot note this run in the report directory"),
            )
        })?;
    // From here on dropping it (also on a failed check) removes the note and releases the lock.
    let report_dir = ReportDir {
        resolved: std::fs::canonicalize(path).map_err(cannot_read)?,
        dir,
        _lock: lock,
    };
    let dir = &report_dir.dir;
    for name in REPORT_FILES {
        match dir.entry(name).map_err(cannot_read)? {
            None | Some(EntryKind::File | EntryKind::Symlink) => {}
            Some(kind) => {
                return Err(RunFailure::BadInput(format!(
                    "{} is {}, where meshfed writes its {name}; nothing was changed. Move it away or choose \
                     another --report-dir",
                    path.join(name).display(),
                    match kind {
                        EntryKind::Directory => "a directory",
                        _ => "a special file",
                    }
                )));
            }
        }
    }
    dir.check_writable().map_err(|error| {
        let out_of_space = error.is_out_of_space();
        let message = format!(
            "cannot write reports to {}: {:#}",
            path.display(),
            anyhow::Error::new(error)
        );
        if out_of_space {
            RunFailure::Infrastructure(anyhow::anyhow!(message))
        } else {
            RunFailure::BadInput(message)
        }
    })?;
    remove_leftover_temporaries(dir);
    Ok(report_dir)
}

/// The holder's note: it writes it right after taking the lock, so a run that found the lock
/// taken a moment before waits for it (at most [`HOLDER_NOTE_WAIT`]).
fn await_holder_note(dir: &atomic_files::Dir) -> String {
    let deadline = std::time::Instant::now() + HOLDER_NOTE_WAIT;
    loop {
        let note = std::fs::read(dir.path().join(HOLDER_FILE))
            .map(|text| String::from_utf8_lossy(&text).trim().to_owned())
            .unwrap_or_default();
        if !note.is_empty() {
            return note;
        }
        if std::time::Instant::now() >= deadline {
            return "it has not said who it is".to_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// How long a refused run waits for the holder's note.
const HOLDER_NOTE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Removes `.<report file>.meshfed-*` temporaries: with the lock held no other run writes here,
/// so they are left by one that was killed while writing.
fn remove_leftover_temporaries(dir: &atomic_files::Dir) {
    let Ok(names) = dir.names() else { return };
    for name in names {
        if is_report_temporary(&name) && dir.entry(&name).ok().flatten() == Some(EntryKind::File) {
            match dir.remove_tree(&name) {
                Ok(()) => tracing::debug!(
                    "removed {} (left by a run that was killed while writing)",
                    dir.path().join(&name).display()
                ),
                Err(error) => tracing::warn!("meshfed: cannot remove {}: {error}", dir.path().join(&name).display()),
            }
        }
    }
}

/// `.report.json.meshfed-tmp-...`, `.probe.meshfed-probe-...`, `.meshfed-run.meshfed-tmp-...`.
fn is_report_temporary(name: &OsStr) -> bool {
    let name = name.as_bytes();
    REPORT_FILES
        .iter()
        .chain(&["probe", HOLDER_FILE])
        .any(|file| name.starts_with(format!(".{file}.meshfed-").as_bytes()))
}

/// Replaces `report.json`, `junit.xml` and `report.html` in one step each; on failure the earlier
/// report is unchanged (exit 3).
pub(crate) fn write_report(report_dir: &ReportDir, report: &Report) -> Result<(), RunFailure> {
    let dir = &report_dir.dir;
    let path = dir.path().join(REPORT_FILE);
    let json = serde_json::to_string_pretty(report).map_err(|error| RunFailure::Infrastructure(error.into()))?;
    dir.write_file_atomic(REPORT_FILE, (json + "\n").as_bytes(), 0o644)
        .map_err(|error| {
            RunFailure::Infrastructure(anyhow::Error::new(error).context(format!(
                "cannot write {} (the run itself {}; any earlier {REPORT_FILE} there is unchanged)",
                path.display(),
                if report.passed { "passed" } else { "failed" }
            )))
        })?;
    for (name, written) in [
        (JUNIT_FILE, crate::report::write_junit(dir, report)),
        (HTML_FILE, crate::report::write_html(dir, report)),
    ] {
        written.map_err(|error| {
            RunFailure::Infrastructure(
                anyhow::Error::new(error).context(format!("cannot write {}", dir.path().join(name).display())),
            )
        })?;
    }
    tracing::info!(
        "report written to {} (with {JUNIT_FILE} and {HTML_FILE})",
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_temporaries_of_the_report_files_count_as_leftovers() {
        assert!(is_report_temporary(OsStr::new(
            ".report.json.meshfed-tmp-2-0123456789abcdef"
        )));
        assert!(is_report_temporary(OsStr::new(".junit.xml.meshfed-tmp-2-1")));
        assert!(!is_report_temporary(OsStr::new(".plan.meshfed-tmp-2-1")));
        assert!(!is_report_temporary(OsStr::new("report.json")));
    }
}
