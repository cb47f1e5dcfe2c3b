//! Fidelity tests for the emulation rules corrected against Istio's source (rows 2b, 5, 5b, 5c,
//! 5d, 6c and 7b of docs/fidelity.md): each checks the configuration the control plane generates
//! on both sides of a corrected version boundary, naming the Istio source it mirrors.

use serde_json::{Value, json};

use super::tests::{foo_bar_cluster, foo_sidecar_of, skew_edited};
use super::*;
use crate::plan::Plan;
use crate::provider::local::envoy_config::{outbound_cluster_name, sidecar_resources};
use crate::scenario::EndpointWeights;

const BAR: &str = "bar.ns2.svc.cluster.local";

/// `scenarios/skew.yaml` (bar: 1 pod in cluster1/region1, 3 in cluster2/region2) with every
/// cluster on `version`, gateway endpoints with their locality, and `federation_extra` lines added
/// under `federation:`.
fn skew_world(version: &str, federation_extra: &str, weights: EndpointWeights) -> (Topology, Plan) {
    let (version, extra) = (version.to_owned(), federation_extra.to_owned());
    skew_edited(
        move |text| {
            text.replace(
                "    podCidr:",
                &format!("    istioVersion: \"{version}\"\n    podCidr:"),
            )
            .replace("  locality: false\n", "  locality: true\n")
            .replace("  mtls: PERMISSIVE\n", &format!("  mtls: PERMISSIVE\n{extra}"))
        },
        weights,
    )
}

/// foo-0's (cluster1) outbound port for bar.
fn bar_port(version: &str, federation_extra: &str) -> OutboundPort {
    foo_sidecar_of(skew_world(version, federation_extra, EndpointWeights::ReadyPods))
        .outbound
        .into_iter()
        .find(|port| port.host == BAR)
        .unwrap()
}

/// foo-0's Envoy cluster for bar:80.
fn bar_cluster(version: &str, federation_extra: &str) -> Value {
    foo_bar_cluster(skew_world(version, federation_extra, EndpointWeights::ReadyPods))
}

/// foo-0's Envoy route action for bar:80.
fn bar_route(version: &str, federation_extra: &str) -> Value {
    let spec = foo_sidecar_of(skew_world(version, federation_extra, EndpointWeights::ReadyPods));
    let listeners = sidecar_resources(&spec).listeners;
    listeners["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|listener| &listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"])
        .find(|route_config| route_config["name"] == outbound_cluster_name(80, BAR))
        .unwrap()["virtual_hosts"][0]["routes"][0]["route"]
        .clone()
}

const FAILOVER: &str =
    "  outlierDetection: true\n  localityLbSetting:\n    failover:\n      - { from: region1, to: region2 }\n";

/// Row 5 (locality weights): `pilot/pkg/networking/core/v1alpha3/cluster.go@1.12.0`
/// `applyLoadBalancer` sets `locality_weighted_lb_config` whenever a locality setting exists, and
/// the mesh default (`pkg/config/mesh/mesh.go@1.12.0`) is one; 1.24 made it opt-in
/// (`pilot/pkg/networking/core/cluster_traffic_policy.go@1.24.0`, istio/istio#52898): there only
/// outlier detection plus a failover rule set it. 1.9-1.11 set it for a failover rule
/// (`cluster.go@1.11.0`), 1.1-1.8 for outlier detection (`cluster.go@1.8.0`). Each locality group
/// carries the sum of its endpoints' weights.
#[test]
fn fidelity_locality_weighted_lb_is_on_by_default_from_1_12_to_1_23() {
    let weighted = |version: &str, extra: &str| {
        bar_cluster(version, extra)["common_lb_config"]
            .get("locality_weighted_lb_config")
            .is_some()
    };
    assert!(!weighted("1.11.9", ""));
    assert!(weighted("1.12.0", ""));
    assert!(weighted("1.23.6", ""));
    assert!(!weighted("1.24.0", ""));
    assert!(!weighted("1.30.3", ""));
    assert!(!weighted("1.30.3", "  outlierDetection: true\n"));
    assert!(weighted("1.30.3", FAILOVER));
    assert!(weighted("1.11.9", FAILOVER));
    assert!(weighted("1.8.6", "  outlierDetection: true\n"));
    assert!(!weighted("1.8.6", ""));
    let groups = bar_cluster("1.23.6", "")["load_assignment"]["endpoints"].clone();
    let weights: Vec<&Value> = groups
        .as_array()
        .unwrap()
        .iter()
        .map(|group| &group["load_balancing_weight"])
        .collect();
    assert_eq!(
        weights,
        [&json!(1), &json!(3)],
        "local pod 1, cluster2's gateway 3: {groups}"
    );
}

/// Row 5c: default retries from 1.1 (`BuildDefaultHTTPOutboundRoute` with `retry.DefaultPolicy()`,
/// `pilot/pkg/networking/core/v1alpha3/route/route.go@1.1.0`); route `timeout: 0s` without a
/// VirtualService timeout (`Notimeout`, `pilot/pkg/networking/core/route/route.go@1.30.3`); the
/// circuit breaker's `max_retries` 1024 up to 1.3 (`pilot/pkg/networking/core/v1alpha3/cluster.go@1.3.0`)
/// and MaxUint32 with the other thresholds from 1.4 (`cluster.go@1.4.0`,
/// `pilot/pkg/networking/core/cluster_traffic_policy.go@1.30.3`); mesh `connectTimeout` 10 s
/// (`pkg/config/mesh/mesh.go@1.30.3`).
#[test]
fn fidelity_default_retries_route_timeout_circuit_breaker_and_connect_timeout_are_istios() {
    let oldest = bar_route("1.1.0", "");
    assert_eq!(oldest["retry_policy"]["num_retries"], 2, "{oldest}");
    assert_eq!(oldest["timeout"], "0s");
    assert_eq!(bar_route("1.30.3", "")["timeout"], "0s");
    assert_eq!(bar_route("1.30.3", "  timeout: 3s\n")["timeout"], "3s");
    let thresholds = |version: &str| bar_cluster(version, "")["circuit_breakers"]["thresholds"][0].clone();
    assert_eq!(thresholds("1.3.6"), json!({ "max_retries": 1024 }));
    let unlimited = u32::MAX;
    assert_eq!(
        thresholds("1.4.0"),
        json!({
            "max_retries": unlimited,
            "max_requests": unlimited,
            "max_connections": unlimited,
            "max_pending_requests": unlimited,
        })
    );
    assert_eq!(bar_cluster("1.30.3", "")["connect_timeout"], "10s");
}

/// The gateway's SNI route for bar in cluster2 (bar has pods there and in cluster1, so cluster2's
/// plan also has a same-host ServiceEntry).
fn cluster2_bar_route(version: &str, federation_extra: &str) -> SniRoute {
    let (topology, plan) = skew_world(version, federation_extra, EndpointWeights::Equal);
    gateway_spec(topology.cluster("cluster2").unwrap(), &plan.clusters[1])
        .routes
        .into_iter()
        .find(|route| route.sni.ends_with(BAR))
        .unwrap()
}

/// Row 2b: EDS merges the Kubernetes and ServiceEntry shards of one host from 1.1
/// (`pilot/pkg/proxy/envoy/v2/eds.go@1.1.0`); from the security fix in 1.8.6 and 1.9.5 up to 1.18
/// the gateway's mTLS endpoint filter keeps the ServiceEntry's endpoint only when an ISTIO_MUTUAL
/// DestinationRule applies (`EndpointsWithMTLSFilter`, `pilot/pkg/xds/endpoint_builder.go@1.8.6`,
/// `pilot/pkg/xds/mtls_checker.go@1.18.0`); 1.19 drops it (`pilot/pkg/xds/mtls_checker.go@1.19.0`).
#[test]
fn fidelity_gateway_bounce_needs_an_istio_mutual_rule_from_1_8_6_and_1_9_5() {
    let no_rule = "  destinationRule: false\n";
    let cases = [
        ("1.4.6", "", true),
        ("1.4.6", no_rule, true),
        ("1.8.5", no_rule, true),
        ("1.8.6", no_rule, false),
        ("1.8.6", "", true),
        ("1.9.4", no_rule, true),
        ("1.9.5", no_rule, false),
        ("1.18.0", no_rule, false),
        ("1.18.0", "", true),
        ("1.19.0", "", false),
    ];
    for (version, extra, bounces) in cases {
        let route = cluster2_bar_route(version, extra);
        assert_eq!(
            !route.merged_gateways.is_empty(),
            bounces,
            "{version} {extra:?}: {route:?}"
        );
    }
}

/// Row 7b and row 5b/5d: fields older versions ignore. `h2UpgradePolicy` from 1.6
/// (istio/istio#21809); the rule's `localityLbSetting` from 1.5
/// (`pilot/pkg/networking/core/v1alpha3/cluster.go@1.5.0`); `consecutive5xxErrors` from 1.5
/// (1.4 reads `consecutiveErrors` only, `cluster.go@1.4.0`); locality priorities by default from
/// 1.3 (`install/kubernetes/helm/istio/values.yaml@1.3.0`; 1.2 behind
/// `PILOT_ENABLE_LOCALITY_LOAD_BALANCING`, `pilot/pkg/proxy/envoy/v2/eds.go@1.2.0`); panic
/// threshold from `minHealthPercent` from 1.3 (`cluster.go@1.3.0`; `cluster.go@1.2.0` only above 0).
#[test]
fn fidelity_older_versions_ignore_the_fields_they_do_not_know() {
    let upgrade = "  h2UpgradePolicy: UPGRADE\n";
    assert!(!bar_port("1.5.10", upgrade).http2);
    assert!(bar_port("1.6.0", upgrade).http2);

    let (_, plan) = skew_world("1.4.6", FAILOVER, EndpointWeights::ReadyPods);
    assert!(failover_rules(&plan.clusters[0], BAR).is_empty());
    let (_, plan) = skew_world("1.5.0", FAILOVER, EndpointWeights::ReadyPods);
    assert_eq!(failover_rules(&plan.clusters[0], BAR).len(), 1);

    let five_xx = "  outlierDetection:\n    consecutive5xxErrors: 7\n";
    let detection = |version: &str| bar_port(version, five_xx).outlier_detection.unwrap();
    assert_eq!(detection("1.4.6").consecutive_5xx, None);
    assert_eq!(detection("1.5.0").consecutive_5xx, Some(7));
    assert!(
        bar_cluster("1.4.6", five_xx)["outlier_detection"]
            .get("consecutive_5xx")
            .is_none()
    );

    let outlier = "  outlierDetection: true\n";
    let priorities = |version: &str| -> Vec<u32> {
        bar_port(version, outlier)
            .endpoints
            .iter()
            .map(|endpoint| endpoint.priority)
            .collect()
    };
    assert_eq!(priorities("1.2.2"), [0, 0]);
    assert_eq!(priorities("1.3.0"), [0, 1]);
    let panic_threshold =
        |version: &str| bar_cluster(version, outlier)["common_lb_config"]["healthy_panic_threshold"].clone();
    assert_eq!(panic_threshold("1.2.2"), Value::Null);
    assert_eq!(panic_threshold("1.3.0"), json!({ "value": 0 }));
}

/// Row 6c: cross-network EDS drops remote endpoints whose tlsMode is not `istio` ("dont allow
/// cross-network endpoints for uninjected traffic", `pilot/pkg/xds/ep_filters.go@1.8.0`), so a
/// remote cluster whose pods have no sidecar contributes no gateway endpoint.
#[test]
fn fidelity_cross_network_eds_drops_remote_pods_without_a_sidecar() {
    let world = |bar_sidecar: bool| {
        skew_edited(
            move |text| {
                let text = text
                    .replace("  mode: serviceentry", "  mode: endpoint-discovery")
                    .replace("    podCidr:", "    istioVersion: \"1.30.3\"\n    podCidr:");
                if bar_sidecar {
                    text
                } else {
                    text.replace("    namespace: ns2\n", "    namespace: ns2\n    sidecar: false\n")
                }
            },
            EndpointWeights::ReadyPods,
        )
    };
    let gateway_weights = |bar_sidecar: bool| -> Vec<u32> {
        foo_sidecar_of(world(bar_sidecar))
            .outbound
            .into_iter()
            .find(|port| port.host == BAR)
            .unwrap()
            .endpoints
            .iter()
            .filter(|endpoint| endpoint.port == crate::inventory::GATEWAY_PORT)
            .map(|endpoint| endpoint.weight)
            .collect()
    };
    assert_eq!(gateway_weights(true), [3]);
    assert_eq!(gateway_weights(false), Vec::<u32>::new());
}

/// Row 5 at gateways: istiod applies locality failover for any proxy
/// (`pilot/pkg/xds/endpoints/endpoint_builder.go@1.30.3`), so with outlier detection cluster2's
/// gateway (zone2a) puts its zone2a pods first and its zone2b pod second; without outlier
/// detection, or on 1.2 (no locality load balancing by default), the SNI cluster stays flat.
#[test]
fn fidelity_gateway_clusters_fail_over_by_locality_with_outlier_detection() {
    let route = |version: &str, extra: &str| {
        let version = version.to_owned();
        let extra = extra.to_owned();
        let (topology, plan) = skew_edited(
            move |text| {
                text.replace(
                    "    podCidr:",
                    &format!("    istioVersion: \"{version}\"\n    podCidr:"),
                )
                .replace("    zone: zone2a\n", "    zone: zone2a\n    zones: [zone2a, zone2b]\n")
                .replace("  mtls: PERMISSIVE\n", &format!("  mtls: PERMISSIVE\n{extra}"))
            },
            EndpointWeights::ReadyPods,
        );
        gateway_spec(topology.cluster("cluster2").unwrap(), &plan.clusters[1])
            .routes
            .into_iter()
            .find(|route| route.sni.ends_with(BAR))
            .unwrap()
    };
    let outlier = "  outlierDetection: true\n";
    let failover = route("1.30.3", outlier).failover.expect("outlier detection: failover");
    assert_eq!(
        failover.priorities,
        [0, 1, 0],
        "bar-0, bar-2 in zone2a; bar-1 in zone2b"
    );
    assert_eq!(failover.outlier_detection.consecutive_5xx, Some(5));
    assert!(route("1.30.3", "").failover.is_none());
    assert!(route("1.2.2", outlier).failover.is_none());
    let resources = crate::provider::local::envoy_config::gateway_resources(&GatewaySpec {
        node_id: "gw".into(),
        routes: vec![route("1.30.3", outlier)],
        load_balancer: LoadBalancer::RoundRobin,
    });
    let cluster = &resources.clusters["resources"][0];
    let groups = cluster["load_assignment"]["endpoints"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{cluster}");
    assert_eq!(groups[0]["lb_endpoints"].as_array().unwrap().len(), 2);
    assert_eq!(groups[1]["priority"], 1);
    assert_eq!(cluster["outlier_detection"]["consecutive_5xx"], 5);
    assert_eq!(cluster["common_lb_config"]["healthy_panic_threshold"]["value"], 0);
}
