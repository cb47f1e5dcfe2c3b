//! The Envoy bootstrap: node, admin socket, static listeners (sidecars) or a watched LDS file
//! (gateways), and the watched CDS file.

use std::path::Path;

use serde_json::{Value, json};

use super::XdsResources;

/// Envoy bootstrap: node id; the listeners of `resources` as static resources; CDS from
/// `cds.json` in `xds_dir` (watched, so an atomic rename into the directory reconfigures the
/// running Envoy); admin API on the unix socket `admin_socket` (keep its path under 108 bytes).
///
/// Listeners are static because nothing a run changes lives in them (services, ports and pods are
/// fixed; weights, the connection policy and certificates are cluster settings), and every watched
/// xDS file costs its Envoy one inotify instance, of which a user has 128 by default
/// (`fs.inotify.max_user_instances`): one per Envoy instead of two doubles the pods a world can have.
pub fn bootstrap(node_id: &str, xds_dir: &Path, admin_socket: &Path, resources: &XdsResources) -> Value {
    let mut bootstrap = json!({
        "node": { "id": node_id, "cluster": "meshfed" },
        "static_resources": {
            "listeners": untyped_resources(&resources.listeners),
        },
        "dynamic_resources": {
            "cds_config": {
                "resource_api_version": "V3",
                "path_config_source": {
                    "path": xds_dir.join(CDS_FILE),
                    "watched_directory": { "path": xds_dir },
                },
            },
        },
        "admin": {
            "address": { "pipe": { "path": admin_socket } },
        },
    });
    bootstrap["stats_config"] = super::stats::stats_config();
    if resources.listeners_dynamic {
        bootstrap["static_resources"]["listeners"] = json!([]);
        bootstrap["dynamic_resources"]["lds_config"] = json!({
            "resource_api_version": "V3",
            "path_config_source": {
                "path": xds_dir.join(LDS_FILE),
                "watched_directory": { "path": xds_dir },
            },
        });
    }
    bootstrap
}

/// File in the xDS directory that holds the listeners of a proxy whose listeners are dynamic.
pub const LDS_FILE: &str = "lds.json";

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

/// File in the xDS directory that holds the clusters.
pub const CDS_FILE: &str = "cds.json";

/// A bootstrap with the listeners and clusters inlined as static resources (for
/// `envoy --mode validate`, which does not read file-based xDS).
pub fn static_bootstrap(node_id: &str, admin_socket: &Path, resources: &XdsResources) -> Value {
    let mut bootstrap = json!({
        "node": { "id": node_id, "cluster": "meshfed" },
        "static_resources": {
            "listeners": untyped_resources(&resources.listeners),
            "clusters": untyped_resources(&resources.clusters),
        },
        "admin": { "address": { "pipe": { "path": admin_socket } } },
    });
    bootstrap["stats_config"] = super::stats::stats_config();
    bootstrap
}
