//! What a kind run fetches into meshfed's cache before any cluster exists: istioctl of each Istio
//! version (checked to report that version) and the MetalLB manifest.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::progress::Progress;
use crate::provider::ProviderError;
use crate::scenario::IstioVersion;

use super::{QUERY_TIMEOUT, failed, io_failed, text};
use crate::provider::kind::download::download;
use crate::provider::kind::istioctl::fetch_istioctl;
use crate::provider::kind::tools::{Invocation, Tools};

/// How long a download into the cache (the MetalLB manifest, tens of kilobytes) may take.
const CACHED_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// istioctl of `version`, checked to report that version.
pub(super) async fn istioctl_for(
    tools: &Tools,
    cache_dir: &Path,
    releases_url: &str,
    version: IstioVersion,
    progress: &mut dyn Progress,
) -> Result<PathBuf, ProviderError> {
    let path = fetch_istioctl(tools, cache_dir, releases_url, version, progress)
        .await
        .map_err(|error| ProviderError::failed(format!("providing istioctl {version}"), error))?;
    let reported = text(
        tools
            .run(&istioctl_version(&path))
            .map_err(failed(format!("running istioctl {version}")))?,
    );
    if !reported.split_whitespace().any(|word| word == version.to_string()) {
        return Err(ProviderError::Unavailable(format!(
            "{} reports version {reported:?}, not {version}; delete it so meshfed downloads it again",
            path.display()
        )));
    }
    Ok(path)
}

/// `istioctl version --remote=false --short`: the client's own version, no cluster needed, as
/// the bare version (`1.30.3`); without `--short` istioctl prints its `BuildInfo` long form
/// (`pkg/version/cobra.go`, `CobraCommandWithOptions`), whose version is not a word of its own.
pub(in crate::provider::kind) fn istioctl_version(istioctl: &Path) -> Invocation {
    Invocation::new(istioctl, ["version", "--remote=false", "--short"], QUERY_TIMEOUT)
}

/// A file fetched once into the cache (no published checksum exists: the pinned tag in the URL
/// is what identifies it).
pub(super) async fn fetch_cached(
    cache_dir: &Path,
    subdir: &str,
    name: &str,
    url: &str,
    progress: &mut dyn Progress,
) -> Result<String, ProviderError> {
    let dir = cache_dir.join(subdir);
    let file = dir.join(name);
    if !file.is_file() {
        std::fs::create_dir_all(&dir).map_err(io_failed(format!("creating {}", dir.display())))?;
        let partial = dir.join(format!(".{name}.{}.partial", std::process::id()));
        progress.step(&format!("downloading {url}"));
        let downloaded = download(url, &partial, CACHED_DOWNLOAD_TIMEOUT, progress).await;
        if let Err(error) = downloaded {
            let _ = std::fs::remove_file(&partial);
            return Err(ProviderError::failed(format!("downloading {url}"), error));
        }
        std::fs::rename(&partial, &file).map_err(io_failed(format!("writing {}", file.display())))?;
    }
    std::fs::read_to_string(&file).map_err(io_failed(format!("reading {}", file.display())))
}
