//! Which API resource each kind meshfed writes lives at (plural, scope), and how an object is
//! named in messages (`ServiceEntry ns2/bar-cluster2`).

use std::fmt;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::Value;

/// A kind meshfed does not know the resource of.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The object has no `apiVersion`/`kind`, or a kind meshfed never writes.
    #[error("meshfed does not write {api_version} {kind} objects (object {name})")]
    UnknownKind {
        /// `apiVersion` of the object.
        api_version: String,
        /// `kind` of the object.
        kind: String,
        /// Its name.
        name: String,
    },
    /// The object is not a JSON object with metadata.name.
    #[error("an object without metadata.name cannot be applied: {0}")]
    Unnamed(String),
}

/// Whether a resource lives in a namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Namespaced (Service, ServiceEntry, ...).
    Namespaced,
    /// Cluster-wide (Namespace, MeshPolicy, CRDs).
    Cluster,
}

/// The plural and scope of a kind meshfed writes; the group and version come from the object.
fn plural_and_scope(kind: &str) -> Option<(&'static str, Scope)> {
    Some(match kind {
        "Namespace" => ("namespaces", Scope::Cluster),
        "Service" => ("services", Scope::Namespaced),
        "Pod" => ("pods", Scope::Namespaced),
        "Secret" => ("secrets", Scope::Namespaced),
        "ConfigMap" => ("configmaps", Scope::Namespaced),
        "ServiceAccount" => ("serviceaccounts", Scope::Namespaced),
        "Deployment" => ("deployments", Scope::Namespaced),
        "MeshPolicy" => ("meshpolicies", Scope::Cluster),
        "PeerAuthentication" => ("peerauthentications", Scope::Namespaced),
        "DestinationRule" => ("destinationrules", Scope::Namespaced),
        "Gateway" => ("gateways", Scope::Namespaced),
        "ServiceEntry" => ("serviceentries", Scope::Namespaced),
        "VirtualService" => ("virtualservices", Scope::Namespaced),
        "Telemetry" => ("telemetries", Scope::Namespaced),
        "CustomResourceDefinition" => ("customresourcedefinitions", Scope::Cluster),
        _ => return None,
    })
}

/// One object as meshfed addresses it: its resource, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRef {
    /// API resource (group, version, kind, plural).
    pub resource: ApiResource,
    /// Scope of the resource.
    pub scope: Scope,
    /// Namespace (`None` for cluster-wide objects).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

impl ObjectRef {
    /// The reference of a desired object (its `apiVersion`, `kind`, `metadata`).
    pub fn of(object: &Value) -> Result<ObjectRef, ResourceError> {
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
        let name = text("/metadata/name").ok_or_else(|| ResourceError::Unnamed(short(object)))?;
        let api_version = text("/apiVersion").unwrap_or_default();
        let kind = text("/kind").unwrap_or_default();
        let unknown = || ResourceError::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
            name: name.clone(),
        };
        let (plural, scope) = plural_and_scope(&kind).ok_or_else(unknown)?;
        if api_version.is_empty() {
            return Err(unknown());
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version.as_str()));
        let resource = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, &kind), plural);
        let namespace = match scope {
            Scope::Namespaced => Some(text("/metadata/namespace").unwrap_or_else(|| "default".to_owned())),
            Scope::Cluster => None,
        };
        Ok(ObjectRef {
            resource,
            scope,
            namespace,
            name,
        })
    }

    /// The kube-rs handle for this object's resource in its namespace.
    pub fn api(&self, client: &kube::Client) -> kube::Api<DynamicObject> {
        match &self.namespace {
            Some(namespace) => kube::Api::namespaced_with(client.clone(), namespace, &self.resource),
            None => kube::Api::all_with(client.clone(), &self.resource),
        }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.resource.kind, self.name),
            None => write!(f, "{} {}", self.resource.kind, self.name),
        }
    }
}

fn short(object: &Value) -> String {
    let mut text = object.to_string();
    if text.len() > 120 {
        let mut end = 120;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}
