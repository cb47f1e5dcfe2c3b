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

/// The access-log format meshfed needs in the mesh config (`meshConfig.accessLogFormat`, with
/// `accessLogEncoding: JSON` and `accessLogFile: /dev/stdout`). The `kind` provider installs Istio
/// with it; on `kubeconfig` clusters the user's mesh config must carry it (meshfed checks).
pub const ACCESS_LOG_FORMAT: &str = r#"{"meshfed":"1","start":"%START_TIME%","upstream_cluster":"%UPSTREAM_CLUSTER_RAW%","peer":"%DOWNSTREAM_PEER_URI_SAN%","downstream":"%DOWNSTREAM_REMOTE_ADDRESS%","upstream_local":"%UPSTREAM_LOCAL_ADDRESS%","request_id":"%REQ(X-REQUEST-ID)%"}"#;

/// The command operator whose presence in a mesh config shows meshfed's format is configured.
pub const REQUIRED_OPERATOR: &str = "%DOWNSTREAM_PEER_URI_SAN%";

/// One access-log line in [`ACCESS_LOG_FORMAT`] (the `kind` install's field names are accepted
/// too).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct AccessLogLine {
    /// Envoy cluster the connection went to (`inbound|9090||` on the server side).
    pub upstream_cluster: String,
    /// The caller's SPIFFE identity, `-` when none.
    #[serde(alias = "peer_uri_san")]
    pub peer: String,
    /// The connection's remote address as the sidecar saw it (client sidecar or gateway).
    #[serde(alias = "downstream_remote_address")]
    pub downstream: String,
    /// The sidecar's own address toward the app (`127.0.0.6:<port>`).
    #[serde(alias = "upstream_local_address")]
    pub upstream_local: String,
}

/// The inbound lines of a sidecar's log; other lines (Envoy's own messages, outbound lines) are
/// skipped.
pub fn inbound_lines(log: &str) -> Vec<AccessLogLine> {
    log.lines()
        .filter(|line| line.trim_start().starts_with('{'))
        .filter_map(|line| serde_json::from_str::<AccessLogLine>(line.trim()).ok())
        .filter(|line| line.upstream_cluster.starts_with("inbound|"))
        .collect()
}

/// Fills the caller identity and server connection of TCP records from the answering pods'
/// inbound access-log lines (`logs` by pod name). A record whose line is missing keeps no
/// identity: it then counts against the mTLS rate, as it must.
pub fn attribute_tcp_records(records: &mut [RequestRecord], logs: &BTreeMap<String, Vec<AccessLogLine>>) {
    for record in records.iter_mut() {
        let (Some(pod), Some(app_peer)) = (&record.pod, &record.server_connection) else {
            continue;
        };
        let line = logs
            .get(pod)
            .and_then(|lines| lines.iter().rev().find(|line| &line.upstream_local == app_peer));
        if let Some(line) = line {
            record.peer_identity = (line.peer != "-" && !line.peer.is_empty()).then(|| line.peer.clone());
            record.server_connection = Some(line.downstream.clone());
        } else {
            record.peer_identity = None;
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
mod tests {
    use super::*;
    use crate::provider::local::envoy_binary::parse_counters;

    fn tcp_record(seq: u64, pod: &str, app_peer: &str) -> RequestRecord {
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
