//! Providers: the worlds a scenario runs in. One seam, [`Provider`]: create the world, apply a plan,
//! send traffic from a pod and return per-request records, read the proxies' TLS failure counters,
//! check cross-cluster isolation, tell whether every process of the world is alive, tear down. `local` (network namespaces with real Envoy) is here;
//! `kind` and `kubeconfig` implement the same trait; [`kube`] is their shared Kubernetes client
//! layer. Every future the trait returns is `Send`, so a provider may run on a multi-threaded
//! runtime and talk to slow, remote worlds; [`capabilities`] says what each one supports.

pub mod capabilities;
pub mod kind;
pub mod kube;
pub mod kubeconfig;
pub mod local;

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::change::{InventoryEvent, WorldChange};
use crate::inventory::Inventory;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::record::RequestRecord;
use crate::scenario::{ConnectionPolicy, Protocol, Scenario};

/// How long one request may take before the client gives up on it; phase deadlines are derived
/// from it.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What a provider tells the report about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// `local`, `kind` or `kubeconfig`.
    pub name: String,
    /// What the provider stands in for, when it is an emulation (`istio-gateway-connectivity`).
    pub emulates: Option<String>,
    /// How it runs: `root` or `rootless (user namespace)` for local.
    pub mode: String,
    /// Proxy version (`envoy 1.40.0`) or Istio version.
    pub proxy: String,
}

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

/// Server-side TLS failure counters of a service's proxies (summed over its pods in all clusters)
/// and of the gateways.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFailures {
    /// Client certificate did not verify against the mesh root (`ssl.fail_verify_error`).
    pub fail_verify_error: u64,
    /// Client presented no certificate (`ssl.fail_verify_no_cert`).
    pub fail_verify_no_cert: u64,
    /// TLS handshake errors (`ssl.connection_error`).
    pub connection_error: u64,
    /// Connections the gateways could not route by SNI (`no_filter_chain_match`).
    pub gateway_no_filter_chain_match: u64,
}

impl TlsFailures {
    /// Verification failures of client certificates (bad or missing).
    pub fn client_cert_rejections(&self) -> u64 {
        self.fail_verify_error + self.fail_verify_no_cert
    }

    /// The counters' growth from `before` to `self`.
    #[must_use]
    pub fn since(&self, before: &TlsFailures) -> TlsFailures {
        TlsFailures {
            fail_verify_error: self.fail_verify_error.saturating_sub(before.fail_verify_error),
            fail_verify_no_cert: self.fail_verify_no_cert.saturating_sub(before.fail_verify_no_cert),
            connection_error: self.connection_error.saturating_sub(before.connection_error),
            gateway_no_filter_chain_match: self
                .gateway_no_filter_chain_match
                .saturating_sub(before.gateway_no_filter_chain_match),
        }
    }
}

/// One isolation probe: from a pod in one cluster, a direct connect to a pod of another cluster
/// (must fail) and a connect to that cluster's gateway (must succeed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IsolationProbe {
    /// Cluster of the probing pod.
    pub from_cluster: String,
    /// Probing pod.
    pub from_pod: String,
    /// Cluster probed.
    pub to_cluster: String,
    /// `ip:port` of the remote pod.
    pub pod_address: String,
    /// What the direct connect did (`unreachable`, `refused`, `timed out`, `connected`).
    pub pod_connect: String,
    /// `ip:port` of the remote gateway.
    pub gateway_address: String,
    /// What the gateway connect did.
    pub gateway_connect: String,
    /// The direct connect was unreachable (the network could not deliver it: a refused connect
    /// means the pod's address answered, a timeout that the packet was routed toward it) and the
    /// gateway answered.
    pub isolated: bool,
}

/// What a direct connect to another cluster's pod must do for an [`IsolationProbe`] to count as
/// isolated; the gateway connect must succeed under every rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsolationRule {
    /// The network must answer that the address is unreachable (no route): `local`, whose router
    /// has no route to other clusters' pods, and `kind`, whose nodes get `unreachable` routes for
    /// every other cluster's pod and service networks. A timeout means the packet was routed
    /// toward the pod, so it fails the probe.
    Unreachable,
    /// Unreachable, or a timeout while the same pod reaches that cluster's gateway: real clusters
    /// on separate networks drop such packets silently, and meshfed cannot add routes there
    /// (`kubeconfig`). The report says which of the two it was.
    UnreachableOrTimeout,
}

impl IsolationRule {
    /// Whether the direct connect's outcome (`unreachable`, `timed out`, `refused`, `connected`)
    /// and the gateway connect's show the pod isolated under this rule.
    pub fn isolated(self, pod_connect: &str, gateway_connect: &str) -> bool {
        let pod_isolated = match self {
            IsolationRule::Unreachable => pod_connect.starts_with("unreachable"),
            IsolationRule::UnreachableOrTimeout => pod_connect.starts_with("unreachable") || pod_connect == TIMED_OUT,
        };
        pod_isolated && gateway_connect == "connected"
    }
}

/// How a probe words a connect that got no answer within its deadline.
pub const TIMED_OUT: &str = "timed out";

impl IsolationProbe {
    /// How the pod was found isolated: `None` unless [`IsolationProbe::isolated`];
    /// `Some("timeout")` when a timeout counted (see [`IsolationRule::UnreachableOrTimeout`]),
    /// `Some("unreachable")` otherwise.
    pub fn isolated_by(&self) -> Option<&'static str> {
        match (self.isolated, self.pod_connect == TIMED_OUT) {
            (false, _) => None,
            (true, true) => Some("timeout"),
            (true, false) => Some("unreachable"),
        }
    }

    /// `cluster/pod -> other-cluster`.
    pub fn route(&self) -> String {
        format!("{}/{} -> {}", self.from_cluster, self.from_pod, self.to_cluster)
    }

    /// What both connects did: `pod ADDRESS OUTCOME, gateway ADDRESS OUTCOME`, and when a timeout
    /// counted as isolated, that it did.
    pub fn observed(&self) -> String {
        let counted = if self.isolated_by() == Some("timeout") {
            " (isolated by timeout: this provider cannot make other clusters' networks unreachable)"
        } else {
            ""
        };
        format!(
            "pod {} {}, gateway {} {}{counted}",
            self.pod_address, self.pod_connect, self.gateway_address, self.gateway_connect
        )
    }
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
    fn proxy_files(&mut self) -> impl Future<Output = Vec<crate::diagnostics::KeptFile>> + Send {
        async { Vec::new() }
    }

    /// Removes everything the provider created (reporting progress on slow steps).
    fn teardown(&mut self, progress: &mut dyn Progress) -> impl Future<Output = Result<(), ProviderError>> + Send;
}

#[cfg(test)]
mod isolation_rule_tests {
    use super::*;

    fn probe(rule: IsolationRule, pod_connect: &str, gateway_connect: &str) -> IsolationProbe {
        IsolationProbe {
            from_cluster: "cluster1".to_owned(),
            from_pod: "foo-0".to_owned(),
            to_cluster: "cluster2".to_owned(),
            pod_address: "10.20.0.10:80".to_owned(),
            pod_connect: pod_connect.to_owned(),
            gateway_address: "172.18.255.155:15443".to_owned(),
            gateway_connect: gateway_connect.to_owned(),
            isolated: rule.isolated(pod_connect, gateway_connect),
        }
    }

    #[test]
    fn a_timeout_counts_as_isolated_only_where_meshfed_cannot_add_routes_and_only_when_the_gateway_connects() {
        let lenient = IsolationRule::UnreachableOrTimeout;
        assert!(lenient.isolated("timed out", "connected"));
        assert!(
            !lenient.isolated("timed out", "timed out"),
            "a dead network is not isolation"
        );
        assert!(
            !lenient.isolated("refused", "connected"),
            "a refusal means the pod's address answered"
        );
        assert!(!lenient.isolated("connected", "connected"));
        assert!(lenient.isolated("unreachable", "connected"));
        let strict = IsolationRule::Unreachable;
        assert!(!strict.isolated("timed out", "connected"));
        assert!(strict.isolated("unreachable (no route)", "connected"));
    }

    #[test]
    fn the_report_says_whether_a_timeout_or_the_network_isolated_the_pod() {
        let by_timeout = probe(IsolationRule::UnreachableOrTimeout, "timed out", "connected");
        assert_eq!(by_timeout.isolated_by(), Some("timeout"));
        assert!(
            by_timeout.observed().contains("isolated by timeout"),
            "{}",
            by_timeout.observed()
        );
        let by_route = probe(IsolationRule::UnreachableOrTimeout, "unreachable", "connected");
        assert_eq!(by_route.isolated_by(), Some("unreachable"));
        assert!(!by_route.observed().contains("timeout"));
        assert_eq!(
            probe(IsolationRule::Unreachable, "timed out", "connected").isolated_by(),
            None
        );
    }
}
