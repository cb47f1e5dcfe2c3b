//! Traffic on real clusters: meshfed's client run in the sending pod through `pods/exec`, to the
//! end ([`super::KubeconfigProvider`]'s `send_traffic`) or in the background across timed actions
//! ([`BackgroundTraffic`]). Both build the same command ([`client_command`]), bound it the same way
//! ([`client_deadline`]) and check its output the same way ([`records`]).
//!
//! The clock: a background client gets a wall-clock epoch a little ahead of now
//! ([`EPOCH_LEAD`]); it paces its requests from that epoch and its records' `started_us` count
//! from it, and `start_traffic` returns when the host's clock reaches it, which is where the
//! engine starts counting its actions' offsets. Both clocks agree when the pod's node and meshfed's
//! host agree on the time: on `kind` they are the same kernel clock; on `kubeconfig` any skew
//! between the cluster's nodes and this host (NTP) shifts the records against the actions by that
//! much.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::exec::{ExecError, ExecOutput};
use crate::progress::Progress;
use crate::provider::{ProviderError, REQUEST_TIMEOUT, Traffic};
use crate::record::RequestRecord;
use crate::scenario::Protocol;

/// How far ahead of the exec's start a background client's epoch lies: the exec's round trip
/// (API server, kubelet, container runtime) must fit in it for the records' clock and the
/// engine's to start together.
pub const EPOCH_LEAD: Duration = Duration::from_secs(2);

/// How often a background client still running is reported.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// The client's command line in the pod: `image_command workload client ...` aimed at `target`
/// (`cluster-ip:port`) with Host `host`, paced when the traffic has a rate, counting from `epoch`
/// when one is given.
pub fn client_command(
    image_command: &str,
    target: &str,
    host: &str,
    traffic: &Traffic,
    epoch: Option<SystemTime>,
) -> Vec<String> {
    let mut command = vec![
        image_command.to_owned(),
        "workload".to_owned(),
        "client".to_owned(),
        "--target".to_owned(),
        target.to_owned(),
        "--host".to_owned(),
        host.to_owned(),
        "--protocol".to_owned(),
        match traffic.protocol {
            Protocol::Http | Protocol::Http2 => "http",
            Protocol::Tcp => "tcp",
        }
        .to_owned(),
        "--requests".to_owned(),
        traffic.requests.to_string(),
        "--concurrency".to_owned(),
        traffic.concurrency.to_string(),
        "--connections".to_owned(),
        traffic.connections.name().to_owned(),
        "--timeout-ms".to_owned(),
        REQUEST_TIMEOUT.as_millis().to_string(),
    ];
    // A paced phase is paced in the pod too (the image runs this meshfed's client).
    if let Some(rate) = traffic.rate_per_second {
        command.extend(["--rate".to_owned(), rate.to_string()]);
    }
    if let Some(epoch) = epoch {
        let micros = epoch
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX));
        command.extend(["--epoch-unix-us".to_owned(), micros.to_string()]);
    }
    // Closing the exec stream does not signal a non-TTY command (kubernetes/kubernetes#89031): a
    // client meshfed stopped waiting for (deadline, failed run, Ctrl-C) ends itself by the same
    // bound, plus the epoch's lead.
    let stop_after = client_deadline(traffic) + EPOCH_LEAD;
    command.extend(["--stop-after-s".to_owned(), stop_after.as_secs().max(1).to_string()]);
    command
}

/// How long the client may run: every round of `concurrency` requests running into its timeout,
/// or the paced duration (`requests ÷ rate`) plus one timeout, whichever is longer, plus 30 s for
/// the exec itself.
pub fn client_deadline(traffic: &Traffic) -> Duration {
    let rounds = u32::try_from(traffic.requests.div_ceil(u64::from(traffic.concurrency.max(1)))).unwrap_or(u32::MAX);
    let all_time_out = REQUEST_TIMEOUT.saturating_mul(rounds);
    let paced = traffic.rate_per_second.map_or(Duration::ZERO, |rate| {
        Duration::from_millis(traffic.requests.saturating_mul(1000) / u64::from(rate.max(1))) + REQUEST_TIMEOUT
    });
    all_time_out.max(paced) + Duration::from_secs(30)
}

/// The client's records from its output: one JSON record a line, exactly one per request, and a
/// successful exit; anything else fails naming the pod, the count, the status and the stderr.
pub fn records(output: &ExecOutput, traffic: &Traffic) -> Result<Vec<RequestRecord>, ProviderError> {
    let mut records = Vec::new();
    for line in output.stdout.lines().filter(|line| !line.trim().is_empty()) {
        let record: RequestRecord = serde_json::from_str(line).map_err(|error| {
            ProviderError::failed(
                format!("reading the client's output in pod {}", traffic.from_pod),
                anyhow::anyhow!("{error}: {line}"),
            )
        })?;
        records.push(record);
    }
    if !output.succeeded || records.len() as u64 != traffic.requests {
        return Err(ProviderError::failed(
            format!("the client in pod {} ({})", traffic.from_pod, traffic.from_cluster),
            anyhow::anyhow!(
                "{} records of {}; {}; stderr: {}",
                records.len(),
                traffic.requests,
                output.status,
                output.stderr.trim()
            ),
        ));
    }
    Ok(records)
}

/// A task that is aborted when its handle is dropped: traffic left running when a run fails or is
/// interrupted stops with the provider that started it.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A client running in a pod in the background, on a tokio task that owns the exec stream.
/// Dropping it aborts the task, which closes the stream; the client in the pod is not signalled by
/// that, and ends by its own bounds: its request count, rate and per-request timeout, and at the
/// latest by `--stop-after-s` (see [`client_command`]).
pub struct BackgroundTraffic {
    task: AbortOnDrop<Result<ExecOutput, ExecError>>,
    /// Records the client has printed so far (the exec counts its output lines into it).
    records_so_far: Arc<AtomicU64>,
    traffic: Traffic,
    /// Wall-clock moment the client counts from (TCP evidence is read from the logs since then).
    pub epoch: SystemTime,
    began: tokio::time::Instant,
    last_report: tokio::time::Instant,
}

impl BackgroundTraffic {
    /// Runs `run` (the started exec, read to its end under its deadline, counting its output
    /// lines into `records_so_far`) on its own task.
    pub fn spawn(
        run: impl Future<Output = Result<ExecOutput, ExecError>> + Send + 'static,
        records_so_far: Arc<AtomicU64>,
        traffic: &Traffic,
        epoch: SystemTime,
    ) -> BackgroundTraffic {
        let now = tokio::time::Instant::now();
        BackgroundTraffic {
            task: AbortOnDrop(tokio::spawn(run)),
            records_so_far,
            traffic: traffic.clone(),
            epoch,
            began: now,
            last_report: now,
        }
    }

    /// The traffic this client sends.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// Waits until the client ended (its checked records) or `until` passed (`None`), reporting
    /// every [`PROGRESS_INTERVAL`] how many requests it has done so far.
    pub async fn await_records(
        &mut self,
        until: Instant,
        progress: &mut dyn Progress,
    ) -> Result<Option<Vec<RequestRecord>>, ProviderError> {
        let stop = tokio::time::sleep_until(until.into());
        tokio::pin!(stop);
        let mut reports = tokio::time::interval_at(self.last_report + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
        loop {
            tokio::select! {
                // Polling a JoinHandle by reference is cancel-safe: the output stays for the next call.
                ended = &mut self.task.0 => {
                    let output = ended
                        .map_err(|error| ProviderError::failed(
                            format!("the traffic task of pod {} ({})", self.traffic.from_pod, self.traffic.from_cluster),
                            error,
                        ))?
                        .map_err(|error| ProviderError::failed(
                            format!("sending traffic from pod {} ({})", self.traffic.from_pod, self.traffic.from_cluster),
                            error,
                        ))?;
                    return records(&output, &self.traffic).map(Some);
                }
                _ = reports.tick() => {
                    self.last_report = tokio::time::Instant::now();
                    progress.step(&format!(
                        "  {} of {} requests done from pod {} ({}) after {} s",
                        self.records_so_far.load(Ordering::Relaxed),
                        self.traffic.requests,
                        self.traffic.from_pod,
                        self.traffic.from_cluster,
                        self.began.elapsed().as_secs()
                    ));
                }
                () = &mut stop => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::ConnectionPolicy;

    fn traffic(requests: u64) -> Traffic {
        Traffic {
            from_cluster: "cluster1".into(),
            from_service: "foo.ns1".into(),
            from_pod: "foo-7d9f-abcde".into(),
            to_service: "bar.ns2".into(),
            port: 9080,
            protocol: Protocol::Http,
            requests,
            concurrency: 2,
            connections: ConnectionPolicy::Pooled,
            rate_per_second: Some(100),
        }
    }

    fn record_line(seq: u64) -> String {
        serde_json::to_string(&RequestRecord {
            seq,
            target: "10.96.0.7:9080".into(),
            status: Some(200),
            error: None,
            pod: Some("bar-0".into()),
            cluster: Some("cluster2".into()),
            peer_identity: None,
            started_us: seq * 10_000,
            latency_us: 900,
            connection: 1,
            server_connection: None,
        })
        .unwrap()
    }

    fn output(lines: u64, succeeded: bool) -> ExecOutput {
        ExecOutput {
            stdout: (0..lines).map(|seq| record_line(seq) + "\n").collect(),
            stderr: if succeeded {
                String::new()
            } else {
                "connect: no route".into()
            },
            status: if succeeded {
                "Success".into()
            } else {
                "command terminated with non-zero exit code: 1".into()
            },
            succeeded,
        }
    }

    /// Tells the test, by a message, that the future holding it was dropped.
    struct DropSignal(Option<tokio::sync::oneshot::Sender<()>>);

    impl Drop for DropSignal {
        fn drop(&mut self) {
            if let Some(sender) = self.0.take() {
                let _ = sender.send(());
            }
        }
    }

    #[test]
    fn the_command_carries_the_rate_and_the_epoch_in_microseconds() {
        let epoch = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let command = client_command(
            "/meshfed",
            "10.96.0.7:9080",
            "bar.ns2.svc.cluster.local",
            &traffic(10),
            Some(epoch),
        );
        let joined = command.join(" ");
        assert!(
            joined.starts_with("/meshfed workload client --target 10.96.0.7:9080 --host bar.ns2.svc.cluster.local")
        );
        assert!(
            joined.contains("--rate 100 --epoch-unix-us 1700000000123456"),
            "{joined}"
        );
        // The client ends itself by meshfed's own bound for it (plus the epoch's lead).
        let stop_after = (client_deadline(&traffic(10)) + EPOCH_LEAD).as_secs().to_string();
        assert!(joined.ends_with(&format!("--stop-after-s {stop_after}")), "{joined}");
        let unpaced = client_command("/meshfed", "10.96.0.7:9080", "bar", &traffic(10), None).join(" ");
        assert!(!unpaced.contains("--epoch-unix-us"), "{unpaced}");
    }

    #[test]
    fn a_slow_paced_client_gets_a_deadline_longer_than_its_paced_duration() {
        let mut slow = traffic(100);
        slow.concurrency = 100;
        slow.rate_per_second = Some(1);
        // 100 requests at 1/s take 100 s although they fit in one round of timeouts (5 s).
        assert!(client_deadline(&slow) >= Duration::from_secs(100) + REQUEST_TIMEOUT);
        slow.rate_per_second = None;
        assert_eq!(client_deadline(&slow), REQUEST_TIMEOUT + Duration::from_secs(30));
    }

    #[test]
    fn records_need_one_per_request_and_a_successful_exit() {
        assert_eq!(records(&output(3, true), &traffic(3)).unwrap().len(), 3);
        let short = records(&output(2, true), &traffic(3)).unwrap_err();
        assert!(
            format!("{short:#}").contains("the client in pod foo-7d9f-abcde (cluster1)")
                && anyhow::Error::from(short)
                    .chain()
                    .any(|cause| cause.to_string().starts_with("2 records of 3; Success")),
        );
        let failed = anyhow::Error::from(records(&output(3, false), &traffic(3)).unwrap_err());
        let text = format!("{failed:#}");
        assert!(
            text.contains("non-zero exit code: 1") && text.contains("stderr: connect: no route"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn background_traffic_is_none_while_the_client_runs_and_its_records_once_it_ended() {
        let (finish, finished) = tokio::sync::oneshot::channel::<ExecOutput>();
        let mut running = BackgroundTraffic::spawn(
            async move { Ok(finished.await.expect("the test sends the output")) },
            Arc::default(),
            &traffic(4),
            SystemTime::now(),
        );
        let mut lines = Vec::new();
        let polled = running
            .await_records(Instant::now() + Duration::from_millis(50), &mut |line: &str| {
                lines.push(line.to_owned())
            })
            .await
            .unwrap();
        assert!(polled.is_none(), "the client still runs");
        finish.send(output(4, true)).unwrap();
        let records = running
            .await_records(Instant::now() + Duration::from_secs(10), &mut |_: &str| {})
            .await
            .unwrap()
            .expect("the client ended before the deadline");
        assert_eq!(
            records.iter().map(|record| record.seq).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn background_traffic_reports_how_many_requests_are_done_while_it_runs() {
        let records_so_far = Arc::new(AtomicU64::new(0));
        let counted = records_so_far.clone();
        let mut running = BackgroundTraffic::spawn(
            async move {
                // Three records printed, then the client keeps going.
                counted.fetch_add(3, Ordering::Relaxed);
                std::future::pending::<Result<ExecOutput, ExecError>>().await
            },
            records_so_far,
            &traffic(4),
            SystemTime::now(),
        );
        let mut lines = Vec::new();
        // Paused time: the 5 s progress tick and the 6 s bound pass without waiting.
        let polled = running
            .await_records(Instant::now() + Duration::from_secs(6), &mut |line: &str| {
                lines.push(line.to_owned())
            })
            .await
            .unwrap();
        assert!(polled.is_none(), "the client still runs");
        assert_eq!(
            lines,
            ["  3 of 4 requests done from pod foo-7d9f-abcde (cluster1) after 5 s"],
            "one progress line at the 5 s tick"
        );
    }

    #[tokio::test]
    async fn background_traffic_that_ends_short_or_fails_is_an_error_naming_the_pod() {
        let mut short = BackgroundTraffic::spawn(
            async { Ok(output(3, true)) },
            Arc::default(),
            &traffic(4),
            SystemTime::now(),
        );
        let error = short
            .await_records(Instant::now() + Duration::from_secs(10), &mut |_: &str| {})
            .await
            .unwrap_err();
        assert!(
            format!("{:#}", anyhow::Error::from(error)).contains("3 records of 4"),
            "the count is checked"
        );
        let mut failing = BackgroundTraffic::spawn(
            async {
                Err(super::super::exec::deadline_exceeded(
                    "/meshfed".into(),
                    "ns1",
                    "foo-7d9f-abcde",
                    "app",
                    Duration::from_secs(65),
                ))
            },
            Arc::default(),
            &traffic(4),
            SystemTime::now(),
        );
        let error = anyhow::Error::from(
            failing
                .await_records(Instant::now() + Duration::from_secs(10), &mut |_: &str| {})
                .await
                .unwrap_err(),
        );
        let text = format!("{error:#}");
        assert!(
            text.starts_with("sending traffic from pod foo-7d9f-abcde (cluster1)")
                && text.contains("/meshfed in app of pod ns1/foo-7d9f-abcde did not finish within 65 s"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn dropping_background_traffic_drops_the_exec_that_never_ends() {
        let (dropped_tx, dropped) = tokio::sync::oneshot::channel();
        let signal = DropSignal(Some(dropped_tx));
        let mut running = BackgroundTraffic::spawn(
            async move {
                let _signal = signal;
                std::future::pending::<Result<ExecOutput, ExecError>>().await
            },
            Arc::default(),
            &traffic(4),
            SystemTime::now(),
        );
        assert!(
            running
                .await_records(Instant::now() + Duration::from_millis(20), &mut |_: &str| {})
                .await
                .unwrap()
                .is_none()
        );
        drop(running);
        tokio::time::timeout(Duration::from_secs(10), dropped)
            .await
            .expect("the exec future was dropped within 10 s of the traffic")
            .expect("the signal is sent, not lost");
    }

    fn provider() -> super::super::KubeconfigProvider {
        let mut provider =
            super::super::KubeconfigProvider::new(super::super::KubeconfigOptions::new(super::super::WorkloadImage {
                image: "meshfed:test".into(),
                command: "/meshfed".into(),
            }));
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios/seed.yaml")).unwrap();
        provider.scenario = Some(crate::scenario::parse(std::path::Path::new("seed.yaml"), &text).unwrap());
        provider
    }

    #[tokio::test]
    async fn the_provider_awaits_its_background_traffic_once_and_refuses_a_second_start_meanwhile() {
        use crate::provider::Provider as _;
        let mut provider = provider();
        let (finish, finished) = tokio::sync::oneshot::channel::<ExecOutput>();
        provider.background = Some(BackgroundTraffic::spawn(
            async move { Ok(finished.await.expect("the test sends the output")) },
            Arc::default(),
            &traffic(2),
            SystemTime::now(),
        ));
        let second = provider
            .start_traffic(&traffic(2), &mut |_: &str| {})
            .await
            .unwrap_err();
        assert!(second.to_string().contains("already running"), "{second}");
        let running = provider
            .await_traffic(Instant::now() + Duration::from_millis(20), &mut |_: &str| {})
            .await
            .unwrap();
        assert!(
            running.is_none() && provider.background.is_some(),
            "still running, still held"
        );
        finish.send(output(2, true)).unwrap();
        let records = provider
            .await_traffic(Instant::now() + Duration::from_secs(10), &mut |_: &str| {})
            .await
            .unwrap()
            .expect("ended before the deadline");
        assert_eq!(records.len(), 2);
        let again = provider
            .await_traffic(Instant::now() + Duration::from_secs(1), &mut |_: &str| {})
            .await
            .unwrap_err();
        assert!(again.to_string().contains("no traffic is running"), "{again}");
    }

    #[tokio::test]
    async fn teardown_aborts_background_traffic_still_running() {
        use crate::provider::Provider as _;
        let mut provider = provider();
        let (dropped_tx, dropped) = tokio::sync::oneshot::channel();
        let signal = DropSignal(Some(dropped_tx));
        provider.background = Some(BackgroundTraffic::spawn(
            async move {
                let _signal = signal;
                std::future::pending::<Result<ExecOutput, ExecError>>().await
            },
            Arc::default(),
            &traffic(2),
            SystemTime::now(),
        ));
        provider.teardown(&mut |_: &str| {}).await.unwrap();
        assert!(provider.background.is_none());
        tokio::time::timeout(Duration::from_secs(10), dropped)
            .await
            .expect("teardown dropped the exec future within 10 s")
            .expect("the signal is sent, not lost");
    }
}
