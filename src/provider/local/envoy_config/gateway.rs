//! The SNI gateway: the 15443 AUTO_PASSTHROUGH listener and its SNI clusters.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::{
    CLUSTER_TYPE, CONNECT_TIMEOUT, GATEWAY_PORT, GatewaySpec, LISTENER_TYPE, TLS_INSPECTOR_TYPE, XdsResources,
    discovery_response, gateway_listener_name, lb_endpoint, socket_address, tcp_proxy_filter,
};

/// One `LocalityLbEndpoints` per priority, lowest first (one group at priority 0 without failover).
fn priority_groups(endpoints: Vec<(u32, Value)>) -> Vec<Value> {
    let mut groups: std::collections::BTreeMap<u32, Vec<Value>> = std::collections::BTreeMap::new();
    for (priority, endpoint) in endpoints {
        groups.entry(priority).or_default().push(endpoint);
    }
    if groups.is_empty() {
        groups.insert(0, Vec::new());
    }
    groups
        .into_iter()
        .map(|(priority, members)| {
            let mut group = json!({ "lb_endpoints": members });
            if priority > 0 {
                group["priority"] = json!(priority);
            }
            group
        })
        .collect()
}

/// Listener and clusters for one cluster's SNI gateway. The listener always exists (an unknown SNI
/// must be refused and counted, not meet a closed port); with no routes it has one filter chain
/// for an SNI no client sends, since Envoy rejects a listener without filter chains.
pub fn gateway_resources(spec: &GatewaySpec) -> XdsResources {
    let mut filter_chains = Vec::new();
    let mut clusters = Vec::new();
    for route in &spec.routes {
        let chain = json!({
            "filter_chain_match": { "server_names": [route.sni] },
            "filters": [tcp_proxy_filter(&route.sni, &route.sni)],
        });
        if route.duplicated_chain {
            filter_chains.push(chain.clone());
        }
        filter_chains.push(chain);
        let endpoints: Vec<(u32, Value)> = route
            .endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| {
                let priority = route
                    .failover
                    .as_ref()
                    .and_then(|failover| failover.priorities.get(index).copied())
                    .unwrap_or(0);
                (priority, lb_endpoint(*endpoint.ip(), endpoint.port(), 1))
            })
            .chain(
                route
                    .merged_gateways
                    .iter()
                    .filter(|(_, weight)| *weight > 0)
                    .map(|(gateway, weight)| {
                        let priority = route
                            .failover
                            .as_ref()
                            .map_or(0, |failover| failover.merged_gateways_priority);
                        (priority, lb_endpoint(*gateway.ip(), gateway.port(), *weight))
                    }),
            )
            .collect();
        let mut cluster = json!({
            "@type": CLUSTER_TYPE,
            "name": route.sni,
            "type": "STATIC",
            "connect_timeout": CONNECT_TIMEOUT,
            "lb_policy": spec.load_balancer.istio_name(),
            "load_assignment": {
                "cluster_name": route.sni,
                "endpoints": priority_groups(endpoints),
            },
        });
        if let Some(failover) = &route.failover {
            cluster["outlier_detection"] = super::sidecar::outlier_detection(&failover.outlier_detection);
            if !failover.outlier_detection.envoy_panic_threshold {
                cluster["common_lb_config"] = json!({ "healthy_panic_threshold": { "value": 0 } });
            }
        }
        clusters.push(cluster);
    }
    if filter_chains.is_empty() {
        const NO_ROUTE: &str = "meshfed-gateway-has-no-routes.invalid";
        filter_chains.push(json!({
            "filter_chain_match": { "server_names": [NO_ROUTE] },
            "filters": [tcp_proxy_filter(NO_ROUTE, NO_ROUTE)],
        }));
        clusters.push(json!({
            "@type": CLUSTER_TYPE,
            "name": NO_ROUTE,
            "type": "STATIC",
            "connect_timeout": CONNECT_TIMEOUT,
            "load_assignment": { "cluster_name": NO_ROUTE, "endpoints": [] },
        }));
    }
    let listener = json!({
        "@type": LISTENER_TYPE,
        "name": gateway_listener_name(),
        "address": socket_address(Ipv4Addr::UNSPECIFIED, GATEWAY_PORT),
        "listener_filters": [{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": { "@type": TLS_INSPECTOR_TYPE },
        }],
        "filter_chains": filter_chains,
    });
    XdsResources {
        listeners: discovery_response(LISTENER_TYPE, vec![listener]),
        clusters: discovery_response(CLUSTER_TYPE, clusters),
        listeners_dynamic: true,
    }
}
