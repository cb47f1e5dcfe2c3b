//! How meshfed addresses one object: its resource (plural, scope) as the server's discovery gives
//! it ([`super::discovery`]), its namespace and name, and how it is named in messages
//! (`ServiceEntry ns2/bar-cluster2`).

use std::fmt;

use kube::api::{ApiResource, DynamicObject};
use serde_json::Value;

use super::discovery::ServedKinds;

/// An object that cannot be addressed.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// The object has no `apiVersion` or `kind`.
    #[error("object {name} has no apiVersion or kind, so it cannot be applied")]
    Untyped {
        /// Its name.
        name: String,
    },
    /// The API server does not serve the object's kind (its discovery does not list it).
    #[error(
        "the API server does not serve {kind} in {api_version} (object {name}): its discovery lists no such kind; \
         install the CRD or API that serves it first"
    )]
    NotServed {
        /// `apiVersion` of the object.
        api_version: String,
        /// `kind` of the object.
        kind: String,
        /// Its name (`namespace/name` for a namespaced object).
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
    /// The reference of a desired object (its `apiVersion`, `kind`, `metadata`), at the resource
    /// the server's discovery gives its kind.
    pub fn resolve(object: &Value, served: &ServedKinds) -> Result<ObjectRef, ResourceError> {
        let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).map(str::to_owned);
        let name = text("/metadata/name").ok_or_else(|| ResourceError::Unnamed(short(object)))?;
        let namespace = text("/metadata/namespace");
        let (Some(api_version), Some(kind)) = (text("/apiVersion"), text("/kind")) else {
            return Err(ResourceError::Untyped { name });
        };
        let Some((resource, scope)) = served.resource(&api_version, &kind) else {
            return Err(ResourceError::NotServed {
                api_version,
                kind,
                name: match namespace {
                    Some(namespace) => format!("{namespace}/{name}"),
                    None => name,
                },
            });
        };
        let namespace = match scope {
            Scope::Namespaced => Some(namespace.unwrap_or_else(|| "default".to_owned())),
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
