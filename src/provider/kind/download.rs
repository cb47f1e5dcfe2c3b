//! The one way the `kind` provider downloads a file (istioctl releases and their checksums, the
//! MetalLB manifest): an HTTP/1.1 `GET` through hyper with rustls (ring, the platform's root
//! certificates), the client stack kube-rs already builds, instead of running the `curl` program.
//! Redirects are followed (GitHub's release downloads answer with one), the whole download has a
//! deadline, a slow one reports how far it got every [`PROGRESS_EVERY`], Ctrl-C stops it, and the
//! body is streamed into the file given. Checking what arrived (a published SHA-256) is the
//! caller's job.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::{StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::interrupt;
use crate::process::format_duration;
use crate::progress::Progress;

/// How many redirects one download follows before giving up (curl's default is 50; browsers stop
/// at about 20; GitHub's release downloads take one).
pub const MAX_REDIRECTS: usize = 10;
/// How often a download still under way reports how much has arrived.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// How often a download looks at the interrupt flag.
const INTERRUPT_POLL: Duration = Duration::from_millis(50);

/// Why a download did not complete.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The URL is not an absolute `http` or `https` URL.
    #[error("{url} is not an http:// or https:// URL")]
    BadUrl {
        /// The URL.
        url: String,
    },
    /// The platform's root certificates could not be read (needed for https).
    #[error("cannot load this machine's root certificates for https")]
    RootCertificates(#[source] std::io::Error),
    /// Connecting or sending the request failed (DNS, refused, TLS).
    #[error("cannot get {url}")]
    Request {
        /// The URL asked for.
        url: String,
        /// Why.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// The server answered with a status other than success or a redirect.
    #[error("{url} answered {status}")]
    Status {
        /// The URL asked for.
        url: String,
        /// The status.
        status: StatusCode,
    },
    /// A redirect without a usable `Location`.
    #[error("{url} answered {status} without a usable Location ({location:?})")]
    BadRedirect {
        /// The URL asked for.
        url: String,
        /// The redirect status.
        status: StatusCode,
        /// The `Location` header, if any.
        location: Option<String>,
    },
    /// More than [`MAX_REDIRECTS`] redirects.
    #[error("{url} redirected more than {MAX_REDIRECTS} times")]
    TooManyRedirects {
        /// The URL first asked for.
        url: String,
    },
    /// The body broke off (connection closed early, a body shorter than its `Content-Length`).
    #[error("the download of {url} broke off after {received} bytes")]
    Body {
        /// The URL the body came from.
        url: String,
        /// Bytes received before.
        received: u64,
        /// Why.
        #[source]
        source: hyper::Error,
    },
    /// The file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not done within the deadline.
    #[error("the download of {url} did not finish within {}", format_duration(*waited))]
    TimedOut {
        /// The URL first asked for.
        url: String,
        /// The deadline.
        waited: Duration,
    },
    /// meshfed was interrupted.
    #[error("the download of {url} was stopped: meshfed was interrupted")]
    Interrupted {
        /// The URL first asked for.
        url: String,
    },
}

/// Downloads `url` (following redirects) into the file `to`, created or truncated, within
/// `timeout` from the first connection to the last byte; returns the bytes written. On any error
/// `to` may hold part of the body: write into a temporary name and rename on success.
pub async fn download(
    url: &str,
    to: &Path,
    timeout: Duration,
    progress: &mut dyn Progress,
) -> Result<u64, DownloadError> {
    let transfer = follow_and_save(url, to, progress);
    tokio::pin!(transfer);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut interrupt_poll = tokio::time::interval(INTERRUPT_POLL);
    loop {
        tokio::select! {
            result = &mut transfer => return result,
            () = &mut deadline => {
                return Err(DownloadError::TimedOut { url: url.to_owned(), waited: timeout });
            }
            _ = interrupt_poll.tick() => {
                if interrupt::is_interrupted() {
                    return Err(DownloadError::Interrupted { url: url.to_owned() });
                }
            }
        }
    }
}

async fn follow_and_save(url: &str, to: &Path, progress: &mut dyn Progress) -> Result<u64, DownloadError> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(url)?)
        .https_or_http()
        .enable_http1()
        .build();
    // One request at a time, each redirect usually to another host: no connection pool.
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    let mut current = parse_url(url)?;
    for _ in 0..=MAX_REDIRECTS {
        let request = http::Request::get(current.clone())
            .header(header::USER_AGENT, concat!("meshfed/", env!("CARGO_PKG_VERSION")))
            .body(Empty::new())
            .map_err(|_| DownloadError::BadUrl {
                url: current.to_string(),
            })?;
        let response = client.request(request).await.map_err(|source| DownloadError::Request {
            url: current.to_string(),
            source,
        })?;
        let status = response.status();
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            current = location
                .as_deref()
                .and_then(|location| resolve(&current, location))
                .ok_or_else(|| DownloadError::BadRedirect {
                    url: current.to_string(),
                    status,
                    location,
                })?;
            continue;
        }
        if !status.is_success() {
            return Err(DownloadError::Status {
                url: current.to_string(),
                status,
            });
        }
        return save_body(&current.to_string(), response.into_body(), to, progress).await;
    }
    Err(DownloadError::TooManyRedirects { url: url.to_owned() })
}

/// rustls on ring with the platform's root certificates. A machine without any (a bare container)
/// can still download over plain http (a loopback mirror): only an https URL needs them.
fn tls_config(url: &str) -> Result<rustls::ClientConfig, DownloadError> {
    use hyper_rustls::ConfigBuilderExt as _;
    let builder = rustls::ClientConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
        .with_safe_default_protocol_versions()
        .map_err(|error| DownloadError::RootCertificates(std::io::Error::other(error)))?;
    match builder.clone().with_native_roots() {
        Ok(builder) => Ok(builder.with_no_client_auth()),
        Err(error) if url.starts_with("https:") => Err(DownloadError::RootCertificates(error)),
        Err(_) => Ok(builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()),
    }
}

/// Streams `body` into `to`, reporting how far it got every [`PROGRESS_EVERY`].
async fn save_body(
    url: &str,
    mut body: hyper::body::Incoming,
    to: &Path,
    progress: &mut dyn Progress,
) -> Result<u64, DownloadError> {
    let write_error = |source| DownloadError::Write {
        path: to.to_owned(),
        source,
    };
    let expected = hyper::body::Body::size_hint(&body).exact();
    let mut file = std::fs::File::create(to).map_err(write_error)?;
    let mut received = 0u64;
    let mut next_report = Instant::now() + PROGRESS_EVERY;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|source| DownloadError::Body {
            url: url.to_owned(),
            received,
            source,
        })?;
        if let Ok(data) = frame.into_data() {
            file.write_all(&data).map_err(write_error)?;
            received += data.len() as u64;
        }
        if Instant::now() >= next_report {
            progress.step(&progress_line(url, received, expected));
            next_report = Instant::now() + PROGRESS_EVERY;
        }
    }
    file.flush().map_err(write_error)?;
    Ok(received)
}

/// `downloading <url>: 12.5 MB of 48.0 MB` (or without the total when the server gave none).
fn progress_line(url: &str, received: u64, expected: Option<u64>) -> String {
    let megabytes = |bytes: u64| bytes as f64 / 1e6;
    match expected {
        Some(total) => format!(
            "downloading {url}: {:.1} MB of {:.1} MB",
            megabytes(received),
            megabytes(total)
        ),
        None => format!("downloading {url}: {:.1} MB", megabytes(received)),
    }
}

fn parse_url(url: &str) -> Result<Uri, DownloadError> {
    url.parse::<Uri>()
        .ok()
        .filter(|uri| matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some())
        .ok_or_else(|| DownloadError::BadUrl { url: url.to_owned() })
}

/// Where a redirect's `Location` points from `base` (RFC 9110 §10.2.2: a URI reference): an
/// absolute URL, an absolute path on the same server, or a path relative to `base`'s directory.
fn resolve(base: &Uri, location: &str) -> Option<Uri> {
    if let Ok(absolute) = parse_url(location) {
        return Some(absolute);
    }
    if location.is_empty() || location.starts_with("//") || location.contains("://") {
        return None;
    }
    let path = if location.starts_with('/') {
        location.to_owned()
    } else {
        let directory = base.path().rsplit_once('/').map_or("", |(directory, _)| directory);
        format!("{directory}/{location}")
    };
    let mut parts = base.clone().into_parts();
    parts.path_and_query = Some(path.parse().ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead as _, BufReader};
    use std::net::TcpListener;

    /// A loopback server answering each connection with the next scripted reply (`{base}` in a
    /// reply becomes the server's own `http://127.0.0.1:port`); returns the base and the request
    /// lines it saw.
    fn serve(replies: Vec<String>) -> (String, std::sync::mpsc::Receiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (seen, requests) = std::sync::mpsc::channel();
        let own = base.clone();
        std::thread::spawn(move || {
            for reply in replies {
                let (stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let _ = seen.send(line.trim_end().to_owned());
                loop {
                    let mut header = String::new();
                    if reader.read_line(&mut header).unwrap() == 0 || header == "\r\n" {
                        break;
                    }
                }
                let mut stream = reader.into_inner();
                stream.write_all(reply.replace("{base}", &own).as_bytes()).unwrap();
                if reply.is_empty() {
                    // Accepted and never answered, like a stuck server.
                    std::thread::sleep(Duration::from_secs(30));
                }
            }
        });
        (base, requests)
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("meshfed-download-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn ok(body: &str) -> String {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    /// Downloads `{base}/x` from a server scripted with `replies` within `timeout`; returns the
    /// server's base URL and the error the download must end with.
    async fn failed_download(name: &str, replies: Vec<String>, timeout: Duration) -> (String, DownloadError) {
        let dir = scratch(name);
        let (base, _) = serve(replies);
        let error = download(&format!("{base}/x"), &dir.join("file"), timeout, &mut |_: &str| {})
            .await
            .expect_err("the download must fail");
        std::fs::remove_dir_all(&dir).unwrap();
        (base, error)
    }

    /// GitHub's release downloads answer `302 Found` with an absolute `Location` elsewhere;
    /// a relative one (RFC 9110 §10.2.2) is resolved against the URL asked for.
    #[tokio::test]
    async fn redirects_absolute_and_relative_are_followed_to_the_file() {
        let dir = scratch("redirects");
        let (base, requests) = serve(vec![
            "HTTP/1.1 302 Found\r\nLocation: {base}/objects/a.tar.gz\r\nContent-Length: 0\r\n\r\n".to_owned(),
            "HTTP/1.1 301 Moved Permanently\r\nLocation: b.tar.gz\r\nContent-Length: 0\r\n\r\n".to_owned(),
            ok("the archive"),
        ]);
        let to = dir.join("file");
        let bytes = download(
            &format!("{base}/releases/1.29.0/istioctl.tar.gz"),
            &to,
            Duration::from_secs(20),
            &mut |_: &str| {},
        )
        .await
        .unwrap();
        assert_eq!(bytes, 11);
        assert_eq!(std::fs::read_to_string(&to).unwrap(), "the archive");
        let seen: Vec<String> = requests.try_iter().collect();
        assert_eq!(
            seen,
            [
                "GET /releases/1.29.0/istioctl.tar.gz HTTP/1.1",
                "GET /objects/a.tar.gz HTTP/1.1",
                "GET /objects/b.tar.gz HTTP/1.1"
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn an_error_status_is_named_with_its_url() {
        let (base, error) = failed_download(
            "status",
            vec!["HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nConnection: close\r\n\r\nNot Found".to_owned()],
            Duration::from_secs(20),
        )
        .await;
        assert_eq!(error.to_string(), format!("{base}/x answered 404 Not Found"));
    }

    /// RFC 9112 §6.3: a connection closed before `Content-Length` bytes arrived is an incomplete
    /// message, never a shorter file.
    #[tokio::test]
    async fn a_body_cut_short_is_an_error() {
        let (_, error) = failed_download(
            "short",
            vec!["HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nonly this".to_owned()],
            Duration::from_secs(20),
        )
        .await;
        assert!(matches!(error, DownloadError::Body { received: 9, .. }), "{error:?}");
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out_within_the_deadline() {
        let started = Instant::now();
        let (base, error) = failed_download("stuck", vec![String::new()], Duration::from_millis(300)).await;
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!(
            error.to_string(),
            format!("the download of {base}/x did not finish within 300 ms")
        );
    }

    #[tokio::test]
    async fn a_redirect_loop_gives_up() {
        let redirect = "HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n\r\n".to_owned();
        let (_, error) = failed_download("loop", vec![redirect; MAX_REDIRECTS + 1], Duration::from_secs(20)).await;
        assert!(matches!(error, DownloadError::TooManyRedirects { .. }), "{error:?}");
    }

    #[test]
    fn only_http_and_https_urls_are_taken_and_progress_reads_in_megabytes() {
        assert!(parse_url("ftp://example.com/x").is_err());
        assert!(parse_url("/releases/x").is_err());
        assert!(parse_url("https://github.com/istio/istio/releases/download").is_ok());
        assert_eq!(
            progress_line("u", 12_500_000, Some(48_000_000)),
            "downloading u: 12.5 MB of 48.0 MB"
        );
        assert_eq!(progress_line("u", 1_000_000, None), "downloading u: 1.0 MB");
    }
}
