//! The Kubernetes client layer against the in-process fake API server of [`super::fake_api`].

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};

use super::fake_api::{FakeApi, Recorded, Script, query_param, status, unscripted};

use super::apply::{Applied, ApplyError, ApplyMode, apply};
use super::down::down;
use super::wait::{WaitError, Watched, await_condition, deployment_available};

fn seed_plan_objects(cluster: &str) -> Vec<Value> {
    let scenario = crate::scenario::load(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scenarios/seed.yaml"
    )))
    .unwrap();
    let inventory = crate::inventory::from_scenario_with_gateways(&scenario, |name| crate::inventory::GatewayAddress {
        address: if name == "cluster1" {
            "172.18.255.1".to_owned()
        } else {
            "172.18.255.2".to_owned()
        },
        port: crate::inventory::GATEWAY_PORT,
        placeholder: false,
    });
    let plan = crate::plan::plan(&scenario, &inventory);
    let cluster_plan = plan.clusters.iter().find(|c| c.cluster == cluster).unwrap();
    super::desired_objects(cluster_plan).unwrap()
}

fn labelled(
    kind_path: &str,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    labels: Value,
) -> (String, Value) {
    let mut metadata = json!({"name": name, "labels": labels, "resourceVersion": "7"});
    if let Some(namespace) = namespace {
        metadata["namespace"] = json!(namespace);
    }
    (
        kind_path.to_owned(),
        json!({"apiVersion": api_version, "kind": kind, "metadata": metadata}),
    )
}

fn meshfed_labels(scenario: &str) -> Value {
    json!({"app.kubernetes.io/managed-by": "meshfed", "meshfed.io/scenario": scenario})
}

/// Applies `objects` to cluster1 for the seed scenario, as every apply test here does.
async fn apply_to_cluster1(client: &kube::Client, objects: &[Value], mode: ApplyMode) -> Result<Applied, ApplyError> {
    apply(client, "cluster1", "seed", objects, mode).await
}

#[tokio::test]
async fn applying_the_seed_plan_sends_server_side_apply_as_meshfed() {
    let fake = FakeApi::default();
    let client = fake.client(unscripted());
    let objects = seed_plan_objects("cluster1");
    let applied = apply_to_cluster1(&client, &objects, ApplyMode::Apply).await.unwrap();
    assert_eq!(applied.applied.len(), objects.len());
    assert!(applied.forced.is_empty() && applied.rejected.is_empty());
    let requests = fake.requests();
    let patches: Vec<&Recorded> = requests.iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(patches.len(), objects.len());
    for patch in &patches {
        assert_eq!(
            query_param(&patch.query, "fieldManager").as_deref(),
            Some("meshfed"),
            "{}",
            patch.line()
        );
        assert_eq!(
            query_param(&patch.query, "force"),
            None,
            "no force on a first apply: {}",
            patch.line()
        );
        assert_eq!(patch.content_type, "application/apply-patch+yaml");
        assert_eq!(
            patch
                .body
                .as_ref()
                .and_then(|b| b.pointer("/metadata/labels/app.kubernetes.io~1managed-by")),
            Some(&json!("meshfed")),
            "{}",
            patch.line()
        );
    }
    let transcript: String = requests
        .iter()
        .map(|request| match (&request.method[..], &request.body) {
            ("PATCH", Some(body)) => format!("{}\n{}\n", request.line(), serde_json::to_string_pretty(body).unwrap()),
            _ => format!("{}\n", request.line()),
        })
        .collect();
    insta::assert_snapshot!("seed_cluster1_apply_requests", transcript);
    // Applying again: every object is meshfed's now, each write carries its resourceVersion.
    let again = apply_to_cluster1(&client, &objects, ApplyMode::Apply).await.unwrap();
    assert_eq!(again.applied.len(), objects.len());
    let second: Vec<Recorded> = fake
        .requests()
        .into_iter()
        .skip(requests.len())
        .filter(|r| r.method == "PATCH")
        .collect();
    assert!(second.iter().all(|patch| {
        patch
            .body
            .as_ref()
            .and_then(|b| b.pointer("/metadata/resourceVersion"))
            .is_some()
    }));
}

#[tokio::test]
async fn an_object_owned_by_someone_else_is_left_untouched() {
    let (path, object) = labelled(
        "/api/v1/namespaces/ns1/services/foo",
        "v1",
        "Service",
        Some("ns1"),
        "foo",
        json!({"app.kubernetes.io/managed-by": "Helm"}),
    );
    let fake = FakeApi::with(vec![(&path, object.clone())]);
    let client = fake.client(unscripted());
    let error = apply_to_cluster1(&client, &seed_plan_objects("cluster1"), ApplyMode::Apply)
        .await
        .unwrap_err();
    let ApplyError::Conflicts(conflicts) = &error else {
        panic!("expected a conflict, got {error}");
    };
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].object, "Service ns1/foo");
    assert_eq!(conflicts[0].manager, "Helm");
    assert!(
        error
            .to_string()
            .contains("Service ns1/foo in cluster cluster1 exists and is managed by Helm"),
        "{error}"
    );
    assert!(
        fake.requests().iter().all(|request| request.method == "GET"),
        "nothing may be written"
    );
    assert_eq!(fake.objects.lock().unwrap().get(&path), Some(&object));
}

#[tokio::test]
async fn an_unlabelled_object_names_its_field_managers() {
    let (path, mut object) = labelled("/api/v1/namespaces/ns1", "v1", "Namespace", None, "ns1", json!({}));
    object["metadata"]["managedFields"] = json!([{"manager": "kubectl-create", "operation": "Update"}]);
    let fake = FakeApi::with(vec![(&path, object)]);
    let client = fake.client(unscripted());
    let error = apply_to_cluster1(&client, &seed_plan_objects("cluster1"), ApplyMode::Apply)
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("Namespace ns1 in cluster cluster1 exists and is managed by kubectl-create (no app.kubernetes.io/managed-by label)"),
        "{error}"
    );
    assert!(!fake.requests().iter().any(|request| request.method == "PATCH"));
}

#[tokio::test]
async fn a_field_manager_conflict_on_a_meshfed_object_is_forced_once() {
    let path = "/apis/networking.istio.io/v1/namespaces/istio-system/destinationrules/meshfed-mtls";
    let objects: Vec<Value> = seed_plan_objects("cluster1")
        .into_iter()
        .filter(|object| object["kind"] == "DestinationRule")
        .collect();
    assert_eq!(objects.len(), 1, "the seed plan has one DestinationRule");
    let stored_path = format!(
        "/apis/{}/namespaces/{}/destinationrules/{}",
        objects[0]["apiVersion"].as_str().unwrap(),
        objects[0]["metadata"]["namespace"].as_str().unwrap(),
        objects[0]["metadata"]["name"].as_str().unwrap()
    );
    let _ = path;
    let mut existing = objects[0].clone();
    existing["metadata"]["resourceVersion"] = json!("5");
    let fake = FakeApi::with(vec![(&stored_path, existing)]);
    let client = fake.client(Box::new(|request| {
        (request.method == "PATCH" && query_param(&request.query, "force").is_none()).then(|| {
            (
                409,
                status(
                    409,
                    "Conflict",
                    "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using networking.istio.io/v1: .spec.trafficPolicy.tls.mode",
                ),
            )
        })
    }));
    let applied = apply_to_cluster1(&client, &objects, ApplyMode::Apply).await.unwrap();
    assert_eq!(applied.forced.len(), 1);
    assert!(applied.forced[0].1.contains("kubectl-edit"), "{:?}", applied.forced);
    let patches: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(Recorded::line)
        .collect();
    assert_eq!(patches.len(), 2, "{patches:?}");
    assert!(
        !patches[0].contains("force=true") && patches[1].contains("force=true"),
        "{patches:?}"
    );
}

#[tokio::test]
async fn a_field_manager_conflict_on_an_object_created_meanwhile_by_someone_else_is_not_forced() {
    let objects: Vec<Value> = seed_plan_objects("cluster1").into_iter().take(1).collect();
    let path = format!(
        "/api/v1/namespaces/{}",
        objects[0]["metadata"]["name"].as_str().unwrap()
    );
    let fake = FakeApi::default();
    let store = fake.objects.clone();
    let stranger = path.clone();
    let client = fake.client(Box::new(move |request| {
        if request.method == "PATCH" {
            // Someone else creates the namespace between meshfed's read and its write.
            store.lock().unwrap().insert(
                stranger.clone(),
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns1", "labels": {"app.kubernetes.io/managed-by": "argocd"}}}),
            );
            return Some((409, status(409, "Conflict", "Apply failed with 1 conflict: conflict with \"argocd\": .metadata.labels")));
        }
        None
    }));
    let error = apply_to_cluster1(&client, &objects, ApplyMode::Apply)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("managed by argocd"), "{error}");
    assert!(!fake.requests().iter().any(|r| r.query.contains("force=true")));
}

#[tokio::test]
async fn an_optimistic_lock_conflict_rereads_and_retries() {
    let objects: Vec<Value> = seed_plan_objects("cluster1").into_iter().take(1).collect();
    let fake = FakeApi::default();
    let mut refused = false;
    let client = fake.client(Box::new(move |request| {
        if request.method == "PATCH" && !refused {
            refused = true;
            return Some((
                409,
                status(409, "Conflict", "Operation cannot be fulfilled on namespaces \"ns1\": the object has been modified; please apply your changes to the latest version and try again"),
            ));
        }
        None
    }));
    let applied = apply_to_cluster1(&client, &objects, ApplyMode::Apply).await.unwrap();
    assert_eq!(applied.applied.len(), 1);
    let methods: Vec<String> = fake.requests().iter().map(|r| r.method.clone()).collect();
    // The ownership pass, then read-apply (409), read-apply (ok).
    assert_eq!(methods, ["GET", "GET", "PATCH", "GET", "PATCH"]);
}

#[tokio::test]
async fn server_dry_run_sends_dry_run_all_and_reports_every_rejection() {
    let fake = FakeApi::default();
    let client = fake.client(Box::new(|request| {
        (request.method == "PATCH" && request.path.contains("/serviceentries/")).then(|| {
            (
                422,
                status(422, "Invalid", "ServiceEntry.networking.istio.io \"bar\" is invalid: spec: Invalid value: \"object\": CEL rule failed"),
            )
        })
    }));
    let objects = seed_plan_objects("cluster1");
    let entries = objects.iter().filter(|object| object["kind"] == "ServiceEntry").count();
    assert!(entries > 0);
    let outcome = apply_to_cluster1(&client, &objects, ApplyMode::ServerDryRun)
        .await
        .unwrap();
    assert_eq!(outcome.rejected.len(), entries, "{:?}", outcome.rejected);
    assert!(
        outcome.rejected[0].1.contains("CEL rule failed (422 Invalid)"),
        "{:?}",
        outcome.rejected
    );
    assert_eq!(outcome.applied.len(), objects.len() - entries);
    let patches: Vec<Recorded> = fake.requests().into_iter().filter(|r| r.method == "PATCH").collect();
    assert_eq!(patches.len(), objects.len());
    assert!(
        patches
            .iter()
            .all(|p| query_param(&p.query, "dryRun").as_deref() == Some("All"))
    );
    assert!(fake.objects.lock().unwrap().is_empty(), "a dry run persists nothing");
}

fn deployment(available: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bar", "namespace": "ns2", "generation": 1, "resourceVersion": "10"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "bar"}}, "template": {"metadata": {"labels": {"app": "bar"}}, "spec": {"containers": []}}},
        "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1, "availableReplicas": available,
                   "conditions": [{"type": "Available", "status": if available > 0 {"True"} else {"False"}, "reason": "MinimumReplicasUnavailable"}]}
    })
}

/// Waits until deployment ns2/bar is available, as the watch tests do.
async fn await_bar_available(
    client: kube::Client,
    what: &str,
    deadline: Duration,
) -> Result<Vec<Deployment>, WaitError> {
    let api: kube::Api<Deployment> = kube::Api::namespaced(client, "ns2");
    await_condition(
        &api,
        &Watched::Name("bar".to_owned()),
        what,
        deadline,
        deployment_available,
    )
    .await
}

/// A fake holding deployment ns2/bar, not yet available, and a client whose every watch is
/// answered with `answer` (the resourceVersion is too old) while the deployment becomes available
/// meanwhile.
fn fake_whose_watches_expire(answer: (u16, String)) -> (FakeApi, kube::Client) {
    let path = "/apis/apps/v1/namespaces/ns2/deployments/bar";
    let fake = FakeApi::with(vec![(path, deployment(0))]);
    let store = fake.objects.clone();
    let client = fake.client(Box::new(move |request| {
        if query_param(&request.query, "watch").is_some() {
            store.lock().unwrap().insert(path.to_owned(), deployment(1));
            return Some(answer.clone());
        }
        None
    }));
    (fake, client)
}

#[tokio::test]
async fn a_watch_answered_with_410_gone_relists() {
    let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 410, "reason": "Expired", "message": "too old resource version: 100 (200)"}});
    let (fake, client) = fake_whose_watches_expire((200, format!("{gone}\n")));
    let ready = await_bar_available(
        client,
        "deployment ns2/bar available in cluster2",
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(ready.len(), 1);
    let lines: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| {
            if r.query.contains("watch=true") {
                "watch"
            } else {
                "list"
            }
            .to_owned()
        })
        .collect();
    assert_eq!(lines, ["list", "watch", "list"]);
}

#[tokio::test]
async fn a_watch_refused_with_http_410_relists() {
    let (fake, client) = fake_whose_watches_expire((410, status(410, "Expired", "too old resource version")));
    await_bar_available(client, "deployment ns2/bar", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_that_expires_names_the_object_and_its_last_state() {
    let fake = FakeApi::with(vec![("/apis/apps/v1/namespaces/ns2/deployments/bar", deployment(0))]);
    let client = fake.client(unscripted());
    let error = await_bar_available(
        client,
        "deployment ns2/bar available in cluster2",
        Duration::from_secs(5),
    )
    .await
    .unwrap_err();
    let WaitError::Deadline { what, last_state, .. } = &error;
    assert_eq!(what, "deployment ns2/bar available in cluster2");
    assert!(last_state.starts_with("availableReplicas 0 of 1"), "{last_state}");
    assert!(
        last_state.contains("Available=False (MinimumReplicasUnavailable)"),
        "{last_state}"
    );
    assert!(error.to_string().contains("did not become ready within 5 s"), "{error}");
}

#[tokio::test]
async fn down_deletes_only_what_carries_meshfeds_labels_for_the_scenario() {
    let fake = FakeApi::with(vec![
        {
            let (p, o) = labelled(
                "/api/v1/namespaces/ns2/services/bar",
                "v1",
                "Service",
                Some("ns2"),
                "bar",
                meshfed_labels("seed"),
            );
            (p, o)
        },
        {
            let (p, o) = labelled(
                "/api/v1/namespaces/ns2/services/other",
                "v1",
                "Service",
                Some("ns2"),
                "other",
                meshfed_labels("skew"),
            );
            (p, o)
        },
        {
            let (p, o) = labelled(
                "/api/v1/namespaces/ns2/services/users",
                "v1",
                "Service",
                Some("ns2"),
                "users",
                json!({"app": "users"}),
            );
            (p, o)
        },
        {
            let (p, o) = labelled(
                "/api/v1/namespaces/ns2",
                "v1",
                "Namespace",
                None,
                "ns2",
                meshfed_labels("seed"),
            );
            (p, o)
        },
        {
            let (p, o) = labelled(
                "/api/v1/namespaces/ns1",
                "v1",
                "Namespace",
                None,
                "ns1",
                meshfed_labels("seed"),
            );
            (p, o)
        },
    ]);
    // A server that ignores label selectors still cannot make meshfed delete a stranger's object.
    let fake = FakeApi {
        ignore_selectors: true,
        ..fake
    };
    let client = fake.client(unscripted());
    let kinds = vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "namespace": "x"}}),
        json!({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "x", "namespace": "x"}}),
    ];
    let removed = down(&client, "cluster2", "seed", &kinds).await.unwrap();
    assert_eq!(removed.deleted, ["Service ns2/bar", "Namespace ns1"]);
    assert_eq!(removed.kept.len(), 1);
    assert_eq!(removed.kept[0].0, "Namespace ns2");
    assert!(
        removed.kept[0].1.contains(&"Service ns2/users".to_owned()),
        "{:?}",
        removed.kept
    );
    assert!(fake.has("/api/v1/namespaces/ns2/services/other") && fake.has("/api/v1/namespaces/ns2/services/users"));
    let deletes: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        deletes,
        ["/api/v1/namespaces/ns2/services/bar", "/api/v1/namespaces/ns1"]
    );
    let lists: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v1/services")
        .map(|r| query_param(&r.query, "labelSelector").unwrap_or_default())
        .collect();
    assert_eq!(lists, ["app.kubernetes.io/managed-by=meshfed,meshfed.io/scenario=seed"]);
}

// ---- changes under traffic (change.rs) ----

fn ready_pod(namespace: &str, name: &str, app: &str, owned: bool) -> (String, Value) {
    let mut labels = json!({ "app": app });
    if owned {
        labels["app.kubernetes.io/managed-by"] = json!("meshfed");
    }
    (
        format!("/api/v1/namespaces/{namespace}/pods/{name}"),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": namespace, "labels": labels },
            "status": { "conditions": [{ "type": "Ready", "status": "True" }] },
        }),
    )
}

fn stored_deployment(namespace: &str, name: &str, replicas: u32, labels: Value) -> (String, Value) {
    (
        format!("/apis/apps/v1/namespaces/{namespace}/deployments/{name}"),
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": { "name": name, "namespace": namespace, "labels": labels },
            "spec": { "replicas": replicas, "selector": { "matchLabels": { "app": name } }, "template": {} },
        }),
    )
}

/// A fake kubelet + controller: a merge patch of a Deployment's replicas makes exactly that many
/// ready pods `<name>-<i>` (the store is changed before the answer, like a fast cluster).
fn scaling_script(fake: &FakeApi, namespace: &'static str, app: &'static str, owned_pods: bool) -> Script {
    let objects = fake.objects.clone();
    Box::new(move |request| {
        if request.method != "PATCH" || !request.path.contains("/deployments/") {
            return None;
        }
        let replicas = request.body.as_ref()?.pointer("/spec/replicas")?.as_u64()?;
        let mut objects = objects.lock().unwrap();
        let stored = objects.get_mut(&request.path)?;
        stored["spec"]["replicas"] = json!(replicas);
        let answer = stored.to_string();
        objects.retain(|path, object| !(path.contains("/pods/") && object["metadata"]["labels"]["app"] == app));
        for index in 0..replicas {
            let (path, pod) = ready_pod(namespace, &format!("{app}-{index}"), app, owned_pods);
            objects.insert(path, pod);
        }
        Some((200, answer))
    })
}

fn owned_labels() -> Value {
    json!({ "app.kubernetes.io/managed-by": "meshfed", "app": "bar" })
}

#[tokio::test]
async fn scaling_a_service_patches_only_replicas_and_waits_until_exactly_that_many_pods_are_ready() {
    use super::change::{Ownership, Target, scale_deployment};
    let fake = FakeApi::with(vec![
        stored_deployment("ns2", "bar", 1, owned_labels()),
        ready_pod("ns2", "bar-0", "bar", true),
    ]);
    let client = fake.client(scaling_script(&fake, "ns2", "bar", true));
    let target = Target {
        client: &client,
        cluster: "cluster2",
        ownership: Ownership::Labelled,
    };
    let up = scale_deployment(&target, "ns2", "bar", "app=bar", 3, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(up, ["bar-0", "bar-1", "bar-2"]);
    let down = scale_deployment(&target, "ns2", "bar", "app=bar", 0, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(down.is_empty(), "{down:?}");
    let lines: Vec<String> = fake.requests().iter().map(Recorded::line).collect();
    assert_eq!(
        lines[..3],
        [
            "GET /apis/apps/v1/namespaces/ns2/deployments/bar".to_owned(),
            "PATCH /apis/apps/v1/namespaces/ns2/deployments/bar?&fieldManager=meshfed".to_owned(),
            "GET /api/v1/namespaces/ns2/pods?&labelSelector=app%3Dbar".to_owned(),
        ],
        "{lines:#?}"
    );
    let patch = fake.requests().into_iter().find(|r| r.method == "PATCH").unwrap();
    assert_eq!(patch.content_type, "application/merge-patch+json");
    assert_eq!(patch.body, Some(json!({ "spec": { "replicas": 3 } })));
}

/// Scales Istio's ingress gateway in `target` to `replicas`, giving it 5 s.
async fn scale_ingress_gateway(
    target: &super::change::Target<'_>,
    replicas: u32,
) -> Result<Vec<String>, super::change::ChangeError> {
    super::change::scale_deployment(
        target,
        "istio-system",
        "istio-ingressgateway",
        "app=istio-ingressgateway",
        replicas,
        Duration::from_secs(5),
    )
    .await
}

#[tokio::test]
async fn a_deployment_meshfed_did_not_create_is_never_scaled_on_someone_elses_cluster() {
    use super::change::{ChangeError, Ownership, Target};
    let fake = FakeApi::with(vec![stored_deployment(
        "istio-system",
        "istio-ingressgateway",
        1,
        json!({ "app": "istio-ingressgateway", "operator.istio.io/component": "IngressGateways" }),
    )]);
    let client = fake.client(scaling_script(&fake, "istio-system", "istio-ingressgateway", false));
    let target = Target {
        client: &client,
        cluster: "cluster1",
        ownership: Ownership::Labelled,
    };
    let error = scale_ingress_gateway(&target, 0).await.unwrap_err();
    assert!(matches!(error, ChangeError::NotOwned { .. }), "{error}");
    assert!(
        error
            .to_string()
            .contains("deployment istio-system/istio-ingressgateway in cluster cluster1 is not meshfed's"),
        "{error}"
    );
    assert!(fake.requests().iter().all(|r| r.method == "GET"), "nothing was written");

    // On a kind cluster meshfed created, the gateway is its to stop and start.
    let kind = Target {
        ownership: Ownership::WholeCluster,
        ..target
    };
    let stopped = scale_ingress_gateway(&kind, 0).await.unwrap();
    assert!(stopped.is_empty());
    let started = scale_ingress_gateway(&kind, 1).await.unwrap();
    assert_eq!(started, ["istio-ingressgateway-0"]);
}

#[tokio::test]
async fn killing_a_pod_deletes_it_and_waits_for_its_replacement_to_be_ready() {
    use super::change::{ChangeError, Ownership, Target, delete_pod};
    let fake = FakeApi::with(vec![
        ready_pod("ns2", "bar-0", "bar", true),
        ready_pod("ns2", "not-ours", "other", false),
    ]);
    let objects = fake.objects.clone();
    let client = fake.client(Box::new(move |request| {
        if request.method == "DELETE" && request.path.ends_with("/pods/bar-0") {
            // The ReplicaSet replaces the deleted pod at once.
            let (path, pod) = ready_pod("ns2", "bar-7", "bar", true);
            objects.lock().unwrap().insert(path, pod);
        }
        None
    }));
    let target = Target {
        client: &client,
        cluster: "cluster2",
        ownership: Ownership::Labelled,
    };
    let ready = delete_pod(&target, "ns2", "bar-0", "app=bar", 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(ready, ["bar-7"]);
    assert!(!fake.has("/api/v1/namespaces/ns2/pods/bar-0"));
    let error = delete_pod(&target, "ns2", "not-ours", "app=other", 1, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(error, ChangeError::NotOwned { .. }), "{error}");
    assert!(
        fake.has("/api/v1/namespaces/ns2/pods/not-ours"),
        "an unowned pod is never deleted"
    );
}

#[tokio::test]
async fn pods_that_never_settle_fail_at_the_deadline_saying_what_was_seen() {
    use super::change::{ChangeError, Ownership, Target, scale_deployment};
    let fake = FakeApi::with(vec![stored_deployment("ns2", "bar", 1, owned_labels())]);
    // The controller never makes the pods: the PATCH is stored as sent.
    let client = fake.client(unscripted());
    let target = Target {
        client: &client,
        cluster: "cluster2",
        ownership: Ownership::Labelled,
    };
    let error = scale_deployment(&target, "ns2", "bar", "app=bar", 2, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(matches!(error, ChangeError::Wait(_)), "{error}");
    let shown = error.to_string();
    assert!(
        shown.contains("2 ready pods app=bar in ns2 of cluster cluster2"),
        "{shown}"
    );
    assert!(shown.contains("0 pods, 0 ready, 0 terminating, 2 wanted"), "{shown}");
}

// ---- kinds through discovery (discovery.rs, apply.rs) ----

#[tokio::test]
async fn a_kind_the_server_does_not_serve_is_refused_by_name_and_nothing_is_written() {
    let fake = FakeApi::default();
    let client = fake.client(unscripted());
    let mut objects = seed_plan_objects("cluster1");
    objects.push(json!({
        "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
        "metadata": {"name": "meshfed", "namespace": "metallb-system"},
        "spec": {"addresses": ["172.18.255.205-172.18.255.254"]},
    }));
    let error = apply_to_cluster1(&client, &objects, ApplyMode::Apply)
        .await
        .unwrap_err();
    let shown = error.to_string();
    assert!(
        shown.contains("cluster1: the API server does not serve IPAddressPool in metallb.io/v1beta1 (object metallb-system/meshfed)"),
        "{shown}"
    );
    assert!(
        fake.all_requests().iter().any(|r| r.path == "/apis"),
        "the kinds come from discovery"
    );
    assert!(
        !fake.requests().iter().any(|r| r.method == "PATCH"),
        "nothing may be written"
    );
}

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]},
    })
}

#[tokio::test]
async fn a_manifests_own_kinds_are_applied_once_its_crd_is_established_and_served() {
    let fake = FakeApi::without_istio();
    let client = fake.client(unscripted());
    let widget =
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "ns1"}});
    // The widget first: meshfed must not apply it before its CRD.
    let objects = vec![widget, widget_crd()];
    let applied = apply_to_cluster1(&client, &objects, ApplyMode::Apply).await.unwrap();
    assert_eq!(
        applied.applied,
        ["CustomResourceDefinition widgets.example.com", "Widget ns1/w"]
    );
    let steps: Vec<String> = fake
        .all_requests()
        .iter()
        .filter(|r| r.method == "PATCH" || r.query.contains("watch=true") || r.path == "/apis/example.com/v1")
        .map(|r| match r.method.as_str() {
            "PATCH" => format!("apply {}", r.path.rsplit('/').next().unwrap()),
            _ if r.query.contains("watch=true") => "watch until established".to_owned(),
            _ => "discover example.com/v1".to_owned(),
        })
        .collect();
    assert_eq!(
        steps,
        [
            "apply widgets.example.com",
            "watch until established",
            "discover example.com/v1",
            "apply w"
        ]
    );
    assert!(fake.has("/apis/example.com/v1/namespaces/ns1/widgets/w"));
}

#[tokio::test]
async fn a_dry_run_reports_objects_whose_crd_it_cannot_create() {
    let fake = FakeApi::without_istio();
    let client = fake.client(unscripted());
    let widget =
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "ns1"}});
    let outcome = apply_to_cluster1(&client, &[widget_crd(), widget], ApplyMode::ServerDryRun)
        .await
        .unwrap();
    assert_eq!(outcome.applied, ["CustomResourceDefinition widgets.example.com"]);
    assert_eq!(outcome.rejected.len(), 1);
    assert_eq!(outcome.rejected[0].0, "Widget ns1/w");
    assert!(fake.objects.lock().unwrap().is_empty(), "a dry run persists nothing");
}
