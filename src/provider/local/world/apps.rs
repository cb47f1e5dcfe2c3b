//! The apps of the `local` world: meshfed's echo workload in every application pod, started and
//! awaited until each listens on its ports.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::{APP_READY_TIMEOUT, LocalOptions, World, failed, pod_dir};
use crate::provider::ProviderError;
use crate::provider::local::network;
use crate::provider::local::supervisor::ChildOutput;
use crate::provider::local::topology::PodTopology;
use crate::scenario::Protocol;

impl World {
    /// Starts meshfed's echo app in every application pod.
    pub(super) fn start_apps(&mut self, options: &LocalOptions) -> Result<(), ProviderError> {
        let clusters = self.topology.clusters.clone();
        for cluster in &clusters {
            for pod in &cluster.pods {
                self.start_app(options, &cluster.name, pod)?;
            }
        }
        Ok(())
    }

    /// Starts meshfed's echo app in one pod; its replies wait as long as the pod's delay file
    /// ([`delay_file`]) says.
    pub(super) fn start_app(
        &mut self,
        options: &LocalOptions,
        cluster: &str,
        pod: &PodTopology,
    ) -> Result<(), ProviderError> {
        let service = self
            .scenario
            .service(&pod.service)
            .ok_or_else(|| ProviderError::Unsupported(format!("unknown service {}", pod.service)))?;
        let mut command = Command::new(&options.meshfed);
        let dir = pod_dir(&options.run_dir, cluster, &pod.name);
        command.args(["workload", "echo", "--pod", &pod.name, "--cluster", cluster]);
        command.arg("--delay-file").arg(delay_file(&dir));
        for port in &service.ports {
            let flag = match port.protocol {
                Protocol::Http | Protocol::Http2 => "--http",
                Protocol::Tcp => "--tcp",
            };
            command.args([flag, &port.number.value.to_string()]);
        }
        let netns = self.netns(cluster, &pod.name)?;
        self.supervisor
            .spawn(
                &app_name(cluster, &pod.name),
                command,
                Some(&netns),
                ChildOutput::LogDir(dir),
            )
            .map_err(|error| failed(format!("starting the app of pod {}", pod.name))(error.into()))?;
        Ok(())
    }

    /// Waits until every app listens on each of its ports (inside its pod).
    pub(super) fn await_apps(&mut self) -> Result<(), ProviderError> {
        let deadline = Instant::now() + APP_READY_TIMEOUT;
        let clusters = self.topology.clusters.clone();
        for cluster in &clusters {
            for pod in &cluster.pods {
                self.await_app(&cluster.name, pod, deadline)?;
            }
        }
        Ok(())
    }

    /// Waits until `pod`'s app listens on each of its ports, until `deadline`.
    pub(super) fn await_app(
        &mut self,
        cluster: &str,
        pod: &PodTopology,
        deadline: Instant,
    ) -> Result<(), ProviderError> {
        let netns = self.netns(cluster, &pod.name)?;
        let ports: Vec<u16> = self
            .scenario
            .service(&pod.service)
            .map(|service| service.ports.iter().map(|port| port.number.value).collect())
            .unwrap_or_default();
        for port in ports {
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            if let Err(error) = network::await_tcp_connect(&netns, address, deadline) {
                self.supervisor
                    .check_running()
                    .map_err(|exit| failed("starting apps")(exit.into()))?;
                return Err(failed(format!(
                    "the app of pod {} in {cluster} never listened",
                    pod.name
                ))(error.into()));
            }
        }
        Ok(())
    }
}

/// The supervisor's name for the app of `pod` in `cluster`.
pub(super) fn app_name(cluster: &str, pod: &str) -> String {
    format!("app of pod {pod} in {cluster}")
}

/// The file in a pod's directory that holds its app's reply delay in milliseconds.
pub(super) fn delay_file(pod_dir: &Path) -> PathBuf {
    pod_dir.join("delay-ms")
}
