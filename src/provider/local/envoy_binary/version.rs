//! `envoy --version`: run with a deadline and parsed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{BoundedRun, BoundedRunError, bounded_run};

/// How long `envoy --version` may take (a real Envoy answers in well under a second).
pub const ENVOY_VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Why `envoy --version` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyVersionError {
    /// The binary could not be run, did not answer in time, or meshfed was interrupted meanwhile.
    #[error(transparent)]
    Run(BoundedRunError),
    /// The output did not contain a version.
    #[error("`{envoy} --version` printed no version ({status}): {output:?}")]
    Unparsable {
        /// The binary.
        envoy: PathBuf,
        /// How it exited.
        status: std::process::ExitStatus,
        /// What it printed (stdout, then stderr), trimmed.
        output: String,
    },
}

/// The version an Envoy binary reports, e.g. `1.40.0` from
/// `envoy  version: 9e55…/1.40.0/Clean/RELEASE/BoringSSL`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EnvoyVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
    /// The whole build string after `version:` (commit/version/status/build type/TLS library).
    pub build: String,
}

impl std::fmt::Display for EnvoyVersion {
    /// `major.minor.patch`, e.g. `1.40.0`.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Runs `envoy --version` (at most [`ENVOY_VERSION_TIMEOUT`]; stopped on Ctrl-C) and parses it.
pub fn envoy_version(envoy: &Path) -> Result<EnvoyVersion, EnvoyVersionError> {
    envoy_version_within(envoy, ENVOY_VERSION_TIMEOUT)
}

/// [`envoy_version`] with the deadline given.
pub fn envoy_version_within(envoy: &Path, timeout: Duration) -> Result<EnvoyVersion, EnvoyVersionError> {
    let mut command = Command::new(envoy);
    command.arg("--version");
    let run = BoundedRun {
        what: format!("envoy --version ({})", envoy.display()),
        timeout,
        stdin: None,
        capture: true,
        interruptible: true,
    };
    let output = bounded_run(command, &run).map_err(EnvoyVersionError::Run)?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    parse_envoy_version(&text).ok_or_else(|| {
        let mut printed = text.trim().to_string();
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !stderr.trim().is_empty() {
            printed.push_str(if printed.is_empty() { "" } else { "\n" });
            printed.push_str(stderr.trim());
        }
        EnvoyVersionError::Unparsable {
            envoy: envoy.to_path_buf(),
            status: output.status,
            output: printed.chars().take(500).collect(),
        }
    })
}

/// [`envoy_version`], remembered in `cache_dir` per binary: `envoy --version` costs a whole
/// Envoy start-up (100-200 ms, a quarter of the seed's run), and a binary's version cannot change
/// while its identity does not. The identity is the file's device, inode, size, modification and
/// status-change times (`ctime` moves on every write, chmod or rename and cannot be set back), so a
/// replaced or rebuilt binary is asked again. Only a version that was read is remembered: a binary
/// that is not an Envoy is run (and refused) every time. A cache that cannot be read or written
/// costs only the run.
pub fn envoy_version_cached(envoy: &Path, cache_dir: &Path) -> Result<EnvoyVersion, EnvoyVersionError> {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(metadata) = std::fs::metadata(envoy) else {
        return envoy_version(envoy);
    };
    let entry = cache_dir.join("envoy-versions").join(format!(
        "{}-{}-{}-{}.{:09}-{}.{:09}",
        metadata.dev(),
        metadata.ino(),
        metadata.size(),
        metadata.mtime(),
        metadata.mtime_nsec(),
        metadata.ctime(),
        metadata.ctime_nsec()
    ));
    if let Some(version) = std::fs::read_to_string(&entry)
        .ok()
        .and_then(|text| parse_envoy_version(&text))
    {
        return Ok(version);
    }
    let version = envoy_version(envoy)?;
    if let Some(dir) = entry.parent()
        && std::fs::create_dir_all(dir).is_ok()
    {
        let _ = crate::atomic_files::Dir::open(dir).and_then(|dir| {
            let name = entry.file_name().unwrap_or_default();
            dir.write_file_atomic(name, format!("version: {}\n", version.build).as_bytes(), 0o644)
        });
    }
    Ok(version)
}

/// Parses `envoy --version` output: the first `major.minor.patch` among the `/`-separated parts
/// after `version:`.
pub fn parse_envoy_version(output: &str) -> Option<EnvoyVersion> {
    let (_, after) = output.split_once("version:")?;
    let build = after.split_whitespace().next()?.to_string();
    build.split('/').find_map(|part| {
        let mut numbers = part.split('.').map(|number| number.parse::<u32>().ok());
        match (numbers.next(), numbers.next(), numbers.next(), numbers.next()) {
            (Some(Some(major)), Some(Some(minor)), Some(Some(patch)), None) => Some(EnvoyVersion {
                major,
                minor,
                patch,
                build: build.clone(),
            }),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_read_from_the_pypi_build_string() {
        let version = parse_envoy_version(
            "\n/x/envoy  version: 9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL\n\n",
        )
        .unwrap();
        assert_eq!((version.major, version.minor, version.patch), (1, 40, 0));
        assert!(version.build.ends_with("/BoringSSL"));
        assert_eq!(parse_envoy_version("envoy: command not found"), None);
    }

    fn fake_envoy(name: &str, body: &str) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("meshfed-envoy-version-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let envoy = dir.join("envoy");
        std::fs::write(&envoy, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&envoy, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, envoy)
    }

    #[test]
    fn a_version_check_that_hangs_is_stopped_and_named() {
        let (dir, envoy) = fake_envoy("sleeps", "sleep 30");
        let started = std::time::Instant::now();
        let error = envoy_version_within(&envoy, Duration::from_millis(500)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
        assert_eq!(
            error.to_string(),
            format!(
                "envoy --version ({}) did not answer within 500 ms; it was killed",
                envoy.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_binary_that_prints_no_version_is_refused_with_what_it_printed() {
        let (dir, envoy) = fake_envoy("not-envoy", "echo 'usage: sleep NUMBER' >&2; exit 1");
        let error = envoy_version(&envoy).unwrap_err();
        assert!(matches!(error, EnvoyVersionError::Unparsable { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains("printed no version (exit status: 1)"), "{message}");
        assert!(message.contains("usage: sleep NUMBER"), "{message}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_version_read_once_is_remembered_until_the_binary_changes() {
        let (dir, envoy) = fake_envoy(
            "cached",
            &format!(
                "echo run >> {}\necho \"$0  version: 9e55/1.40.0/Clean/RELEASE/BoringSSL\"",
                std::env::temp_dir()
                    .join(format!("meshfed-envoy-version-{}-cached/runs", std::process::id()))
                    .display()
            ),
        );
        let cache = dir.join("cache");
        let runs = || {
            std::fs::read_to_string(dir.join("runs"))
                .unwrap_or_default()
                .lines()
                .count()
        };
        assert_eq!(envoy_version_cached(&envoy, &cache).unwrap().to_string(), "1.40.0");
        assert_eq!(envoy_version_cached(&envoy, &cache).unwrap().to_string(), "1.40.0");
        assert_eq!(runs(), 1, "the second check is answered from the cache");
        // A rebuilt binary (new contents: a new size and ctime) is asked again.
        let text = std::fs::read_to_string(&envoy).unwrap().replace("1.40.0", "1.41.10");
        std::fs::write(&envoy, text).unwrap();
        assert_eq!(envoy_version_cached(&envoy, &cache).unwrap().to_string(), "1.41.10");
        assert_eq!(runs(), 2);
        // A binary that prints no version is never remembered as one.
        std::fs::write(&envoy, "#!/bin/sh\necho nope\n").unwrap();
        assert!(envoy_version_cached(&envoy, &cache).is_err());
        assert!(envoy_version_cached(&envoy, &cache).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_real_looking_version_is_read_through_the_bounded_run() {
        let (dir, envoy) = fake_envoy(
            "fake-ok",
            "echo \"$0  version: 9e5580933739775e8bce696a57a2e1bc99368f23/1.40.0/Clean/RELEASE/BoringSSL\"",
        );
        let version = envoy_version(&envoy).unwrap();
        assert_eq!((version.major, version.minor, version.patch), (1, 40, 0));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
