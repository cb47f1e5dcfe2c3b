//! A pod's sidecar: inbound listeners (STRICT, PERMISSIVE or no sidecar) with their app clusters,
//! and outbound listeners with their `outbound|P||host` clusters (mTLS origination, ALPN, HTTP
//! version, load balancing, outlier detection).

use std::net::Ipv4Addr;

use serde_json::{Value, json};

use super::*;

/// Listeners and clusters for one pod's sidecar.
pub fn sidecar_resources(spec: &SidecarSpec) -> XdsResources {
    let mut listeners = Vec::new();
    let mut clusters = Vec::new();
    for inbound in &spec.inbound {
        listeners.push(inbound_listener(spec, inbound));
        clusters.push(inbound_cluster(inbound));
    }
    for outbound in &spec.outbound {
        listeners.push(outbound_listener(outbound));
        clusters.push(outbound_cluster(&spec.certs, outbound));
    }
    XdsResources {
        listeners: discovery_response(LISTENER_TYPE, listeners),
        clusters: discovery_response(CLUSTER_TYPE, clusters),
        listeners_dynamic: false,
    }
}

/// An HTTP connection manager with one route configuration named `route_name` holding
/// `virtual_host`, and the router filter.
fn http_connection_manager(stat_prefix: &str, route_name: &str, virtual_host: Value) -> Value {
    json!({
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": stat_prefix,
            "codec_type": "AUTO",
            "route_config": {
                "name": route_name,
                // The listeners are static and load before CDS delivers the clusters.
                "validate_clusters": false,
                "virtual_hosts": [virtual_host],
            },
            "http_filters": [router_filter()],
        },
    })
}

fn inbound_http_filter(stat_prefix: &str, cluster: &str) -> Value {
    let mut filter = http_connection_manager(
        stat_prefix,
        cluster,
        json!({
            "name": "inbound",
            "domains": ["*"],
            "routes": [{
                "match": { "prefix": "/" },
                "route": { "cluster": cluster },
            }],
            "request_headers_to_add": [{
                "header": {
                    "key": DOWNSTREAM_PEER_HEADER,
                    // DIRECT: the connection's peer, never an address a caller
                    // put into x-forwarded-for.
                    "value": "%DOWNSTREAM_DIRECT_REMOTE_ADDRESS%",
                },
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
            }],
        }),
    );
    // Istio's inbound form (`pilot/pkg/networking/core/v1alpha3/listener_inbound.go`):
    // By=<server id>;Hash=…;Subject="…";URI=<client id>[;DNS=…].
    filter["typed_config"]["forward_client_cert_details"] = json!("APPEND_FORWARD");
    filter["typed_config"]["set_current_client_cert_details"] = json!({ "subject": true, "uri": true, "dns": true });
    filter
}

/// The mTLS filter chain of an inbound port (without its match).
fn inbound_mtls_chain(spec: &SidecarSpec, inbound: &InboundPort, stat_prefix: &str, cluster: &str) -> Value {
    let (filter, alpn): (Value, &[&str]) = if inbound.protocol.is_http() {
        (inbound_http_filter(stat_prefix, cluster), &INBOUND_HTTP_ALPN)
    } else {
        (inbound_tcp_proxy_filter(stat_prefix, cluster), &[])
    };
    let mut common_tls_context = json!({
        "tls_certificate_sds_secret_configs": [tls_certificate_sds(&spec.certs)],
        "combined_validation_context": root_ca_sds(json!({})),
    });
    if !alpn.is_empty() {
        common_tls_context["alpn_protocols"] = json!(alpn);
    }
    json!({
        "filters": [filter],
        "transport_socket": {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": DOWNSTREAM_TLS_TYPE,
                "require_client_certificate": true,
                "common_tls_context": common_tls_context,
            },
        },
    })
}

/// The plain-text filter chain of an inbound port (without its match).
fn inbound_plaintext_chain(inbound: &InboundPort, stat_prefix: &str, cluster: &str) -> Value {
    let filter = if inbound.protocol.is_http() {
        inbound_http_filter(stat_prefix, cluster)
    } else {
        tcp_proxy_with_peer_identity(stat_prefix, cluster)
    };
    json!({ "filters": [filter] })
}

fn inbound_listener(spec: &SidecarSpec, inbound: &InboundPort) -> Value {
    let cluster = inbound_cluster_name(inbound.port);
    let stat_prefix = format!("inbound_{}", inbound.port);
    let mut listener = json!({
        "@type": LISTENER_TYPE,
        "name": inbound_listener_name(spec.pod_ip, inbound.port),
        "address": socket_address(spec.pod_ip, inbound.port),
    });
    match &inbound.mtls {
        InboundMtls::Strict => {
            listener["filter_chains"] = json!([inbound_mtls_chain(spec, inbound, &stat_prefix, &cluster)]);
        }
        InboundMtls::Permissive { istio_alpn } => {
            let mut mtls = inbound_mtls_chain(spec, inbound, &stat_prefix, &cluster);
            mtls["filter_chain_match"] = json!({ "transport_protocol": "tls", "application_protocols": istio_alpn });
            let mut plain = inbound_plaintext_chain(inbound, &stat_prefix, &cluster);
            plain["filter_chain_match"] = json!({ "transport_protocol": "raw_buffer" });
            listener["listener_filters"] = json!([{
                "name": "envoy.filters.listener.tls_inspector",
                "typed_config": { "@type": TLS_INSPECTOR_TYPE },
            }]);
            listener["filter_chains"] = json!([mtls, plain]);
        }
        InboundMtls::Disabled => {
            listener["filter_chains"] = json!([inbound_plaintext_chain(inbound, &stat_prefix, &cluster)]);
        }
    }
    listener
}

fn inbound_cluster(inbound: &InboundPort) -> Value {
    let name = inbound_cluster_name(inbound.port);
    let mut cluster = json!({
        "@type": CLUSTER_TYPE,
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [lb_endpoint(Ipv4Addr::LOCALHOST, inbound.port, 1)] }],
        },
    });
    if !inbound.protocol.is_http() {
        // The PROXY v2 header itself (addresses + TLV) is built by the inbound tcp_proxy, which
        // sees the downstream connection; the transport socket only writes it, and forwards only
        // TLV types listed here.
        cluster["transport_socket"] = json!({
            "name": "envoy.transport_sockets.upstream_proxy_protocol",
            "typed_config": {
                "@type": PROXY_PROTOCOL_TYPE,
                "config": {
                    "version": "V2",
                    "pass_through_tlvs": {
                        "match_type": "INCLUDE",
                        "tlv_type": [PEER_IDENTITY_TLV_TYPE],
                    },
                },
                "transport_socket": {
                    "name": "envoy.transport_sockets.raw_buffer",
                    "typed_config": { "@type": RAW_BUFFER_TYPE },
                },
            },
        });
    }
    cluster
}

fn outbound_listener(outbound: &OutboundPort) -> Value {
    let cluster = outbound_cluster_name(outbound.port, &outbound.host);
    let stat_prefix = outbound_listener_name(outbound.cluster_ip, outbound.port);
    let filter = if outbound.protocol.is_http() && !outbound.l4_only {
        http_connection_manager(
            &stat_prefix,
            &cluster,
            json!({
                "name": cluster,
                "domains": ["*"],
                "routes": [{
                    "match": { "prefix": "/" },
                    "route": outbound_route_action(outbound, &cluster),
                }],
            }),
        )
    } else {
        tcp_proxy_filter(&stat_prefix, &cluster)
    };
    json!({
        "@type": LISTENER_TYPE,
        "name": stat_prefix,
        "address": socket_address(outbound.cluster_ip, outbound.port),
        "filter_chains": [{ "filters": [filter] }],
    })
}

/// Metadata key Envoy's `transport_socket_matches` compare endpoint metadata under.
const TRANSPORT_SOCKET_MATCH_KEY: &str = "envoy.transport_socket_match";

fn upstream_mtls_socket(certs: &CertPaths, outbound: &OutboundPort) -> Value {
    let mut validation_context = json!({});
    if !outbound.server_identities.is_empty() {
        let matchers: Vec<Value> = outbound
            .server_identities
            .iter()
            .map(|identity| json!({ "san_type": "URI", "matcher": { "exact": identity } }))
            .collect();
        validation_context["match_typed_subject_alt_names"] = json!(matchers);
    }
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": UPSTREAM_TLS_TYPE,
            "sni": outbound_sni(outbound.port, &outbound.host),
            "common_tls_context": {
                "tls_certificate_sds_secret_configs": [tls_certificate_sds(certs)],
                "alpn_protocols": outbound.alpn,
                "combined_validation_context": root_ca_sds(validation_context),
            },
        },
    })
}

fn outbound_cluster(certs: &CertPaths, outbound: &OutboundPort) -> Value {
    let name = outbound_cluster_name(outbound.port, &outbound.host);
    let mut cluster = json!({
        "@type": CLUSTER_TYPE,
        "name": name,
        "type": "STATIC",
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": outbound.load_balancer.istio_name(),
        "load_assignment": {
            "cluster_name": name,
            "endpoints": locality_lb_endpoints(&outbound.endpoints, outbound.tls == UpstreamTls::Auto),
        },
    });
    match outbound.tls {
        UpstreamTls::IstioMutual => cluster["transport_socket"] = upstream_mtls_socket(certs, outbound),
        UpstreamTls::Auto => {
            // Istio's auto-mTLS: mTLS where the endpoint is labelled tlsMode=istio, plain text
            // elsewhere (`pilot/pkg/networking/core/v1alpha3/cluster.go@1.6.0`).
            cluster["transport_socket_matches"] = json!([
                {
                    "name": "tlsMode-istio",
                    "match": { "tlsMode": "istio" },
                    "transport_socket": upstream_mtls_socket(certs, outbound),
                },
                {
                    "name": "tlsMode-disabled",
                    "match": {},
                    "transport_socket": {
                        "name": "envoy.transport_sockets.raw_buffer",
                        "typed_config": { "@type": RAW_BUFFER_TYPE },
                    },
                },
            ]);
        }
        UpstreamTls::Plaintext => {}
    }
    let mut common_lb_config = serde_json::Map::new();
    if let Some(detection) = &outbound.outlier_detection {
        cluster["outlier_detection"] = outlier_detection(detection);
        if !detection.envoy_panic_threshold {
            // Istio's default (`minHealthPercent` 0): fail over as soon as endpoints of a
            // priority are ejected, never spread back over ejected ones.
            common_lb_config.insert("healthy_panic_threshold".into(), json!({ "value": 0 }));
        }
    }
    if outbound.locality_weighted {
        common_lb_config.insert("locality_weighted_lb_config".into(), json!({}));
    }
    if !common_lb_config.is_empty() {
        cluster["common_lb_config"] = Value::Object(common_lb_config);
    }
    cluster["circuit_breakers"] = circuit_breakers(outbound.circuit_breaker);
    if outbound.protocol.is_http() && !outbound.l4_only {
        let mut options = json!({ "@type": HTTP_PROTOCOL_OPTIONS_TYPE });
        options["explicit_http_config"] = if outbound.http2 {
            json!({ "http2_protocol_options": {} })
        } else {
            json!({ "http_protocol_options": {} })
        };
        if let Some(max) = outbound.max_requests_per_connection {
            options["common_http_protocol_options"] = json!({ "max_requests_per_connection": max });
        }
        cluster["typed_extension_protocol_options"] = json!({ HTTP_PROTOCOL_OPTIONS_KEY: options });
    }
    cluster
}

/// The cluster's `circuit_breakers` as istiod writes them (default priority only).
fn circuit_breakers(breaker: CircuitBreaker) -> Value {
    let mut thresholds = json!({ "max_retries": breaker.max_retries });
    if let Some(max) = breaker.max_requests {
        thresholds["max_requests"] = json!(max);
        thresholds["max_connections"] = json!(max);
        thresholds["max_pending_requests"] = json!(max);
    }
    json!({ "thresholds": [thresholds] })
}

/// Groups endpoints by (locality, priority) in order of first appearance, as Envoy wants one
/// `LocalityLbEndpoints` per locality and priority, each weighted by the sum of its endpoints'
/// weights as istiod writes it (Envoy reads it only with `locality_weighted_lb_config`).
/// Weight-0 endpoints are dropped.
fn locality_lb_endpoints(endpoints: &[LbEndpoint], tls_mode_metadata: bool) -> Vec<Value> {
    let mut groups: Vec<(Option<&Locality>, u32, Vec<Value>)> = Vec::new();
    let mut group_weights: Vec<u32> = Vec::new();
    for endpoint in endpoints.iter().filter(|endpoint| endpoint.weight > 0) {
        let mut entry = lb_endpoint(endpoint.address, endpoint.port, endpoint.weight);
        if tls_mode_metadata && endpoint.istio_mtls {
            entry["metadata"] = json!({ "filter_metadata": { TRANSPORT_SOCKET_MATCH_KEY: { "tlsMode": "istio" } } });
        }
        let key = (endpoint.locality.as_ref(), endpoint.priority);
        match groups
            .iter_mut()
            .position(|(locality, priority, _)| (*locality, *priority) == key)
        {
            Some(index) => {
                groups[index].2.push(entry);
                group_weights[index] = group_weights[index].saturating_add(endpoint.weight);
            }
            None => {
                groups.push((key.0, key.1, vec![entry]));
                group_weights.push(endpoint.weight);
            }
        }
    }
    groups
        .into_iter()
        .zip(group_weights)
        .map(|((locality, priority, members), weight)| {
            let mut group = json!({ "lb_endpoints": members, "load_balancing_weight": weight });
            if let Some(locality) = locality {
                group["locality"] = json!({ "region": locality.region, "zone": locality.zone });
            }
            if priority > 0 {
                group["priority"] = json!(priority);
            }
            group
        })
        .collect()
}

/// The server sidecar's tcp_proxy for a TCP port: it connects to the app only after the client's
/// TLS handshake (so the peer certificate is known) and hands the app a PROXY v2 header whose
/// source is the downstream peer address and whose TLV [`PEER_IDENTITY_TLV_TYPE`] is the peer's
/// URI SAN. (A format-string TLV on the transport socket itself is evaluated against the upstream
/// connection and yields `-`: measured with Envoy 1.40.0.)
fn inbound_tcp_proxy_filter(stat_prefix: &str, cluster: &str) -> Value {
    let mut filter = tcp_proxy_with_peer_identity(stat_prefix, cluster);
    filter["typed_config"]["upstream_connect_mode"] = json!("ON_DOWNSTREAM_TLS_HANDSHAKE");
    filter["typed_config"]["max_early_data_bytes"] = json!(0);
    filter
}

/// A tcp_proxy to `cluster` whose PROXY v2 header carries the downstream peer's URI SAN as TLV
/// [`PEER_IDENTITY_TLV_TYPE`].
fn tcp_proxy_with_peer_identity(stat_prefix: &str, cluster: &str) -> Value {
    json!({
        "name": "envoy.filters.network.tcp_proxy",
        "typed_config": {
            "@type": TCP_PROXY_TYPE,
            "stat_prefix": stat_prefix,
            "cluster": cluster,
            "proxy_protocol_tlvs": [{
                "type": PEER_IDENTITY_TLV_TYPE,
                "format_string": {
                    "text_format_source": { "inline_string": "%DOWNSTREAM_PEER_URI_SAN%" },
                },
            }],
        },
    })
}

/// The outbound route's action: the cluster, Istio's retry policy and the timeout.
fn outbound_route_action(outbound: &OutboundPort, cluster: &str) -> Value {
    let mut action = json!({ "cluster": cluster });
    if let Some(policy) = &outbound.retry_policy {
        let mut retry = json!({
            "retry_on": policy.retry_on.join(","),
            "num_retries": policy.num_retries,
            // Istio: retries prefer hosts not tried yet, choosing up to 5 times.
            "retry_host_predicate": [{
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": { "@type": PREVIOUS_HOSTS_TYPE },
            }],
            "host_selection_retry_max_attempts": 5,
        });
        if !policy.retriable_status_codes.is_empty() {
            retry["retriable_status_codes"] = json!(policy.retriable_status_codes);
        }
        if let Some(millis) = policy.per_try_timeout_millis {
            retry["per_try_timeout"] = json!(proto_duration(millis));
        }
        action["retry_policy"] = retry;
    }
    // Without a VirtualService timeout Istio writes `0s` (no timeout: `Notimeout` in
    // `pilot/pkg/networking/core/route/route.go@1.30.3`), not Envoy's 15 s route default.
    action["timeout"] = json!(proto_duration(outbound.timeout_millis.unwrap_or(0)));
    action
}

const PREVIOUS_HOSTS_TYPE: &str =
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate";

/// Envoy `outlier_detection` as Istio's `applyOutlierDetection` writes it: success-rate ejection
/// off, each consecutive-error check enforced at 100 % when its count is above 0 (off at 0), and
/// unset fields left to Envoy's defaults.
pub(super) fn outlier_detection(detection: &OutlierDetection) -> Value {
    let mut out = json!({ "enforcing_success_rate": 0 });
    if let Some(count) = detection.consecutive_5xx {
        out["consecutive_5xx"] = json!(count);
        out["enforcing_consecutive_5xx"] = json!(if count > 0 { 100 } else { 0 });
    }
    if let Some(count) = detection.consecutive_gateway_failure {
        out["consecutive_gateway_failure"] = json!(count);
        out["enforcing_consecutive_gateway_failure"] = json!(if count > 0 { 100 } else { 0 });
    }
    if let Some(millis) = detection.interval_millis {
        out["interval"] = json!(proto_duration(millis));
    }
    if let Some(millis) = detection.base_ejection_millis {
        out["base_ejection_time"] = json!(proto_duration(millis));
    }
    if let Some(percent) = detection.max_ejection_percent.filter(|percent| *percent > 0) {
        out["max_ejection_percent"] = json!(percent);
    }
    out
}

/// A protobuf JSON duration: `10s`, `0.250s`.
fn proto_duration(millis: u64) -> String {
    if millis.is_multiple_of(1_000) {
        format!("{}s", millis / 1_000)
    } else {
        format!("{}.{:03}s", millis / 1_000, millis % 1_000)
    }
}
