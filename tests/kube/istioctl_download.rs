//! istioctl is downloaded from an Istio release URL (here a file server the test runs on
//! loopback), checked against the `.sha256` published beside it, unpacked into the cache and
//! reused from there; a bad checksum or a missing release is refused with a clear error and
//! leaves nothing in the cache.

use crate::support::temp_dir::temp_dir;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use meshfed::provider::kind::Tools;
use meshfed::provider::kind::istioctl::{IstioctlError, asset_name, cached_istioctl, fetch_istioctl, sha256_hex};
use meshfed::scenario::IstioVersion;

/// A release server: path → body; counts the requests it answered.
struct FileServer {
    base: String,
    files: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    requests: Arc<AtomicUsize>,
}

impl FileServer {
    fn start() -> FileServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/releases", listener.local_addr().unwrap());
        let files: Arc<Mutex<BTreeMap<String, Vec<u8>>>> = Arc::default();
        let requests = Arc::new(AtomicUsize::new(0));
        let (served, counter) = (files.clone(), requests.clone());
        // Lives as long as the test process; one connection at a time is all a download needs.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(read) => request.extend_from_slice(&buffer[..read]),
                    }
                }
                let text = String::from_utf8_lossy(&request);
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_owned();
                counter.fetch_add(1, Ordering::SeqCst);
                let body = served.lock().unwrap().get(&path).cloned();
                let response = match body {
                    Some(body) => {
                        let mut response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        response.extend_from_slice(&body);
                        response
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nNot Found".to_vec()
                    }
                };
                let _ = stream.write_all(&response);
            }
        });
        FileServer { base, files, requests }
    }

    fn serve(&self, path: &str, body: Vec<u8>) {
        self.files.lock().unwrap().insert(format!("/releases/{path}"), body);
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A release archive as Istio ships it: a tar.gz holding one executable `istioctl`.
fn release_archive(dir: &Path, version: &str) -> Vec<u8> {
    let staging = dir.join(format!("staging-{version}"));
    std::fs::create_dir_all(&staging).unwrap();
    let binary = staging.join("istioctl");
    std::fs::write(&binary, format!("#!/bin/sh\necho \"client version: {version}\"\n")).unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let archive = dir.join(format!("istioctl-{version}.tar.gz"));
    let status = Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(&staging)
        .arg("istioctl")
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read(archive).unwrap()
}

fn asset(version: IstioVersion) -> String {
    asset_name(version, std::env::consts::OS, std::env::consts::ARCH).unwrap()
}

fn cache_entries(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache)
        .map(|entries| {
            entries
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn istioctl_is_downloaded_verified_and_then_reused_from_the_cache() {
    let scratch = temp_dir("istioctl-good");
    let dir = scratch.path();
    let server = FileServer::start();
    let version: IstioVersion = "1.29.0".parse().unwrap();
    let archive = release_archive(dir, "1.29.0");
    let name = asset(version);
    server.serve(
        &format!("1.29.0/{name}.sha256"),
        format!("{}  {name}\n", sha256_hex(&archive)).into_bytes(),
    );
    server.serve(&format!("1.29.0/{name}"), archive);
    let cache = dir.join("cache");
    let tools = Tools::from_env();
    let mut progress = Vec::new();
    let path = fetch_istioctl(&tools, &cache, &server.base, version, &mut |line: &str| {
        progress.push(line.to_owned())
    })
    .await
    .unwrap();
    assert_eq!(path, cached_istioctl(&cache, version));
    let output = Command::new(&path).arg("version").output().unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), "client version: 1.29.0\n");
    assert_eq!(server.requests(), 2, "the checksum and the archive");
    assert!(progress.iter().any(|line| line.contains("verified")), "{progress:?}");
    assert_eq!(cache_entries(&cache), ["istio-1.29.0"], "no partial download left");
    assert_eq!(cache_entries(&cache.join("istio-1.29.0")), ["istioctl"]);

    let again = fetch_istioctl(&tools, &cache, &server.base, version, &mut |_: &str| {})
        .await
        .unwrap();
    assert_eq!(again, path);
    assert_eq!(server.requests(), 2, "the second time comes from the cache");
}

#[tokio::test]
async fn a_download_that_does_not_match_the_published_checksum_is_refused() {
    let scratch = temp_dir("istioctl-bad");
    let dir = scratch.path();
    let server = FileServer::start();
    let version: IstioVersion = "1.30.0".parse().unwrap();
    let archive = release_archive(dir, "1.30.0");
    let name = asset(version);
    let published = sha256_hex(b"what Istio published for another archive");
    server.serve(
        &format!("1.30.0/{name}.sha256"),
        format!("{published}  {name}\n").into_bytes(),
    );
    server.serve(&format!("1.30.0/{name}"), archive.clone());
    let cache = dir.join("cache");
    let error = fetch_istioctl(&Tools::from_env(), &cache, &server.base, version, &mut |_: &str| {})
        .await
        .unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, IstioctlError::ChecksumMismatch { .. }), "{message}");
    assert!(message.contains("checksum mismatch"), "{message}");
    assert!(message.contains(&published), "{message}");
    assert!(message.contains(&sha256_hex(&archive)), "{message}");
    assert!(message.contains(&format!("{}/1.30.0/{name}", server.base)), "{message}");
    assert!(!cached_istioctl(&cache, version).exists());
    assert_eq!(
        cache_entries(&cache),
        Vec::<String>::new(),
        "nothing installed, nothing left"
    );
}

#[tokio::test]
async fn a_missing_release_or_an_unreadable_checksum_file_is_named() {
    let scratch = temp_dir("istioctl-missing");
    let dir = scratch.path();
    let server = FileServer::start();
    let cache = dir.join("cache");
    let missing: IstioVersion = "1.99.0".parse().unwrap();
    let error = fetch_istioctl(&Tools::from_env(), &cache, &server.base, missing, &mut |_: &str| {})
        .await
        .unwrap_err();
    let message = format!("{:#}", anyhow::Error::new(error));
    assert!(message.contains("failed to fetch istioctl 1.99.0"), "{message}");
    assert!(message.contains("404"), "{message}");

    let version: IstioVersion = "1.28.0".parse().unwrap();
    let name = asset(version);
    server.serve(&format!("1.28.0/{name}.sha256"), b"<html>rate limited</html>".to_vec());
    server.serve(&format!("1.28.0/{name}"), release_archive(dir, "1.28.0"));
    let error = fetch_istioctl(&Tools::from_env(), &cache, &server.base, version, &mut |_: &str| {})
        .await
        .unwrap_err();
    assert!(matches!(error, IstioctlError::BadChecksumFile { .. }), "{error}");
    assert_eq!(cache_entries(&cache), Vec::<String>::new());
}
