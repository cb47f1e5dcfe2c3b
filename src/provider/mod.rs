//! Providers: the worlds a scenario runs in. One seam, [`Provider`]: create the world, apply a plan,
//! send traffic from a pod and return per-request records, read the proxies' TLS failure counters,
//! check cross-cluster isolation, tell whether every process of the world is alive, tear down. `local` (network namespaces with real Envoy) is here;
//! `kind` and `kubeconfig` implement the same trait; [`kube_api`] is their shared Kubernetes API
//! layer. Every future the trait returns is `Send`, so a provider may run on a multi-threaded
//! runtime and talk to slow, remote worlds; [`capabilities`] says what each one supports.

pub mod capabilities;
pub mod kind;
pub mod kube_api;
pub mod kubeconfig;
pub mod local;

/// The seam speaks these pure types, which live below the providers (the verdict and the report
/// read them too).
pub use crate::observation::{IsolationProbe, IsolationRule, ProviderInfo, TIMED_OUT, TlsFailures};

use std::future::Future;
use std::time::Duration;

use crate::change::WorldChange;
use crate::inventory::Inventory;
use crate::inventory::InventoryEvent;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::record::RequestRecord;
use crate::scenario::{ConnectionPolicy, Protocol, Scenario};

/// How long one request may take before the client gives up on it; phase deadlines are derived
/// from it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Proxy behaviour a phase asks for, applied together with the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PhaseSettings {
    /// Give this pod (cluster, pod) a workload certificate from a foreign root.
    pub foreign_client_cert: Option<(String, String)>,
}

/// Traffic to send from one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Traffic {
    /// Cluster of the sending pod.
    pub from_cluster: String,
    /// Sending service, `name.namespace`.
    pub from_service: String,
    /// The sending pod, as the live inventory names it (a real cluster's pods are not `foo-0`).
    pub from_pod: String,
    /// Called service, `name.namespace`.
    pub to_service: String,
    /// Called port number.
    pub port: u16,
    /// Protocol of that port.
    pub protocol: Protocol,
    /// Number of requests.
    pub requests: u64,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// Connection policy of the client.
    pub connections: ConnectionPolicy,
    /// Requests started per second, spread evenly, when the traffic must span time (a phase with
    /// timed actions); `None` sends as fast as `concurrency` allows.
    pub rate_per_second: Option<u32>,
}

/// Something a provider could not do.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The machine lacks what the provider needs (a binary, namespaces, a cluster).
    #[error("{0}")]
    Unavailable(String),
    /// Building or changing the world failed.
    #[error("{what}")]
    Failed {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: anyhow::Error,
    },
    /// The scenario asks for something this provider cannot do.
    #[error("{0}")]
    Unsupported(String),
    /// Processes of the world died or are stopped although no fault asked for it: each line names
    /// the process, its pod and cluster, and quotes what its log says.
    #[error("{}", not_alive_message(.0))]
    NotAlive(Vec<String>),
    /// A step did not finish before its deadline.
    #[error("{what} did not finish within its deadline of {} s; {stuck}", .deadline.as_secs())]
    DeadlineExceeded {
        /// The step, e.g. `phase foo-to-bar-http`.
        what: String,
        /// Its deadline.
        deadline: Duration,
        /// What was found stuck, or that nothing was.
        stuck: String,
    },
}

fn not_alive_message(processes: &[String]) -> String {
    format!(
        "{} process(es) of the world died or were stopped although no fault asked for it:\n{}",
        processes.len(),
        processes.join("\n")
    )
}

impl ProviderError {
    /// A failure of `what`, with its cause.
    pub fn failed(what: impl Into<String>, source: impl Into<anyhow::Error>) -> ProviderError {
        ProviderError::Failed {
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Takes the traffic a provider started in the background out of `slot`, for `await_traffic`:
/// the kubeconfig and local providers both refuse to await traffic that is not running.
pub(crate) fn take_running_traffic<T>(slot: &mut Option<T>) -> Result<T, ProviderError> {
    slot.take()
        .ok_or_else(|| ProviderError::Unsupported("no traffic is running to await".to_owned()))
}

/// The seam every provider implements. Calls come in this order: `create_world`, `apply_plan`,
/// `check_isolation`, then per phase `check_alive`, `apply_plan` (when settings change),
/// `tls_failures`, `send_traffic`, `tls_failures`, `check_alive`; `stuck` when a phase overran its
/// deadline; `teardown` always last, also after a failure.
pub trait Provider: Send {
    /// What the report says about the provider.
    fn info(&self) -> ProviderInfo;

    /// The faults and phase actions the provider supports (checked before the world is created).
    /// The default supports none: a provider that executes faults says so.
    fn capabilities(&self) -> capabilities::Capabilities {
        capabilities::Capabilities::NONE
    }

    /// Creates the clusters and the workloads of the scenario (reporting progress on slow steps);
    /// returns the live inventory.
    fn create_world(
        &mut self,
        scenario: &Scenario,
        progress: &mut dyn Progress,
    ) -> impl Future<Output = Result<Inventory, ProviderError>> + Send;

    /// Makes every cluster's configuration match `plan` (with the phase's proxy settings).
    fn apply_plan(
        &mut self,
        plan: &Plan,
        settings: &PhaseSettings,
        progress: &mut dyn Progress,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// Direct pod-IP connects across clusters must fail; gateways must answer.
    fn check_isolation(&mut self) -> impl Future<Output = Result<Vec<IsolationProbe>, ProviderError>> + Send;

    /// Sends the traffic and returns one record per request; reports how far it got on long runs.
    fn send_traffic(
        &mut self,
        traffic: &Traffic,
        progress: &mut dyn Progress,
    ) -> impl Future<Output = Result<Vec<RequestRecord>, ProviderError>> + Send;

    /// Starts `traffic` in the background and returns once the sending side runs: the world can
    /// then be changed ([`Provider::change_world`], [`Provider::apply_plan`]) while requests flow,
    /// and [`Provider::await_traffic`] collects the records. Each record's `started_us` counts
    /// from the moment this returns. The default refuses: a provider that runs traffic across
    /// changes says so in its capabilities and implements this.
    fn start_traffic(
        &mut self,
        traffic: &Traffic,
        progress: &mut dyn Progress,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send {
        let _ = (traffic, progress);
        async {
            Err(ProviderError::Unsupported(
                "this provider cannot run traffic across world changes".to_owned(),
            ))
        }
    }

    /// Waits for the traffic [`Provider::start_traffic`] started, until it ends or `until` passes,
    /// checking that the world lives and reporting progress. Returns every record once the traffic
    /// has ended, `None` while it still runs.
    fn await_traffic(
        &mut self,
        until: std::time::Instant,
        progress: &mut dyn Progress,
    ) -> impl Future<Output = Result<Option<Vec<RequestRecord>>, ProviderError>> + Send {
        let _ = (until, progress);
        async {
            Err(ProviderError::Unsupported(
                "this provider cannot run traffic across world changes".to_owned(),
            ))
        }
    }

    /// Makes one change to the running world and returns what it did to the inventory (pods ready
    /// or gone, a gateway's address, a cluster that joined or left, a cluster's Istio version),
    /// for the reconcile loop to re-plan from. Processes a change stops or kills are not deaths
    /// [`Provider::check_alive`] reports. The default refuses: a provider lists the changes it can
    /// make in its capabilities.
    fn change_world(
        &mut self,
        change: &WorldChange,
        progress: &mut dyn Progress,
    ) -> impl Future<Output = Result<Vec<InventoryEvent>, ProviderError>> + Send {
        let _ = progress;
        let refused = format!("this provider cannot make the change {}", change.kind().name());
        async move { Err(ProviderError::Unsupported(refused)) }
    }

    /// Current server-side TLS failure counters of the pods of `service` and of every gateway.
    fn tls_failures(&mut self, service: &str) -> impl Future<Output = Result<TlsFailures, ProviderError>> + Send;

    /// Connections gateways have opened to other gateways so far (cumulative), when the provider
    /// can count them; the engine reports the difference over each phase.
    fn gateway_hops(&mut self) -> impl Future<Output = Result<Option<u64>, ProviderError>> + Send {
        async { Ok(None) }
    }

    /// Proxy configuration the proxies refused, each naming the proxy and the proxy's reason.
    fn config_rejections(&mut self) -> impl Future<Output = Result<Vec<String>, ProviderError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Fails with [`ProviderError::NotAlive`] naming every process of the world that has exited or
    /// is stopped.
    fn check_alive(&mut self) -> impl Future<Output = Result<(), ProviderError>> + Send;

    /// After a deadline expired: what is stuck (stopped processes, proxies that do not answer
    /// within a short deadline), one line each; empty when nothing looks stuck. Must itself finish
    /// within a few seconds.
    fn stuck(&mut self) -> impl Future<Output = Vec<String>> + Send;

    /// Before teardown, for `--keep-logs`: each proxy's logs and configuration dump, as files
    /// relative to the logs directory. Each call to a proxy has a deadline; a dump that could not
    /// be taken is a file saying why. The default keeps nothing.
    fn proxy_files(&mut self) -> impl Future<Output = Vec<crate::kept_logs::KeptFile>> + Send {
        async { Vec::new() }
    }

    /// Removes everything the provider created (reporting progress on slow steps).
    fn teardown(&mut self, progress: &mut dyn Progress) -> impl Future<Output = Result<(), ProviderError>> + Send;
}
