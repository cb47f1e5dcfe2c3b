//! The echo and client workloads against each other on loopback: record counts, connection
//! numbering, identity from XFCC and PROXY v2, and failures that end instead of hanging.

use crate::support::meshfed_command::MESHFED;
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use meshfed::record::RequestRecord;
use meshfed::workload::{ClientConfig, ConnectionPolicy, EchoConfig, EchoServer, Protocol, client};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const FOO_IDENTITY: &str = "spiffe://cluster.local/ns/ns1/sa/foo";

/// Starts an echo for pod `bar-0` in `cluster2` on one free HTTP and one free TCP port.
async fn start_echo() -> (SocketAddr, SocketAddr) {
    let server = EchoServer::bind(EchoConfig {
        pod: "bar-0".to_string(),
        cluster: "cluster2".to_string(),
        bind: Ipv4Addr::LOCALHOST.into(),
        http_ports: vec![0],
        tcp_ports: vec![0],
        delay_file: None,
    })
    .await
    .unwrap();
    let addresses = (server.http_addrs()[0], server.tcp_addrs()[0]);
    tokio::spawn(server.serve());
    addresses
}

fn config(
    target: SocketAddr,
    protocol: Protocol,
    requests: u64,
    concurrency: u32,
    policy: ConnectionPolicy,
) -> ClientConfig {
    ClientConfig {
        target,
        host: "bar.ns2.svc.cluster.local".to_string(),
        protocol,
        requests,
        concurrency,
        connection_policy: policy,
        request_timeout: Duration::from_secs(5),
        threads: 1,
        rate_per_second: None,
        epoch: None,
    }
}

/// Runs the client to completion, bounded so a hang fails the test instead of stalling it.
async fn run_client(config: ClientConfig) -> Vec<RequestRecord> {
    let mut records = Vec::new();
    let summary = tokio::time::timeout(Duration::from_secs(30), client(config, |record| records.push(record)))
        .await
        .expect("client did not finish within 30 s");
    assert_eq!(summary.requests, records.len() as u64);
    records
}

fn assert_one_record_per_seq(records: &[RequestRecord], requests: u64) {
    let seqs: BTreeSet<u64> = records.iter().map(|record| record.seq).collect();
    assert_eq!(records.len() as u64, requests);
    assert_eq!(seqs, (0..requests).collect());
}

fn connections(records: &[RequestRecord]) -> BTreeSet<u64> {
    records.iter().map(|record| record.connection).collect()
}

/// A proxy in front of `upstream` that plays the inbound sidecar: it writes `preamble` to the
/// upstream before relaying each connection (HTTP: header lines after the request line, passed
/// as `inject_after_first_line`; TCP: a PROXY v2 header).
async fn start_sidecar_stand_in(upstream: SocketAddr, preamble: Vec<u8>, inject_after_first_line: bool) -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (downstream, _) = listener.accept().await.unwrap();
            let preamble = preamble.clone();
            tokio::spawn(async move {
                let mut upstream = TcpStream::connect(upstream).await.unwrap();
                let mut downstream = BufReader::new(downstream);
                if inject_after_first_line {
                    let mut request_line = Vec::new();
                    downstream.read_until(b'\n', &mut request_line).await.unwrap();
                    upstream.write_all(&request_line).await.unwrap();
                }
                upstream.write_all(&preamble).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await;
            });
        }
    });
    address
}

/// A PROXY v2 header for a TCP/IPv4 connection from `10.20.0.9:41234` to `10.20.0.5:9000`, with a
/// NOOP TLV and then the identity TLV (type 0xE0), written out byte by byte.
fn proxy_v2_header(identity: &str) -> Vec<u8> {
    let mut tlvs = vec![0x04, 0x00, 0x02, 0x00, 0x00];
    tlvs.push(0xE0);
    tlvs.extend_from_slice(&(identity.len() as u16).to_be_bytes());
    tlvs.extend_from_slice(identity.as_bytes());
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(0x21); // version 2, PROXY
    header.push(0x11); // AF_INET, STREAM
    header.extend_from_slice(&((12 + tlvs.len()) as u16).to_be_bytes());
    header.extend_from_slice(&[10, 20, 0, 9, 10, 20, 0, 5]);
    header.extend_from_slice(&41234u16.to_be_bytes());
    header.extend_from_slice(&9000u16.to_be_bytes());
    header.extend_from_slice(&tlvs);
    header
}

#[tokio::test]
async fn http_pooled_client_sends_every_request_over_concurrency_connections() {
    let (http, _) = start_echo().await;
    let records = run_client(config(http, Protocol::Http, 300, 4, ConnectionPolicy::Pooled)).await;
    assert_one_record_per_seq(&records, 300);
    assert_eq!(connections(&records), (0..4).collect());
    for record in &records {
        assert!(record.succeeded(), "{record:?}");
        assert_eq!(record.status, Some(200));
        assert_eq!(record.pod.as_deref(), Some("bar-0"));
        assert_eq!(record.cluster.as_deref(), Some("cluster2"));
        assert_eq!(record.target, http.to_string());
        assert_eq!(record.peer_identity, None);
        assert_eq!(record.server_connection, None);
    }
}

#[tokio::test]
async fn paced_client_starts_no_request_before_its_slot_from_the_given_epoch() {
    let (http, _) = start_echo().await;
    // The epoch is 200 ms ago: requests whose slot has passed start at once, later ones wait.
    let epoch = std::time::SystemTime::now() - Duration::from_millis(200);
    let requests = 40;
    let records = run_client(ClientConfig {
        rate_per_second: Some(100),
        epoch: Some(epoch),
        ..config(http, Protocol::Http, requests, 4, ConnectionPolicy::Pooled)
    })
    .await;
    assert_one_record_per_seq(&records, requests);
    for record in &records {
        assert!(record.succeeded(), "{record:?}");
        let slot_us = record.seq * 10_000;
        assert!(
            record.started_us >= slot_us,
            "request {} started at {} us, before its slot at {slot_us} us",
            record.seq,
            record.started_us
        );
    }
    // Counted from the given epoch, not the client's start: the first requests' slots had
    // passed 200 ms before the client started.
    let first = records.iter().map(|record| record.started_us).min().unwrap();
    assert!(first >= 200_000, "first request started {first} us after the epoch");
    let last = records.iter().map(|record| record.started_us).max().unwrap();
    assert!(
        last >= 390_000,
        "the last of 40 requests at 100/s starts at its 390 ms slot, not {last} us"
    );
}

#[tokio::test]
async fn http_new_connection_policy_opens_one_connection_per_request() {
    let (http, _) = start_echo().await;
    let records = run_client(config(
        http,
        Protocol::Http,
        60,
        4,
        ConnectionPolicy::NewConnectionPerRequest,
    ))
    .await;
    assert_one_record_per_seq(&records, 60);
    assert_eq!(connections(&records), (0..60).collect());
    assert!(
        records
            .iter()
            .all(|record| record.succeeded() && record.pod.as_deref() == Some("bar-0"))
    );
}

#[tokio::test]
async fn extra_client_threads_share_requests_and_connection_numbers() {
    let (http, _) = start_echo().await;
    for (policy, expected_connections) in [
        (ConnectionPolicy::Pooled, 6),
        (ConnectionPolicy::NewConnectionPerRequest, 90),
    ] {
        let mut threaded = config(http, Protocol::Http, 90, 6, policy);
        threaded.threads = 3;
        let records = run_client(threaded).await;
        assert_one_record_per_seq(&records, 90);
        assert_eq!(connections(&records), (0..expected_connections).collect());
        assert!(records.iter().all(RequestRecord::succeeded), "{records:?}");
    }
}

#[tokio::test]
async fn echo_reports_identity_from_the_last_xfcc_element_of_a_raw_request() {
    let (http, _) = start_echo().await;
    let xfcc = format!(
        "By=spiffe://cluster.local/ns/ns2/sa/bar;Hash=1;Subject=\"CN=edge,O=a;b\";URI=spiffe://cluster.local/ns/ns0/sa/edge,\
         By=spiffe://cluster.local/ns/ns2/sa/bar;Hash=2;Subject=\"O=x,CN=y\";URI={FOO_IDENTITY}"
    );
    let mut stream = TcpStream::connect(http).await.unwrap();
    let request = format!(
        "GET /any/path HTTP/1.1\r\nHost: bar\r\nX-Forwarded-Client-Cert: {xfcc}\r\n\
         x-meshfed-downstream-peer: 10.20.0.9:41234\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    // The echo closes after the reply because the request said so; EOF proves it.
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["peer_identity"], FOO_IDENTITY);
    assert_eq!(json["xfcc"], xfcc.as_str());
    assert_eq!(json["server_connection"], "10.20.0.9:41234");
    assert_eq!(json["pod"], "bar-0");
    assert_eq!(json["cluster"], "cluster2");
}

#[tokio::test]
async fn echo_keeps_pipelined_requests_on_one_connection_until_asked_to_close() {
    let (http, _) = start_echo().await;
    let mut stream = TcpStream::connect(http).await.unwrap();
    stream
        .write_all(b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert_eq!(response.matches("HTTP/1.1 200 OK").count(), 3, "{response}");
}

#[tokio::test]
async fn client_records_identity_and_server_connection_injected_by_a_sidecar_stand_in() {
    let (http, _) = start_echo().await;
    let headers =
        format!("x-forwarded-client-cert: Hash=9;URI={FOO_IDENTITY}\r\nx-meshfed-downstream-peer: 10.20.0.9:5000\r\n");
    let sidecar = start_sidecar_stand_in(http, headers.into_bytes(), true).await;
    let records = run_client(config(
        sidecar,
        Protocol::Http,
        5,
        2,
        ConnectionPolicy::NewConnectionPerRequest,
    ))
    .await;
    assert_one_record_per_seq(&records, 5);
    for record in &records {
        assert!(record.succeeded(), "{record:?}");
        assert_eq!(record.peer_identity.as_deref(), Some(FOO_IDENTITY));
        assert_eq!(record.server_connection.as_deref(), Some("10.20.0.9:5000"));
    }
}

#[tokio::test]
async fn tcp_echo_reads_a_hand_written_proxy_v2_header() {
    let (_, tcp) = start_echo().await;
    let mut stream = TcpStream::connect(tcp).await.unwrap();
    let mut bytes = proxy_v2_header(FOO_IDENTITY);
    bytes.extend_from_slice(b"first\r\nsecond\n");
    stream.write_all(&bytes).await.unwrap();
    let mut lines = BufReader::new(stream).lines();
    for expected in ["first", "second"] {
        let line = lines.next_line().await.unwrap().unwrap();
        let json: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(json["echo"], expected);
        assert_eq!(json["peer_identity"], FOO_IDENTITY);
        assert_eq!(json["server_connection"], "10.20.0.9:41234");
        assert_eq!(json["pod"], "bar-0");
    }
}

#[tokio::test]
async fn tcp_client_through_a_proxy_v2_stand_in_reports_identity() {
    let (_, tcp) = start_echo().await;
    let sidecar = start_sidecar_stand_in(tcp, proxy_v2_header(FOO_IDENTITY), false).await;
    let records = run_client(config(sidecar, Protocol::Tcp, 40, 3, ConnectionPolicy::Pooled)).await;
    assert_one_record_per_seq(&records, 40);
    assert_eq!(connections(&records), (0..3).collect());
    for record in &records {
        assert!(record.succeeded(), "{record:?}");
        assert_eq!(record.status, None);
        assert_eq!(record.peer_identity.as_deref(), Some(FOO_IDENTITY));
        assert_eq!(record.server_connection.as_deref(), Some("10.20.0.9:41234"));
        assert_eq!(record.cluster.as_deref(), Some("cluster2"));
    }
}

#[tokio::test]
async fn tcp_client_without_proxy_header_gets_echoes_without_identity() {
    let (_, tcp) = start_echo().await;
    let records = run_client(config(
        tcp,
        Protocol::Tcp,
        30,
        3,
        ConnectionPolicy::NewConnectionPerRequest,
    ))
    .await;
    assert_one_record_per_seq(&records, 30);
    assert_eq!(connections(&records), (0..30).collect());
    for record in &records {
        assert!(record.succeeded(), "{record:?}");
        assert_eq!(record.pod.as_deref(), Some("bar-0"));
        assert_eq!(record.peer_identity, None);
        assert_eq!(record.server_connection, None);
    }
}

#[tokio::test]
async fn refused_target_gives_one_error_record_per_request() {
    let closed = {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        listener.local_addr().unwrap()
    };
    for policy in [ConnectionPolicy::Pooled, ConnectionPolicy::NewConnectionPerRequest] {
        for protocol in [Protocol::Http, Protocol::Tcp] {
            let records = run_client(config(closed, protocol, 20, 3, policy)).await;
            assert_one_record_per_seq(&records, 20);
            for record in &records {
                assert_eq!(record.error.as_deref(), Some("connect refused"), "{record:?}");
                assert!(!record.succeeded());
                assert_eq!(record.pod, None);
            }
            // Every failed request tried its own connection.
            assert_eq!(connections(&records).len(), 20);
        }
    }
}

#[tokio::test]
async fn silent_server_makes_requests_time_out_after_the_request_timeout() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let timeout = Duration::from_millis(150);
    let mut silent = config(target, Protocol::Http, 6, 2, ConnectionPolicy::Pooled);
    silent.request_timeout = timeout;
    let started = std::time::Instant::now();
    let records = run_client(silent).await;
    assert_one_record_per_seq(&records, 6);
    for record in &records {
        assert_eq!(record.error.as_deref(), Some("timeout"), "{record:?}");
        let latency = Duration::from_micros(record.latency_us);
        assert!(latency >= timeout && latency < timeout * 5, "latency {latency:?}");
    }
    // Two workers, three timeouts each: about three timeouts of wall time, not six.
    assert!(started.elapsed() < timeout * 6, "took {:?}", started.elapsed());
    // A timed-out connection is abandoned: each request used a new one.
    assert_eq!(connections(&records).len(), 6);
}

#[tokio::test]
async fn garbage_reply_is_a_malformed_reply_not_a_hang() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut request = [0u8; 1024];
                let _ = stream.read(&mut request).await;
                let _ = stream.write_all(b"hello there\n\n").await;
            });
        }
    });
    for protocol in [Protocol::Http, Protocol::Tcp] {
        let records = run_client(config(target, protocol, 4, 2, ConnectionPolicy::Pooled)).await;
        assert_one_record_per_seq(&records, 4);
        assert!(
            records
                .iter()
                .all(|record| record.error.as_deref() == Some("malformed reply")),
            "{records:?}"
        );
    }
}

#[tokio::test]
async fn server_closing_mid_reply_is_reported_as_closed() {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"pod\"")
                .await;
        }
    });
    let records = run_client(config(target, Protocol::Http, 3, 1, ConnectionPolicy::Pooled)).await;
    assert_one_record_per_seq(&records, 3);
    assert!(
        records
            .iter()
            .all(|record| record.error.as_deref() == Some("connection closed")),
        "{records:?}"
    );
}

/// A client whose caller stopped reading (an aborted pods/exec does not signal the command it ran)
/// blocks writing its records; `--stop-after-s` ends it anyway, by SIGALRM.
#[tokio::test]
async fn a_client_nobody_reads_ends_by_its_stop_after_bound() {
    let (http, _) = start_echo().await;
    let mut client = std::process::Command::new(MESHFED)
        .args(["workload", "client", "--target", &http.to_string(), "--host", "bar"])
        .args(["--protocol", "http", "--requests", "1000000", "--concurrency", "4"])
        .args(["--stop-after-s", "1"])
        .stdin(std::process::Stdio::null())
        // Piped and never read: after 64 KiB of records every write blocks.
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = client.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = client.kill();
            let _ = client.wait();
            panic!("the client still ran 30 s after a 1 s --stop-after-s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(nix::sys::signal::Signal::SIGALRM as i32),
        "{status}"
    );
    // It did block on its output: more records than a pipe holds were ready to be written.
    let mut stdout = client.stdout.take().unwrap();
    let mut written = Vec::new();
    std::io::Read::read_to_end(&mut stdout, &mut written).unwrap();
    assert!(written.len() >= 60 * 1024, "only {} bytes written", written.len());
}
