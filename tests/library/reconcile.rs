//! The reconcile loop fed with event sequences (no world, no cluster): duplicates, out-of-order
//! events, a cluster that leaves while its pods are listed, a flapping gateway, a scale to zero and
//! back, and objects meshfed does not own.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use meshfed::inventory::InventoryEvent;
use meshfed::inventory::{self, GATEWAY_PORT, GatewayAddress, Inventory, ReadyPod};
use meshfed::plan::{MANAGED_BY, MANAGED_BY_LABEL, Object, Plan, SCENARIO_LABEL};
use meshfed::reconcile::{Controller, LiveObject, ObjectKey, diff_against_live};
use meshfed::scenario::Scenario;

const BAR_HOST: &str = "bar.ns2.svc.cluster.local";

fn scenario(name: &str) -> Scenario {
    meshfed::scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name)).unwrap()
}

fn gateway(address: &str) -> GatewayAddress {
    GatewayAddress {
        address: address.to_owned(),
        port: GATEWAY_PORT,
        placeholder: false,
    }
}

/// Gateways at 192.0.2.1, .2, .3 for cluster1, cluster2, cluster3.
fn live_inventory(scenario: &Scenario) -> Inventory {
    inventory::from_scenario_with_gateways(scenario, |cluster| {
        gateway(&format!("192.0.2.{}", cluster.trim_start_matches("cluster")))
    })
}

/// three-clusters.yaml: bar has 1, 2 and 3 pods in cluster1, cluster2, cluster3; ready-pods weights.
fn three_clusters() -> (Scenario, Controller) {
    let scenario = scenario("three-clusters.yaml");
    let controller = Controller::new(&scenario, live_inventory(&scenario));
    (scenario, controller)
}

/// (gateway address, weight) of every endpoint of the ServiceEntry for `host` in `cluster`'s plan;
/// `None` when the cluster has no such ServiceEntry.
fn service_entry_gateways(plan: &Plan, cluster: &str, host: &str) -> Option<Vec<(String, Option<u32>)>> {
    let cluster_plan = plan.clusters.iter().find(|c| c.cluster == cluster)?;
    cluster_plan.objects.iter().find_map(|object| match object {
        Object::ServiceEntry(entry) if entry.spec.hosts.iter().any(|h| h == host) => Some(
            entry
                .spec
                .endpoints
                .iter()
                .map(|endpoint| (endpoint.address.clone(), endpoint.weight))
                .collect(),
        ),
        _ => None,
    })
}

fn gateway_pairs(pairs: &[(&str, u32)]) -> Option<Vec<(String, Option<u32>)>> {
    Some(
        pairs
            .iter()
            .map(|(address, weight)| ((*address).to_owned(), Some(*weight)))
            .collect(),
    )
}

fn ready(cluster: &str, pod: &str, zone: &str) -> InventoryEvent {
    InventoryEvent::PodReady {
        cluster: cluster.to_owned(),
        service: "bar.ns2".to_owned(),
        pod: ReadyPod {
            name: pod.to_owned(),
            region: format!("region{}", cluster.trim_start_matches("cluster")),
            zone: zone.to_owned(),
        },
    }
}

fn gone(cluster: &str, pod: &str) -> InventoryEvent {
    InventoryEvent::PodGone {
        cluster: cluster.to_owned(),
        service: "bar.ns2".to_owned(),
        pod: pod.to_owned(),
    }
}

fn applied_kinds(reconciled: &meshfed::reconcile::Reconciled, cluster: &str) -> Vec<String> {
    reconciled
        .changes
        .cluster(cluster)
        .map(|changes| {
            changes
                .apply
                .iter()
                .map(|object| ObjectKey::of(object).to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn observing_nothing_proposes_nothing() {
    let (_, mut controller) = three_clusters();
    let before = controller.plan().clone();
    let reconciled = controller.observe(&[]);
    assert!(reconciled.changes.is_empty(), "{:?}", reconciled.changes);
    assert_eq!(reconciled.plan, before);
}

#[test]
fn a_new_ready_pod_reweights_the_other_clusters_service_entries_and_a_duplicate_changes_nothing() {
    let (_, mut controller) = three_clusters();
    let event = ready("cluster2", "bar-2", "zone2a");
    let first = controller.observe(std::slice::from_ref(&event));
    assert_eq!(
        service_entry_gateways(&first.plan, "cluster1", BAR_HOST),
        gateway_pairs(&[("192.0.2.2", 3), ("192.0.2.3", 3)]),
        "cluster2's gateway now weighs its 3 pods"
    );
    assert_eq!(
        applied_kinds(&first, "cluster1"),
        ["ServiceEntry ns2/remote-endpoint-for-bar-in-cluster1"],
        "only the changed object is applied"
    );
    assert_eq!(
        applied_kinds(&first, "cluster3"),
        ["ServiceEntry ns2/remote-endpoint-for-bar-in-cluster3"]
    );
    assert!(
        first.changes.cluster("cluster2").is_none(),
        "cluster2's own objects do not change"
    );

    let again = controller.observe(&[event.clone(), event]);
    assert!(
        again.changes.is_empty(),
        "duplicates are idempotent: {:?}",
        again.changes
    );
    assert_eq!(again.plan, first.plan);
}

#[test]
fn the_plan_does_not_depend_on_the_order_pods_became_ready_in() {
    let (scenario, mut forwards) = three_clusters();
    let mut backwards = Controller::new(&scenario, live_inventory(&scenario));
    let events = [
        ready("cluster2", "bar-2", "zone2a"),
        ready("cluster2", "bar-3", "zone2b"),
    ];
    let a = forwards.observe(&events);
    let b = backwards.observe(&[events[1].clone(), events[0].clone()]);
    assert_eq!(a.plan, b.plan);
    assert_eq!(a.changes, b.changes);
    assert_eq!(forwards.inventory(), backwards.inventory());
}

#[test]
fn a_pod_gone_before_it_was_ready_is_a_no_op_and_its_later_ready_counts() {
    let (scenario, mut controller) = three_clusters();
    let before = controller.plan().clone();
    let early = controller.observe(&[gone("cluster2", "bar-7")]);
    assert!(
        early.changes.is_empty(),
        "an unknown pod's PodGone: {:?}",
        early.changes
    );
    assert_eq!(early.plan, before);

    let late = controller.observe(&[ready("cluster2", "bar-7", "zone2a")]);
    let mut straight = Controller::new(&scenario, live_inventory(&scenario));
    let expected = straight.observe(&[ready("cluster2", "bar-7", "zone2a")]);
    assert_eq!(late.plan, expected.plan, "the last word about a pod wins");
    assert_eq!(
        service_entry_gateways(&late.plan, "cluster1", BAR_HOST),
        gateway_pairs(&[("192.0.2.2", 3), ("192.0.2.3", 3)])
    );

    // Ready then gone in one batch: the pod is gone, as if nothing happened.
    let flicker = controller.observe(&[ready("cluster3", "bar-9", "zone3a"), gone("cluster3", "bar-9")]);
    assert!(flicker.changes.is_empty(), "{:?}", flicker.changes);
}

#[test]
fn a_cluster_that_leaves_while_its_pods_are_listed_is_gone_from_every_service_entry() {
    let (_, mut controller) = three_clusters();
    assert_eq!(controller.inventory().clusters["cluster3"].ready_count("bar.ns2"), 3);
    let left = controller.observe(&[InventoryEvent::ClusterLeft {
        cluster: "cluster3".to_owned(),
    }]);
    assert!(
        left.plan.clusters.iter().all(|cluster| cluster.cluster != "cluster3"),
        "the cluster that left gets no objects"
    );
    assert_eq!(
        service_entry_gateways(&left.plan, "cluster1", BAR_HOST),
        gateway_pairs(&[("192.0.2.2", 2)])
    );
    assert_eq!(
        service_entry_gateways(&left.plan, "cluster2", BAR_HOST),
        gateway_pairs(&[("192.0.2.1", 1)])
    );
    assert!(left.changes.cluster("cluster3").is_none());
    assert_eq!(
        applied_kinds(&left, "cluster1"),
        ["ServiceEntry ns2/remote-endpoint-for-bar-in-cluster1"]
    );

    // Late events about the cluster that left (its pods' watch was slower) change nothing.
    let late = controller.observe(&[
        ready("cluster3", "bar-5", "zone3a"),
        gone("cluster3", "bar-0"),
        InventoryEvent::GatewayAddress {
            cluster: "cluster3".to_owned(),
            gateway: gateway("192.0.2.99"),
        },
        InventoryEvent::ClusterLeft {
            cluster: "cluster3".to_owned(),
        },
    ]);
    assert!(late.changes.is_empty(), "{:?}", late.changes);
    assert_eq!(late.plan, left.plan);
}

#[test]
fn a_flapping_gateway_address_ends_where_it_started() {
    let (_, mut controller) = three_clusters();
    let start = controller.plan().clone();
    let move_to = |address: &str| InventoryEvent::GatewayAddress {
        cluster: "cluster2".to_owned(),
        gateway: gateway(address),
    };
    let at_b = controller.observe(&[move_to("192.0.2.22")]);
    assert_eq!(
        service_entry_gateways(&at_b.plan, "cluster1", BAR_HOST),
        gateway_pairs(&[("192.0.2.22", 2), ("192.0.2.3", 3)])
    );
    assert_eq!(
        service_entry_gateways(&at_b.plan, "cluster3", BAR_HOST),
        gateway_pairs(&[("192.0.2.1", 1), ("192.0.2.22", 2)])
    );
    let back = controller.observe(&[move_to("192.0.2.2")]);
    assert_eq!(back.plan, start);
    assert_eq!(
        applied_kinds(&back, "cluster1"),
        ["ServiceEntry ns2/remote-endpoint-for-bar-in-cluster1"],
        "moving back is a change again"
    );
    let flap = controller.observe(&[move_to("192.0.2.22"), move_to("192.0.2.2")]);
    assert!(flap.changes.is_empty(), "A, B, A in one batch: {:?}", flap.changes);
}

#[test]
fn scaled_to_zero_a_cluster_is_named_by_no_service_entry_and_scaled_back_it_is_again() {
    // skew.yaml: bar has 1 pod in cluster1 and 3 in cluster2; only cluster1 has a ServiceEntry for bar.
    let scenario = scenario("skew.yaml");
    let mut controller = Controller::new(&scenario, live_inventory(&scenario));
    let start = controller.plan().clone();
    assert_eq!(
        service_entry_gateways(&start, "cluster1", BAR_HOST).map(|g| g.len()),
        Some(1),
        "cluster1 names cluster2's gateway"
    );
    let down = controller.observe(&[
        gone("cluster2", "bar-0"),
        gone("cluster2", "bar-1"),
        gone("cluster2", "bar-2"),
    ]);
    assert_eq!(
        service_entry_gateways(&down.plan, "cluster1", BAR_HOST),
        None,
        "no cluster but cluster1 has bar: no ServiceEntry for it in cluster1"
    );
    let cluster1 = down.changes.cluster("cluster1").expect("cluster1 changes");
    assert_eq!(
        cluster1.delete,
        [ObjectKey {
            kind: "ServiceEntry".to_owned(),
            namespace: Some("ns2".to_owned()),
            name: "remote-endpoint-for-bar-in-cluster1".to_owned(),
        }]
    );
    assert!(cluster1.apply.is_empty(), "{:?}", cluster1.apply);
    // cluster2 now has no bar pods but still a ServiceEntry naming cluster1's gateway.
    assert_eq!(
        service_entry_gateways(&down.plan, "cluster2", BAR_HOST),
        Some(vec![("192.0.2.1".to_owned(), None)])
    );

    let up = controller.observe(&[
        ready("cluster2", "bar-1", "zone2"),
        ready("cluster2", "bar-0", "zone2"),
        ready("cluster2", "bar-2", "zone2"),
    ]);
    assert_eq!(
        up.changes.cluster("cluster1").map(|changes| changes.apply.len()),
        Some(1),
        "the ServiceEntry is created again"
    );
    assert_eq!(
        service_entry_gateways(&up.plan, "cluster1", BAR_HOST),
        service_entry_gateways(&start, "cluster1", BAR_HOST)
    );
}

#[test]
fn a_cluster_that_joins_is_planned_and_named_by_the_others() {
    let (scenario, _) = three_clusters();
    let mut inventory = live_inventory(&scenario);
    let joining = inventory.clusters.remove("cluster3").unwrap();
    let mut controller = Controller::new(&scenario, inventory);
    assert!(controller.plan().clusters.iter().all(|c| c.cluster != "cluster3"));
    // Its pods' events arrive before the join: ignored, the join brings them.
    let early = controller.observe(&[ready("cluster3", "bar-0", "zone3a")]);
    assert!(early.changes.is_empty(), "{:?}", early.changes);
    let joined = controller.observe(&[InventoryEvent::ClusterJoined {
        cluster: "cluster3".to_owned(),
        inventory: joining,
    }]);
    let cluster3 = joined
        .changes
        .cluster("cluster3")
        .expect("the new cluster gets every object");
    assert_eq!(
        cluster3.apply.len(),
        joined
            .plan
            .clusters
            .iter()
            .find(|c| c.cluster == "cluster3")
            .unwrap()
            .objects
            .len()
    );
    assert_eq!(
        service_entry_gateways(&joined.plan, "cluster1", BAR_HOST),
        gateway_pairs(&[("192.0.2.2", 2), ("192.0.2.3", 3)])
    );
}

fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
}

/// `object` as a cluster would return it: its JSON plus server fields.
fn as_live(object: &Object) -> LiveObject {
    let mut metadata = object.metadata().clone();
    metadata.resource_version = Some("4711".to_owned());
    let mut body = serde_json::to_value(object).unwrap();
    body["metadata"] = serde_json::to_value(&metadata).unwrap();
    body["status"] = serde_json::json!({ "observedGeneration": 3 });
    LiveObject {
        key: ObjectKey::of(object),
        metadata,
        body,
    }
}

#[test]
fn live_objects_meshfed_does_not_own_are_never_changed_or_deleted() {
    let (scenario, controller) = three_clusters();
    let ours = labels(&[(MANAGED_BY_LABEL, MANAGED_BY), (SCENARIO_LABEL, &scenario.name)]);
    let desired = controller.plan().clusters[0].clone();
    let entry_key = ObjectKey::of(
        desired
            .objects
            .iter()
            .find(|object| object.kind() == "ServiceEntry")
            .unwrap(),
    );
    let mut live: Vec<LiveObject> = desired.objects.iter().map(as_live).collect();
    // Identical and owned: nothing to do.
    let clean = diff_against_live(&desired, &live, &scenario.name);
    assert!(
        clean.apply.is_empty() && clean.delete.is_empty() && clean.left_alone.is_empty(),
        "{clean:?}"
    );

    // The ServiceEntry is someone else's (same kind and name, other content): left alone.
    let entry = live.iter_mut().find(|object| object.key == entry_key).unwrap();
    entry.metadata.labels = labels(&[(MANAGED_BY_LABEL, "helm")]);
    entry.body["spec"]["endpoints"] = serde_json::json!([]);
    // A DestinationRule of another scenario's meshfed: left alone too.
    let rule = live
        .iter_mut()
        .find(|object| object.key.kind == "DestinationRule")
        .unwrap();
    rule.metadata.labels = labels(&[(MANAGED_BY_LABEL, MANAGED_BY), (SCENARIO_LABEL, "another")]);
    rule.body["spec"] = serde_json::json!({ "host": "changed" });
    let rule_key = rule.key.clone();
    // A Service of meshfed's whose content drifted: applied again.
    let service = live.iter_mut().find(|object| object.key.kind == "Service").unwrap();
    service.body["spec"]["ports"] = serde_json::json!([]);
    let service_key = service.key.clone();
    // Objects the plan does not have: a foreign one (no labels, a field manager) and a stale one of meshfed's.
    let foreign_extra = LiveObject {
        key: ObjectKey {
            kind: "ServiceEntry".to_owned(),
            namespace: Some("ns2".to_owned()),
            name: "remote-endpoint-for-bar-in-cluster9".to_owned(),
        },
        metadata: ObjectMeta {
            managed_fields: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry {
                    manager: Some("kubectl".to_owned()),
                    ..Default::default()
                },
            ]),
            ..ObjectMeta::default()
        },
        body: serde_json::json!({}),
    };
    let stale = LiveObject {
        key: ObjectKey {
            kind: "ServiceEntry".to_owned(),
            namespace: Some("ns2".to_owned()),
            name: "remote-endpoint-for-baz-in-cluster1".to_owned(),
        },
        metadata: ObjectMeta {
            labels: ours.clone(),
            ..ObjectMeta::default()
        },
        body: serde_json::json!({}),
    };
    live.push(foreign_extra);
    live.push(stale.clone());

    let diff = diff_against_live(&desired, &live, &scenario.name);
    let applied: Vec<ObjectKey> = diff.apply.iter().map(ObjectKey::of).collect();
    assert_eq!(applied, [service_key], "only meshfed's drifted object is applied");
    assert_eq!(diff.delete, [stale.key], "only meshfed's stale object is deleted");
    let mut left_alone: Vec<(String, String)> = diff
        .left_alone
        .iter()
        .map(|(key, manager)| (key.to_string(), manager.clone()))
        .collect();
    left_alone.sort();
    let mut expected = vec![
        (rule_key.to_string(), "meshfed for scenario another".to_owned()),
        (entry_key.to_string(), "helm".to_owned()),
    ];
    expected.sort();
    assert_eq!(
        left_alone, expected,
        "colliding objects meshfed does not own are named, not changed"
    );
}
