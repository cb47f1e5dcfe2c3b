//! Envoy's command line and the files it reads: the bootstrap and the xDS (CDS) file, written
//! atomically.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::provider::local::envoy_config::{CDS_FILE, LDS_FILE, XdsResources};

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

/// Replaces the SDS file at `path` (a [`crate::provider::local::envoy_config::sds_secret`]; it
/// holds a private key, so mode 0600) in one rename, which the Envoy watching it notices.
pub fn write_sds(path: &Path, secret: &Value) -> Result<(), WriteConfigError> {
    let error = |source| WriteConfigError {
        path: path.to_path_buf(),
        source,
    };
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "path has no directory or file name",
        )));
    };
    let text = serde_json::to_vec_pretty(secret).map_err(|source| error(source.into()))?;
    crate::atomic_files::Dir::open(dir)
        .and_then(|dir| dir.write_file_atomic(name, &text, 0o600))
        .map_err(error)
}

/// Replaces the clusters (CDS) in `dir`, the directory the bootstrap watches, by writing a hidden
/// temporary file and renaming it over `cds.json` (Envoy notices only a rename); then, for a
/// proxy with dynamic listeners (a gateway), `lds.json` the same way. A sidecar's listeners are
/// static (see [`super::envoy_config::bootstrap`]).
pub fn write_xds(dir: &Path, resources: &XdsResources) -> Result<(), WriteConfigError> {
    // Clusters first: a listener may name them.
    write_atomically(&dir.join(CDS_FILE), &resources.clusters)?;
    if resources.listeners_dynamic {
        write_atomically(&dir.join(LDS_FILE), &resources.listeners)?;
    }
    Ok(())
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
    use crate::provider::local::envoy_binary::scratch_dir;
    use crate::provider::local::envoy_config::{GatewaySpec, gateway_resources};

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

    #[test]
    fn xds_files_are_replaced_whole_and_no_temporary_is_left() {
        let dir = scratch_dir("xds");
        let resources = gateway_resources(&GatewaySpec {
            node_id: "gw".into(),
            routes: vec![],
            load_balancer: crate::scenario::LoadBalancer::RoundRobin,
        });
        write_xds(&dir, &resources).unwrap();
        write_xds(&dir, &resources).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["cds.json", "lds.json"], "a gateway's listeners are dynamic");
        let clusters: Value = serde_json::from_slice(&std::fs::read(dir.join("cds.json")).unwrap()).unwrap();
        assert_eq!(clusters, resources.clusters);
        let listeners: Value = serde_json::from_slice(&std::fs::read(dir.join("lds.json")).unwrap()).unwrap();
        assert_eq!(listeners, resources.listeners);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
