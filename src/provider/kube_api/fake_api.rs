//! An in-process fake API server (`tower_test::mock`) for the Kubernetes client tests: it stores
//! objects like a real one, serves discovery as a real one does, and can be scripted to answer a
//! request its own way (409, 410, 422, a webhook's 500). Every request is recorded: method, path,
//! query and body.
//!
//! Discovery, as the Kubernetes API documentation describes the unaggregated endpoints
//! (<https://kubernetes.io/docs/concepts/overview/kubernetes-api/#discovery-api>): `GET /api`
//! lists the core versions (`APIVersions`), `GET /apis` the groups with their versions and
//! preferred version (`APIGroupList`), and `GET /api/v1` or `GET /apis/<group>/<version>` the
//! resources of one group version (`APIResourceList`: name = plural, kind, namespaced, verbs).
//! What it serves: the built-in kinds of a Kubernetes 1.33 API server that meshfed's manifests
//! use (group, version, plural and scope as in the Kubernetes API reference,
//! <https://kubernetes.io/docs/reference/kubernetes-api/>), Istio's kinds when the fake stands for
//! a cluster with Istio ([`FakeApi::default`], not [`FakeApi::without_istio`]), and the kinds of
//! every stored CustomResourceDefinition once it is `Established` — not before: "the
//! Established condition ... indicates that the CRD is ready to be used" and the new RESTful
//! endpoint appears then
//! (<https://kubernetes.io/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definitions/#create-a-customresourcedefinition>).
//! A created CRD is stored without status; the apiextensions controller's part (setting
//! `NamesAccepted` and `Established`) happens when a watch on CRDs is opened, and that watch
//! delivers the change as a `MODIFIED` event, so a client sees it only by waiting for it.
//! A request for a resource the fake does not serve gets what a real server answers for a path
//! it has no handler for: `404 NotFound`, "the server could not find the requested resource"
//! (apimachinery `pkg/api/errors`, `NewGenericServerResponse`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

/// One request the fake received.
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Option<Value>,
}

impl Recorded {
    /// A read of a discovery document (`/api`, `/apis`, `/api/v1`, `/apis/<group>/<version>`).
    pub fn is_discovery(&self) -> bool {
        self.method == "GET"
            && (matches!(self.path.as_str(), "/api" | "/apis")
                || group_version_rest(&self.path).is_some_and(|(_, _, rest)| rest.is_empty()))
    }

    pub fn line(&self) -> String {
        format!(
            "{} {}{}",
            self.method,
            self.path,
            if self.query.is_empty() {
                String::new()
            } else {
                format!("?{}", self.query)
            }
        )
    }
}

/// A scripted answer: `Some((status, body))` overrides the fake's own behaviour.
pub(crate) type Script = Box<dyn FnMut(&Recorded) -> Option<(u16, String)> + Send>;

/// The fake's state: objects by path (`/api/v1/namespaces/ns2/services/bar`).
#[derive(Clone)]
pub(crate) struct FakeApi {
    pub objects: Arc<Mutex<BTreeMap<String, Value>>>,
    pub log: Arc<Mutex<Vec<Recorded>>>,
    /// Whether list calls ignore `labelSelector` (a hostile or buggy server).
    pub ignore_selectors: bool,
    /// Kinds served as if their CRDs were installed and established (Istio's).
    pub preinstalled: &'static [ServedResource],
}

/// A cluster with Istio installed.
impl Default for FakeApi {
    fn default() -> FakeApi {
        FakeApi {
            objects: Arc::default(),
            log: Arc::default(),
            ignore_selectors: false,
            preinstalled: ISTIO,
        }
    }
}

/// One resource a server serves: (group, version, plural, kind, namespaced).
pub(crate) type ServedResource = (&'static str, &'static str, &'static str, &'static str, bool);

/// Built-in kinds of a Kubernetes 1.33 API server (the ones meshfed's manifests and MetalLB's use).
const BUILT_IN: &[ServedResource] = &[
    ("", "v1", "namespaces", "Namespace", false),
    ("", "v1", "nodes", "Node", false),
    ("", "v1", "services", "Service", true),
    ("", "v1", "pods", "Pod", true),
    ("", "v1", "secrets", "Secret", true),
    ("", "v1", "configmaps", "ConfigMap", true),
    ("", "v1", "serviceaccounts", "ServiceAccount", true),
    ("", "v1", "endpoints", "Endpoints", true),
    ("apps", "v1", "deployments", "Deployment", true),
    ("apps", "v1", "daemonsets", "DaemonSet", true),
    ("apps", "v1", "replicasets", "ReplicaSet", true),
    ("apps", "v1", "statefulsets", "StatefulSet", true),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", false),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
    ),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", true),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", true),
    (
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        false,
    ),
    (
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        false,
    ),
    ("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", true),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", true),
];

/// Istio's kinds at the versions a current Istio's CRDs serve (`customresourcedefinitions.gen.yaml`).
const ISTIO: &[ServedResource] = &[
    ("networking.istio.io", "v1", "destinationrules", "DestinationRule", true),
    ("networking.istio.io", "v1", "gateways", "Gateway", true),
    ("networking.istio.io", "v1", "serviceentries", "ServiceEntry", true),
    ("networking.istio.io", "v1", "virtualservices", "VirtualService", true),
    (
        "networking.istio.io",
        "v1beta1",
        "destinationrules",
        "DestinationRule",
        true,
    ),
    ("networking.istio.io", "v1beta1", "gateways", "Gateway", true),
    ("networking.istio.io", "v1beta1", "serviceentries", "ServiceEntry", true),
    (
        "networking.istio.io",
        "v1beta1",
        "virtualservices",
        "VirtualService",
        true,
    ),
    (
        "networking.istio.io",
        "v1alpha3",
        "destinationrules",
        "DestinationRule",
        true,
    ),
    ("networking.istio.io", "v1alpha3", "gateways", "Gateway", true),
    (
        "networking.istio.io",
        "v1alpha3",
        "serviceentries",
        "ServiceEntry",
        true,
    ),
    (
        "networking.istio.io",
        "v1alpha3",
        "virtualservices",
        "VirtualService",
        true,
    ),
    (
        "security.istio.io",
        "v1",
        "peerauthentications",
        "PeerAuthentication",
        true,
    ),
    (
        "security.istio.io",
        "v1beta1",
        "peerauthentications",
        "PeerAuthentication",
        true,
    ),
    ("telemetry.istio.io", "v1", "telemetries", "Telemetry", true),
    ("telemetry.istio.io", "v1alpha1", "telemetries", "Telemetry", true),
];

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";

fn crd_established(crd: &Value) -> bool {
    crd.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|condition| condition["type"] == "Established" && condition["status"] == "True")
}

/// (group, version, rest of the path) of an API path: `/apis/apps/v1/namespaces/x/deployments`
/// gives (`apps`, `v1`, [`namespaces`, `x`, `deployments`]).
fn group_version_rest(path: &str) -> Option<(&str, &str, Vec<&str>)> {
    let segments: Vec<&str> = path
        .trim_start_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        ["api", version, rest @ ..] => Some(("", version, rest.to_vec())),
        ["apis", group, version, rest @ ..] => Some((group, version, rest.to_vec())),
        _ => None,
    }
}

/// The plural a resource path addresses (`namespaces/x/deployments/y` → `deployments`).
fn plural_of<'a>(rest: &[&'a str]) -> Option<&'a str> {
    match rest {
        ["namespaces", _, plural, ..] => Some(plural),
        [plural, ..] => Some(plural),
        [] => None,
    }
}

pub(crate) fn status(code: u16, reason: &str, message: &str) -> String {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message}).to_string()
}

/// Splits an API path into (collection path, name): `/api/v1/namespaces/ns2/services/bar` →
/// (`/api/v1/namespaces/ns2/services`, `bar`).
fn split_path(path: &str) -> (String, Option<String>) {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let prefix = if segments.first() == Some(&"api") { 2 } else { 3 };
    let rest = &segments[prefix.min(segments.len())..];
    let (collection_len, has_name) = match rest {
        ["namespaces", _, _plural] => (prefix + 3, false),
        ["namespaces", _, _plural, _name] => (prefix + 3, true),
        [_plural] => (prefix + 1, false),
        [_plural, _name] => (prefix + 1, true),
        _ => (segments.len(), false),
    };
    let collection = format!("/{}", segments[..collection_len].join("/"));
    (collection, has_name.then(|| segments[collection_len].to_owned()))
}

pub(crate) fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == key).then(|| value.replace("%3D", "=").replace("%2C", ",").replace("%2F", "/"))
    })
}

fn labels_match(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|term| !term.is_empty()).all(|term| {
        let (key, value) = term.split_once('=').unwrap_or((term, ""));
        object
            .pointer("/metadata/labels")
            .and_then(|labels| labels.get(key))
            .and_then(Value::as_str)
            == Some(value)
    })
}

/// Whether `object` (stored at `path`) is in the collection `collection`, which may span all
/// namespaces (`/api/v1/services` holds `/api/v1/namespaces/ns2/services/bar`).
fn in_collection(path: &str, collection: &str) -> bool {
    let (own_collection, _) = split_path(path);
    if own_collection == collection {
        return true;
    }
    let segments: Vec<&str> = own_collection.trim_start_matches('/').split('/').collect();
    let prefix = if segments.first() == Some(&"api") { 2 } else { 3 };
    if segments.len() == prefix + 3 && segments[prefix] == "namespaces" {
        let all = format!("/{}/{}", segments[..prefix].join("/"), segments[prefix + 2]);
        return all == collection;
    }
    false
}

impl FakeApi {
    pub fn with<P: AsRef<str>>(objects: Vec<(P, Value)>) -> FakeApi {
        let fake = FakeApi::default();
        fake.objects.lock().unwrap().extend(
            objects
                .into_iter()
                .map(|(path, object)| (path.as_ref().to_owned(), object)),
        );
        fake
    }

    /// Starts serving; returns a client whose requests this fake answers.
    pub fn client(&self, mut script: Script) -> kube::Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let recorded = Recorded {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_owned(),
                    query: parts.uri.query().unwrap_or_default().to_owned(),
                    content_type: parts
                        .headers
                        .get(http::header::CONTENT_TYPE)
                        .map(|value| value.to_str().unwrap_or_default().to_owned())
                        .unwrap_or_default(),
                    body: serde_json::from_slice(&bytes).ok(),
                };
                fake.log.lock().unwrap().push(recorded.clone());
                // The script may change the store itself: no lock is held while it runs.
                let scripted = script(&recorded);
                let (code, body) = scripted.unwrap_or_else(|| fake.answer(&recorded));
                let response = Response::builder()
                    .status(code)
                    .body(Body::from(body.into_bytes()))
                    .unwrap();
                respond.send_response(response);
            }
        });
        kube::Client::new(service, "default")
    }

    /// A cluster without Istio (only built-in kinds and the CRDs applied to it).
    pub fn without_istio() -> FakeApi {
        FakeApi {
            preinstalled: &[],
            ..FakeApi::default()
        }
    }

    /// Everything served now: built-in kinds, preinstalled ones, established CRDs' kinds.
    fn served(&self, objects: &BTreeMap<String, Value>) -> Vec<(String, String, String, String, bool)> {
        let fixed = BUILT_IN
            .iter()
            .chain(self.preinstalled)
            .map(|(g, v, p, k, n)| ((*g).to_owned(), (*v).to_owned(), (*p).to_owned(), (*k).to_owned(), *n));
        let from_crds = objects
            .iter()
            .filter(|(path, crd)| path.starts_with(&format!("{CRDS}/")) && crd_established(crd))
            .flat_map(|(_, crd)| {
                let text = |pointer: &str| {
                    crd.pointer(pointer)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                let (group, plural, kind) = (
                    text("/spec/group"),
                    text("/spec/names/plural"),
                    text("/spec/names/kind"),
                );
                let namespaced = crd["spec"]["scope"] == "Namespaced";
                crd.pointer("/spec/versions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|version| version["served"] == true)
                    .filter_map(|version| version["name"].as_str())
                    .map(|version| {
                        (
                            group.clone(),
                            version.to_owned(),
                            plural.clone(),
                            kind.clone(),
                            namespaced,
                        )
                    })
                    .collect::<Vec<_>>()
            });
        fixed.chain(from_crds).collect()
    }

    /// The discovery documents, or `None` for a path that is not one.
    fn discovery(&self, path: &str, objects: &BTreeMap<String, Value>) -> Option<(u16, String)> {
        let served = self.served(objects);
        let path = path.trim_end_matches('/');
        if path == "/api" {
            return Some((
                200,
                json!({"kind": "APIVersions", "versions": ["v1"],
                       "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "10.96.0.1:443"}]})
                .to_string(),
            ));
        }
        if path == "/apis" {
            let mut groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for (group, version, ..) in served.iter().filter(|(group, ..)| !group.is_empty()) {
                let versions = groups.entry(group).or_default();
                if !versions.contains(&version.as_str()) {
                    versions.push(version);
                }
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(group, versions)| {
                    let entries: Vec<Value> = versions
                        .iter()
                        .map(|version| json!({"groupVersion": format!("{group}/{version}"), "version": version}))
                        .collect();
                    json!({"name": group, "versions": entries, "preferredVersion": entries[0]})
                })
                .collect();
            return Some((
                200,
                json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}).to_string(),
            ));
        }
        let (group, version, rest) = group_version_rest(path)?;
        if !rest.is_empty() {
            return None;
        }
        let resources: Vec<Value> = served
            .iter()
            .filter(|(g, v, ..)| g == group && v == version)
            .map(|(_, _, plural, kind, namespaced)| {
                json!({"name": plural, "singularName": "", "namespaced": namespaced, "kind": kind,
                       "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            })
            .collect();
        if resources.is_empty() {
            return Some(not_found());
        }
        let group_version = if group.is_empty() {
            version.to_owned()
        } else {
            format!("{group}/{version}")
        };
        Some((
            200,
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources})
                .to_string(),
        ))
    }

    /// Whether the fake serves the resource `path` addresses.
    fn serves(&self, path: &str, objects: &BTreeMap<String, Value>) -> bool {
        let Some((group, version, rest)) = group_version_rest(path) else {
            return false;
        };
        let Some(plural) = plural_of(&rest) else {
            return false;
        };
        self.served(objects)
            .iter()
            .any(|(g, v, p, ..)| g == group && v == version && p == plural)
    }

    /// The apiextensions controller: every stored CRD not yet established becomes so; returns the
    /// watch events (`MODIFIED`) of those matching `name_selector`.
    fn establish_crds(objects: &mut BTreeMap<String, Value>, name_selector: Option<&str>) -> String {
        let mut events = String::new();
        for (path, crd) in objects.iter_mut() {
            if !path.starts_with(&format!("{CRDS}/")) || crd_established(crd) {
                continue;
            }
            crd["status"] = json!({"conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts"},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted"},
            ]});
            let version = crd
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|version| version.parse::<u64>().ok())
                .unwrap_or(0);
            crd["metadata"]["resourceVersion"] = json!((version + 1).to_string());
            if name_selector.is_none_or(|name| crd.pointer("/metadata/name").and_then(Value::as_str) == Some(name)) {
                events.push_str(&json!({"type": "MODIFIED", "object": crd}).to_string());
                events.push('\n');
            }
        }
        events
    }

    fn answer(&self, request: &Recorded) -> (u16, String) {
        let mut objects = self.objects.lock().unwrap();
        if request.method == "GET"
            && let Some(answer) = self.discovery(&request.path, &objects)
        {
            return answer;
        }
        if !self.serves(&request.path, &objects) {
            return not_found();
        }
        let (collection, name) = split_path(&request.path);
        let dry_run = query_param(&request.query, "dryRun").is_some();
        match (request.method.as_str(), name) {
            ("GET", Some(_)) => match objects.get(&request.path) {
                Some(object) => (200, object.to_string()),
                None => (404, status(404, "NotFound", &format!("{} not found", request.path))),
            },
            ("GET", None) => {
                let selector = query_param(&request.query, "labelSelector").unwrap_or_default();
                let field = query_param(&request.query, "fieldSelector").unwrap_or_default();
                let items: Vec<Value> = objects
                    .iter()
                    .filter(|(path, _)| in_collection(path, &collection))
                    .filter(|(_, object)| self.ignore_selectors || labels_match(object, &selector))
                    .filter(|(_, object)| match field.strip_prefix("metadata.name=") {
                        Some(name) => object.pointer("/metadata/name").and_then(Value::as_str) == Some(name),
                        None => true,
                    })
                    .map(|(_, object)| object.clone())
                    .collect();
                if query_param(&request.query, "watch").is_some() {
                    if collection == CRDS {
                        let events = FakeApi::establish_crds(&mut objects, field.strip_prefix("metadata.name="));
                        return (200, events);
                    }
                    // A watch that ends at once: the caller relists.
                    return (200, String::new());
                }
                (
                    200,
                    json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "100"}, "items": items})
                        .to_string(),
                )
            }
            ("PATCH", Some(_)) => {
                let mut object = request.body.clone().unwrap_or(Value::Null);
                if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    let version = objects
                        .get(&request.path)
                        .and_then(|old| old.pointer("/metadata/resourceVersion"))
                        .and_then(Value::as_str)
                        .and_then(|version| version.parse::<u64>().ok())
                        .unwrap_or(0);
                    metadata.insert("resourceVersion".to_owned(), json!((version + 1).to_string()));
                }
                if !dry_run {
                    objects.insert(request.path.clone(), object.clone());
                }
                (200, object.to_string())
            }
            ("DELETE", Some(_)) => match objects.remove(&request.path) {
                Some(_) => (200, status(200, "", "deleted").replace("Failure", "Success")),
                None => (404, status(404, "NotFound", "not found")),
            },
            _ => (405, status(405, "MethodNotAllowed", "the fake does not do that")),
        }
    }

    /// The requests received, discovery's left out.
    pub fn requests(&self) -> Vec<Recorded> {
        self.all_requests()
            .into_iter()
            .filter(|request| !request.is_discovery())
            .collect()
    }

    /// Every request received, discovery's included.
    pub fn all_requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    pub fn has(&self, path: &str) -> bool {
        self.objects.lock().unwrap().contains_key(path)
    }
}

pub(crate) fn unscripted() -> Script {
    Box::new(|_| None)
}

fn not_found() -> (u16, String) {
    (
        404,
        status(404, "NotFound", "the server could not find the requested resource"),
    )
}
