//! The reconcile loop: inventory events in, the re-planned federation and only its difference out.
//! Pure (no I/O, no clients): the engine feeds it the inventory events a scenario's changes cause
//! and has the provider apply what it returns, so tests feed it a `Vec` of events.
//!
//! The loop keeps the seed's promise true as pods come and go: "a ServiceEntry per replicated
//! service pointing at the gateways of every other cluster that has pods for it". It never
//! proposes to change or delete an object that does not carry meshfed's ownership labels for the
//! scenario ([`foreign_manager`], the same test the Kubernetes applier uses).

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::inventory::Inventory;
use crate::inventory::InventoryEvent;
use crate::plan::{self, ClusterPlan, MANAGED_BY, MANAGED_BY_LABEL, Object, Plan, SCENARIO_LABEL, TrafficSettings};
use crate::scenario::Scenario;

/// Holds the inventory as events left it and the last desired plan.
#[derive(Clone, Debug)]
pub struct Controller {
    scenario: Scenario,
    settings: TrafficSettings,
    inventory: Inventory,
    /// Clusters that left: late events about them are ignored until they join again.
    left: BTreeSet<String>,
    desired: Plan,
}

/// What one [`Controller::observe`] produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Reconciled {
    /// The whole desired plan now (clusters in the mesh only).
    pub plan: Plan,
    /// What differs from the previous desired plan.
    pub changes: PlanDiff,
}

/// Per cluster, the objects to apply and the (owned) objects to delete. Clusters without changes
/// are left out, so an empty diff means there is nothing to do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlanDiff {
    /// Clusters with changes, in plan order.
    pub clusters: Vec<ClusterChanges>,
}

impl PlanDiff {
    /// Nothing to apply or delete anywhere.
    pub fn is_empty(&self) -> bool {
        self.clusters.is_empty()
    }

    /// The changes of one cluster, if it has any.
    pub fn cluster(&self, name: &str) -> Option<&ClusterChanges> {
        self.clusters.iter().find(|changes| changes.cluster == name)
    }
}

/// One cluster's changes.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterChanges {
    /// The cluster.
    pub cluster: String,
    /// New or changed objects, in apply order.
    pub apply: Vec<Object>,
    /// Objects meshfed owns that the plan no longer has.
    pub delete: Vec<ObjectKey>,
}

/// Identifies an object in a cluster.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// `ServiceEntry`, `Namespace`, ...
    pub kind: String,
    /// Its namespace (none for cluster-scoped kinds).
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl ObjectKey {
    /// The key of a planned object.
    pub fn of(object: &Object) -> ObjectKey {
        let metadata = object.metadata();
        ObjectKey {
            kind: object.kind().to_owned(),
            namespace: metadata.namespace.clone(),
            name: metadata.name.clone().unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "{} {namespace}/{}", self.kind, self.name),
            None => write!(f, "{} {}", self.kind, self.name),
        }
    }
}

impl Controller {
    /// A controller for `scenario` whose world has `inventory` now, planning with the scenario's
    /// traffic settings.
    pub fn new(scenario: &Scenario, inventory: Inventory) -> Controller {
        Controller::with_settings(scenario, inventory, TrafficSettings::of_scenario(scenario))
    }

    /// A controller planning with explicit traffic settings (a phase's).
    pub fn with_settings(scenario: &Scenario, inventory: Inventory, settings: TrafficSettings) -> Controller {
        let mut inventory = inventory;
        canonicalise(&mut inventory);
        let desired = mk_plan(scenario, &inventory, settings);
        Controller {
            scenario: scenario.clone(),
            settings,
            inventory,
            left: BTreeSet::new(),
            desired,
        }
    }

    /// The inventory as the events so far left it.
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// The last desired plan.
    pub fn plan(&self) -> &Plan {
        &self.desired
    }

    /// Folds `events` into the inventory, re-plans and returns the plan and what changed.
    ///
    /// Idempotent: a duplicate event changes nothing; a `PodGone` for an unknown pod is a no-op;
    /// events about a cluster that left (or never joined) are ignored; `ClusterLeft` removes the
    /// cluster even while its pods are still listed. Within one call the last event about a pod
    /// wins, and the plan does not depend on the order pods became ready in.
    pub fn observe(&mut self, events: &[InventoryEvent]) -> Reconciled {
        for event in events {
            self.fold(event);
        }
        canonicalise(&mut self.inventory);
        let plan = mk_plan(&self.scenario, &self.inventory, self.settings);
        let changes = diff_plans(&self.desired, &plan);
        self.desired = plan.clone();
        Reconciled { plan, changes }
    }

    fn fold(&mut self, event: &InventoryEvent) {
        match event {
            InventoryEvent::ClusterJoined { cluster, inventory } => {
                self.left.remove(cluster);
                self.inventory.clusters.insert(cluster.clone(), inventory.clone());
            }
            InventoryEvent::ClusterLeft { cluster } => {
                self.inventory.clusters.remove(cluster);
                self.left.insert(cluster.clone());
            }
            InventoryEvent::PodReady { cluster, service, pod } => {
                let Some(inventory) = self.member_mut(cluster) else {
                    return;
                };
                let pods = inventory.ready_pods.entry(service.clone()).or_default();
                match pods.iter_mut().find(|known| known.name == pod.name) {
                    Some(known) => *known = pod.clone(),
                    None => pods.push(pod.clone()),
                }
            }
            InventoryEvent::PodGone { cluster, service, pod } => {
                let Some(inventory) = self.member_mut(cluster) else {
                    return;
                };
                if let Some(pods) = inventory.ready_pods.get_mut(service) {
                    pods.retain(|known| known.name != *pod);
                }
            }
            InventoryEvent::GatewayAddress { cluster, gateway } => {
                if let Some(inventory) = self.member_mut(cluster) {
                    inventory.gateway = gateway.clone();
                }
            }
            InventoryEvent::IstioVersion { cluster, version } => {
                if let Some(inventory) = self.member_mut(cluster) {
                    inventory.istio_version = *version;
                }
            }
        }
    }

    /// The inventory of a cluster that is in the mesh now.
    fn member_mut(&mut self, cluster: &str) -> Option<&mut crate::inventory::ClusterInventory> {
        if self.left.contains(cluster) {
            return None;
        }
        self.inventory.clusters.get_mut(cluster)
    }
}

/// Pods sorted by name and services without pods dropped, so equal worlds compare equal whatever
/// order their events came in.
fn canonicalise(inventory: &mut Inventory) {
    for cluster in inventory.clusters.values_mut() {
        cluster.ready_pods.retain(|_, pods| !pods.is_empty());
        for pods in cluster.ready_pods.values_mut() {
            pods.sort_by(|a, b| a.name.cmp(&b.name));
        }
    }
}

/// The plan for the clusters in the mesh: a scenario cluster without an inventory entry (it has
/// not joined yet, or it left) gets no objects.
fn mk_plan(scenario: &Scenario, inventory: &Inventory, settings: TrafficSettings) -> Plan {
    let mut plan = plan::plan_with(scenario, inventory, settings);
    plan.clusters
        .retain(|cluster| inventory.clusters.contains_key(&cluster.cluster));
    plan.warnings
        .retain(|warning| inventory.clusters.contains_key(&warning.cluster));
    plan
}

/// What turns plan `old` into plan `new`: per cluster of `new`, its new or changed objects and
/// the objects of `old` it no longer has. Every planned object is meshfed's, so all may go.
pub fn diff_plans(old: &Plan, new: &Plan) -> PlanDiff {
    let clusters = new
        .clusters
        .iter()
        .filter_map(|desired| {
            let previous = old.clusters.iter().find(|cluster| cluster.cluster == desired.cluster);
            let before: BTreeMap<ObjectKey, &Object> = previous
                .map(|cluster| {
                    cluster
                        .objects
                        .iter()
                        .map(|object| (ObjectKey::of(object), object))
                        .collect()
                })
                .unwrap_or_default();
            let apply: Vec<Object> = desired
                .objects
                .iter()
                .filter(|object| before.get(&ObjectKey::of(object)) != Some(object))
                .cloned()
                .collect();
            let wanted: BTreeSet<ObjectKey> = desired.objects.iter().map(ObjectKey::of).collect();
            let delete: Vec<ObjectKey> = before.into_keys().filter(|key| !wanted.contains(key)).collect();
            (!apply.is_empty() || !delete.is_empty()).then(|| ClusterChanges {
                cluster: desired.cluster.clone(),
                apply,
                delete,
            })
        })
        .collect();
    PlanDiff { clusters }
}

/// An object as a cluster has it: its key, metadata and whole JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveObject {
    /// Kind, namespace and name.
    pub key: ObjectKey,
    /// Its metadata (labels say who owns it).
    pub metadata: ObjectMeta,
    /// The object as the API server returns it (status and server fields included).
    pub body: Value,
}

/// What reconciling one cluster against its live objects would do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LiveDiff {
    /// Objects to create, or meshfed's objects whose content differs from the plan.
    pub apply: Vec<Object>,
    /// meshfed's objects (for this scenario) that the plan no longer has.
    pub delete: Vec<ObjectKey>,
    /// Objects in the way that meshfed does not own, with their manager: never changed.
    pub left_alone: Vec<(ObjectKey, String)>,
}

/// Compares a cluster's desired objects with what it has. Proposes nothing for an object without
/// meshfed's ownership labels for `scenario`: a desired object that collides with one is listed in
/// [`LiveDiff::left_alone`], and a foreign object the plan does not have is not deleted.
pub fn diff_against_live(desired: &ClusterPlan, live: &[LiveObject], scenario: &str) -> LiveDiff {
    let mut diff = LiveDiff::default();
    let live_by_key: BTreeMap<&ObjectKey, &LiveObject> = live.iter().map(|object| (&object.key, object)).collect();
    for object in &desired.objects {
        let key = ObjectKey::of(object);
        match live_by_key.get(&key) {
            None => diff.apply.push(object.clone()),
            Some(existing) => match foreign_manager(&existing.metadata, scenario) {
                Some(manager) => diff.left_alone.push((key, manager)),
                None => {
                    let wanted = serde_json::to_value(object).unwrap_or(Value::Null);
                    if !contains(&existing.body, &wanted) {
                        diff.apply.push(object.clone());
                    }
                }
            },
        }
    }
    let wanted: BTreeSet<ObjectKey> = desired.objects.iter().map(ObjectKey::of).collect();
    diff.delete = live
        .iter()
        .filter(|object| !wanted.contains(&object.key) && foreign_manager(&object.metadata, scenario).is_none())
        .map(|object| object.key.clone())
        .collect();
    diff
}

/// Whether `live` has every field `wanted` sets, with the same value (server-side apply's view:
/// fields others set, and server fields, do not make an object differ).
fn contains(live: &Value, wanted: &Value) -> bool {
    match (live, wanted) {
        (Value::Object(live), Value::Object(wanted)) => wanted
            .iter()
            .all(|(field, value)| live.get(field).is_some_and(|present| contains(present, value))),
        (Value::Array(live), Value::Array(wanted)) => {
            live.len() == wanted.len() && live.iter().zip(wanted).all(|(present, value)| contains(present, value))
        }
        _ => live == wanted,
    }
}

/// Who owns an existing object, if not meshfed for `scenario`: its `app.kubernetes.io/managed-by`
/// label, another scenario's meshfed, or (without the label) the managers of its fields.
///
/// ```
/// use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
/// use meshfed::reconcile::foreign_manager;
/// let labels = [("app.kubernetes.io/managed-by", "meshfed"), ("meshfed.io/scenario", "seed")];
/// let ours = ObjectMeta {
///     labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
///     ..ObjectMeta::default()
/// };
/// assert_eq!(foreign_manager(&ours, "seed"), None);
/// assert_eq!(foreign_manager(&ours, "other").as_deref(), Some("meshfed for scenario seed"));
/// ```
pub fn foreign_manager(metadata: &ObjectMeta, scenario: &str) -> Option<String> {
    let labels = metadata.labels.clone().unwrap_or_default();
    match labels.get(MANAGED_BY_LABEL).map(String::as_str) {
        Some(MANAGED_BY) => match labels.get(SCENARIO_LABEL) {
            Some(owner) if owner == scenario => None,
            Some(owner) => Some(format!("meshfed for scenario {owner}")),
            None => Some("meshfed without a scenario label".to_owned()),
        },
        Some(other) => Some(other.to_owned()),
        None => {
            let managers: Vec<String> = metadata
                .managed_fields
                .iter()
                .flatten()
                .filter_map(|entry| entry.manager.clone())
                .collect();
            Some(if managers.is_empty() {
                "an unknown manager (no managed-by label, no managedFields)".to_owned()
            } else {
                format!("{} (no {MANAGED_BY_LABEL} label)", managers.join(", "))
            })
        }
    }
}
