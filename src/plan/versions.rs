//! What each Istio version does where it changes a verdict: one pure function per behaviour, each
//! naming the Istio source it follows (paths in istio/istio unless said otherwise; table and
//! discussion in docs/fidelity.md). The `local` provider derives its data plane from these and the
//! plan; `meshfed plan` warns from them.

use crate::scenario::{IstioVersion, LoadBalancer};

const fn version(minor: u32) -> IstioVersion {
    IstioVersion::new(1, minor, 0)
}

/// How one Istio version behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IstioBehaviour {
    /// The version.
    pub version: IstioVersion,
}

impl IstioBehaviour {
    /// The behaviour of `version`.
    pub const fn of(version: IstioVersion) -> Self {
        IstioBehaviour { version }
    }

    fn at_least(self, minor: u32) -> bool {
        self.version >= version(minor)
    }

    /// Whether sidecars originate mTLS without a DestinationRule, to endpoints labelled
    /// `tlsMode: istio` (auto-mTLS). Off by default up to 1.4 (`global.mtls.auto: false` in
    /// `install/kubernetes/helm/istio/values.yaml@1.4.10`), on from 1.5 (`mtls.auto: true` in
    /// `operator/data/profiles/default.yaml@1.5.0` and `manifests/global.yaml@1.5.0`;
    /// `pilot/pkg/networking/core/v1alpha3/cluster.go@1.6.0` `transport_socket_matches`).
    pub fn auto_mtls(self) -> bool {
        self.at_least(5)
    }

    /// ALPN a client sidecar offers on mTLS to an upstream sidecar. 1.4 and older: `istio` (plus
    /// `h2` for HTTP/2 clusters). 1.5+: `istio-peer-exchange, istio` for TCP; for HTTP the
    /// `istio.alpn` filter rewrites it per upstream protocol to `istio-http/1.1, istio, http/1.1`
    /// or `istio-h2, istio, h2` (`pilot/pkg/networking/core/v1alpha3/listener_builder.go@1.5.10`,
    /// `pilot/pkg/xds/filters/filters.go@1.14.6`).
    pub fn client_alpn(self, http: bool, http2: bool) -> Vec<&'static str> {
        match (self.at_least(5), http, http2) {
            (false, _, true) => vec!["istio", "h2"],
            (false, _, false) => vec!["istio"],
            (true, false, _) => vec!["istio-peer-exchange", "istio"],
            (true, true, false) => vec!["istio-http/1.1", "istio", "http/1.1"],
            (true, true, true) => vec!["istio-h2", "istio", "h2"],
        }
    }

    /// ALPN values an inbound PERMISSIVE listener treats as Istio mTLS (`mtlsHTTPALPNs` plus the
    /// TCP ones in `pilot/pkg/networking/core/v1alpha3/filterchain_options.go@1.10.6`; before 1.5
    /// only `istio`).
    pub fn inbound_mtls_alpn(self) -> Vec<&'static str> {
        if self.at_least(5) {
            vec![
                "istio-http/1.0",
                "istio-http/1.1",
                "istio-h2",
                "istio-peer-exchange",
                "istio",
            ]
        } else {
            vec!["istio"]
        }
    }

    /// Whether a sidecar route without VirtualService `retries` gets Istio's default retry policy
    /// (2 retries on connect failure, refused stream, unavailable, cancelled and 503, preferring
    /// other hosts): every emulated version, from 1.1 (`BuildDefaultHTTPOutboundRoute` sets
    /// `retry.DefaultPolicy()`, `pilot/pkg/networking/core/v1alpha3/route/route.go@1.1.0`); the
    /// 1.2.1 notes let `attempts: 0` turn it off (`pilot/pkg/networking/core/route/retry/retry.go@1.30.3`).
    pub fn default_retries(self) -> bool {
        self.at_least(1)
    }

    /// The cluster circuit breaker's `max_retries` istiod writes when the DestinationRule sets
    /// none: 1024 up to 1.3 (`pilot/pkg/networking/core/v1alpha3/cluster.go@1.3.0`), `MaxUint32`
    /// from 1.4 (`pilot/pkg/networking/core/v1alpha3/cluster.go@1.4.0`,
    /// `pilot/pkg/networking/core/cluster_traffic_policy.go@1.30.3`). Envoy's own default, 3,
    /// would drop retries under concurrency.
    pub fn circuit_breaker_max_retries(self) -> u32 {
        if self.at_least(4) { u32::MAX } else { 1024 }
    }

    /// Whether istiod also lifts the circuit breaker's `max_requests`, `max_connections` and
    /// `max_pending_requests` to `MaxUint32` (from 1.4, `pilot/pkg/networking/core/v1alpha3/cluster.go@1.4.0`;
    /// before, Envoy's 1024 each).
    pub fn circuit_breaker_unlimited(self) -> bool {
        self.at_least(4)
    }

    /// Whether a cluster's `common_lb_config` gets `locality_weighted_lb_config`, so Envoy first
    /// picks a locality by its weight (the sum of its endpoints' weights) and only then an endpoint
    /// with the load balancer (which then cannot favour a faster locality):
    /// - 1.1–1.8: with outlier detection, locality load balancing being on
    ///   (`pilot/pkg/networking/core/v1alpha3/cluster.go@1.8.0` `applyLoadBalancer`);
    /// - 1.9–1.11: with a `localityLbSetting.failover` (or `distribute`) in the rule
    ///   (`pilot/pkg/networking/core/v1alpha3/cluster.go@1.11.0`);
    /// - 1.12–1.23: always, because the mesh default (`pkg/config/mesh/mesh.go@1.12.0`,
    ///   `LocalityLbSetting{Enabled: true}`) is a locality setting
    ///   (`pilot/pkg/networking/core/v1alpha3/cluster.go@1.12.0`,
    ///   `pilot/pkg/networking/core/cluster_traffic_policy.go@1.23.0`);
    /// - 1.24+: with outlier detection and a failover rule only; `ENABLE_LOCALITY_WEIGHTED_LB_CONFIG`
    ///   (default false) makes it opt-in, istio/istio#52898
    ///   (`pilot/pkg/networking/core/cluster_traffic_policy.go@1.24.0` `applyLocalityLoadBalancer`).
    pub fn locality_weighted_lb(self, outlier_detection: bool, failover_rule: bool) -> bool {
        if self.at_least(24) {
            outlier_detection && failover_rule
        } else if self.at_least(12) {
            true
        } else if self.at_least(9) {
            failover_rule
        } else {
            outlier_detection && self.locality_lb_by_default()
        }
    }

    /// Whether locality load balancing (failover priorities) is on without configuration: from
    /// 1.3 (`localityLbSetting: { enabled: true }` in `install/kubernetes/helm/istio/values.yaml@1.3.0`);
    /// 1.1 and 1.2 need `PILOT_ENABLE_LOCALITY_LOAD_BALANCING` on istiod
    /// (`pilot.EnableLocalityLoadBalancing()` in `pilot/pkg/proxy/envoy/v2/eds.go@1.2.0`), which
    /// meshfed's install does not set.
    pub fn locality_lb_by_default(self) -> bool {
        self.at_least(3)
    }

    /// Whether istiod reads a DestinationRule's `trafficPolicy.loadBalancer.localityLbSetting`
    /// (from 1.5, `pilot/pkg/networking/core/v1alpha3/cluster.go@1.5.0`; before, only the mesh
    /// config's): older versions ignore the field meshfed writes.
    pub fn destination_rule_locality_lb_setting(self) -> bool {
        self.at_least(5)
    }

    /// Whether istiod reads `connectionPool.http.h2UpgradePolicy` (from 1.6, istio/istio#21809);
    /// older versions ignore it and keep HTTP/1.1 on `http` ports.
    pub fn h2_upgrade_policy(self) -> bool {
        self.at_least(6)
    }

    /// Whether `outlierDetection.consecutive5xxErrors` and `consecutiveGatewayErrors` exist (from
    /// 1.5, `pilot/pkg/networking/core/v1alpha3/cluster.go@1.5.0`; 1.1–1.4 have only
    /// `consecutiveErrors`, so istiod ignores the newer fields and Envoy keeps its defaults).
    pub fn outlier_detection_5xx_and_gateway_errors(self) -> bool {
        self.at_least(5)
    }

    /// Whether istiod sets the cluster's healthy panic threshold from `minHealthPercent` (0 by
    /// default) when outlier detection is on: from 1.3; 1.1 and 1.2 leave Envoy's 50 %
    /// (`pilot/pkg/networking/core/v1alpha3/cluster.go@1.3.0` `applyOutlierDetection`).
    pub fn outlier_panic_threshold_zero(self) -> bool {
        self.at_least(3)
    }

    /// Whether split-horizon EDS emits a remote network's locality groups in Go map order (1.8 and
    /// 1.9), so which zone's weight survives istio/istio#56355 changes from push to push; sorted
    /// from 1.10 (`pilot/pkg/xds/endpoint_builder.go@1.10.0`).
    pub fn locality_groups_in_map_order(self) -> bool {
        self.at_least(8) && !self.at_least(10)
    }

    /// Whether cross-network (split-horizon) EDS drops a remote endpoint whose `tlsMode` is not
    /// `istio` (a pod without a sidecar), so the gateway's weight counts only remote pods with a
    /// sidecar ("dont allow cross-network endpoints for uninjected traffic",
    /// `pilot/pkg/xds/ep_filters.go@1.8.0`). Every version that has endpoint discovery.
    pub fn cross_network_drops_uninjected_endpoints(self) -> bool {
        true
    }

    /// Load-balancing policy when no DestinationRule sets one: ROUND_ROBIN before 1.14,
    /// LEAST_REQUEST from 1.14 (`pilot/pkg/networking/core/v1alpha3/cluster.go@1.14.0`,
    /// `pilot/pkg/networking/core/cluster_traffic_policy.go@1.30.3`).
    pub fn default_load_balancer(self) -> LoadBalancer {
        if self.at_least(14) {
            LoadBalancer::LeastRequest
        } else {
            LoadBalancer::RoundRobin
        }
    }

    /// Whether the gateway's AUTO_PASSTHROUGH SNI cluster also holds a same-host ServiceEntry's
    /// endpoints (other clusters' gateways), so connections can bounce between gateways: 1.1 to
    /// 1.18, because EDS merges the registries' shards of one hostname (`pilot/pkg/proxy/envoy/v2/eds.go@1.1.0`,
    /// `pilot/pkg/xds/endpoint_builder.go@1.14.6`); from 1.8.6 and 1.9.5 only when an ISTIO_MUTUAL
    /// rule applies ([`Self::gateway_merge_needs_istio_mutual_rule`]); 1.19 checks the endpoint's
    /// tlsMode (PR #45230, `pilot/pkg/xds/mtls_checker.go@1.19.0`) and drops it.
    pub fn gateway_merges_service_entry_endpoints(self) -> bool {
        !self.at_least(19)
    }

    /// Whether the gateway keeps a same-host ServiceEntry endpoint only when a DestinationRule with
    /// `ISTIO_MUTUAL` applies to the host (`EndpointsWithMTLSFilter`, which the AUTO_PASSTHROUGH
    /// gateway applies from the security cherry-pick in 1.8.6 and 1.9.5, and in every 1.10+:
    /// `pilot/pkg/xds/endpoint_builder.go@1.8.6`, `pilot/pkg/xds/mtls_checker.go@1.18.0`). 1.1–1.8.5
    /// and 1.9.0–1.9.4 keep it whatever the rule says.
    pub fn gateway_merge_needs_istio_mutual_rule(self) -> bool {
        self.has_per_service_passthrough_chains()
    }

    /// Whether the gateway's 15443 listener gets two identical filter chains for a hostname that
    /// is both a Service and a ServiceEntry, which makes Envoy reject the whole listener. The
    /// chains come from `builtAutoPassthroughFilterChains`
    /// (`pilot/pkg/networking/core/v1alpha3/gateway.go@1.10.6`): one per service and port of
    /// `push.Services(proxy)`, endpoints never looked at, and the aggregate registry appends
    /// ServiceEntry services without de-duplicating them against the Kubernetes Service of the
    /// same host (`pilot/pkg/serviceregistry/aggregate/controller.go@1.10.6`, `Services()`), so
    /// the gateway's cluster needs no pods of the service. From the per-service chains (1.8.6 and
    /// 1.9.5, the security cherry-pick istio/istio#32840, see
    /// [`IstioBehaviour::has_per_service_passthrough_chains`]) to 1.21; 1.22 keeps one service per
    /// hostname in the gateway's scope (`pilot/pkg/model/sidecar.go@1.22.0`
    /// `appendSidecarServices`, PR istio/istio#48896; the user report is istio/istio#44356).
    pub fn gateway_duplicates_passthrough_chains(self) -> bool {
        self.has_per_service_passthrough_chains() && !self.at_least(22)
    }

    /// Whether endpoint-discovery (split-horizon) EDS programs a remote network's gateway with the
    /// weight of the first locality group only (istio/istio#56355): istiod emits the gateway once
    /// per locality group of the remote endpoints, each with that group's count
    /// (`pilot/pkg/xds/ep_filters.go@1.8.0`, the loop over locality groups; the same shape at
    /// 1.30.2, where the data was taken), and Envoy keeps one host per address, so only
    /// the first group's weight survives. Every emulated version has it: the fix, PR #60835, is
    /// not merged; `false` (the correct total) is the documented fix, kept for the day it lands.
    pub fn split_horizon_first_locality_weight_only(self) -> bool {
        true
    }

    /// Whether istiod builds the AUTO_PASSTHROUGH listener from `builtAutoPassthroughFilterChains`
    /// (one exact-SNI chain per service port) rather than one `sni_cluster` chain for the
    /// Gateway's hosts: from 1.8.6 and 1.9.5, the CVE-2021-31921 security release ("Lock down
    /// AUTO_PASSTRHOUGH gateway to only valid mTLS requests" on both branches, brought to master
    /// by istio/istio#32840; the function is in `pilot/pkg/networking/core/v1alpha3/gateway.go`
    /// at 1.8.6 and 1.9.5 and absent at 1.8.5 and 1.9.4), and in every 1.10 and later
    /// (`pilot/pkg/networking/core/gateway.go@1.22.0`). Row 2d's range starts here.
    pub fn has_per_service_passthrough_chains(self) -> bool {
        let v = |minor, patch| IstioVersion::new(1, minor, patch);
        match self.version {
            version if version >= v(10, 0) => true,
            version if version >= v(9, 0) => version >= v(9, 5),
            version => version >= v(8, 6),
        }
    }
}

/// Envoy worker threads Istio's sidecars and gateways run by default
/// (`pilot/cmd/pilot-agent/config/config.go@1.30.3`, `global.proxy` in `values.yaml`).
pub const ISTIO_DEFAULT_CONCURRENCY: u32 = 2;

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minor: u32) -> IstioBehaviour {
        IstioBehaviour::of(IstioVersion::new(1, minor, 0))
    }

    fn patch(minor: u32, patch: u32) -> IstioBehaviour {
        IstioBehaviour::of(IstioVersion::new(1, minor, patch))
    }

    #[test]
    fn auto_mtls_starts_at_1_5() {
        assert!(!patch(4, 10).auto_mtls());
        assert!(at(5).auto_mtls());
    }

    #[test]
    fn per_service_chains_and_the_gateway_mtls_filter_come_with_the_1_8_6_and_1_9_5_cherry_picks() {
        for (minor, fixed_from) in [(8, 6), (9, 5)] {
            assert!(!patch(minor, fixed_from - 1).has_per_service_passthrough_chains());
            assert!(patch(minor, fixed_from).has_per_service_passthrough_chains());
            assert!(!patch(minor, fixed_from - 1).gateway_merge_needs_istio_mutual_rule());
            assert!(patch(minor, fixed_from).gateway_merge_needs_istio_mutual_rule());
        }
        assert!(!patch(7, 8).has_per_service_passthrough_chains());
        assert!(at(10).has_per_service_passthrough_chains());
    }

    #[test]
    fn locality_weighting_is_on_by_default_from_1_12_to_1_23() {
        let by_default: Vec<u32> = (1..=30)
            .filter(|minor| at(*minor).locality_weighted_lb(false, false))
            .collect();
        assert_eq!(by_default, (12..=23).collect::<Vec<_>>());
        assert!(at(24).locality_weighted_lb(true, true) && !at(24).locality_weighted_lb(true, false));
        assert!(at(10).locality_weighted_lb(false, true));
        assert!(at(8).locality_weighted_lb(true, false) && !at(2).locality_weighted_lb(true, false));
    }

    #[test]
    fn gateway_rows_2b_and_2d_have_their_ranges() {
        let merges: Vec<u32> = (4..=30)
            .filter(|minor| at(*minor).gateway_merges_service_entry_endpoints())
            .collect();
        assert_eq!(merges, (4..=18).collect::<Vec<_>>());
        let duplicates: Vec<u32> = (4..=30)
            .filter(|minor| at(*minor).gateway_duplicates_passthrough_chains())
            .collect();
        assert_eq!(duplicates, (10..=21).collect::<Vec<_>>());
    }

    /// Row 2d's patch-level boundaries: `builtAutoPassthroughFilterChains` exists at
    /// `pilot/pkg/networking/core/v1alpha3/gateway.go@1.8.6` and `@1.9.5`, not at 1.8.5 or 1.9.4;
    /// `pilot/pkg/model/sidecar.go@1.22.0` de-duplicates by hostname, 1.21.6 does not.
    #[test]
    fn duplicated_passthrough_chains_start_at_1_8_6_and_1_9_5_and_end_at_1_22() {
        let duplicates = |minor, patch| {
            IstioBehaviour::of(IstioVersion::new(1, minor, patch)).gateway_duplicates_passthrough_chains()
        };
        for (minor, patch, expected) in [
            (7, 8, false),
            (8, 5, false),
            (8, 6, true),
            (9, 0, false),
            (9, 4, false),
            (9, 5, true),
            (9, 9, true),
            (10, 0, true),
            (13, 9, true),
            (20, 8, true),
            (21, 6, true),
            (22, 0, false),
            (30, 3, false),
        ] {
            assert_eq!(duplicates(minor, patch), expected, "1.{minor}.{patch}");
        }
    }
}
