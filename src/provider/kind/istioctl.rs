//! istioctl for each Istio version a scenario names: downloaded once from Istio's GitHub release
//! (`<base>/<version>/istioctl-<version>-<os>-<arch>.tar.gz`), checked against the `.sha256` file
//! published beside it, unpacked into meshfed's cache (`<cache>/istio-<version>/istioctl`), and
//! reused from there. The base URL is [`RELEASES_URL_ENV`] when set (tests serve a release from
//! loopback; mirrors work the same way). Downloads go through [`super::download`], unpacking
//! through `tar`, both with deadlines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::progress::Progress;
use crate::scenario::IstioVersion;

use super::download::{DownloadError, download};
use super::tools::{Invocation, ToolError, Tools, os_args};

/// Overrides where Istio releases are downloaded from.
pub const RELEASES_URL_ENV: &str = "MESHFED_ISTIO_RELEASES_URL";
/// Istio's GitHub releases.
pub const DEFAULT_RELEASES_URL: &str = "https://github.com/istio/istio/releases/download";
/// How long one download may take.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// Why istioctl could not be provided.
#[derive(Debug, thiserror::Error)]
pub enum IstioctlError {
    /// No istioctl is published for this machine.
    #[error("Istio publishes no istioctl for {os}/{arch}")]
    UnsupportedPlatform {
        /// `std::env::consts::OS`.
        os: String,
        /// `std::env::consts::ARCH`.
        arch: String,
    },
    /// Downloading failed.
    #[error("failed to fetch istioctl {version} from {url}")]
    Download {
        /// The version.
        version: IstioVersion,
        /// What was being fetched.
        url: String,
        /// Why.
        #[source]
        source: DownloadError,
    },
    /// Unpacking failed.
    #[error("failed to unpack istioctl {version} from {url}")]
    Unpack {
        /// The version.
        version: IstioVersion,
        /// What was being fetched.
        url: String,
        /// Why.
        #[source]
        source: ToolError,
    },
    /// The published checksum file is not `<64 hex digits>  <file>`.
    #[error("the checksum file {url} does not hold a SHA-256 for {asset}: {text:?}")]
    BadChecksumFile {
        /// Its URL.
        url: String,
        /// The asset it should describe.
        asset: String,
        /// What it held (first line).
        text: String,
    },
    /// The download does not match the published checksum.
    #[error(
        "checksum mismatch for {url}: Istio publishes sha256 {expected}, the download has {actual}; \
         nothing was installed (a truncated or tampered download, or a wrong {RELEASES_URL_ENV})"
    )]
    ChecksumMismatch {
        /// The archive URL.
        url: String,
        /// Published digest.
        expected: String,
        /// Digest of what arrived.
        actual: String,
    },
    /// The cache could not be written.
    #[error("cannot write istioctl {version} into {dir}")]
    Cache {
        /// The version.
        version: IstioVersion,
        /// The cache directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// The release asset for this version and platform: `istioctl-1.29.0-linux-amd64.tar.gz`
/// ([`crate::plan::support_matrix::istioctl_asset`] has the naming rules).
pub fn asset_name(version: IstioVersion, os: &str, arch: &str) -> Result<String, IstioctlError> {
    crate::plan::support_matrix::istioctl_asset(version, os, arch).map_err(|none| IstioctlError::UnsupportedPlatform {
        os: none.os,
        arch: none.arch,
    })
}

/// Where the cached istioctl of `version` lives.
pub fn cached_istioctl(cache_dir: &Path, version: IstioVersion) -> PathBuf {
    cache_dir.join(format!("istio-{version}")).join("istioctl")
}

/// The base URL of releases: [`RELEASES_URL_ENV`] or [`DEFAULT_RELEASES_URL`].
pub fn releases_url() -> String {
    std::env::var(RELEASES_URL_ENV)
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| DEFAULT_RELEASES_URL.to_owned())
}

/// The digest in a `.sha256` file (`<hex>  <name>` or just `<hex>`), lower-case hex.
pub fn parse_sha256_file(text: &str) -> Option<String> {
    let digest = text.split_whitespace().next()?;
    (digest.len() == 64 && digest.bytes().all(|byte| byte.is_ascii_hexdigit())).then(|| digest.to_ascii_lowercase())
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// istioctl `version` from the cache, downloading and verifying it first when it is not there.
pub async fn fetch_istioctl(
    tools: &Tools,
    cache_dir: &Path,
    releases_url: &str,
    version: IstioVersion,
    progress: &mut dyn Progress,
) -> Result<PathBuf, IstioctlError> {
    let cached = cached_istioctl(cache_dir, version);
    if cached.is_file() {
        progress.step(&format!("istioctl {version}: cached at {}", cached.display()));
        return Ok(cached);
    }
    let asset = asset_name(version, std::env::consts::OS, std::env::consts::ARCH)?;
    let url = format!("{}/{version}/{asset}", releases_url.trim_end_matches('/'));
    let checksum_url = format!("{url}.sha256");
    let cache_error = |source| IstioctlError::Cache {
        version,
        dir: cache_dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(cache_dir).map_err(cache_error)?;
    let partial = cache_dir.join(format!(".istio-{version}.{}.partial", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir(&partial).map_err(cache_error)?;
    let result = download_into(tools, &partial, &url, &checksum_url, &asset, version, progress).await;
    let outcome = result.and_then(|()| {
        let final_dir = cached.parent().expect("cached istioctl has a directory");
        match std::fs::rename(&partial, final_dir) {
            Ok(()) => Ok(()),
            // Another meshfed installed the same version meanwhile: use that one.
            Err(_) if cached.is_file() => Ok(()),
            Err(source) => Err(cache_error(source)),
        }
    });
    let _ = std::fs::remove_dir_all(&partial);
    outcome.map(|()| cached)
}

async fn download_into(
    tools: &Tools,
    dir: &Path,
    url: &str,
    checksum_url: &str,
    asset: &str,
    version: IstioVersion,
    progress: &mut dyn Progress,
) -> Result<(), IstioctlError> {
    let unpack_error = |url: &str| {
        let url = url.to_owned();
        move |source| IstioctlError::Unpack { version, url, source }
    };
    let archive = dir.join(asset);
    let checksum_file = dir.join(format!("{asset}.sha256"));
    progress.step(&format!("istioctl {version}: downloading {url}"));
    for (from, to) in [(checksum_url, &checksum_file), (url, &archive)] {
        download(from, to, DOWNLOAD_TIMEOUT, progress)
            .await
            .map_err(|source| IstioctlError::Download {
                version,
                url: from.to_owned(),
                source,
            })?;
    }
    let io_error = |source| IstioctlError::Cache {
        version,
        dir: dir.to_owned(),
        source,
    };
    let checksum_text = std::fs::read_to_string(&checksum_file).map_err(io_error)?;
    let expected = parse_sha256_file(&checksum_text).ok_or_else(|| IstioctlError::BadChecksumFile {
        url: checksum_url.to_owned(),
        asset: asset.to_owned(),
        text: checksum_text
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect(),
    })?;
    let actual = sha256_hex(&std::fs::read(&archive).map_err(io_error)?);
    if actual != expected {
        return Err(IstioctlError::ChecksumMismatch {
            url: url.to_owned(),
            expected,
            actual,
        });
    }
    let tar = Invocation::new(
        "tar",
        os_args!["-xzf", &archive, "-C", dir, "istioctl"],
        Duration::from_secs(60),
    );
    tools.run(&tar).map_err(unpack_error(url))?;
    let _ = std::fs::remove_file(&archive);
    let _ = std::fs::remove_file(&checksum_file);
    progress.step(&format!("istioctl {version}: sha256 {actual} verified"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_follow_istios_release_names() {
        let version = IstioVersion::new(1, 29, 0);
        assert_eq!(
            asset_name(version, "linux", "x86_64").unwrap(),
            "istioctl-1.29.0-linux-amd64.tar.gz"
        );
        assert_eq!(
            asset_name(version, "macos", "aarch64").unwrap(),
            "istioctl-1.29.0-osx-arm64.tar.gz"
        );
        assert_eq!(
            asset_name(IstioVersion::new(1, 5, 10), "linux", "x86_64").unwrap(),
            "istioctl-1.5.10-linux.tar.gz",
            "before 1.6 Istio published Linux istioctl without an arch suffix"
        );
        assert_eq!(
            asset_name(version, "macos", "x86_64").unwrap(),
            "istioctl-1.29.0-osx.tar.gz",
            "Intel macOS istioctl has no arch suffix"
        );
        assert!(asset_name(version, "windows", "x86_64").is_err());
    }

    #[test]
    fn checksum_files_are_read_with_or_without_a_name() {
        let digest = "a".repeat(64);
        assert_eq!(
            parse_sha256_file(&format!("{digest}  istioctl.tar.gz\n")),
            Some(digest.clone())
        );
        assert_eq!(parse_sha256_file(&digest.to_uppercase()), Some(digest));
        assert_eq!(parse_sha256_file("<html>not found</html>"), None);
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
