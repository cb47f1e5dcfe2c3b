//! Traffic policy of an upstream, as istiod derives it from the DestinationRule and the
//! VirtualService: connection pool, load balancer, outlier detection, retries and timeouts.

use super::plan_reading::*;
use crate::plan::istio::HttpRoute;
use crate::plan::versions::IstioBehaviour;
use crate::plan::{ClusterPlan, Object};
use crate::provider::local::envoy_config::{OutlierDetection, Protocol, RetryPolicy, UpstreamTls};
use crate::scenario::resilience::{IstioDuration, RetryOn};
use crate::scenario::{H2UpgradePolicy, LoadBalancer};

/// How a client sidecar talks to one service port, from the plan's DestinationRule and the
/// cluster's Istio version.
pub(super) struct UpstreamPolicy {
    pub(super) tls: UpstreamTls,
    pub(super) locality_weighted: bool,
    pub(super) http2: bool,
    pub(super) load_balancer: LoadBalancer,
    pub(super) max_requests_per_connection: Option<u32>,
    pub(super) outlier_detection: Option<OutlierDetection>,
}

pub(super) fn upstream_policy(plan: &ClusterPlan, host: &str, protocol: Protocol) -> UpstreamPolicy {
    let behaviour = IstioBehaviour::of(plan.install.istio_version);
    let policy = destination_rule_for(plan, host);
    let tls = match policy
        .and_then(|policy| policy.tls.as_ref())
        .map(|tls| tls.mode.as_str())
    {
        Some("ISTIO_MUTUAL") => UpstreamTls::IstioMutual,
        Some(_) => UpstreamTls::Plaintext,
        None if behaviour.auto_mtls() => UpstreamTls::Auto,
        None => UpstreamTls::Plaintext,
    };
    let http_pool = policy
        .and_then(|policy| policy.connection_pool.as_ref())
        .map(|pool| &pool.http);
    // Versions before 1.6 ignore `h2UpgradePolicy` (row 7b).
    let upgrade = behaviour.h2_upgrade_policy()
        && http_pool
            .and_then(|http| http.h2_upgrade_policy.as_deref())
            .is_some_and(|mode| mode == H2UpgradePolicy::Upgrade.istio_name());
    let load_balancer = match policy
        .and_then(|policy| policy.load_balancer.as_ref())
        .and_then(|lb| lb.simple.as_deref())
    {
        Some("ROUND_ROBIN") => LoadBalancer::RoundRobin,
        Some("LEAST_REQUEST") => LoadBalancer::LeastRequest,
        Some("RANDOM") => LoadBalancer::Random,
        _ => behaviour.default_load_balancer(),
    };
    let outlier_detection = policy
        .and_then(|policy| policy.outlier_detection.as_ref())
        .map(|detection| envoy_outlier_detection(detection, behaviour));
    UpstreamPolicy {
        tls,
        locality_weighted: behaviour
            .locality_weighted_lb(outlier_detection.is_some(), !failover_rules(plan, host).is_empty()),
        http2: protocol == Protocol::Http2 || (protocol == Protocol::Http && upgrade),
        load_balancer,
        max_requests_per_connection: http_pool.and_then(|http| http.max_requests_per_connection),
        outlier_detection,
    }
}

/// The DestinationRule's `outlierDetection` as the cluster's istiod turns it into Envoy values
/// (durations were checked when the scenario was read; one the plan could not have written counts
/// as unset). Before 1.5 the `consecutive5xxErrors`/`consecutiveGatewayErrors` fields do not
/// exist and are ignored; before 1.3 Envoy's panic threshold stays (row 5b).
pub(super) fn envoy_outlier_detection(
    detection: &crate::plan::istio::OutlierDetection,
    behaviour: IstioBehaviour,
) -> OutlierDetection {
    let error_fields = behaviour.outlier_detection_5xx_and_gateway_errors();
    let millis = |text: &Option<String>| {
        text.as_deref()
            .and_then(|text| text.parse::<IstioDuration>().ok())
            .map(|duration| duration.millis)
    };
    OutlierDetection {
        consecutive_5xx: detection.consecutive_5xx_errors.filter(|_| error_fields),
        consecutive_gateway_failure: detection.consecutive_gateway_errors.filter(|_| error_fields),
        interval_millis: millis(&detection.interval),
        base_ejection_millis: millis(&detection.base_ejection_time),
        max_ejection_percent: detection.max_ejection_percent,
        envoy_panic_threshold: !behaviour.outlier_panic_threshold_zero(),
    }
}

/// The HTTP route of the plan's VirtualService for `host`, when there is one.
pub(super) fn virtual_service_route<'a>(plan: &'a ClusterPlan, host: &str) -> Option<&'a HttpRoute> {
    plan.objects.iter().find_map(|object| match object {
        Object::VirtualService(service) if service.spec.hosts.iter().any(|h| h == host) => service.spec.http.first(),
        _ => None,
    })
}

/// The route's retry policy and timeout as istiod writes them: the VirtualService's `retries`
/// over Istio's default policy (`attempts: 0` turns retries off), its `timeout`; without a
/// VirtualService, the version's default retries and no timeout.
pub(super) fn route_resilience(plan: &ClusterPlan, host: &str) -> (Option<RetryPolicy>, Option<u64>) {
    let behaviour = IstioBehaviour::of(plan.install.istio_version);
    let millis = |text: Option<&str>| {
        text.and_then(|text| text.parse::<IstioDuration>().ok())
            .map(|duration| duration.millis)
    };
    let route = virtual_service_route(plan, host);
    let retries = match route.and_then(|route| route.retries.as_ref()) {
        None => behaviour.default_retries().then(RetryPolicy::istio_default),
        Some(retries) if retries.attempts == 0 => None,
        Some(retries) => {
            let mut policy = RetryPolicy::istio_default();
            policy.num_retries = retries.attempts;
            if let Some(retry_on) = retries
                .retry_on
                .as_deref()
                .and_then(|text| text.parse::<RetryOn>().ok())
            {
                policy.retry_on = retry_on.conditions();
                policy.retriable_status_codes = retry_on.status_codes();
            }
            policy.per_try_timeout_millis = millis(retries.per_try_timeout.as_deref());
            Some(policy)
        }
    };
    (retries, millis(route.and_then(|route| route.timeout.as_deref())))
}
