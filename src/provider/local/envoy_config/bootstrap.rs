//! The Envoy bootstrap: node, admin socket, static listeners (sidecars) or listeners from LDS
//! (gateways), clusters from CDS and secrets from SDS, all over one ADS stream to meshfed.

use std::path::Path;

use serde_json::{Value, json};

use super::XdsResources;

/// The bootstrap cluster through which Envoy reaches meshfed's ADS server.
pub const ADS_CLUSTER: &str = "xds-grpc";

/// Envoy bootstrap: node id; the listeners of `resources` as static resources (or, for a proxy
/// whose listeners are dynamic, LDS); CDS and SDS from ADS, one gRPC stream (HTTP/2) to meshfed's
/// server on the unix socket `ads_socket`, as istio-agent's bootstrap points Envoy at istiod
/// (cluster `xds-grpc`, `ads_config` GRPC, V3); admin API on the unix socket `admin_socket` (keep
/// both paths under 108 bytes).
///
/// Listeners of sidecars are static because nothing a run changes lives in them (services, ports
/// and pods are fixed; weights, the connection policy and certificates are cluster settings and
/// secrets). Nothing is read from a watched file, so the Envoy holds no inotify instance for its
/// configuration (a user has 128 by default, `fs.inotify.max_user_instances`).
pub fn bootstrap(node_id: &str, ads_socket: &Path, admin_socket: &Path, resources: &XdsResources) -> Value {
    let mut bootstrap = json!({
        "node": { "id": node_id, "cluster": "meshfed" },
        "static_resources": {
            "listeners": untyped_resources(&resources.listeners),
            "clusters": [ads_cluster(ads_socket)],
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": "GRPC",
                "transport_api_version": "V3",
                "grpc_services": [{ "envoy_grpc": { "cluster_name": ADS_CLUSTER } }],
                "set_node_on_first_message_only": true,
            },
            "cds_config": { "resource_api_version": "V3", "ads": {} },
        },
        "admin": {
            "address": { "pipe": { "path": admin_socket } },
        },
    });
    bootstrap["stats_config"] = super::stats::stats_config();
    if resources.listeners_dynamic {
        bootstrap["static_resources"]["listeners"] = json!([]);
        bootstrap["dynamic_resources"]["lds_config"] = json!({ "resource_api_version": "V3", "ads": {} });
    }
    bootstrap
}

/// The static cluster of meshfed's ADS server: HTTP/2 (gRPC) to a unix socket, which every pod's
/// network namespace reaches through the file system.
fn ads_cluster(ads_socket: &Path) -> Value {
    json!({
        "name": ADS_CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": ADS_CLUSTER,
            "endpoints": [{ "lb_endpoints": [{
                "endpoint": { "address": { "pipe": { "path": ads_socket } } },
            }]}],
        },
        "typed_extension_protocol_options": {
            super::HTTP_PROTOCOL_OPTIONS_KEY: {
                "@type": super::HTTP_PROTOCOL_OPTIONS_TYPE,
                "explicit_http_config": { "http2_protocol_options": {} },
            },
        },
    })
}

/// The resources of a DiscoveryResponse without their `@type`, as bootstrap static resources
/// want them.
fn untyped_resources(response: &Value) -> Vec<Value> {
    response["resources"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| {
                    let mut item = item.clone();
                    if let Some(object) = item.as_object_mut() {
                        object.remove("@type");
                    }
                    item
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A bootstrap with the listeners, clusters and `secrets` (SDS responses, [`super::sds_secret`])
/// inlined as static resources, for `envoy --mode validate`, which connects to no server (and
/// crashes on an `ads_config`: Envoy 1.40.0, SIGSEGV while loading clusters): each TLS context
/// names its secret without an `sds_config`, which makes Envoy look it up among the static ones.
pub fn static_bootstrap(node_id: &str, admin_socket: &Path, resources: &XdsResources, secrets: &[Value]) -> Value {
    let mut static_resources = json!({
        "listeners": untyped_resources(&resources.listeners),
        "clusters": untyped_resources(&resources.clusters),
        "secrets": secrets.iter().flat_map(untyped_resources).collect::<Vec<_>>(),
    });
    drop_sds_configs(&mut static_resources);
    let mut bootstrap = json!({
        "node": { "id": node_id, "cluster": "meshfed" },
        "static_resources": static_resources,
        "admin": { "address": { "pipe": { "path": admin_socket } } },
    });
    bootstrap["stats_config"] = super::stats::stats_config();
    bootstrap
}

/// Removes every `sds_config` below `value`.
fn drop_sds_configs(value: &mut Value) {
    match value {
        Value::Object(object) => {
            object.remove("sds_config");
            object.values_mut().for_each(drop_sds_configs);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_sds_configs),
        _ => {}
    }
}
