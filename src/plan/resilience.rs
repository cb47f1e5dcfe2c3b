//! The resilience part of the plan: the DestinationRule's `outlierDetection` and
//! `loadBalancer` (with `localityLbSetting`), and one VirtualService per HTTP service carrying
//! the scenario's `retries` and `timeout`, as Istio's CRDs spell them.

use super::istio::{
    Destination, HttpRetry, HttpRoute, HttpRouteDestination, IstioObject, LoadBalancerSettings, LocalityFailover,
    LocalityLbSetting, OutlierDetection, VirtualServiceSpec,
};
use super::{IstioApi, Planner};
use crate::scenario::{Service, resilience};

/// `trafficPolicy.outlierDetection` from the scenario's setting.
pub(super) fn mk_outlier_detection(setting: &resilience::OutlierDetection) -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx_errors: setting.consecutive_5xx_errors,
        consecutive_gateway_errors: setting.consecutive_gateway_errors,
        interval: setting.interval.map(|duration| duration.to_string()),
        base_ejection_time: setting.base_ejection_time.map(|duration| duration.to_string()),
        max_ejection_percent: setting.max_ejection_percent.map(|percent| percent.0),
    }
}

impl Planner<'_> {
    /// `trafficPolicy.loadBalancer`: the policy in force and the failover rules; `None` when
    /// neither is set.
    pub(super) fn mk_load_balancer(&self) -> Option<LoadBalancerSettings> {
        let locality_lb_setting =
            self.scenario
                .federation
                .locality_lb_setting
                .as_ref()
                .map(|setting| LocalityLbSetting {
                    failover: setting
                        .value
                        .failover
                        .iter()
                        .map(|rule| LocalityFailover {
                            from: rule.from.value.clone(),
                            to: rule.to.value.clone(),
                        })
                        .collect(),
                });
        let simple = self.settings.load_balancer.map(|policy| policy.istio_name().to_owned());
        (simple.is_some() || locality_lb_setting.is_some()).then_some(LoadBalancerSettings {
            simple,
            locality_lb_setting,
        })
    }

    /// The VirtualService of an HTTP service when the scenario sets retries or a timeout: one
    /// route to the service itself (a VirtualService needs a destination), in the service's
    /// namespace. `None` for a TCP-only service (retries and timeouts are HTTP route settings)
    /// or when neither is set (Istio's defaults then apply without an object).
    pub(super) fn mk_virtual_service(
        &self,
        service: &Service,
        api: IstioApi,
    ) -> Option<IstioObject<VirtualServiceSpec>> {
        let federation = &self.scenario.federation;
        if federation.retries.is_none() && federation.timeout.is_none() {
            return None;
        }
        if !service.ports.iter().any(|port| port.protocol.is_http()) {
            return None;
        }
        let retries = federation.retries.as_ref().map(|retries| HttpRetry {
            attempts: retries.attempts.0,
            per_try_timeout: retries.per_try_timeout.map(|duration| duration.to_string()),
            retry_on: retries.retry_on.as_ref().map(|retry_on| retry_on.0.clone()),
        });
        let host = service.host();
        Some(IstioObject {
            api_version: api.networking().to_owned(),
            kind: "VirtualService".to_owned(),
            metadata: self.mk_metadata(
                &format!("resilience-for-{}", service.name.value),
                Some(&service.namespace.value),
            ),
            spec: VirtualServiceSpec {
                hosts: vec![host.clone()],
                http: vec![HttpRoute {
                    route: vec![HttpRouteDestination {
                        destination: Destination { host },
                    }],
                    retries,
                    timeout: federation.timeout.map(|duration| duration.to_string()),
                }],
            },
        })
    }
}
