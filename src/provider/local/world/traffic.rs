//! Traffic in the `local` world: meshfed's client workload in the sending pod, its per-request
//! records read as they come. While a phase runs it reports progress every few seconds (also when
//! no request finishes, e.g. when each runs into its timeout) and checks that the world's apps and
//! Envoys still run, so a death ends the phase at once rather than after every request failed.

use std::net::SocketAddrV4;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};

use super::{LIVENESS_INTERVAL, PROGRESS_INTERVAL, World, failed, read_in_background};
use crate::progress::Progress;
use crate::provider::local::supervisor::{ChildId, ChildOutput};
use crate::provider::{ProviderError, REQUEST_TIMEOUT, Traffic};
use crate::record::RequestRecord;
use crate::scenario::{ConnectionPolicy, Protocol};

impl World {
    pub(super) async fn send_traffic(
        &mut self,
        meshfed: &Path,
        traffic: &Traffic,
        progress: &mut dyn Progress,
    ) -> Result<Vec<RequestRecord>, ProviderError> {
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
        let cluster_ip = *cluster
            .service_ips
            .get(&traffic.to_service)
            .ok_or_else(|| ProviderError::Unsupported(format!("unknown service {}", traffic.to_service)))?;
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
            match traffic.connections {
                ConnectionPolicy::Pooled => "pooled",
                ConnectionPolicy::NewConnectionPerRequest => "new-connection-per-request",
            },
            "--timeout-ms",
            &REQUEST_TIMEOUT.as_millis().to_string(),
        ]);
        let name = format!("client in pod {sender} of {}", traffic.from_cluster);
        let id = self
            .supervisor
            .spawn(&name, command, Some(&netns), ChildOutput::Piped)
            .map_err(|error| failed(format!("starting the {name}"))(error.into()))?;
        self.supervisor.set_transient(id);
        let records = self.read_records(id, &name, traffic.requests, progress).await?;
        let exit = self.await_client_exit(id, &name).await?;
        if !exit.success {
            return Err(ProviderError::failed(format!("the {name} failed"), anyhow!("{exit}")));
        }
        if records.len() as u64 != traffic.requests {
            return Err(ProviderError::failed(
                format!(
                    "the {name} reported {} records for {} requests",
                    records.len(),
                    traffic.requests
                ),
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

    /// Reads the client's records as they come, without blocking the runtime, so that Ctrl-C
    /// and the phase deadline interrupt a long phase at once; reports progress every
    /// [`PROGRESS_INTERVAL`] and fails as soon as an app or Envoy of the world is not running.
    pub(super) async fn read_records(
        &mut self,
        id: ChildId,
        name: &str,
        expected: u64,
        progress: &mut dyn Progress,
    ) -> Result<Vec<RequestRecord>, ProviderError> {
        use tokio::io::AsyncBufReadExt as _;

        let stdout = self
            .supervisor
            .take_stdout(id)
            .ok_or_else(|| ProviderError::Unavailable(format!("no output from the {name}")))?;
        let stdout = tokio::net::unix::pipe::Receiver::from_owned_fd(std::os::fd::OwnedFd::from(stdout))
            .context("reading the client's output")
            .map_err(failed(format!("reading the {name}")))?;
        let stderr_reader = read_in_background(self.supervisor.take_stderr(id));
        let mut records = Vec::new();
        let mut last_report = Instant::now();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let mut checks = tokio::time::interval(LIVENESS_INTERVAL);
        loop {
            tokio::select! {
                // Cancel-safe: a line is either returned or stays buffered for the next call.
                line = lines.next_line() => {
                    let Some(line) = line
                        .context("reading the client's output")
                        .map_err(failed(format!("reading the {name}")))?
                    else {
                        break;
                    };
                    let record: RequestRecord = serde_json::from_str(&line)
                        .with_context(|| format!("not a request record: {line}"))
                        .map_err(failed(format!("reading the {name}")))?;
                    records.push(record);
                }
                _ = checks.tick() => {
                    self.check_alive()?;
                    if last_report.elapsed() >= PROGRESS_INTERVAL {
                        progress.step(&format!("  {} of {expected} requests done", records.len()));
                        last_report = Instant::now();
                    }
                }
            }
        }
        let stderr_text = stderr_reader.join().unwrap_or_default();
        if records.is_empty() && !stderr_text.is_empty() {
            return Err(ProviderError::failed(
                format!("the {name} sent nothing"),
                anyhow!("{stderr_text}"),
            ));
        }
        Ok(records)
    }
}
