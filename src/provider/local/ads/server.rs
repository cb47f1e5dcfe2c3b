//! The ADS server's I/O: a Unix socket, HTTP/2 connections (hyper) and one gRPC stream per Envoy,
//! each driven by a [`Stream`]; waits for ACKs.

use std::convert::Infallible;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::{mpsc, watch};

use super::state::{Answer, Outgoing, Rejection, Snapshot, State, Stream};
use super::wire::{decode_discovery_request, encode_discovery_response, grpc_frame, take_grpc_messages};

/// The name of the bootstrap cluster through which Envoy reaches the ADS server.
pub const ADS_CLUSTER: &str = "xds-grpc";

/// The gRPC method Envoy calls for ADS (state of the world).
const ADS_PATH: &str = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";

/// The running server. Dropping it stops accepting, ends every stream and removes the socket.
pub struct AdsServer {
    socket: PathBuf,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped whenever a node's desired resources change: every stream looks again.
    desired: watch::Sender<u64>,
    /// Bumped whenever an ACK or NACK is recorded: every waiter looks again.
    answers: watch::Sender<u64>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent maps (every update is one insert).
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Why a wait for an ACK ended without one.
#[derive(Debug, thiserror::Error)]
pub enum AwaitAckError {
    /// Envoy rejected the version (NACK).
    #[error("it rejected version {} of {type_url}: {}", .rejection.version, .rejection.detail)]
    Rejected {
        /// The resource type.
        type_url: String,
        /// The version and Envoy's reason.
        rejection: Rejection,
    },
    /// No answer in time.
    #[error("it did not acknowledge version {version} of {type_url} within {} ms", .waited.as_millis())]
    Timeout {
        /// The resource type.
        type_url: String,
        /// The version.
        version: String,
        /// How long it was waited for.
        waited: Duration,
    },
}

impl AdsServer {
    /// Listens on `socket` (created mode 0600; an old socket file there is replaced) and serves
    /// until dropped. Call inside a tokio runtime.
    pub fn start(socket: &Path) -> std::io::Result<AdsServer> {
        match std::fs::remove_file(socket) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
        let listener = tokio::net::UnixListener::bind(socket)?;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            desired: watch::channel(0).0,
            answers: watch::channel(0).0,
        });
        let accepting = Arc::clone(&shared);
        let accept = tokio::spawn(async move {
            // Connections die with this task (the set aborts them when dropped).
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let shared = Arc::clone(&accepting);
                        connections.spawn(serve_connection(shared, stream));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        Ok(AdsServer {
            socket: socket.to_path_buf(),
            shared,
            accept,
        })
    }

    /// The socket Envoys connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sets the resources of `type_url` that `node` should have (each `(name, encoded message)`),
    /// pushed at once to its open stream when they differ from the last ones set.
    pub fn set(&self, node: &str, type_url: &str, version: &str, resources: Vec<(String, Vec<u8>)>) {
        let snapshot = Snapshot {
            version: version.to_owned(),
            resources,
        };
        if self.shared.state().set(node, type_url, snapshot) {
            self.shared.desired.send_modify(|generation| *generation += 1);
        }
    }

    /// Waits until `node` acknowledges `version` of `type_url`; a NACK of that version is an error
    /// with Envoy's reason.
    pub async fn await_acked(
        &self,
        node: &str,
        type_url: &str,
        version: &str,
        timeout: Duration,
    ) -> Result<(), AwaitAckError> {
        let mut answers = self.shared.answers.subscribe();
        let wait = async {
            loop {
                match self.shared.state().answer(node, type_url, version) {
                    Answer::Acked => return Ok(()),
                    Answer::Rejected(rejection) => {
                        return Err(AwaitAckError::Rejected {
                            type_url: type_url.to_owned(),
                            rejection,
                        });
                    }
                    Answer::Pending => {}
                }
                if answers.changed().await.is_err() {
                    // The sender lives in `self`: unreachable, but never spin.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or_else(|_| {
            Err(AwaitAckError::Timeout {
                type_url: type_url.to_owned(),
                version: version.to_owned(),
                waited: timeout,
            })
        })
    }

    /// The last response of `type_url` that `node` rejected, with Envoy's reason.
    pub fn last_rejection(&self, node: &str, type_url: &str) -> Option<Rejection> {
        self.shared.state().last_rejection(node, type_url)
    }
}

impl Drop for AdsServer {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

async fn serve_connection(shared: Arc<Shared>, stream: tokio::net::UnixStream) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(handle(shared, request)) }
    });
    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

type ResponseBody = StreamBody<std::pin::Pin<Box<dyn futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>>;

fn handle(shared: Arc<Shared>, request: Request<Incoming>) -> Response<ResponseBody> {
    let (frames, receiver) = mpsc::unbounded_channel::<Frame<Bytes>>();
    let body: ResponseBody = StreamBody::new(Box::pin(futures::stream::unfold(receiver, |mut receiver| async {
        receiver.recv().await.map(|frame| (Ok(frame), receiver))
    })));
    if request.uri().path() != ADS_PATH {
        // gRPC's "trailers-only" answer: status 12, UNIMPLEMENTED.
        let mut trailers = hyper::HeaderMap::new();
        trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("12"));
        let _ = frames.send(Frame::trailers(trailers));
    } else {
        tokio::spawn(drive_stream(shared, request.into_body(), frames));
    }
    let mut response = Response::new(body);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    response
}

/// Reads Envoy's requests and sends responses until either side ends the stream.
async fn drive_stream(shared: Arc<Shared>, mut body: Incoming, frames: mpsc::UnboundedSender<Frame<Bytes>>) {
    let mut stream = Stream::default();
    let mut desired = shared.desired.subscribe();
    let mut buffer = Vec::new();
    let send = |outgoing: Vec<Outgoing>| {
        outgoing.iter().all(|response| {
            let message = encode_discovery_response(
                &response.version,
                &response.type_url,
                &response.nonce,
                &response.resources,
            );
            frames.send(Frame::data(Bytes::from(grpc_frame(&message)))).is_ok()
        })
    };
    loop {
        tokio::select! {
            frame = body.frame() => {
                let Some(Ok(frame)) = frame else { return };
                let Ok(data) = frame.into_data() else { continue };
                buffer.extend_from_slice(&data);
                let Ok(messages) = take_grpc_messages(&mut buffer) else { return };
                for message in messages {
                    let Ok(request) = decode_discovery_request(&message) else { return };
                    let events = stream.on_request(&mut shared.state(), request);
                    if events.answered {
                        shared.answers.send_modify(|generation| *generation += 1);
                    }
                    if !send(events.outgoing) {
                        return;
                    }
                }
            }
            changed = desired.changed() => {
                if changed.is_err() {
                    return;
                }
                let outgoing = stream.on_change(&shared.state());
                if !send(outgoing) {
                    return;
                }
            }
        }
    }
}
