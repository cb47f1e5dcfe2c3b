//! Running a scenario from Rust, e.g. from a user's own `cargo test`: [`Run`] loads a scenario,
//! picks a provider, runs it in a helper process and returns a typed [`RunReport`].
//!
//! A test process is multi-threaded (libtest, `#[tokio::test]`), and the kernel only moves a
//! single-threaded process into new namespaces. So the run happens in a helper: [`Run::run`]
//! re-executes the current executable with [`HELPER_ENV`] set, and a constructor
//! that meshfed places in `.init_array` turns that process into the `meshfed` command line
//! before its `main` (and before any thread) starts. The helper finds or installs Envoy as
//! `meshfed setup` does, enters its sandbox, runs the scenario, tears everything down and writes
//! `report.json`, which [`Run::run`] reads back. No path to a `meshfed` binary is needed.
//!
//! ```no_run
//! use meshfed::run::{Run, ScenarioSource};
//!
//! let report = Run::new(ScenarioSource::file("scenarios/seed.yaml")).run()?;
//! report.assert_passed();
//! assert_eq!(report.phase("foo-to-bar-http").mtls_rate(), 1.0);
//! assert_eq!(report.phase("foo-to-bar-http").cluster_share("cluster2"), Some(1.0));
//! # Ok::<(), meshfed::run::Error>(())
//! ```
//!
//! Bad input comes back as [`Error::BadInput`] with the file, line and column:
//!
//! ```
//! use meshfed::run::{Error, Run, ScenarioSource};
//!
//! let outcome = Run::new(ScenarioSource::yaml("broken.yaml", "name: seed\nclusters: 7\n")).run();
//! match outcome {
//!     Err(Error::BadInput { message }) => assert!(message.contains("broken.yaml:2:"), "{message}"),
//!     other => panic!("expected bad input, got {other:?}"),
//! }
//! ```

mod failure;
pub(crate) mod lifecycle;
mod live_display;
mod logs_dir;
pub(crate) mod matrix;
pub(crate) mod report_dir;
mod report_view;

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use report_view::{PhaseResult, RunReport};

use crate::exit_code::{EXIT_BAD_INPUT, EXIT_EXPECTATION_FAILED, EXIT_INFRASTRUCTURE, EXIT_INTERRUPTED, EXIT_OK};

/// Set (to `1`) on a process that must act as the `meshfed` command line instead of running its
/// own `main` (see `helper_role`). Set only by [`Run`]; inherited by the helper's own children.
pub const HELPER_ENV: &str = "MESHFED_LIBRARY_HELPER";

/// How long [`Run::run`] waits for the helper by default. Each phase has its own deadline inside
/// (docs/scenario.md); this one only bounds the whole run, set-up and teardown included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// After [`Run::timeout`] the helper gets SIGTERM (it tears down); after this grace, SIGKILL
/// (the local provider's sandbox dies with it).
const TEARDOWN_GRACE: Duration = Duration::from_secs(20);

/// At most this much of the helper's output is kept (its tail), so a chatty run cannot fill memory.
const OUTPUT_TAIL_BYTES: u64 = 64 * 1024;

/// `report.json` larger than this is refused rather than read (the scenario bounds keep real
/// reports far below it).
const MAX_REPORT_BYTES: u64 = 256 * 1024 * 1024;

/// Where the scenario comes from.
#[derive(Clone, Debug)]
pub enum ScenarioSource {
    /// A scenario file (format: docs/scenario.md).
    File(PathBuf),
    /// Scenario YAML built in code; `name` is the file name errors point at.
    Yaml {
        /// File name used in messages and in the report, e.g. `my-test.yaml`.
        name: String,
        /// The YAML text.
        text: String,
    },
}

impl ScenarioSource {
    /// A scenario file.
    pub fn file(path: impl Into<PathBuf>) -> ScenarioSource {
        ScenarioSource::File(path.into())
    }

    /// Scenario YAML built in code (e.g. with `format!`); errors point at `name:LINE:COLUMN`.
    pub fn yaml(name: impl Into<String>, text: impl Into<String>) -> ScenarioSource {
        ScenarioSource::Yaml {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// Where the clusters come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProviderKind {
    /// Network namespaces and real Envoy on this machine (root or unprivileged user namespaces).
    #[default]
    Local,
    /// kind clusters with real Istio, created by meshfed (needs Docker and kind; set
    /// `MESHFED_WORKLOAD_IMAGE`, since a test binary cannot be the workload image).
    Kind,
    /// Existing clusters by kubeconfig context (needs [`Run::image`]).
    Kubeconfig,
}

impl ProviderKind {
    fn cli_name(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Kind => "kind",
            ProviderKind::Kubeconfig => "kubeconfig",
        }
    }
}

/// Why a run gave no report. A run whose expectations failed is not an error: it returns a
/// [`RunReport`] that says so.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The scenario (or an option) is invalid; the message names file, line and column. Nothing
    /// was created.
    #[error("bad input: {message}")]
    BadInput {
        /// meshfed's message.
        message: String,
    },
    /// The world could not be created, reached or torn down (Envoy missing, namespaces refused,
    /// a process died, a deadline passed).
    #[error("the run failed: {message}")]
    Infrastructure {
        /// meshfed's message, naming what failed.
        message: String,
    },
    /// The helper was interrupted (SIGINT/SIGTERM) and tore everything down.
    #[error("the run was interrupted; everything it created was torn down")]
    Interrupted,
    /// The helper did not finish within [`Run::timeout`]; it was stopped.
    #[error("the run did not finish within {timeout:?} and was stopped; its last output:\n{output_tail}")]
    TimedOut {
        /// The deadline.
        timeout: Duration,
        /// The end of the helper's error output (progress lines).
        output_tail: String,
    },
    /// The helper ended in a way meshfed never ends (killed by a signal, unknown exit code).
    #[error("meshfed's helper process ended with {status}; its last output:\n{output_tail}")]
    HelperFailed {
        /// How it ended.
        status: ExitStatus,
        /// The end of its error output.
        output_tail: String,
    },
    /// A file or directory the run needs could not be prepared or read.
    #[error("cannot {what} {path}")]
    Io {
        /// What was being done, e.g. "create the work directory".
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The helper wrote a `report.json` that is not a meshfed report.
    #[error("{path} is not a meshfed report")]
    Report {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: serde_json::Error,
    },
}

/// One scenario run, configured with a builder and started with [`Run::run`] (blocking) or
/// [`Run::run_async`].
///
/// A configured run that is never started is a mistake the compiler points out (`#[must_use]`):
///
/// ```compile_fail
/// #![deny(unused_must_use)]
/// use meshfed::{Run, ScenarioSource};
///
/// // Configured, never run: nothing was tested.
/// Run::new(ScenarioSource::file("scenarios/seed.yaml")).timeout(std::time::Duration::from_secs(60));
/// ```
///
/// The same statement, kept and run, compiles:
///
/// ```no_run
/// #![deny(unused_must_use)]
/// use meshfed::{IstioVersion, Run, ScenarioSource};
///
/// let run = Run::new(ScenarioSource::file("scenarios/seed.yaml")).timeout(std::time::Duration::from_secs(60));
/// run.run()?.assert_passed();
///
/// // The version type `istio_version` takes is at the crate root.
/// let version: IstioVersion = "1.22".parse().expect("a version");
/// let upgraded = Run::new(ScenarioSource::file("scenarios/seed.yaml")).istio_version(version);
/// upgraded.run()?.assert_passed();
/// # Ok::<(), meshfed::Error>(())
/// ```
#[derive(Clone, Debug)]
#[must_use = "a configured run does nothing until `.run()` or `.run_async()`"]
pub struct Run {
    scenario: ScenarioSource,
    provider: ProviderKind,
    report_dir: Option<PathBuf>,
    image: Option<String>,
    istio_version: Option<crate::scenario::IstioVersion>,
    timeout: Duration,
}

impl Run {
    /// A run of `scenario` on the local provider, report kept in memory only, [`DEFAULT_TIMEOUT`].
    pub fn new(scenario: ScenarioSource) -> Run {
        Run {
            scenario,
            provider: ProviderKind::Local,
            report_dir: None,
            image: None,
            istio_version: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Where the clusters come from (default [`ProviderKind::Local`]).
    pub fn provider(mut self, provider: ProviderKind) -> Run {
        self.provider = provider;
        self
    }

    /// Also keep `report.json` in `dir` (created if missing), as `meshfed run --report-dir`. The
    /// directory is locked for the run: another run into it at the same time is
    /// [`Error::BadInput`], naming the run that holds it.
    pub fn report_dir(mut self, dir: impl Into<PathBuf>) -> Run {
        self.report_dir = Some(dir.into());
        self
    }

    /// kubeconfig: the image foo and bar run (`meshfed run --image`).
    pub fn image(mut self, image: impl Into<String>) -> Run {
        self.image = Some(image.into());
        self
    }

    /// Every cluster runs this Istio version instead of the scenario's `istioVersion`
    /// (`meshfed run --istio-version`); a version outside the emulated range is [`Error::BadInput`].
    pub fn istio_version(mut self, version: crate::scenario::IstioVersion) -> Run {
        self.istio_version = Some(version);
        self
    }

    /// Stop the run (teardown included) after this long; default [`DEFAULT_TIMEOUT`].
    pub fn timeout(mut self, timeout: Duration) -> Run {
        self.timeout = timeout;
        self
    }

    /// Runs the scenario in a helper process and waits for it (at most [`Run::timeout`]).
    ///
    /// Safe to call from any thread of a multi-threaded process, and from async code that may
    /// block (prefer [`Run::run_async`] there).
    ///
    /// # Errors
    /// Only when there is no report: [`Error::BadInput`] (the scenario or an option is invalid,
    /// nothing was created), [`Error::Infrastructure`] (the world could not be created, reached or
    /// torn down), [`Error::Interrupted`], [`Error::TimedOut`] (after [`Run::timeout`]),
    /// [`Error::HelperFailed`] (the helper was killed), [`Error::Io`] (its work directory or the
    /// report directory) and [`Error::Report`] (an unreadable `report.json`). A run whose
    /// expectations failed is `Ok`: see [`RunReport::passed`].
    pub fn run(self) -> Result<RunReport, Error> {
        let work = WorkDir::create()?;
        let scenario_path = match &self.scenario {
            ScenarioSource::File(path) => absolute(path)?,
            ScenarioSource::Yaml { name, text } => {
                let file_name = Path::new(name).file_name().map_or_else(
                    || std::ffi::OsString::from("scenario.yaml"),
                    std::ffi::OsStr::to_os_string,
                );
                let path = work.path.join(&file_name);
                std::fs::write(&path, text).map_err(io_error("write the scenario to", &path))?;
                // Relative to the helper's working directory (the work directory), so messages
                // and the report name the file as the caller did.
                PathBuf::from(file_name)
            }
        };
        let report_dir = match &self.report_dir {
            Some(dir) => absolute(dir)?,
            None => work.path.join("report"),
        };
        let stdout_path = work.path.join("stdout");
        let stderr_path = work.path.join("stderr");
        let create = |path: &Path| std::fs::File::create(path).map_err(io_error("create", path));
        let mut command = Command::new("/proc/self/exe");
        command
            .arg0("meshfed")
            .arg("run")
            .arg(&scenario_path)
            .args(["--provider", self.provider.cli_name()])
            .arg("--report-dir")
            .arg(&report_dir)
            .env(HELPER_ENV, "1")
            .current_dir(&work.path)
            .stdin(Stdio::null())
            .stdout(create(&stdout_path)?)
            .stderr(create(&stderr_path)?);
        if let Some(image) = &self.image {
            command.args(["--image", image]);
        }
        if let Some(version) = self.istio_version {
            command.args(["--istio-version", &version.to_string()]);
        }
        // The helper gets SIGTERM (and tears down) if the thread that started it dies, e.g. when
        // the test process is killed.
        crate::process::die_with_parent(&mut command, nix::sys::signal::Signal::SIGTERM);
        let mut helper = command.spawn().map_err(io_error(
            "start meshfed's helper process from",
            Path::new("/proc/self/exe"),
        ))?;
        let status = match await_exit(&mut helper, self.timeout, Interruptible::Yes) {
            Waited::Exited(status) => status,
            Waited::TimedOut => {
                stop(&mut helper);
                return Err(Error::TimedOut {
                    timeout: self.timeout,
                    output_tail: read_tail(&stderr_path),
                });
            }
            Waited::Interrupted => {
                // The helper tears down on SIGTERM like meshfed on Ctrl-C.
                stop(&mut helper);
                return Err(Error::Interrupted);
            }
        };
        match status.code().and_then(|code| u8::try_from(code).ok()) {
            Some(EXIT_OK | EXIT_EXPECTATION_FAILED) => {
                let report = read_report(&report_dir.join("report.json"))?;
                Ok(RunReport::new(report, read_tail(&stdout_path)))
            }
            Some(EXIT_BAD_INPUT) => Err(Error::BadInput {
                message: meshfed_message(&read_tail(&stderr_path)),
            }),
            Some(EXIT_INFRASTRUCTURE) => Err(Error::Infrastructure {
                message: meshfed_message(&read_tail(&stderr_path)),
            }),
            Some(EXIT_INTERRUPTED) => Err(Error::Interrupted),
            _ => Err(Error::HelperFailed {
                status,
                output_tail: read_tail(&stderr_path),
            }),
        }
    }

    /// [`Run::run`] on tokio's blocking pool, for `#[tokio::test]` and other async code.
    ///
    /// # Errors
    /// As [`Run::run`].
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub async fn run_async(self) -> Result<RunReport, Error> {
        match tokio::task::spawn_blocking(move || self.run()).await {
            Ok(outcome) => outcome,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        }
    }
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { what, path, source }
}

fn absolute(path: &Path) -> Result<PathBuf, Error> {
    std::path::absolute(path).map_err(io_error("resolve", path))
}

/// A private directory for one run (scenario text, helper output, report), removed on drop.
///
/// Named `meshfed-run-<pid>-<random>` (the PID alone repeats across PID namespaces) and locked by
/// this process while it exists ([`crate::atomic_files::DirLock`]), with [`WORK_DIR_MARKER`] written
/// once the lock is held. A process killed before its drop (SIGKILL, or a signal meshfed does
/// not handle, such as SIGUSR1 or SIGALRM) leaves its directory behind unlocked: the next
/// [`WorkDir::create`] removes every such one, and never a directory without the marker.
struct WorkDir {
    path: PathBuf,
    _lock: crate::atomic_files::DirLock,
}

/// Marks a work directory as [`WorkDir`]'s, written while its lock is held.
const WORK_DIR_MARKER: &str = ".meshfed-work";
/// The name of every work directory starts so.
const WORK_DIR_PREFIX: &str = "meshfed-run-";

impl WorkDir {
    fn create() -> Result<WorkDir, Error> {
        let temp = std::env::temp_dir();
        let parent = crate::atomic_files::Dir::open(&temp).map_err(io_error("open the temporary directory", &temp))?;
        remove_abandoned_work_dirs(&parent);
        for _ in 0..8 {
            let name = format!(
                "{WORK_DIR_PREFIX}{}-{:016x}",
                std::process::id(),
                crate::atomic_files::unique_u64()
            );
            let path = temp.join(&name);
            let dir = parent
                .create_dir(&name, 0o700)
                .map_err(io_error("create the work directory", &path))?;
            let lock = dir.lock().map_err(io_error("lock the work directory", &path))?;
            // A sweep by another process may have taken it before the lock: then take another.
            if !dir
                .is_still_at(&parent, std::ffi::OsStr::new(&name))
                .map_err(io_error("check the work directory", &path))?
            {
                continue;
            }
            dir.create_file(WORK_DIR_MARKER, b"a meshfed run's work directory\n", 0o600)
                .map_err(io_error("mark the work directory", &path))?;
            return Ok(WorkDir { path, _lock: lock });
        }
        Err(Error::Io {
            what: "create the work directory (it kept disappearing) in",
            path: temp,
            source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        })
    }
}

/// Removes work directories whose process is gone: marked, and locked by nobody.
fn remove_abandoned_work_dirs(parent: &crate::atomic_files::Dir) {
    use crate::atomic_files::EntryKind;
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(names) = parent.names() else { return };
    for name in names {
        if !name.as_bytes().starts_with(WORK_DIR_PREFIX.as_bytes())
            || parent.entry(&name).ok().flatten() != Some(EntryKind::Directory)
        {
            continue;
        }
        let Ok(dir) = parent.open_dir(&name) else { continue };
        if dir.entry(WORK_DIR_MARKER).ok().flatten() != Some(EntryKind::File) {
            continue;
        }
        let Ok(Some(_held)) = dir.try_lock() else { continue };
        if dir.is_still_at(parent, &name).unwrap_or(false) {
            match parent.remove_tree(&name) {
                Ok(()) => tracing::debug!(
                    "removed {} (left by a meshfed run that was killed)",
                    parent.path().join(&name).display()
                ),
                Err(error) => tracing::debug!("cannot remove {}: {error}", parent.path().join(&name).display()),
            }
        }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// How a wait for the helper ended.
enum Waited {
    Exited(ExitStatus),
    TimedOut,
    /// This process received SIGINT or SIGTERM (recorded by the CLI's handler: `meshfed run
    /// --istio-version ...` runs its versions through [`Run`]). A library user's process installs
    /// no handler, so there this never happens.
    Interrupted,
}

/// Whether a wait ends early when this process is interrupted.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Interruptible {
    Yes,
    /// The wait for a helper that is already being stopped.
    No,
}

/// Waits for the helper until `timeout` (or an interrupt, if `interruptible`).
fn await_exit(helper: &mut std::process::Child, timeout: Duration, interruptible: Interruptible) -> Waited {
    let deadline = Instant::now() + timeout;
    loop {
        match helper.try_wait() {
            Ok(Some(status)) => return Waited::Exited(status),
            Ok(None) if interruptible == Interruptible::Yes && crate::interrupt::check().is_err() => {
                return Waited::Interrupted;
            }
            Ok(None) if Instant::now() >= deadline => return Waited::TimedOut,
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            // Not our child any more (cannot happen for a Child we own); treat as gone.
            Err(_) => {
                return match helper.wait() {
                    Ok(status) => Waited::Exited(status),
                    Err(_) => Waited::TimedOut,
                };
            }
        }
    }
}

/// SIGTERM (meshfed tears down and exits 130), then SIGKILL after [`TEARDOWN_GRACE`].
fn stop(helper: &mut std::process::Child) {
    if let Ok(pid) = i32::try_from(helper.id()) {
        // Our own, not yet reaped child.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
    if !matches!(await_exit(helper, TEARDOWN_GRACE, Interruptible::No), Waited::Exited(_)) {
        let _ = helper.kill();
        let _ = helper.wait();
    }
}

/// The last [`OUTPUT_TAIL_BYTES`] of a file, lossily decoded.
fn read_tail(path: &Path) -> String {
    use std::io::Seek as _;
    let Ok(mut file) = std::fs::File::open(path) else {
        return String::new();
    };
    let length = file.metadata().map_or(0, |metadata| metadata.len());
    let _ = file.seek(std::io::SeekFrom::Start(length.saturating_sub(OUTPUT_TAIL_BYTES)));
    let mut bytes = Vec::new();
    let _ = file.take(OUTPUT_TAIL_BYTES).read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// meshfed's own error: from the last line starting `meshfed: ` (or clap's `error: `) to the end,
/// without the prefix; the whole tail if there is none.
fn meshfed_message(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let start = lines
        .iter()
        .rposition(|line| line.starts_with("meshfed: ") || line.starts_with("error: "));
    match start {
        Some(start) => {
            let first = lines[start];
            let first = first
                .strip_prefix("meshfed: ")
                .or_else(|| first.strip_prefix("error: "))
                .unwrap_or(first);
            std::iter::once(first)
                .chain(lines[start + 1..].iter().copied())
                .collect::<Vec<_>>()
                .join("\n")
                .trim_end()
                .to_owned()
        }
        None => stderr.trim_end().to_owned(),
    }
}

fn read_report(path: &Path) -> Result<crate::report::Report, Error> {
    let file = std::fs::File::open(path).map_err(io_error("open the report", path))?;
    let mut text = Vec::new();
    file.take(MAX_REPORT_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(io_error("read the report", path))?;
    if text.len() as u64 > MAX_REPORT_BYTES {
        return Err(Error::Io {
            what: "read the report (larger than 256 MiB)",
            path: path.to_owned(),
            source: std::io::Error::from(std::io::ErrorKind::FileTooLarge),
        });
    }
    serde_json::from_slice(&text).map_err(|source| Error::Report {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::meshfed_message;

    #[test]
    fn meshfed_message_is_the_last_error_without_its_prefix() {
        let stderr = "[  0.01s] checking envoy\nmeshfed: a.yaml:2:11: clusters: expected a list\n  more\n";
        assert_eq!(
            meshfed_message(stderr),
            "a.yaml:2:11: clusters: expected a list\n  more"
        );
    }

    #[test]
    fn meshfed_message_falls_back_to_the_whole_tail() {
        assert_eq!(meshfed_message("something odd\n"), "something odd");
    }
}
