//! Evidence from Istio's sidecars, parsed without I/O: the access-log lines meshfed configures
//! (caller identity and the connection that carried each TCP request) and Envoy's TLS failure
//! counters.
//!
//! Istio does not tell a TCP app who called it (the local emulation does, with PROXY protocol), so
//! on a real mesh a TCP record's caller identity and server connection come from the answering
//! pod's inbound sidecar: meshfed's echo reports the address its sidecar connected from
//! (`127.0.0.6:<port>`, Istio's inbound passthrough source) and the sidecar logs that address as
//! `%UPSTREAM_LOCAL_ADDRESS%` next to `%DOWNSTREAM_PEER_URI_SAN%` and
//! `%DOWNSTREAM_REMOTE_ADDRESS%`: the join is exact.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::provider::TlsFailures;
use crate::record::RequestRecord;

pub use crate::provider::kube_api::kind_seam::ACCESS_LOG_FORMAT;

/// The command operator whose presence in a mesh config shows meshfed's format is configured.
pub const REQUIRED_OPERATOR: &str = "%DOWNSTREAM_PEER_URI_SAN%";

/// One access-log line in [`ACCESS_LOG_FORMAT`] (the `kind` install's field names are accepted
/// too). Envoy's JSON access log writes a value it does not have as `null`, not `-` (Istio
/// configures `json_format` without `omit_empty_values`, `telemetry_logging.go@1.30.0`): a plain
/// text connection has `"peer":null`, a TCP line `"request_id":null`. Every field is therefore
/// optional, and a missing identity reads as "no identity".
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct AccessLogLine {
    /// Envoy cluster the connection went to (`inbound|9090||` on the server side).
    #[serde(default)]
    pub upstream_cluster: Option<String>,
    /// The caller's SPIFFE identity (`null`, `-` or empty when the connection was plain text).
    #[serde(default, alias = "peer_uri_san")]
    pub peer: Option<String>,
    /// The connection's remote address as the sidecar saw it (client sidecar or gateway).
    #[serde(default, alias = "downstream_remote_address")]
    pub downstream: Option<String>,
    /// The sidecar's own address toward the app (`127.0.0.6:<port>`).
    #[serde(default, alias = "upstream_local_address")]
    pub upstream_local: Option<String>,
}

impl AccessLogLine {
    /// The caller's identity, if the connection had one.
    pub fn identity(&self) -> Option<&str> {
        self.peer.as_deref().filter(|peer| !peer.is_empty() && *peer != "-")
    }
}

/// The inbound lines of a sidecar's log; other lines (Envoy's and pilot-agent's own messages,
/// outbound lines) are skipped.
pub fn inbound_lines(log: &str) -> Vec<AccessLogLine> {
    log.lines()
        .filter(|line| line.trim_start().starts_with('{'))
        .filter_map(|line| serde_json::from_str::<AccessLogLine>(line.trim()).ok())
        .filter(|line| {
            line.upstream_cluster
                .as_deref()
                .is_some_and(|cluster| cluster.starts_with("inbound|"))
        })
        .collect()
}

fn line_of<'a>(record: &RequestRecord, logs: &'a BTreeMap<String, Vec<AccessLogLine>>) -> Option<&'a AccessLogLine> {
    let (pod, app_peer) = (record.pod.as_ref()?, record.server_connection.as_ref()?);
    logs.get(pod)?
        .iter()
        .rev()
        .find(|line| line.upstream_local.as_ref() == Some(app_peer))
}

/// How many answered TCP records (a pod and the app side of its connection known) have no
/// access-log line yet: Envoy writes a TCP line when the connection closes and flushes the file
/// on an interval, so the tail of a phase may not be there at once.
pub fn records_without_lines(records: &[RequestRecord], logs: &BTreeMap<String, Vec<AccessLogLine>>) -> usize {
    records
        .iter()
        .filter(|record| record.pod.is_some() && record.server_connection.is_some())
        .filter(|record| line_of(record, logs).is_none())
        .count()
}

/// Fills the caller identity and server connection of TCP records from the answering pods'
/// inbound access-log lines (`logs` by pod name). A record whose line is missing keeps no
/// identity: it then counts against the mTLS rate, as it must.
pub fn attribute_tcp_records(records: &mut [RequestRecord], logs: &BTreeMap<String, Vec<AccessLogLine>>) {
    for record in records.iter_mut() {
        if record.pod.is_none() || record.server_connection.is_none() {
            continue;
        }
        match line_of(record, logs) {
            Some(line) => {
                record.peer_identity = line.identity().map(str::to_owned);
                if let Some(downstream) = &line.downstream {
                    record.server_connection = Some(downstream.clone());
                }
            }
            None => record.peer_identity = None,
        }
    }
}

/// Sums the TLS failure counters of Envoy's `/stats` text (`name: value` lines) over listeners:
/// the server sidecars' (`ssl.fail_verify_*`, `ssl.connection_error`) and the gateways'
/// (`no_filter_chain_match`).
pub fn tls_failures(sidecars: &[BTreeMap<String, u64>], gateways: &[BTreeMap<String, u64>]) -> TlsFailures {
    let sum = |stats: &[BTreeMap<String, u64>], suffix: &str| -> u64 {
        stats
            .iter()
            .flat_map(|counters| counters.iter())
            .filter(|(name, _)| name.starts_with("listener.") && name.ends_with(suffix))
            .map(|(_, value)| *value)
            .sum()
    };
    TlsFailures {
        fail_verify_error: sum(sidecars, ".ssl.fail_verify_error"),
        fail_verify_no_cert: sum(sidecars, ".ssl.fail_verify_no_cert"),
        connection_error: sum(sidecars, ".ssl.connection_error"),
        gateway_no_filter_chain_match: sum(gateways, ".no_filter_chain_match"),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::provider::local::envoy_binary::parse_counters;

    /// A TCP call answered by `pod` in cluster2, whose sidecar reached the app from `app_peer`.
    pub(in crate::provider::kubeconfig) fn tcp_record(seq: u64, pod: &str, app_peer: &str) -> RequestRecord {
        RequestRecord {
            started_us: 0,
            seq,
            target: "10.97.0.20:9090".into(),
            status: None,
            error: None,
            pod: Some(pod.into()),
            cluster: Some("cluster2".into()),
            peer_identity: None,
            latency_us: 900,
            connection: seq,
            server_connection: Some(app_peer.into()),
        }
    }

    #[test]
    fn tcp_records_take_identity_and_connection_from_the_line_with_their_app_side_address() {
        let log = concat!(
            "2026-11-29T15:00:00.000Z info Envoy proxy is ready\n",
            r#"{"meshfed":"1","start":"x","upstream_cluster":"inbound|9090||","peer":"spiffe://cluster.local/ns/ns1/sa/foo","downstream":"172.18.255.1:40001","upstream_local":"127.0.0.6:51000","request_id":"-"}"#,
            "\n",
            r#"{"meshfed":"1","start":"x","upstream_cluster":"outbound|80||foo.ns1.svc.cluster.local","peer":"-","downstream":"10.20.0.9:1","upstream_local":"127.0.0.6:51001","request_id":"-"}"#,
            "\n",
            r#"{"meshfed":"1","start":"x","upstream_cluster":"inbound|9090||","peer":"-","downstream":"10.20.0.7:40002","upstream_local":"127.0.0.6:51002","request_id":"-"}"#,
            "\n",
        );
        let logs = BTreeMap::from([("bar-5d8f7-x2x9q".to_owned(), inbound_lines(log))]);
        assert_eq!(
            logs["bar-5d8f7-x2x9q"].len(),
            2,
            "outbound and non-JSON lines are skipped"
        );
        let mut records = vec![
            tcp_record(0, "bar-5d8f7-x2x9q", "127.0.0.6:51000"),
            tcp_record(1, "bar-5d8f7-x2x9q", "127.0.0.6:51002"),
            tcp_record(2, "bar-5d8f7-x2x9q", "127.0.0.6:59999"),
            tcp_record(3, "bar-other", "127.0.0.6:51000"),
        ];
        attribute_tcp_records(&mut records, &logs);
        assert_eq!(
            records[0].peer_identity.as_deref(),
            Some("spiffe://cluster.local/ns/ns1/sa/foo")
        );
        assert_eq!(records[0].server_connection.as_deref(), Some("172.18.255.1:40001"));
        assert_eq!(records[1].peer_identity, None, "a plaintext caller has no identity");
        assert_eq!(records[1].server_connection.as_deref(), Some("10.20.0.7:40002"));
        assert_eq!(records[2].peer_identity, None, "no line: no identity");
        assert_eq!(records[3].peer_identity, None, "lines of another pod never match");
    }

    /// Lines a real Envoy (1.40.0) wrote with meshfed's format configured as Istio configures a
    /// JSON access log: TCP over mTLS, TCP in plain text, HTTP in plain text (twice), HTTP over
    /// mTLS, in that order. `testdata/envoy-access-log-config.py` says how they were produced.
    const REAL_ENVOY_LINES: &str = include_str!("testdata/envoy-1.40.0-istio-json-access-log.jsonl");

    #[test]
    fn lines_a_real_envoy_writes_give_the_identity_of_mtls_and_none_for_plain_text() {
        let log = format!("2026-12-03T17:31:45.000000Z\tinfo\tEnvoy proxy is ready\n{REAL_ENVOY_LINES}");
        let lines = inbound_lines(&log);
        assert_eq!(
            lines.len(),
            5,
            "every line Envoy wrote is read, null values included: {lines:?}"
        );
        let identities: Vec<Option<&str>> = lines.iter().map(AccessLogLine::identity).collect();
        let foo = Some("spiffe://cluster.local/ns/ns1/sa/foo");
        assert_eq!(identities, [foo, None, None, None, foo]);
        assert_eq!(lines[1].upstream_cluster.as_deref(), Some("inbound|9090||"));
        assert!(lines.iter().all(|line| {
            line.upstream_local
                .as_deref()
                .is_some_and(|a| a.starts_with("127.0.0.6:"))
        }));

        // A plain-text TCP caller's record is attributed: its connection, and no identity.
        let plain = &lines[1];
        let pod = "bar-5d8f7-x2x9q";
        let mut records = vec![
            tcp_record(0, pod, lines[0].upstream_local.as_deref().unwrap()),
            tcp_record(1, pod, plain.upstream_local.as_deref().unwrap()),
        ];
        records[1].peer_identity = Some("stale".into());
        let logs = BTreeMap::from([(pod.to_owned(), lines.clone())]);
        assert_eq!(records_without_lines(&records, &logs), 0);
        attribute_tcp_records(&mut records, &logs);
        assert_eq!(records[0].peer_identity.as_deref(), foo);
        assert_eq!(records[1].peer_identity, None);
        assert_eq!(records[1].server_connection, plain.downstream);
    }

    #[test]
    fn records_whose_lines_are_not_written_yet_are_counted() {
        let lines = inbound_lines(REAL_ENVOY_LINES);
        let pod = "bar-5d8f7-x2x9q";
        let logs = BTreeMap::from([(pod.to_owned(), lines[..1].to_vec())]);
        let mut unanswered = tcp_record(2, pod, "127.0.0.6:1");
        unanswered.pod = None;
        let records = vec![
            tcp_record(0, pod, lines[0].upstream_local.as_deref().unwrap()),
            tcp_record(1, pod, lines[1].upstream_local.as_deref().unwrap()),
            unanswered,
        ];
        assert_eq!(records_without_lines(&records, &logs), 1);
    }

    #[test]
    fn tls_failures_sum_listener_counters_of_sidecars_and_gateways() {
        let sidecar = parse_counters(
            "listener.0.0.0.0_15006.ssl.fail_verify_error: 3\n\
             listener.0.0.0.0_15006.ssl.fail_verify_no_cert: 1\n\
             cluster.outbound|80||foo.ns1.svc.cluster.local.ssl.fail_verify_error: 50\n\
             listener.0.0.0.0_15006.ssl.connection_error: 2\n",
        );
        let gateway = parse_counters(
            "listener.0.0.0.0_15443.no_filter_chain_match: 4\nlistener.0.0.0.0_15443.ssl.fail_verify_error: 9\n",
        );
        let failures = tls_failures(&[sidecar.clone(), sidecar], &[gateway]);
        assert_eq!(
            failures,
            TlsFailures {
                fail_verify_error: 6,
                fail_verify_no_cert: 2,
                connection_error: 4,
                gateway_no_filter_chain_match: 4,
            }
        );
    }
}
