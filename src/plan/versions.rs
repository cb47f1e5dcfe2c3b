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
    /// `tlsMode: istio` (auto-mTLS). Off by default in 1.4 and 1.5, on from 1.6
    /// (`enableAutoMtls` in `manifests/charts/istio-control/istio-discovery/values.yaml@1.6.0`;
    /// `pilot/pkg/networking/core/v1alpha3/cluster.go@1.6.0` `transport_socket_matches`).
    pub fn auto_mtls(self) -> bool {
        self.at_least(6)
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
    /// other hosts): from 1.2, whose 1.2.1 notes let `attempts: 0` turn it off
    /// (`pilot/pkg/networking/core/route/retry/retry.go@1.30`). Earlier versions are not emulated
    /// with retries.
    pub fn default_retries(self) -> bool {
        self.at_least(2)
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
    /// endpoints (other clusters' gateways), so connections can bounce between gateways: 1.5 to
    /// 1.18 (`pilot/pkg/xds/endpoint_builder.go@1.14.6` merges the registries' shards; PR #45230
    /// in 1.19 made the gateway check endpoint tlsMode, `pilot/pkg/networking/core/v1alpha3/mtls_checker.go`).
    pub fn gateway_merges_service_entry_endpoints(self) -> bool {
        self.at_least(5) && !self.at_least(19)
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

    /// Whether the AUTO_PASSTHROUGH listener has one chain per service port with exact SNI and
    /// Istio mTLS ALPN (1.10+) instead of one `sni_cluster` chain for the Gateway's hosts
    /// (`pilot/pkg/networking/core/v1alpha3/gateway.go@1.10.6`).
    pub fn gateway_chain_per_service_port(self) -> bool {
        self.at_least(10)
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

    /// Whether the inbound HTTP listener forwards the client certificate as Istio does
    /// (`APPEND_FORWARD` with Subject, URI and DNS: `pilot/pkg/networking/core/v1alpha3/listener_inbound.go@1.14.6`).
    /// Every emulated version does; kept as a function so the source is named in one place.
    pub fn xfcc_append_forward(self) -> bool {
        true
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

    #[test]
    fn auto_mtls_starts_at_1_6() {
        assert!(!at(5).auto_mtls());
        assert!(at(6).auto_mtls());
    }

    #[test]
    fn gateway_rows_2b_and_2d_have_their_ranges() {
        let merges: Vec<u32> = (4..=30)
            .filter(|minor| at(*minor).gateway_merges_service_entry_endpoints())
            .collect();
        assert_eq!(merges, (5..=18).collect::<Vec<_>>());
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
