//! What the local world hands over for `--keep-logs` before teardown: every Envoy's log files
//! (their last [`MAX_LOG_BYTES`]) and its admin `/config_dump`, taken with the admin deadline. The
//! certificates and keys next to them are never read.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::World;
use super::proxies::{Proxy, admin_call};
use crate::kept_logs::{KeptFile, file_safe};

/// The end of a log that is kept; an Envoy at debug level can write far more.
const MAX_LOG_BYTES: u64 = 8 << 20;

impl World {
    /// `envoy/<cluster>/<pod>/<log>` and `envoy/<cluster>/<pod>/config_dump.json` for every proxy
    /// (gateways under their gateway pod name). A dump that fails is
    /// `config_dump.error.txt` naming why.
    /// The dumps are asked for all at once, so stopped Envoys cost one admin deadline in all.
    pub(super) async fn proxy_files(&self) -> Vec<KeptFile> {
        let mut files = Vec::new();
        let mut dumps = Vec::new();
        for ((cluster, pod), proxy) in &self.proxies {
            let base = PathBuf::from("envoy").join(file_safe(cluster)).join(file_safe(pod));
            for (name, contents) in log_files(&proxy.dir) {
                files.push(KeptFile {
                    path: base.join(name),
                    contents,
                });
            }
            dumps.push(async move { config_dump(proxy, &base).await });
        }
        files.extend(futures::future::join_all(dumps).await);
        files
    }
}

async fn config_dump(proxy: &Proxy, base: &Path) -> KeptFile {
    match admin_call(proxy, "/config_dump", "the configuration dump").await {
        Ok(dump) => KeptFile {
            path: base.join("config_dump.json"),
            contents: dump.into_bytes(),
        },
        Err(error) => KeptFile {
            path: base.join("config_dump.error.txt"),
            contents: format!("{:#}\n", anyhow::Error::new(error)).into_bytes(),
        },
    }
}

/// The `*.log` files directly in `dir`, each cut to its last [`MAX_LOG_BYTES`] (saying so).
fn log_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut logs: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.is_file() && path.extension().is_some_and(|extension| extension == "log"))
        .collect();
    logs.sort();
    logs.into_iter()
        .filter_map(|path| {
            let name = file_safe(&path.file_name()?.to_string_lossy());
            Some((
                name,
                tail(&path).unwrap_or_else(|error| {
                    format!("[meshfed could not read {}: {error}]\n", path.display()).into_bytes()
                }),
            ))
        })
        .collect()
}

fn tail(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = std::fs::File::open(path)?;
    let length = file.metadata()?.len();
    let mut contents = Vec::new();
    if length > MAX_LOG_BYTES {
        contents.extend(format!("[meshfed kept the last {MAX_LOG_BYTES} of {length} bytes]\n").into_bytes());
        file.seek(SeekFrom::Start(length - MAX_LOG_BYTES))?;
    }
    file.take(MAX_LOG_BYTES).read_to_end(&mut contents)?;
    Ok(contents)
}
