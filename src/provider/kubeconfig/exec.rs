//! Running a command in a pod's container through the `pods/exec` subresource, with a deadline.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::AttachParams;
use tokio::io::AsyncReadExt as _;

/// What a command in a pod printed and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// `Success`, or the failure the kubelet reported (`command terminated with non-zero exit code: …`).
    pub status: String,
    /// True when the status is `Success`.
    pub succeeded: bool,
}

/// Why a command could not be run in a pod.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The exec request failed.
    #[error("cannot exec in {container} of pod {namespace}/{pod}: {source}")]
    Start {
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
        /// Container.
        container: String,
        /// kube-rs's error (boxed: it is large).
        #[source]
        source: Box<kube::Error>,
    },
    /// It did not end in time.
    #[error("{command} in {container} of pod {namespace}/{pod} did not finish within {} s", .deadline.as_secs())]
    Deadline {
        /// The command's first word.
        command: String,
        /// Namespace.
        namespace: String,
        /// Pod.
        pod: String,
        /// Container.
        container: String,
        /// The deadline.
        deadline: Duration,
    },
}

/// A command started in a pod, whose output has not been read yet.
pub struct StartedExec {
    process: kube::api::AttachedProcess,
}

/// Starts `command` in `container` of `namespace/pod` and returns once the API server has opened
/// the exec stream (the kubelet has started the command); the error names the pod and container.
pub async fn start(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    container: &str,
    command: Vec<String>,
) -> Result<StartedExec, ExecError> {
    let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), namespace);
    let params = AttachParams::default()
        .container(container)
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let process = api
        .exec(pod, command, &params)
        .await
        .map_err(|source| ExecError::Start {
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            container: container.to_owned(),
            source: Box::new(source),
        })?;
    Ok(StartedExec { process })
}

impl StartedExec {
    /// Reads the command's output to its end and its status. No deadline of its own: the caller
    /// bounds it. Dropping this future closes the exec stream; that does not signal the command
    /// (a non-TTY exec gets no SIGHUP, kubernetes/kubernetes#89031), so a command must be bounded
    /// by its own arguments too.
    ///
    /// `stdout_lines` counts the lines of standard output as they arrive (the client prints one
    /// record a line), for progress while the command runs.
    pub async fn finish(self, stdout_lines: &AtomicU64) -> ExecOutput {
        let mut process = self.process;
        let mut stdout = process.stdout();
        let mut stderr = process.stderr();
        let status = process.take_status();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let read_out = async {
            if let Some(reader) = stdout.as_mut() {
                let mut chunk = [0u8; 16 * 1024];
                while let Ok(read @ 1..) = reader.read(&mut chunk).await {
                    let newlines = chunk[..read].iter().filter(|byte| **byte == b'\n').count();
                    stdout_lines.fetch_add(newlines as u64, Ordering::Relaxed);
                    out.extend_from_slice(&chunk[..read]);
                }
            }
        };
        let read_err = async {
            if let Some(reader) = stderr.as_mut() {
                let _ = reader.read_to_end(&mut err).await;
            }
        };
        tokio::join!(read_out, read_err);
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        let succeeded = status
            .as_ref()
            .is_some_and(|status| status.status.as_deref() == Some("Success"));
        let status = match status {
            Some(_) if succeeded => "Success".to_owned(),
            Some(status) => status.message.unwrap_or_else(|| format!("{:?}", status.reason)),
            None => "no status from the kubelet".to_owned(),
        };
        let _ = process.join().await;
        ExecOutput {
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
            status,
            succeeded,
        }
    }
}

/// Runs `command` in `container` of `namespace/pod` to its end; when `deadline` passes first the
/// exec stream is closed and the error names the command, pod and deadline. Closing the stream
/// does not end the command in the pod (see [`StartedExec::finish`]).
pub async fn exec(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    container: &str,
    command: Vec<String>,
    deadline: Duration,
) -> Result<ExecOutput, ExecError> {
    let first_word = command.first().cloned().unwrap_or_default();
    let run = async {
        let started = start(client, namespace, pod, container, command).await?;
        Ok(started.finish(&AtomicU64::new(0)).await)
    };
    tokio::time::timeout(deadline, run)
        .await
        .unwrap_or_else(|_| Err(deadline_exceeded(first_word, namespace, pod, container, deadline)))
}

/// The error of a command in a pod that did not end within `deadline`.
pub fn deadline_exceeded(
    command: String,
    namespace: &str,
    pod: &str,
    container: &str,
    deadline: Duration,
) -> ExecError {
    ExecError::Deadline {
        command,
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        container: container.to_owned(),
        deadline,
    }
}
