//! The echo workload: answers every HTTP request and every TCP line with who answered (pod,
//! cluster) and what the inbound sidecar said about the caller (identity, connection).
//!
//! Replies can be delayed while it runs (the `delay` fault): the echo re-reads a small control file
//! holding a number of milliseconds every [`DELAY_POLL_INTERVAL`], so a change takes effect within
//! that interval without a restart, and a reply pays one atomic load for it.

use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use super::buffer::{Fill, ReadBuffer};
use super::http::{self, BodyFraming};
use super::proxy_protocol::{self, Detected};

/// Largest chunked request body, or TCP line, the echo holds in memory.
const MAX_BUFFERED_BYTES: usize = 1024 * 1024;

/// The source address of Istio's inbound sidecar toward the app (`InboundPassthroughBindIpv4`).
pub const ISTIO_INBOUND_SOURCE: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 0, 0, 6);

/// What the echo workload serves and who it says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EchoConfig {
    /// Pod name reported in every reply.
    pub pod: String,
    /// Cluster name reported in every reply.
    pub cluster: String,
    /// Address to listen on; normally `127.0.0.1`, where the sidecar forwards to.
    pub bind: IpAddr,
    /// Ports answering HTTP/1.1 (0 picks a free port; see [`EchoServer::http_addrs`]).
    pub http_ports: Vec<u16>,
    /// Ports answering line-based TCP, with or without a PROXY v2 header.
    pub tcp_ports: Vec<u16>,
    /// A file holding the delay before each reply in milliseconds (decimal; missing or empty: no
    /// delay), re-read every [`DELAY_POLL_INTERVAL`].
    pub delay_file: Option<PathBuf>,
}

/// How often the echo re-reads its delay file: the longest a delay change takes to apply.
pub const DELAY_POLL_INTERVAL: Duration = Duration::from_millis(20);
/// The largest delay a delay file may ask for (longer than any request timeout meshfed uses).
pub const MAX_DELAY_MILLIS: u64 = 600_000;

/// A listener the echo could not open.
#[derive(Debug, Error)]
#[error("failed to listen for echo {protocol} on {address}")]
pub struct BindError {
    /// `HTTP` or `TCP`.
    pub protocol: &'static str,
    /// The address asked for.
    pub address: SocketAddr,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

/// Runs the echo workload until the process is killed. Fails only if a port cannot be opened.
pub async fn echo(config: EchoConfig) -> io::Result<()> {
    EchoServer::bind(config).await?.serve().await
}

/// Identity fields every reply carries, shared by all connections.
#[derive(Debug)]
struct Who {
    pod: String,
    cluster: String,
    /// Milliseconds every reply waits before it is written.
    delay_millis: AtomicU64,
}

impl Who {
    /// What a reply says about who answered, over a connection whose client showed
    /// `peer_identity` and which the server side knows as `server_connection`.
    fn answered<'a>(&'a self, peer_identity: Option<&'a str>, server_connection: Option<&'a str>) -> Answered<'a> {
        Answered {
            pod: &self.pod,
            cluster: &self.cluster,
            peer_identity,
            server_connection,
        }
    }

    async fn delay(&self) {
        let millis = self.delay_millis.load(Ordering::Relaxed);
        if millis > 0 {
            tokio::time::sleep(Duration::from_millis(millis)).await;
        }
    }
}

/// The delay a delay file's text asks for, or why it is not one.
fn parse_delay(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    match text.parse::<u64>() {
        Ok(millis) if millis <= MAX_DELAY_MILLIS => Ok(millis),
        _ => Err(format!(
            "{text:?} is not a delay: expected whole milliseconds from 0 to {MAX_DELAY_MILLIS}"
        )),
    }
}

/// Keeps `who.delay_millis` equal to what `file` says (0 while it is missing); a file that says
/// something else is reported on stderr (the app's log) once per change and leaves the delay as it
/// was.
async fn follow_delay_file(file: PathBuf, who: Arc<Who>) {
    let mut last_text: Option<String> = None;
    let mut ticks = tokio::time::interval(DELAY_POLL_INTERVAL);
    loop {
        ticks.tick().await;
        // A few bytes on the pod's tmpfs: reading them blocks no longer than an atomic load.
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => String::new(),
            Err(error) => format!("(unreadable: {error})"),
        };
        if last_text.as_deref() == Some(text.as_str()) {
            continue;
        }
        match parse_delay(&text) {
            Ok(millis) => who.delay_millis.store(millis, Ordering::Relaxed),
            Err(reason) => eprintln!("echo: ignoring delay file {}: {reason}", file.display()),
        }
        last_text = Some(text);
    }
}

/// The echo workload with its listeners open, before it serves. Binding first lets a caller learn
/// the ports it got and know the echo is reachable before traffic starts.
#[derive(Debug)]
pub struct EchoServer {
    who: Arc<Who>,
    http: Vec<TcpListener>,
    tcp: Vec<TcpListener>,
    delay_file: Option<PathBuf>,
}

impl EchoServer {
    /// Opens every listener in `config`. Errors are [`BindError`]s inside `io::Error`.
    pub async fn bind(config: EchoConfig) -> io::Result<EchoServer> {
        async fn listen(protocol: &'static str, bind: IpAddr, ports: &[u16]) -> io::Result<Vec<TcpListener>> {
            let mut listeners = Vec::with_capacity(ports.len());
            for &port in ports {
                let address = SocketAddr::new(bind, port);
                let listener = TcpListener::bind(address).await.map_err(|source| {
                    io::Error::new(
                        source.kind(),
                        BindError {
                            protocol,
                            address,
                            source,
                        },
                    )
                })?;
                listeners.push(listener);
            }
            Ok(listeners)
        }
        Ok(EchoServer {
            http: listen("HTTP", config.bind, &config.http_ports).await?,
            tcp: listen("TCP", config.bind, &config.tcp_ports).await?,
            who: Arc::new(Who {
                pod: config.pod,
                cluster: config.cluster,
                delay_millis: AtomicU64::new(0),
            }),
            delay_file: config.delay_file,
        })
    }

    /// The addresses the HTTP listeners got, in `http_ports` order.
    pub fn http_addrs(&self) -> Vec<SocketAddr> {
        self.http
            .iter()
            .filter_map(|listener| listener.local_addr().ok())
            .collect()
    }

    /// The addresses the TCP listeners got, in `tcp_ports` order.
    pub fn tcp_addrs(&self) -> Vec<SocketAddr> {
        self.tcp
            .iter()
            .filter_map(|listener| listener.local_addr().ok())
            .collect()
    }

    /// Serves every listener until the process is killed (or the future is dropped).
    pub async fn serve(self) -> io::Result<()> {
        let mut accept_loops = JoinSet::new();
        if let Some(file) = self.delay_file {
            accept_loops.spawn(follow_delay_file(file, self.who.clone()));
        }
        for listener in self.http {
            accept_loops.spawn(accept_loop(listener, self.who.clone(), Protocol::Http));
        }
        for listener in self.tcp {
            accept_loops.spawn(accept_loop(listener, self.who.clone(), Protocol::Tcp));
        }
        while let Some(finished) = accept_loops.join_next().await {
            finished.map_err(|join_error| io::Error::other(format!("echo accept loop stopped: {join_error}")))?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
enum Protocol {
    Http,
    Tcp,
}

async fn accept_loop(listener: TcpListener, who: Arc<Who>, protocol: Protocol) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let who = who.clone();
                tokio::spawn(async move {
                    // A connection's I/O error concerns only that connection.
                    let _ = match protocol {
                        Protocol::Http => serve_http(stream, &who).await,
                        Protocol::Tcp => serve_tcp(stream, &who).await,
                    };
                });
            }
            // Out of descriptors or a connection aborted before accept: keep serving the others.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Who answered and over which connection: what every reply, HTTP or TCP, begins with.
#[derive(Serialize)]
struct Answered<'a> {
    pod: &'a str,
    cluster: &'a str,
    peer_identity: Option<&'a str>,
    server_connection: Option<&'a str>,
}

/// The JSON body of an HTTP reply.
#[derive(Serialize)]
struct HttpReply<'a> {
    #[serde(flatten)]
    answered: Answered<'a>,
    xfcc: Option<&'a str>,
}

/// Appends a complete response (head and JSON body) to `out`; `body` is scratch space.
fn write_http_reply(out: &mut Vec<u8>, body: &mut Vec<u8>, reply: &HttpReply<'_>, keep_alive: bool) {
    body.clear();
    // Serialising plain strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *body, reply);
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let _ = write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    );
    out.extend_from_slice(body);
}

fn write_http_error(out: &mut Vec<u8>, status: &str) {
    let _ = write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

/// Serves HTTP/1.1 on one connection: every complete request in the buffer is answered, the
/// replies go out in one write, then the next read.
async fn serve_http(mut stream: TcpStream, who: &Who) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut input = ReadBuffer::new(8 * 1024, MAX_BUFFERED_BYTES);
    let mut output = Vec::with_capacity(1024);
    let mut body = Vec::with_capacity(512);
    // Bytes of a Content-Length body still to discard (a large body is skipped as it streams).
    let mut body_to_skip = 0usize;
    loop {
        let mut close = false;
        loop {
            if body_to_skip > 0 {
                let skipped = body_to_skip.min(input.data().len());
                input.consume(skipped);
                body_to_skip -= skipped;
                if body_to_skip > 0 {
                    break;
                }
            }
            let (consumed, keep_alive) = match http::parse_request_head(input.data()) {
                Ok(None) => break,
                Err(http::HttpError::HeadTooLarge) => {
                    write_http_error(&mut output, "431 Request Header Fields Too Large");
                    close = true;
                    break;
                }
                Err(_) => {
                    write_http_error(&mut output, "400 Bad Request");
                    close = true;
                    break;
                }
                Ok(Some(head)) => {
                    let consumed = match head.framing {
                        BodyFraming::Length(length) => {
                            body_to_skip = length;
                            head.head_len
                        }
                        BodyFraming::UntilClose => head.head_len,
                        BodyFraming::Chunked => match http::chunked_body(&input.data()[head.head_len..], None) {
                            Ok(Some(body_len)) => head.head_len + body_len,
                            Ok(None) => break,
                            Err(_) => {
                                write_http_error(&mut output, "400 Bad Request");
                                close = true;
                                break;
                            }
                        },
                    };
                    let xfcc = head.xfcc.as_deref();
                    let peer_identity = xfcc.and_then(http::xfcc_peer_identity);
                    let reply = HttpReply {
                        answered: who.answered(peer_identity.as_deref(), head.downstream_peer),
                        xfcc,
                    };
                    write_http_reply(&mut output, &mut body, &reply, head.keep_alive);
                    (consumed, head.keep_alive)
                }
            };
            input.consume(consumed);
            if !keep_alive {
                close = true;
                break;
            }
        }
        if !output.is_empty() {
            who.delay().await;
            stream.write_all(&output).await?;
            output.clear();
        }
        if close {
            return stream.shutdown().await;
        }
        match input.fill(&mut stream).await? {
            Fill::Read(_) => {}
            Fill::Eof => return Ok(()),
            Fill::Full => {
                write_http_error(&mut output, "413 Content Too Large");
                stream.write_all(&output).await?;
                return stream.shutdown().await;
            }
        }
    }
}

/// One JSON line answering one TCP line.
#[derive(Serialize)]
struct TcpReply<'a> {
    #[serde(flatten)]
    answered: Answered<'a>,
    echo: &'a str,
}

/// Serves line-based TCP on one connection: an optional PROXY v2 header, then one JSON line per
/// line received.
async fn serve_tcp(mut stream: TcpStream, who: &Who) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut input = ReadBuffer::new(4 * 1024, MAX_BUFFERED_BYTES);
    let header = loop {
        match proxy_protocol::detect(input.data()) {
            Ok(Detected::Absent) => break proxy_protocol::ProxyHeader::default(),
            Ok(Detected::Present { header, len }) => {
                input.consume(len);
                break header;
            }
            Ok(Detected::Incomplete) => match input.fill(&mut stream).await? {
                Fill::Read(_) => {}
                Fill::Eof | Fill::Full => return Ok(()),
            },
            Err(error) => return Err(io::Error::new(io::ErrorKind::InvalidData, error)),
        }
    };
    // Istio's inbound sidecar sends no PROXY header and connects from 127.0.0.6 (its inbound
    // passthrough source): report that address, which the sidecar's access log pairs with the
    // caller's identity and connection (provider::kubeconfig::evidence).
    let server_connection = header.source.map(|source| source.to_string()).or_else(|| {
        stream
            .peer_addr()
            .ok()
            .filter(|peer| peer.ip() == IpAddr::V4(ISTIO_INBOUND_SOURCE))
            .map(|peer| peer.to_string())
    });
    let mut output = Vec::with_capacity(1024);
    loop {
        let mut consumed = 0;
        while let Some(newline) = input.data()[consumed..].iter().position(|&b| b == b'\n') {
            let line = &input.data()[consumed..consumed + newline];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let reply = TcpReply {
                answered: who.answered(header.peer_identity.as_deref(), server_connection.as_deref()),
                echo: &String::from_utf8_lossy(line),
            };
            let _ = serde_json::to_writer(&mut output, &reply);
            output.push(b'\n');
            consumed += newline + 1;
        }
        input.consume(consumed);
        if !output.is_empty() {
            who.delay().await;
            stream.write_all(&output).await?;
            output.clear();
        }
        match input.fill(&mut stream).await? {
            Fill::Read(_) => {}
            Fill::Eof | Fill::Full => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_reply_sets_content_length_to_the_json_body() {
        let mut out = Vec::new();
        let mut body = Vec::new();
        let reply = HttpReply {
            answered: Answered {
                pod: "bar-0",
                cluster: "cluster2",
                peer_identity: Some("spiffe://x"),
                server_connection: None,
            },
            xfcc: Some("URI=spiffe://x"),
        };
        write_http_reply(&mut out, &mut body, &reply, false);
        let head = http::parse_response_head(&out).unwrap().unwrap();
        assert_eq!(head.framing, BodyFraming::Length(out.len() - head.head_len));
        assert!(!head.keep_alive);
        let json: serde_json::Value = serde_json::from_slice(&out[head.head_len..]).unwrap();
        assert_eq!(json["pod"], "bar-0");
        assert_eq!(json["server_connection"], serde_json::Value::Null);
    }

    #[test]
    fn a_delay_file_holds_whole_milliseconds_and_empty_means_none() {
        assert_eq!(parse_delay(""), Ok(0));
        assert_eq!(parse_delay("250\n"), Ok(250));
        assert_eq!(parse_delay("0"), Ok(0));
        assert_eq!(parse_delay(&MAX_DELAY_MILLIS.to_string()), Ok(MAX_DELAY_MILLIS));
        for bad in ["-1", "1.5", "ten", "600001"] {
            let reason = parse_delay(bad).unwrap_err();
            assert!(
                reason.contains("whole milliseconds from 0 to 600000"),
                "{bad}: {reason}"
            );
        }
    }
}
