//! The client workload: sends a fixed number of HTTP requests or TCP lines to one target over
//! pooled or per-request connections, and reports one [`RequestRecord`] per request as it completes.

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::buffer::{Fill, ReadBuffer};
use super::http::{self, BodyFraming};
use crate::record::RequestRecord;

/// Largest reply (head and body, or TCP line) the client accepts.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// Protocol and connection policy are the scenario's own types.
pub use crate::scenario::{ConnectionPolicy, Protocol};

/// What the client workload sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientConfig {
    /// Address to connect to (the service's cluster IP and port, which the sidecar intercepts).
    pub target: SocketAddr,
    /// HTTP `Host` header, e.g. `bar.ns2.svc.cluster.local`; unused for TCP.
    pub host: String,
    /// HTTP or TCP.
    pub protocol: Protocol,
    /// Total requests to send.
    pub requests: u64,
    /// Requests in flight at once (at least 1); with [`ConnectionPolicy::Pooled`], also the number
    /// of connections.
    pub concurrency: u32,
    /// Connection reuse.
    pub connection_policy: ConnectionPolicy,
    /// Limit on one request, from starting it (including connecting, if it has to) to the full
    /// reply. A request that exceeds it is recorded with error `timeout` (or `connect timeout`).
    pub request_timeout: Duration,
    /// OS threads sharing the workers (at least 1). One is enough for pooled connections; opening
    /// a connection per request costs kernel time that a second thread spreads over two cores.
    /// Extra threads get a current-thread tokio runtime each.
    pub threads: u32,
    /// Requests started per second: request `seq` starts no earlier than `seq / rate` seconds
    /// after the epoch (and only when one of the `concurrency` workers is free). `None` sends as
    /// fast as the workers go.
    pub rate_per_second: Option<u32>,
    /// The moment records' `started_us` count from and pacing starts at (wall clock, so the
    /// process that started the client can share it); `None`: the client's own start.
    pub epoch: Option<std::time::SystemTime>,
}

/// The client's epoch as a monotonic instant: `epoch` (wall clock) mapped onto now, or now.
fn epoch_instant(epoch: Option<std::time::SystemTime>) -> Instant {
    let now = Instant::now();
    let Some(epoch) = epoch else {
        return now;
    };
    match std::time::SystemTime::now().duration_since(epoch) {
        // The epoch has passed: it was that long ago.
        Ok(ago) => now.checked_sub(ago).unwrap_or(now),
        // The epoch is ahead (clock skew or a start in the future): it is that far ahead.
        Err(ahead) => now + ahead.duration(),
    }
}

/// When request `seq` may start under `rate` requests per second from `epoch`.
fn slot(epoch: Instant, seq: u64, rate: u32) -> Instant {
    let micros = u128::from(seq) * 1_000_000 / u128::from(rate.max(1));
    epoch + Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
}

/// Totals over a run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientSummary {
    /// Records emitted (equals `requests`).
    pub requests: u64,
    /// Records whose request did not succeed (see [`RequestRecord::succeeded`]).
    pub failures: u64,
    /// Connections attempted (the highest connection number + 1).
    pub connections: u64,
}

/// Why a request failed. Its `Display` text is what a record's `error` holds; it is short and
/// stable so measurements can group by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestFailure {
    /// Nothing listens at the target (`connect refused`).
    ConnectRefused,
    /// Connecting took longer than the request timeout (`connect timeout`).
    ConnectTimeout,
    /// No route to the target (`unreachable`).
    Unreachable,
    /// The reply took longer than the request timeout (`timeout`).
    Timeout,
    /// The peer reset the connection (`connection reset`).
    Reset,
    /// The peer closed the connection before a complete reply (`connection closed`).
    Closed,
    /// The reply is not HTTP/1.x, not an echo reply, or too large (`malformed reply`).
    MalformedReply,
    /// Any other socket error (`io error: <kind>`).
    Io(io::ErrorKind),
}

impl fmt::Display for RequestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestFailure::ConnectRefused => f.write_str("connect refused"),
            RequestFailure::ConnectTimeout => f.write_str("connect timeout"),
            RequestFailure::Unreachable => f.write_str("unreachable"),
            RequestFailure::Timeout => f.write_str("timeout"),
            RequestFailure::Reset => f.write_str("connection reset"),
            RequestFailure::Closed => f.write_str("connection closed"),
            RequestFailure::MalformedReply => f.write_str("malformed reply"),
            RequestFailure::Io(kind) => write!(f, "io error: {kind}"),
        }
    }
}

impl RequestFailure {
    fn from_io(error: &io::Error, connecting: bool) -> RequestFailure {
        match error.kind() {
            io::ErrorKind::ConnectionRefused => RequestFailure::ConnectRefused,
            io::ErrorKind::TimedOut if connecting => RequestFailure::ConnectTimeout,
            io::ErrorKind::TimedOut => RequestFailure::Timeout,
            io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable => RequestFailure::Unreachable,
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted | io::ErrorKind::BrokenPipe => {
                RequestFailure::Reset
            }
            io::ErrorKind::UnexpectedEof => RequestFailure::Closed,
            kind => RequestFailure::Io(kind),
        }
    }
}

/// Sends `config.requests` requests and calls `on_record` with each one's record as it completes
/// (in completion order; `seq` gives the start order). Never fails as a whole: every problem is
/// some request's `error`.
///
/// Workers are tokio tasks; a current-thread runtime is enough and is what it was measured on.
/// With `threads` > 1, the extra threads run their workers on runtimes of their own and block in
/// `std::thread::JoinHandle::join` only after their last record has arrived.
pub async fn client(config: ClientConfig, mut on_record: impl FnMut(RequestRecord)) -> ClientSummary {
    let workers = u64::from(config.concurrency.max(1)).min(config.requests);
    let threads = u64::from(config.threads.max(1)).min(workers.max(1));
    let shared = Arc::new(Shared {
        target_text: config.target.to_string(),
        request_bytes: mk_http_request(&config.host, config.connection_policy),
        next_seq: AtomicU64::new(workers),
        next_connection: AtomicU64::new(0),
        epoch: epoch_instant(config.epoch),
        config,
    });
    let (records_tx, mut records_rx) = mpsc::unbounded_channel();
    // Workers are dealt round-robin: this thread runs its share on the caller's runtime, each
    // extra thread its share on a runtime of its own. Worker `i` sends request `i` first, whatever
    // its thread's start-up delay, so a pooled run really uses `concurrency` connections; later
    // requests come from one shared counter, so a thread that cannot start only means the others
    // send its share (except its reserved first requests, recorded as failures).
    let workers_on = |thread: u64| (thread..workers).step_by(threads as usize);
    let mut extra_threads = Vec::new();
    let mut local_first_seqs: Vec<u64> = workers_on(0).collect();
    for thread in 1..threads {
        let (shared, records_tx) = (shared.clone(), records_tx.clone());
        let first_seqs: Vec<u64> = workers_on(thread).collect();
        let fallback = first_seqs.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("meshfed-client-{thread}"))
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => {
                        // Spawning needs the runtime entered, hence inside the future.
                        runtime.block_on(async { spawn_workers(&shared, &records_tx, first_seqs).join_all().await });
                    }
                    Err(_) => report_unsent(&shared, &records_tx, first_seqs),
                }
            });
        match spawned {
            Ok(handle) => extra_threads.push(handle),
            // No thread: its workers run here instead.
            Err(_) => local_first_seqs.extend(fallback),
        }
    }
    let local_workers = spawn_workers(&shared, &records_tx, local_first_seqs);
    drop(records_tx);

    let mut summary = ClientSummary::default();
    while let Some(record) = records_rx.recv().await {
        summary.requests += 1;
        summary.failures += u64::from(!record.succeeded());
        on_record(record);
    }
    // Every worker has dropped its sender, so all have finished; reap them.
    local_workers.join_all().await;
    for thread in extra_threads {
        let _ = thread.join();
    }
    summary.connections = shared.next_connection.load(Ordering::Relaxed);
    summary
}

/// Spawns one worker per reserved first request on the current runtime.
fn spawn_workers(
    shared: &Arc<Shared>,
    records: &mpsc::UnboundedSender<RequestRecord>,
    first_seqs: Vec<u64>,
) -> JoinSet<()> {
    let mut workers = JoinSet::new();
    for first_seq in first_seqs {
        workers.spawn(Worker::new(shared.clone(), records.clone(), first_seq).run());
    }
    workers
}

/// Records the reserved first requests of workers whose thread could not get a runtime.
fn report_unsent(shared: &Shared, records: &mpsc::UnboundedSender<RequestRecord>, first_seqs: Vec<u64>) {
    for seq in first_seqs {
        let _ = records.send(RequestRecord {
            seq,
            target: shared.target_text.clone(),
            status: None,
            error: Some("client thread failed to start".to_string()),
            pod: None,
            cluster: None,
            peer_identity: None,
            started_us: micros_since(shared.epoch, Instant::now()),
            latency_us: 0,
            connection: 0,
            server_connection: None,
        });
    }
}

/// Microseconds from `epoch` to `instant`.
fn micros_since(epoch: Instant, instant: Instant) -> u64 {
    u64::try_from(instant.saturating_duration_since(epoch).as_micros()).unwrap_or(u64::MAX)
}

/// Built once per run: every HTTP request of a run is the same bytes.
fn mk_http_request(host: &str, policy: ConnectionPolicy) -> Vec<u8> {
    let mut request = Vec::with_capacity(128);
    let _ = write!(
        request,
        "GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: meshfed\r\nAccept: application/json\r\n"
    );
    if policy == ConnectionPolicy::NewConnectionPerRequest {
        request.extend_from_slice(b"Connection: close\r\n");
    }
    request.extend_from_slice(b"\r\n");
    request
}

struct Shared {
    config: ClientConfig,
    target_text: String,
    request_bytes: Vec<u8>,
    next_seq: AtomicU64,
    next_connection: AtomicU64,
    /// The client's start: records' `started_us` count from here.
    epoch: Instant,
}

/// The echo's reply fields a record carries (HTTP body or TCP line).
#[derive(Default, Deserialize)]
struct EchoReply {
    pod: Option<String>,
    cluster: Option<String>,
    peer_identity: Option<String>,
    server_connection: Option<String>,
    /// TCP only: the line echoed back.
    echo: Option<String>,
}

/// What a completed exchange produced.
struct Outcome {
    status: Option<u16>,
    reply: EchoReply,
    /// The connection can carry another request.
    reusable: bool,
    /// A reply arrived but is not what a successful echo sends.
    failure: Option<RequestFailure>,
}

/// Per-request bookkeeping that survives the exchange future being cancelled by the timeout.
#[derive(Default)]
struct Attempt {
    connection: Option<u64>,
    connected: bool,
}

struct OpenConnection {
    stream: TcpStream,
    number: u64,
}

struct Worker {
    /// The request this worker sends first, reserved for it before any worker starts.
    first_seq: Option<u64>,
    shared: Arc<Shared>,
    records: mpsc::UnboundedSender<RequestRecord>,
    connection: Option<OpenConnection>,
    input: ReadBuffer,
    line: Vec<u8>,
    chunked: Vec<u8>,
}

impl Worker {
    fn new(shared: Arc<Shared>, records: mpsc::UnboundedSender<RequestRecord>, first_seq: u64) -> Worker {
        Worker {
            first_seq: Some(first_seq),
            shared,
            records,
            connection: None,
            input: ReadBuffer::new(4 * 1024, MAX_REPLY_BYTES),
            line: Vec::with_capacity(64),
            chunked: Vec::new(),
        }
    }

    async fn run(mut self) {
        let timeout = self.shared.config.request_timeout;
        loop {
            let seq = match self.first_seq.take() {
                Some(reserved) => reserved,
                None => self.shared.next_seq.fetch_add(1, Ordering::Relaxed),
            };
            if seq >= self.shared.config.requests {
                return;
            }
            if let Some(rate) = self.shared.config.rate_per_second {
                tokio::time::sleep_until(slot(self.shared.epoch, seq, rate).into()).await;
            }
            let started = Instant::now();
            let mut attempt = Attempt::default();
            let result = tokio::time::timeout(timeout, self.exchange(seq, &mut attempt)).await;
            let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            let started_us = micros_since(self.shared.epoch, started);
            let outcome = match result {
                Ok(Ok(outcome)) => Ok(outcome),
                Ok(Err(failure)) => Err(failure),
                Err(_elapsed) if attempt.connected => Err(RequestFailure::Timeout),
                Err(_elapsed) => Err(RequestFailure::ConnectTimeout),
            };
            let keep = matches!(&outcome, Ok(done) if done.reusable && done.failure.is_none())
                && self.shared.config.connection_policy == ConnectionPolicy::Pooled;
            if !keep {
                self.connection = None;
            }
            let record = match outcome {
                Ok(Outcome {
                    status, reply, failure, ..
                }) => RequestRecord {
                    seq,
                    target: self.shared.target_text.clone(),
                    status,
                    error: failure.map(|failure| failure.to_string()),
                    pod: reply.pod,
                    cluster: reply.cluster,
                    peer_identity: reply.peer_identity,
                    started_us,
                    latency_us,
                    connection: attempt.connection.unwrap_or_default(),
                    server_connection: reply.server_connection,
                },
                Err(failure) => RequestRecord {
                    seq,
                    target: self.shared.target_text.clone(),
                    status: None,
                    error: Some(failure.to_string()),
                    pod: None,
                    cluster: None,
                    peer_identity: None,
                    started_us,
                    latency_us,
                    connection: attempt.connection.unwrap_or_default(),
                    server_connection: None,
                },
            };
            if self.records.send(record).is_err() {
                // The run was dropped; nobody wants more records.
                return;
            }
        }
    }

    /// Connects if needed, sends one request and reads its reply.
    async fn exchange(&mut self, seq: u64, attempt: &mut Attempt) -> Result<Outcome, RequestFailure> {
        let shared = &*self.shared;
        if self.connection.is_none() {
            let number = shared.next_connection.fetch_add(1, Ordering::Relaxed);
            attempt.connection = Some(number);
            let stream = TcpStream::connect(shared.config.target)
                .await
                .map_err(|error| RequestFailure::from_io(&error, true))?;
            stream
                .set_nodelay(true)
                .map_err(|error| RequestFailure::from_io(&error, true))?;
            self.input.clear();
            self.connection = Some(OpenConnection { stream, number });
        }
        attempt.connected = true;
        let Some(connection) = self.connection.as_mut() else {
            return Err(RequestFailure::Closed);
        };
        attempt.connection = Some(connection.number);
        match shared.config.protocol {
            Protocol::Http | Protocol::Http2 => {
                http_exchange(
                    &mut connection.stream,
                    &shared.request_bytes,
                    &mut self.input,
                    &mut self.chunked,
                )
                .await
            }
            Protocol::Tcp => {
                self.line.clear();
                let _ = writeln!(self.line, "meshfed request {seq}");
                tcp_exchange(&mut connection.stream, &self.line, &mut self.input).await
            }
        }
    }
}

fn io_failure(error: io::Error) -> RequestFailure {
    RequestFailure::from_io(&error, false)
}

/// Reads more of the reply; EOF before a complete reply is `connection closed`.
async fn read_more(stream: &mut TcpStream, input: &mut ReadBuffer) -> Result<(), RequestFailure> {
    match input.fill(stream).await.map_err(io_failure)? {
        Fill::Read(_) => Ok(()),
        Fill::Eof => Err(RequestFailure::Closed),
        Fill::Full => Err(RequestFailure::MalformedReply),
    }
}

async fn http_exchange(
    stream: &mut TcpStream,
    request: &[u8],
    input: &mut ReadBuffer,
    chunked: &mut Vec<u8>,
) -> Result<Outcome, RequestFailure> {
    stream.write_all(request).await.map_err(io_failure)?;
    let head = loop {
        match http::parse_response_head(input.data()) {
            Ok(Some(head)) => break head,
            Ok(None) => read_more(stream, input).await?,
            Err(_) => return Err(RequestFailure::MalformedReply),
        }
    };
    let mut reusable = head.keep_alive;
    let (body_range, consumed) = match head.framing {
        BodyFraming::Length(length) => {
            while input.data().len() < head.head_len + length {
                read_more(stream, input).await?;
            }
            (Some(head.head_len..head.head_len + length), head.head_len + length)
        }
        BodyFraming::Chunked => loop {
            match http::chunked_body(&input.data()[head.head_len..], Some(chunked)) {
                Ok(Some(body_len)) => break (None, head.head_len + body_len),
                Ok(None) => read_more(stream, input).await?,
                Err(_) => return Err(RequestFailure::MalformedReply),
            }
        },
        BodyFraming::UntilClose => {
            loop {
                match input.fill(stream).await.map_err(io_failure)? {
                    Fill::Read(_) => {}
                    Fill::Eof => break,
                    Fill::Full => return Err(RequestFailure::MalformedReply),
                }
            }
            reusable = false;
            let end = input.data().len();
            (Some(head.head_len..end), end)
        }
    };
    let body = match body_range {
        Some(range) => &input.data()[range],
        None => chunked.as_slice(),
    };
    let parsed = serde_json::from_slice::<EchoReply>(body);
    input.consume(consumed);
    let success = (200..300).contains(&head.status);
    let (reply, failure) = match parsed {
        Ok(reply) => (reply, None),
        // A 2xx that is not an echo reply means something else answered; an error status keeps
        // its own meaning whatever its body.
        Err(_) if success => (EchoReply::default(), Some(RequestFailure::MalformedReply)),
        Err(_) => (EchoReply::default(), None),
    };
    Ok(Outcome {
        status: Some(head.status),
        reply,
        reusable,
        failure,
    })
}

async fn tcp_exchange(stream: &mut TcpStream, line: &[u8], input: &mut ReadBuffer) -> Result<Outcome, RequestFailure> {
    stream.write_all(line).await.map_err(io_failure)?;
    let mut scanned = 0;
    let newline = loop {
        if let Some(found) = input.data()[scanned..].iter().position(|&b| b == b'\n') {
            break scanned + found;
        }
        scanned = input.data().len();
        read_more(stream, input).await?;
    };
    let parsed = serde_json::from_slice::<EchoReply>(&input.data()[..newline]);
    input.consume(newline + 1);
    let sent = line.strip_suffix(b"\n").unwrap_or(line);
    let (reply, failure) = match parsed {
        Ok(reply) if reply.echo.as_deref().map(str::as_bytes) == Some(sent) => (reply, None),
        Ok(reply) => (reply, Some(RequestFailure::MalformedReply)),
        Err(_) => (EchoReply::default(), Some(RequestFailure::MalformedReply)),
    };
    Ok(Outcome {
        status: None,
        reply,
        reusable: true,
        failure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_texts_are_stable() {
        let texts: Vec<String> = [
            RequestFailure::ConnectRefused,
            RequestFailure::ConnectTimeout,
            RequestFailure::Timeout,
            RequestFailure::Reset,
            RequestFailure::Closed,
            RequestFailure::MalformedReply,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            texts,
            [
                "connect refused",
                "connect timeout",
                "timeout",
                "connection reset",
                "connection closed",
                "malformed reply"
            ]
        );
    }

    #[test]
    fn new_connection_requests_ask_the_server_to_close() {
        let pooled = mk_http_request("bar.ns2.svc.cluster.local", ConnectionPolicy::Pooled);
        let single = mk_http_request("bar.ns2.svc.cluster.local", ConnectionPolicy::NewConnectionPerRequest);
        let pooled_head = http::parse_request_head(&pooled).unwrap().unwrap();
        let single_head = http::parse_request_head(&single).unwrap().unwrap();
        assert!(pooled_head.keep_alive);
        assert!(!single_head.keep_alive);
        assert!(String::from_utf8_lossy(&pooled).contains("\r\nHost: bar.ns2.svc.cluster.local\r\n"));
    }
}
