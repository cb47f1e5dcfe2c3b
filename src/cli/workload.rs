//! `meshfed workload` (hidden): meshfed's echo and client apps, as the providers start them in a pod.

use std::io::Write as _;

use super::CliError;
use super::args::{WorkloadCommand, WorkloadConnections, WorkloadProtocol};

pub(super) fn workload_command(workload: WorkloadCommand) -> Result<(), CliError> {
    use crate::workload::{client, echo};

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| CliError::Infrastructure(error.into()))?;
    match workload {
        WorkloadCommand::Echo {
            pod,
            cluster,
            bind,
            http_ports,
            tcp_ports,
            delay_file,
        } => runtime
            .block_on(echo::echo(echo::EchoConfig {
                pod,
                cluster,
                bind,
                http_ports,
                tcp_ports,
                delay_file,
            }))
            .map_err(|error| CliError::Infrastructure(error.into())),
        WorkloadCommand::Client {
            target,
            host,
            protocol,
            requests,
            concurrency,
            connections,
            timeout_ms,
            threads,
            rate,
            epoch_unix_us,
            stop_after_s,
        } => {
            if let Some(seconds) = stop_after_s {
                // The kernel delivers it even while every thread is blocked.
                nix::unistd::alarm::set(seconds);
            }
            let config = client::ClientConfig {
                target,
                host,
                protocol: match protocol {
                    WorkloadProtocol::Http => client::Protocol::Http,
                    WorkloadProtocol::Tcp => client::Protocol::Tcp,
                },
                requests,
                concurrency,
                connection_policy: match connections {
                    WorkloadConnections::Pooled => client::ConnectionPolicy::Pooled,
                    WorkloadConnections::NewConnectionPerRequest => client::ConnectionPolicy::NewConnectionPerRequest,
                },
                request_timeout: std::time::Duration::from_millis(timeout_ms),
                threads,
                rate_per_second: rate,
                epoch: epoch_unix_us.map(|micros| std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros)),
            };
            let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
            let mut write_error = None;
            runtime.block_on(client::client(config, |record| {
                if write_error.is_none() {
                    let line = serde_json::to_string(&record).map(|json| json + "\n");
                    if let Err(error) = line
                        .map_err(std::io::Error::from)
                        .and_then(|line| stdout.write_all(line.as_bytes()))
                    {
                        write_error = Some(error);
                    }
                }
            }));
            match write_error {
                Some(error) => Err(CliError::Infrastructure(error.into())),
                None => stdout.flush().map_err(|error| CliError::Infrastructure(error.into())),
            }
        }
    }
}
