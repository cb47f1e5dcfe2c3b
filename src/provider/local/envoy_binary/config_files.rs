//! Envoy's command line and the one file it reads, the bootstrap, written atomically (the rest
//! of its configuration comes over ADS, [`crate::provider::local::ads`]).

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

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

/// Envoy's command-line arguments (after the binary): the bootstrap, no hot restart (its shared
/// memory lives in `/dev/shm`, which network namespaces share, so two Envoys would collide),
/// `concurrency` worker threads (the plan's install values: Istio's default is 2), and the log
/// level. Run the binary inside the pod's network namespace.
///
/// Draining as istio-agent starts Envoy (`pkg/envoy/proxy.go@1.30.3`: `--drain-time-s` from
/// ProxyConfig `drainDuration`, 45 s by default in `pkg/config/mesh/mesh.go`, and
/// `--drain-strategy immediate`, "clients are notified as soon as the drain process starts"): a
/// terminating pod's sidecar asked to drain (`/drain_listeners?inboundonly&graceful`) closes
/// each HTTP/1.1 connection after its next response and keeps accepting for those 45 s, longer
/// than the termination drain (5 s) after which it is ended.
pub fn envoy_args(bootstrap: &Path, log_level: &str, concurrency: u32) -> Vec<OsString> {
    vec![
        "-c".into(),
        bootstrap.as_os_str().to_owned(),
        "--disable-hot-restart".into(),
        "--concurrency".into(),
        concurrency.to_string().into(),
        "--log-level".into(),
        log_level.into(),
        "--drain-time-s".into(),
        ISTIO_DRAIN_DURATION_SECS.to_string().into(),
        "--drain-strategy".into(),
        "immediate".into(),
    ]
}

/// Istio's default ProxyConfig `drainDuration` in seconds (`pkg/config/mesh/mesh.go@1.30.3`).
const ISTIO_DRAIN_DURATION_SECS: u32 = 45;

/// Writes a bootstrap (pretty JSON) atomically.
pub fn write_bootstrap(path: &Path, bootstrap: &Value) -> Result<(), WriteConfigError> {
    write_atomically(path, bootstrap)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envoy_runs_without_hot_restart_on_one_worker_draining_as_istio_agent_starts_it() {
        let args = envoy_args(Path::new("/b.json"), "warn", 1);
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
                "warn",
                "--drain-time-s",
                "45",
                "--drain-strategy",
                "immediate"
            ]
        );
    }
}
