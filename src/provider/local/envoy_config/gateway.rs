//! The SNI gateway: the 15443 AUTO_PASSTHROUGH listener and its SNI clusters.

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::{
    CLUSTER_TYPE, CONNECT_TIMEOUT, GATEWAY_PORT, GatewaySpec, LISTENER_TYPE, TLS_INSPECTOR_TYPE, XdsResources,
    discovery_response, gateway_listener_name, lb_endpoint, socket_address, tcp_proxy_filter,
};

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
        let endpoints: Vec<Value> = route
            .endpoints
            .iter()
            .map(|endpoint| lb_endpoint(*endpoint.ip(), endpoint.port(), 1))
            .chain(
                route
                    .merged_gateways
                    .iter()
                    .filter(|(_, weight)| *weight > 0)
                    .map(|(gateway, weight)| lb_endpoint(*gateway.ip(), gateway.port(), *weight)),
            )
            .collect();
        clusters.push(json!({
            "@type": CLUSTER_TYPE,
            "name": route.sni,
            "type": "STATIC",
            "connect_timeout": CONNECT_TIMEOUT,
            "lb_policy": spec.load_balancer.istio_name(),
            "load_assignment": {
                "cluster_name": route.sni,
                "endpoints": [{ "lb_endpoints": endpoints }],
            },
        }));
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
