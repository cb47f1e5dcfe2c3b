//! What a provider observes of a world besides its requests, as pure data: which provider it was
//! ([`ProviderInfo`]), the isolation probes ([`IsolationProbe`], judged by an [`IsolationRule`])
//! and the proxies' TLS failure counters ([`TlsFailures`]). The providers fill them in; the
//! verdict and the report judge and show them, so they sit below all three. Pure, no I/O.

#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};

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
