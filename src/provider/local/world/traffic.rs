//! Traffic in the `local` world: meshfed's client workload in the sending pod, its per-request
//! records read as they come. While traffic runs it reports progress every few seconds (also when
//! no request finishes, e.g. when each runs into its timeout) and checks that the world's apps and
//! Envoys still run, so a death ends the phase at once rather than after every request failed.
//! Traffic can run in the background ([`World::start_traffic`]) while the world is changed, and
//! be collected in steps ([`World::await_traffic`]); `send_traffic` is both, to the end.

use std::net::SocketAddrV4;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow};

use super::{LIVENESS_INTERVAL, PROGRESS_INTERVAL, World, failed, read_in_background};
use crate::progress::Progress;
use crate::provider::local::supervisor::{ChildId, ChildOutput};
use crate::provider::{ProviderError, REQUEST_TIMEOUT, Traffic, take_running_traffic};
use crate::record::RequestRecord;
use crate::scenario::Protocol;

/// The client of traffic started in the background, and what has been read from it so far.
pub(super) struct RunningTraffic {
    id: ChildId,
    name: String,
    requests: u64,
    /// Each line of the client's output as read, parsed, by [`read_records_in_background`]; closed
    /// at the output's end.
    lines: tokio::sync::mpsc::UnboundedReceiver<Result<RequestRecord, anyhow::Error>>,
    stderr: std::thread::JoinHandle<String>,
    records: Vec<RequestRecord>,
    last_report: Instant,
}

impl World {
    pub(super) async fn send_traffic(
        &mut self,
        meshfed: &Path,
        traffic: &Traffic,
        progress: &mut dyn Progress,
    ) -> Result<Vec<RequestRecord>, ProviderError> {
        self.start_traffic(meshfed, traffic)?;
        loop {
            // Each step checks liveness; the phase deadline bounds the whole.
            if let Some(records) = self
                .await_traffic(Instant::now() + Duration::from_secs(3600), progress)
                .await?
            {
                return Ok(records);
            }
        }
    }

    /// Starts the client in the sending pod, paced when the traffic has a rate; records count
    /// from the moment this returns.
    pub(super) fn start_traffic(&mut self, meshfed: &Path, traffic: &Traffic) -> Result<(), ProviderError> {
        if let Some(running) = &self.traffic {
            return Err(ProviderError::Unsupported(format!(
                "traffic is already running (the {}); await it before starting more",
                running.name
            )));
        }
        let cluster = self.cluster(&traffic.from_cluster)?;
        let sender = cluster
            .pods_of(&traffic.from_service)
            .find(|pod| pod.name == traffic.from_pod)
            .ok_or_else(|| {
                ProviderError::Unsupported(format!(
                    "{} has no pod {} in {}",
                    traffic.from_service, traffic.from_pod, cluster.name
                ))
            })?
            .name
            .clone();
        let cluster_ip = self.resolved_service_address(&traffic.from_cluster, &traffic.to_service)?;
        let host = self
            .scenario
            .service(&traffic.to_service)
            .map(|service| service.host())
            .unwrap_or_else(|| traffic.to_service.clone());
        let netns = self.netns(&traffic.from_cluster, &sender)?;
        let mut command = Command::new(meshfed);
        command.args([
            "workload",
            "client",
            "--target",
            &SocketAddrV4::new(cluster_ip, traffic.port).to_string(),
            "--host",
            &host,
            "--protocol",
            match traffic.protocol {
                Protocol::Http | Protocol::Http2 => "http",
                Protocol::Tcp => "tcp",
            },
            "--requests",
            &traffic.requests.to_string(),
            "--concurrency",
            &traffic.concurrency.to_string(),
            "--connections",
            traffic.connections.name(),
            "--timeout-ms",
            &REQUEST_TIMEOUT.as_millis().to_string(),
        ]);
        if let Some(rate) = traffic.rate_per_second {
            command.args(["--rate", &rate.to_string()]);
        }
        // The client counts from the moment this returns (within the spawn's duration), so the
        // engine's action offsets and the records' start times share one clock.
        let epoch_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_micros()).unwrap_or(u64::MAX));
        command.args(["--epoch-unix-us", &epoch_us.to_string()]);
        let name = format!("client in pod {sender} of {}", traffic.from_cluster);
        let id = self
            .supervisor
            .spawn(&name, command, Some(&netns), ChildOutput::Piped)
            .map_err(|error| failed(format!("starting the {name}"))(error.into()))?;
        self.supervisor.set_transient(id);
        let stdout = self
            .supervisor
            .take_stdout(id)
            .ok_or_else(|| ProviderError::Unavailable(format!("no output from the {name}")))?;
        let stderr = read_in_background(self.supervisor.take_stderr(id));
        self.traffic = Some(RunningTraffic {
            id,
            name,
            requests: traffic.requests,
            lines: read_records_in_background(stdout),
            stderr,
            records: Vec::new(),
            last_report: Instant::now(),
        });
        Ok(())
    }

    /// Reads the running client's records until its output ends (then waits for it to exit and
    /// returns every record) or `until` passes (`None`). Without blocking the runtime, so that
    /// Ctrl-C and the phase deadline interrupt at once; reports progress every
    /// [`PROGRESS_INTERVAL`] and fails as soon as an app or Envoy of the world is not running.
    pub(super) async fn await_traffic(
        &mut self,
        until: Instant,
        progress: &mut dyn Progress,
    ) -> Result<Option<Vec<RequestRecord>>, ProviderError> {
        let mut running = take_running_traffic(&mut self.traffic)?;
        match self.read_records(&mut running, until, progress).await {
            Ok(false) => {
                self.traffic = Some(running);
                Ok(None)
            }
            Ok(true) => self.finish_traffic(running).await.map(Some),
            Err(error) => {
                // The client is transient: teardown or the next phase reaps it.
                Err(error)
            }
        }
    }

    /// The client's output ended: its exit, and every record it promised.
    async fn finish_traffic(&mut self, running: RunningTraffic) -> Result<Vec<RequestRecord>, ProviderError> {
        let RunningTraffic {
            id,
            name,
            requests,
            stderr,
            records,
            ..
        } = running;
        let stderr_text = stderr.join().unwrap_or_default();
        if records.is_empty() && !stderr_text.is_empty() {
            return Err(ProviderError::failed(
                format!("the {name} sent nothing"),
                anyhow!("{stderr_text}"),
            ));
        }
        let exit = self.await_client_exit(id, &name).await?;
        if !exit.success {
            return Err(ProviderError::failed(format!("the {name} failed"), anyhow!("{exit}")));
        }
        if records.len() as u64 != requests {
            return Err(ProviderError::failed(
                format!("the {name} reported {} records for {requests} requests", records.len()),
                anyhow!("see its output"),
            ));
        }
        Ok(records)
    }

    /// Waits, without blocking the runtime, for the client to exit once its output ended.
    async fn await_client_exit(
        &mut self,
        id: ChildId,
        name: &str,
    ) -> Result<crate::provider::local::supervisor::ChildExit, ProviderError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT * 2;
        loop {
            if let Some(exit) = self
                .supervisor
                .try_wait(id)
                .map_err(|error| failed(format!("waiting for the {name}"))(error.into()))?
            {
                return Ok(exit);
            }
            if Instant::now() >= deadline {
                return Err(ProviderError::failed(
                    format!("the {name} did not exit"),
                    anyhow!("its output ended {} s ago", (REQUEST_TIMEOUT * 2).as_secs()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Reads records into `running` as they come until the output ends (`true`) or `until`
    /// passes (`false`), checking liveness (and ending terminated pods whose drain is over) every
    /// [`LIVENESS_INTERVAL`].
    async fn read_records(
        &mut self,
        running: &mut RunningTraffic,
        until: Instant,
        progress: &mut dyn Progress,
    ) -> Result<bool, ProviderError> {
        let name = running.name.clone();
        let mut checks = tokio::time::interval(LIVENESS_INTERVAL);
        let stop = tokio::time::sleep_until(until.into());
        tokio::pin!(stop);
        loop {
            tokio::select! {
                // Cancel-safe: a record is either returned or stays queued for the next call.
                record = running.lines.recv() => {
                    let Some(record) = record else {
                        return Ok(true);
                    };
                    running.records.push(record.map_err(failed(format!("reading the {name}")))?);
                }
                _ = checks.tick() => {
                    // Pods whose termination drain is over end now, while traffic runs.
                    self.end_drained()?;
                    self.check_alive()?;
                    if running.last_report.elapsed() >= PROGRESS_INTERVAL {
                        progress.step(&format!("  {} of {} requests done", running.records.len(), running.requests));
                        running.last_report = Instant::now();
                    }
                }
                () = &mut stop => return Ok(false),
            }
        }
    }
}

/// Reads the client's output to its end on a thread of its own, parsing each line into a record.
/// Not on the runtime: while meshfed is busy elsewhere (a change that takes seconds, such as 50
/// pods created by a scale-up) the client's records still leave its pipe, so the client never
/// blocks on a full pipe (64 KiB, a few hundred records) and its requests keep their pace.
fn read_records_in_background(
    stdout: std::process::ChildStdout,
) -> tokio::sync::mpsc::UnboundedReceiver<Result<RequestRecord, anyhow::Error>> {
    let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let record = line.context("reading the client's output").and_then(|line| {
                serde_json::from_str::<RequestRecord>(&line).with_context(|| format!("not a request record: {line}"))
            });
            let failed = record.is_err();
            if sender.send(record).is_err() || failed {
                return;
            }
        }
    });
    receiver
}
