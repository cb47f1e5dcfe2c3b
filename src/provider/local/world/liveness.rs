//! Liveness of the `local` world: which of its long-lived processes (apps, Envoys) have exited or
//! are stopped, and, once a deadline has passed, which Envoys do not answer on their admin socket.
//! A process a fault ended on purpose (a stopped gateway, a killed container before its restart)
//! is none of these: the supervisor no longer expects it to run.

use std::time::Duration;

use super::World;
use crate::provider::ProviderError;
use crate::provider::local::envoy_binary::admin_get;

/// How long an Envoy may take to answer `/ready` when meshfed looks for what is stuck.
const STUCK_ADMIN_TIMEOUT: Duration = Duration::from_secs(1);

impl World {
    /// Fails naming every app or Envoy that exited or is stopped, with what its log says.
    pub(super) fn check_alive(&mut self) -> Result<(), ProviderError> {
        let down: Vec<String> = self.supervisor.not_running().iter().map(ToString::to_string).collect();
        if down.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::NotAlive(down))
        }
    }

    /// `outcome`, except that a failure is replaced by the death or stop that explains it (a stats
    /// read that timed out because its Envoy is stopped is reported as the stopped Envoy).
    pub(super) fn explained<T>(&mut self, outcome: Result<T, ProviderError>) -> Result<T, ProviderError> {
        match outcome {
            Err(error) if !matches!(error, ProviderError::NotAlive(_)) => {
                self.check_alive()?;
                Err(error)
            }
            outcome => outcome,
        }
    }

    /// What is stuck: exited or stopped processes, then started Envoys whose admin socket does not
    /// answer within [`STUCK_ADMIN_TIMEOUT`] (asked all at once, so this takes at most that long).
    pub(super) async fn stuck(&mut self) -> Vec<String> {
        let mut stuck: Vec<(String, String)> = self
            .supervisor
            .not_running()
            .into_iter()
            .map(|down| {
                let name = match &down {
                    crate::provider::local::supervisor::NotRunning::Exited(exit) => exit.name.clone(),
                    crate::provider::local::supervisor::NotRunning::Stopped { name, .. } => name.clone(),
                };
                (name, down.to_string())
            })
            .collect();
        let mut pings = tokio::task::JoinSet::new();
        // A gateway stopped by a fault is expected not to answer.
        for proxy in self
            .proxies
            .values()
            .filter(|proxy| proxy.started && !proxy.stopped_on_purpose)
        {
            if stuck.iter().any(|(name, _)| *name == proxy.name) {
                continue;
            }
            let (name, socket) = (proxy.name.clone(), proxy.admin_socket.clone());
            pings.spawn(async move {
                let answer = tokio::time::timeout(STUCK_ADMIN_TIMEOUT, admin_get(&socket, "/ready")).await;
                match answer {
                    Ok(Ok(_)) => None,
                    Ok(Err(error)) => Some((
                        name.clone(),
                        format!("{name} does not answer on its admin socket: {error}"),
                    )),
                    Err(_) => Some((
                        name.clone(),
                        format!(
                            "{name} does not answer on its admin socket within {} s",
                            STUCK_ADMIN_TIMEOUT.as_secs()
                        ),
                    )),
                }
            });
        }
        while let Some(ping) = pings.join_next().await {
            stuck.extend(ping.ok().flatten());
        }
        stuck.into_iter().map(|(_, line)| line).collect()
    }
}
