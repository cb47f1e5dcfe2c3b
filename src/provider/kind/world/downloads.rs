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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead as _, BufReader, Write as _};
    use std::net::TcpListener;

    /// Answers the first connection with `reply` and counts connections until the test ends.
    fn serve_once(reply: &'static str) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/metallb-native.yaml", listener.local_addr().unwrap());
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|read| read > 0) && line != "\r\n" {
                    line.clear();
                }
                let _ = reader.into_inner().write_all(reply.as_bytes());
            }
        });
        (url, connections)
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("meshfed-kind-cache-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn a_cached_file_is_downloaded_once_and_then_read_from_the_cache() {
        let cache = scratch("once");
        let (url, connections) =
            serve_once("HTTP/1.1 200 OK\r\nContent-Length: 16\r\nConnection: close\r\n\r\nkind: Namespace\n");
        let mut lines = Vec::new();
        let text = fetch_cached(&cache, "metallb-v0", "metallb-native.yaml", &url, &mut |line: &str| {
            lines.push(line.to_owned())
        })
        .await
        .unwrap();
        assert_eq!(text, "kind: Namespace\n");
        assert_eq!(lines, [format!("downloading {url}")]);
        let again = fetch_cached(&cache, "metallb-v0", "metallb-native.yaml", &url, &mut |_: &str| {})
            .await
            .unwrap();
        assert_eq!(again, text);
        assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
        let left: Vec<_> = std::fs::read_dir(cache.join("metallb-v0")).unwrap().flatten().collect();
        assert_eq!(left.len(), 1, "no partial file beside the manifest: {left:?}");
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[tokio::test]
    async fn a_failed_download_leaves_nothing_in_the_cache() {
        let cache = scratch("failed");
        let (url, _) = serve_once("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let error = fetch_cached(&cache, "metallb-v0", "metallb-native.yaml", &url, &mut |_: &str| {})
            .await
            .unwrap_err();
        let mut chain = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            chain.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        assert!(chain.contains("answered 404 Not Found"), "{chain}");
        let left: Vec<_> = std::fs::read_dir(cache.join("metallb-v0")).unwrap().flatten().collect();
        assert!(left.is_empty(), "{left:?}");
        std::fs::remove_dir_all(&cache).unwrap();
    }
}
