//! The client of Envoy's admin API on a unix socket: `GET` with a deadline, readiness.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::process::format_duration;
use crate::workload::http::{self, BodyFraming};

/// Why an admin API request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Connecting, writing or reading the socket failed.
    #[error("envoy admin request {path} on {socket} failed")]
    Io {
        /// The admin socket.
        socket: PathBuf,
        /// The request: method and path (`GET /ready`).
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Envoy answered with a non-200 status.
    #[error("envoy admin request {path} on {socket} answered {status_line:?}: {body}")]
    Status {
        /// The admin socket.
        socket: PathBuf,
        /// The request: method and path (`GET /ready`).
        path: String,
        /// The HTTP status line.
        status_line: String,
        /// The body (trimmed).
        body: String,
    },
    /// No complete answer within the deadline (a stopped or stuck Envoy).
    #[error("envoy admin request {path} on {socket} got no answer within {}", format_duration(*waited))]
    TimedOut {
        /// The admin socket.
        socket: PathBuf,
        /// The request: method and path (`GET /ready`).
        path: String,
        /// The deadline that passed.
        waited: Duration,
    },
    /// The reply was not HTTP.
    #[error("envoy admin request {path} on {socket} got a malformed reply: {reply:?}")]
    Malformed {
        /// The admin socket.
        socket: PathBuf,
        /// The request: method and path (`GET /ready`).
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

/// How long one admin request may take, connect to last byte. Envoy answers in milliseconds; a
/// stopped (SIGSTOP) Envoy still accepts connections (the kernel does) but never answers.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// `GET path` on an Envoy admin unix socket within [`ADMIN_TIMEOUT`]; returns the body of a 200
/// answer. HTTP/1.1 with `Connection: close` (Envoy's admin answers HTTP/1.0 with 426 Upgrade
/// Required); the reply is read to EOF and framed by its head (it may be chunked-encoded).
pub async fn admin_get(socket: &Path, path: &str) -> Result<String, AdminError> {
    admin_get_within(socket, path, ADMIN_TIMEOUT).await
}

/// [`admin_get`] with the deadline given; on expiry [`AdminError::TimedOut`] names the socket.
pub async fn admin_get_within(socket: &Path, path: &str, timeout: Duration) -> Result<String, AdminError> {
    admin_request_within(socket, "GET", path, timeout).await
}

/// `POST path` (no body) on an Envoy admin unix socket within [`ADMIN_TIMEOUT`]: the admin
/// endpoints that change Envoy's state (`/drain_listeners`) refuse `GET`.
pub async fn admin_post(socket: &Path, path: &str) -> Result<String, AdminError> {
    admin_request_within(socket, "POST", path, ADMIN_TIMEOUT).await
}

async fn admin_request_within(
    socket: &Path,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<String, AdminError> {
    match tokio::time::timeout(timeout, admin_exchange(socket, method, path)).await {
        Ok(result) => result,
        Err(_) => Err(AdminError::TimedOut {
            socket: socket.to_path_buf(),
            path: format!("{method} {path}"),
            waited: timeout,
        }),
    }
}

async fn admin_exchange(socket: &Path, method: &str, path: &str) -> Result<String, AdminError> {
    let request = format!("{method} {path}");
    let io_error = |source| AdminError::Io {
        socket: socket.to_path_buf(),
        path: request.clone(),
        source,
    };
    let mut stream = UnixStream::connect(socket).await.map_err(io_error)?;
    let length = if method == "GET" { "" } else { "Content-Length: 0\r\n" };
    stream
        .write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: envoy-admin\r\n{length}Connection: close\r\n\r\n").as_bytes(),
        )
        .await
        .map_err(io_error)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).await.map_err(io_error)?;
    let malformed = || AdminError::Malformed {
        socket: socket.to_path_buf(),
        path: request.clone(),
        reply: String::from_utf8_lossy(&reply).chars().take(200).collect(),
    };
    let (status_line, body) = read_reply(&reply).ok_or_else(malformed)?;
    let body = String::from_utf8_lossy(&body).into_owned();
    if status_line.split_whitespace().nth(1) == Some("200") {
        Ok(body)
    } else {
        Err(AdminError::Status {
            socket: socket.to_path_buf(),
            path: request,
            status_line,
            body: body.trim().to_string(),
        })
    }
}

/// A whole reply read to EOF, taken apart by the workloads' HTTP parser ([`http`]): its status
/// line and its body as the head frames it (`Content-Length`, chunked, or up to the close). `None`
/// when it is not HTTP/1.x or its body is cut short (an Envoy that died while answering).
fn read_reply(reply: &[u8]) -> Option<(String, Vec<u8>)> {
    let head = http::parse_response_head(reply).ok()??;
    let status_line = String::from_utf8_lossy(&reply[..head.head_len])
        .lines()
        .find(|line| !line.is_empty())
        .unwrap_or_default()
        .to_string();
    let after_head = &reply[head.head_len..];
    let body = match head.framing {
        BodyFraming::Length(length) => after_head.get(..length)?.to_vec(),
        BodyFraming::Chunked => {
            let mut decoded = Vec::new();
            http::chunked_body(after_head, Some(&mut decoded)).ok()??;
            decoded
        }
        BodyFraming::UntilClose => after_head.to_vec(),
    };
    Some((status_line, body))
}

/// Polls `/ready` every 5 ms until Envoy answers `LIVE` (all listeners and clusters of its initial
/// config loaded), or fails after `timeout` naming `envoy` and the last answer.
pub async fn await_ready(envoy: &str, socket: &Path, timeout: Duration) -> Result<(), AwaitReadyError> {
    let started = Instant::now();
    let mut last: String;
    loop {
        let remaining = timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
        match admin_get_within(socket, "/ready", remaining.min(ADMIN_TIMEOUT)).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::local::envoy_binary::scratch_dir;
    use tokio::net::UnixListener;

    #[test]
    fn chunked_bodies_are_decoded_and_truncated_ones_refused() {
        let reply = |body: &str| format!("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{body}");
        let body = |body: &str| read_reply(reply(body).as_bytes()).map(|(_, body)| body);
        assert_eq!(body("5\r\nLIVE\n\r\n0\r\n\r\n").unwrap(), b"LIVE\n");
        assert_eq!(body("3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(), b"abcde");
        assert_eq!(body("5\r\nLI"), None);
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

    /// RFC 9112 §6.3: a body shorter than its `Content-Length` when the connection closes is
    /// incomplete. An Envoy killed while writing `/stats` must not hand half a dump on as whole.
    #[tokio::test]
    async fn a_body_cut_short_of_its_content_length_is_malformed() {
        let dir = scratch_dir("cut-short");
        let socket = dir.join("admin.sock");
        let server = fake_admin(
            socket.clone(),
            vec!["HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\nLIVE\n"],
        )
        .await;
        let error = admin_get(&socket, "/stats").await.unwrap_err();
        assert!(matches!(error, AdminError::Malformed { .. }), "{error:?}");
        server.await.unwrap();
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

    #[tokio::test]
    async fn an_admin_socket_that_accepts_but_never_answers_times_out_naming_the_socket() {
        let dir = scratch_dir("stopped");
        let socket = dir.join("admin.sock");
        // Like a SIGSTOPped Envoy: the kernel accepts the connection, nobody answers.
        let listener = UnixListener::bind(&socket).unwrap();
        let started = Instant::now();
        let error = admin_get_within(&socket, "/stats", Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert!(matches!(error, AdminError::TimedOut { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!(
                "envoy admin request GET /stats on {} got no answer within 200 ms",
                socket.display()
            )
        );
        drop(listener);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
