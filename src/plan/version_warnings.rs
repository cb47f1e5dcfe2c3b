//! What a cluster's Istio version does differently with the plan than the newest versions, said
//! before anything runs (pure): DestinationRule fields an older istiod ignores (docs/fidelity.md
//! rows 5b, 5d, 7b), and the 1.8-1.9 multi-zone gateway weight that no one can predict (row 6b).

use std::collections::BTreeSet;

use super::PlanWarning;
use super::versions::IstioBehaviour;
use crate::scenario::{FederationMode, IstioVersion, Scenario};

/// The host the plan's one DestinationRule is written for.
const DESTINATION_RULE_HOST: &str = "*.local";

/// Warnings for `cluster` on `version` about the scenario's traffic policy fields that version's
/// istiod ignores (and `local` ignores with it): `h2UpgradePolicy` before 1.6, the rule's
/// `localityLbSetting` before 1.5, `consecutive5xxErrors`/`consecutiveGatewayErrors` before 1.5,
/// and, with outlier detection, the locality priorities and panic threshold 1.1-1.2 do not set.
pub fn ignored_field_warnings(scenario: &Scenario, cluster: &str, version: IstioVersion) -> Vec<PlanWarning> {
    let behaviour = IstioBehaviour::of(version);
    let federation = &scenario.federation;
    let h2_upgrade =
        federation.h2_upgrade_policy.is_some() || scenario.phases.iter().any(|phase| phase.h2_upgrade_policy.is_some());
    let mut messages = Vec::new();
    if h2_upgrade && !behaviour.h2_upgrade_policy() {
        messages.push(format!(
            "Istio {version} ignores connectionPool.http.h2UpgradePolicy (read from 1.6, istio/istio#21809): \
             sidecars keep HTTP/1.1 on http ports"
        ));
    }
    if federation.locality_lb_setting.is_some() && !behaviour.destination_rule_locality_lb_setting() {
        messages.push(format!(
            "Istio {version} ignores a DestinationRule's loadBalancer.localityLbSetting (read from 1.5): \
             its failover rules do not apply"
        ));
    }
    if let Some(detection) = &federation.outlier_detection {
        let error_fields = detection.consecutive_5xx_errors.is_some() || detection.consecutive_gateway_errors.is_some();
        if error_fields && !behaviour.outlier_detection_5xx_and_gateway_errors() {
            messages.push(format!(
                "Istio {version} ignores outlierDetection.consecutive5xxErrors and consecutiveGatewayErrors \
                 (1.1-1.4 know only consecutiveErrors): Envoy's defaults apply (5 consecutive 5xx)"
            ));
        }
        if !behaviour.locality_lb_by_default() {
            messages.push(format!(
                "Istio {version} sets no locality failover priorities without PILOT_ENABLE_LOCALITY_LOAD_BALANCING \
                 and leaves Envoy's 50% panic threshold (1.1-1.2): outlier detection ejects, but callers do not \
                 prefer their own zone"
            ));
        }
    }
    messages
        .into_iter()
        .map(|message| PlanWarning {
            cluster: cluster.to_owned(),
            host: DESTINATION_RULE_HOST.to_owned(),
            message,
        })
        .collect()
}

/// Why shares toward `to_service` cannot be predicted from `from_cluster` on `version`, when they
/// cannot: with endpoint discovery on 1.8-1.9, istiod emits a remote network's locality groups in
/// Go map order, so the gateway weight istio/istio#56355 keeps is a random zone's pod count per
/// push (sorted from 1.10, `pilot/pkg/xds/endpoint_builder.go@1.10.0`). Applies when another
/// cluster has pods of the service in more than one zone.
pub fn unpredictable_shares(
    scenario: &Scenario,
    from_cluster: &str,
    to_service: &str,
    version: IstioVersion,
) -> Option<String> {
    if scenario.federation.mode.value != FederationMode::EndpointDiscovery
        || !IstioBehaviour::of(version).locality_groups_in_map_order()
    {
        return None;
    }
    let service = scenario.service(to_service)?;
    let multi_zone: Vec<&str> = scenario
        .clusters
        .iter()
        .filter(|cluster| cluster.name.value != from_cluster)
        .filter(|cluster| {
            let zones: BTreeSet<&str> = (0..service.replicas_in(&cluster.name.value))
                .map(|index| cluster.zone_of_replica(index))
                .collect();
            zones.len() > 1
        })
        .map(|cluster| cluster.name.value.as_str())
        .collect();
    (!multi_zone.is_empty()).then(|| {
        format!(
            "shares are not predictable on Istio {version}: {} has {to_service} pods in several zones, and 1.8-1.9 \
             emit its locality groups in Go map order, so the gateway weight istio/istio#56355 keeps is a random \
             zone's pod count per push (sorted from 1.10)",
            multi_zone.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn scenario_edited(file: &str, edit: impl Fn(String) -> String) -> Scenario {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(file);
        let text = edit(std::fs::read_to_string(&path).unwrap());
        crate::scenario::parse(&path, &text).unwrap()
    }

    fn v(text: &str) -> IstioVersion {
        text.parse().unwrap()
    }

    #[test]
    fn fields_an_older_istiod_ignores_are_warned_about_on_those_versions_only() {
        let scenario = scenario_edited("skew.yaml", |text| {
            text.replace(
                "  mtls: PERMISSIVE\n",
                "  mtls: PERMISSIVE\n  h2UpgradePolicy: UPGRADE\n  outlierDetection:\n    consecutive5xxErrors: 3\n",
            )
        });
        let messages = |version: &str| -> Vec<String> {
            ignored_field_warnings(&scenario, "cluster1", v(version))
                .into_iter()
                .map(|warning| warning.message)
                .collect()
        };
        assert!(messages("1.6.0").is_empty(), "{:?}", messages("1.6.0"));
        let on_1_5 = messages("1.5.10");
        assert_eq!(on_1_5.len(), 1, "{on_1_5:?}");
        assert!(on_1_5[0].contains("h2UpgradePolicy"));
        let on_1_4 = messages("1.4.10");
        assert_eq!(on_1_4.len(), 2, "{on_1_4:?}");
        assert!(on_1_4[1].contains("consecutive5xxErrors"));
        let on_1_2 = messages("1.2.10");
        assert!(
            on_1_2
                .iter()
                .any(|message| message.contains("PILOT_ENABLE_LOCALITY_LOAD_BALANCING"))
        );
        assert!(
            messages("1.3.0")
                .iter()
                .all(|message| !message.contains("PILOT_ENABLE"))
        );
    }

    #[test]
    fn shares_are_unpredictable_only_on_1_8_and_1_9_with_a_multi_zone_remote_cluster() {
        let multi_zone = scenario_edited("multi-zone-weight-bug.yaml", |text| text);
        let from = multi_zone.phases[0].from.cluster.value.clone();
        let to = multi_zone.phases[0].to.service.value.clone();
        assert!(unpredictable_shares(&multi_zone, &from, &to, v("1.7.8")).is_none());
        assert!(unpredictable_shares(&multi_zone, &from, &to, v("1.8.6")).is_some());
        assert!(unpredictable_shares(&multi_zone, &from, &to, v("1.9.9")).is_some());
        assert!(unpredictable_shares(&multi_zone, &from, &to, v("1.10.0")).is_none());
        let one_zone = scenario_edited("multi-zone-weight-bug.yaml", |text| {
            text.lines()
                .filter(|line| !line.trim_start().starts_with("zones:"))
                .map(|line| format!("{line}\n"))
                .collect()
        });
        assert!(unpredictable_shares(&one_zone, &from, &to, v("1.8.6")).is_none());
    }
}
