//! Which kinds an API server serves, and at which resource (plural, scope), learned from its
//! discovery endpoints (`/api`, `/apis`, `/apis/<group>/<version>`) through kube-rs's
//! [`Discovery`], so any manifest applies (MetalLB's RBAC, DaemonSet, webhooks and CRDs as much as
//! meshfed's own plan) and a kind the server does not serve is refused by name.
//!
//! Only the groups of the objects at hand are asked for (kube-rs's `filter`): one broken
//! aggregated API elsewhere on the server (a `metrics.k8s.io` answering 503) cannot fail an
//! apply. A CRD's kind is served only once the CRD is `Established`, and discovery may notice it a
//! little later still (kube-runtime's `is_crd_established` says so): [`ServedKinds::discover`] is
//! called again after the wait, see [`super::apply`].

use std::collections::BTreeSet;

use kube::api::ApiResource;
use kube::api::GroupVersionKind;
use kube::discovery::{Discovery, Scope as DiscoveredScope};
use serde_json::Value;

use super::resources::Scope;

/// The kinds a server serves in the groups asked about.
pub struct ServedKinds {
    discovery: Discovery,
}

/// The group of an `apiVersion` (`""` for the core `v1`).
pub fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(group, _)| group)
}

impl ServedKinds {
    /// Asks `client`'s server which kinds it serves in the groups of `objects`' `apiVersion`s.
    pub async fn discover(client: &kube::Client, objects: &[Value]) -> Result<ServedKinds, kube::Error> {
        let groups: BTreeSet<&str> = objects
            .iter()
            .filter_map(|object| object.get("apiVersion").and_then(Value::as_str))
            .map(group_of)
            .collect();
        let groups: Vec<&str> = groups.into_iter().collect();
        let discovery = Discovery::new(client.clone()).filter(&groups).run().await?;
        Ok(ServedKinds { discovery })
    }

    /// The resource and scope of `kind` in `api_version`, if the server serves it.
    pub fn resource(&self, api_version: &str, kind: &str) -> Option<(ApiResource, Scope)> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let (resource, capabilities) = self
            .discovery
            .resolve_gvk(&GroupVersionKind::gvk(group, version, kind))?;
        let scope = match capabilities.scope {
            DiscoveredScope::Namespaced => Scope::Namespaced,
            DiscoveredScope::Cluster => Scope::Cluster,
        };
        Some((resource, scope))
    }
}

/// The kinds a CustomResourceDefinition among `objects` will serve once established:
/// `(apiVersion, kind, CRD name)` for each served version.
pub fn kinds_defined_by(objects: &[Value]) -> Vec<(String, String, String)> {
    objects
        .iter()
        .filter(|object| object["kind"] == "CustomResourceDefinition")
        .flat_map(|crd| {
            let name = crd
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let group = crd.pointer("/spec/group").and_then(Value::as_str).unwrap_or_default();
            let kind = crd
                .pointer("/spec/names/kind")
                .and_then(Value::as_str)
                .unwrap_or_default();
            crd.pointer("/spec/versions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|version| version["served"] != Value::Bool(false))
                .filter_map(|version| version["name"].as_str())
                .map(move |version| (format!("{group}/{version}"), kind.to_owned(), name.to_owned()))
                .collect::<Vec<_>>()
        })
        .collect()
}
