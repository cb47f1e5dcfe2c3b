//! The answering sidecars' access logs on a real mesh: read through the API (`pods/log` of the
//! `istio-proxy` containers) and waited for until every answered TCP record has its line.
//!
//! Envoy writes a TCP connection's line when the connection closes and flushes the log file on an
//! interval (Istio passes `--file-flush-interval-msec 1000` from 1.11, `pkg/envoy/proxy.go@1.11.0`;
//! before that Envoy's default of 10 s applies), so right after the client exits the tail of a
//! phase may have no line yet. The logs are read again, [`ACCESS_LOG_POLL`] apart, until no
//! answered record lacks its line or [`ACCESS_LOG_WAIT`] has passed; records still without one
//! then keep no identity and count against the mTLS rate, as they must.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::LogParams;

use super::{KubeconfigProvider, SHORT_CALL, evidence, service_namespace, unavailable, workloads};
use crate::provider::{ProviderError, Traffic};
use crate::record::RequestRecord;
use crate::scenario::{Protocol, Scenario};

/// How long meshfed waits for the last lines: Envoy's default flush interval (10 s, Istio before
/// 1.11) and a margin for the connections' close.
pub const ACCESS_LOG_WAIT: Duration = Duration::from_secs(15);
/// How often the logs are read again meanwhile (Istio's flush interval from 1.11).
pub const ACCESS_LOG_POLL: Duration = Duration::from_secs(1);

/// The inbound lines by pod, read by `read` until every answered record of `records` has its
/// line or `wait` has passed (then the last read is returned).
pub async fn await_access_log_lines<Read, Reading>(
    records: &[RequestRecord],
    wait: Duration,
    mut read: Read,
) -> Result<BTreeMap<String, Vec<evidence::AccessLogLine>>, ProviderError>
where
    Read: FnMut() -> Reading,
    Reading: Future<Output = Result<BTreeMap<String, Vec<evidence::AccessLogLine>>, ProviderError>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let logs = read().await?;
        let missing = evidence::records_without_lines(records, &logs);
        if missing == 0 || tokio::time::Instant::now() + ACCESS_LOG_POLL > deadline {
            if missing > 0 {
                tracing::warn!(
                    "{missing} answered TCP request(s) still have no access-log line after {} s: they count as calls without the caller's identity",
                    wait.as_secs()
                );
            }
            return Ok(logs);
        }
        tokio::time::sleep(ACCESS_LOG_POLL).await;
    }
}

impl KubeconfigProvider {
    /// TCP records carry no caller identity of their own: it comes from the answering sidecars'
    /// access logs since `started`.
    pub(super) async fn attribute_tcp(
        &self,
        scenario: &Scenario,
        traffic: &Traffic,
        started: std::time::SystemTime,
        records: &mut [RequestRecord],
    ) -> Result<(), ProviderError> {
        if traffic.protocol != Protocol::Tcp {
            return Ok(());
        }
        let since = started
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let logs = await_access_log_lines(records, ACCESS_LOG_WAIT, || {
            self.inbound_logs(scenario, &traffic.to_service, since)
        })
        .await?;
        evidence::attribute_tcp_records(records, &logs);
        Ok(())
    }

    /// Inbound access-log lines of the target service's pods in every cluster since `since`
    /// (seconds since the epoch), by pod.
    async fn inbound_logs(
        &self,
        scenario: &Scenario,
        service: &str,
        since: u64,
    ) -> Result<BTreeMap<String, Vec<evidence::AccessLogLine>>, ProviderError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(since);
        let mut logs = BTreeMap::new();
        for cluster in scenario.clusters.iter().map(|cluster| cluster.name.value.clone()) {
            let pods: kube::Api<Pod> =
                kube::Api::namespaced(self.client(&cluster)?.clone(), service_namespace(service));
            for pod in self.pods_of(&cluster, service).await? {
                let params = LogParams {
                    container: Some(workloads::SIDECAR_CONTAINER.to_owned()),
                    since_seconds: Some(i64::try_from(now.saturating_sub(since) + 5).unwrap_or(i64::MAX)),
                    ..LogParams::default()
                };
                let text = tokio::time::timeout(SHORT_CALL, pods.logs(&pod, &params))
                    .await
                    .map_err(|_| {
                        unavailable(format!(
                            "cluster {cluster}: the log of {pod} did not arrive within {} s",
                            SHORT_CALL.as_secs()
                        ))
                    })?
                    .map_err(|error| {
                        ProviderError::failed(format!("reading the sidecar log of {pod} in cluster {cluster}"), error)
                    })?;
                logs.insert(pod, evidence::inbound_lines(&text));
            }
        }
        Ok(logs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(seq: u64, app_peer: &str) -> RequestRecord {
        super::super::evidence::tests::tcp_record(seq, "bar-0", app_peer)
    }

    fn line(app_peer: &str) -> String {
        format!(
            r#"{{"downstream":"172.18.255.1:40001","meshfed":"1","peer":"spiffe://cluster.local/ns/ns1/sa/foo","request_id":null,"start":"x","upstream_cluster":"inbound|9090||","upstream_local":"{app_peer}"}}"#
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_logs_are_read_again_until_the_last_connections_line_is_flushed() {
        let records = vec![answered(0, "127.0.0.6:51000"), answered(1, "127.0.0.6:51001")];
        // The second connection's line is flushed only by the third read.
        let mut reads = 0;
        let started = tokio::time::Instant::now();
        let logs = await_access_log_lines(&records, ACCESS_LOG_WAIT, || {
            reads += 1;
            let text = if reads < 3 {
                line("127.0.0.6:51000")
            } else {
                format!("{}\n{}", line("127.0.0.6:51000"), line("127.0.0.6:51001"))
            };
            async move { Ok(BTreeMap::from([("bar-0".to_owned(), evidence::inbound_lines(&text))])) }
        })
        .await
        .unwrap();
        assert_eq!(reads, 3);
        assert_eq!(started.elapsed(), 2 * ACCESS_LOG_POLL);
        assert_eq!(evidence::records_without_lines(&records, &logs), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_line_that_never_comes_stops_the_wait_at_its_bound() {
        let records = vec![answered(0, "127.0.0.6:51000")];
        let started = tokio::time::Instant::now();
        let logs = await_access_log_lines(&records, ACCESS_LOG_WAIT, || async {
            Ok(BTreeMap::from([("bar-0".to_owned(), Vec::new())]))
        })
        .await
        .unwrap();
        assert_eq!(evidence::records_without_lines(&records, &logs), 1);
        assert!(started.elapsed() <= ACCESS_LOG_WAIT, "{:?}", started.elapsed());
        assert!(
            started.elapsed() >= ACCESS_LOG_WAIT - ACCESS_LOG_POLL,
            "{:?}",
            started.elapsed()
        );
    }
}
