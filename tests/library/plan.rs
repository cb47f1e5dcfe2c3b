//! The federation plan: seed fidelity, weights, determinism, API generations, snapshots.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meshfed::inventory::{self, GatewayAddress, Inventory};
use meshfed::plan::{self, Object};
use meshfed::scenario::{self, Scenario};
use serde_json::{Value, json};

fn scenario_file(name: &str) -> Scenario {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name);
    scenario::load(&path).unwrap_or_else(|error| panic!("{error}"))
}

/// Documentation addresses (RFC 5737) for the gateways: planned, never contacted.
fn gateway_address(cluster: &str) -> GatewayAddress {
    let last = cluster.trim_start_matches("cluster");
    GatewayAddress {
        address: format!("192.0.2.{last}"),
        port: 15443,
        placeholder: false,
    }
}

fn inventory_with_gateways(scenario: &Scenario) -> Inventory {
    inventory::from_scenario_with_gateways(scenario, gateway_address)
}

/// Every rendered file of a cluster, read back as YAML into JSON values, by file name.
fn read_back(files: &[plan::RenderedFile], cluster: &str) -> BTreeMap<String, Value> {
    files
        .iter()
        .filter(|file| file.path.starts_with(cluster))
        .map(|file| {
            let value: Value = serde_saphyr::from_str(&file.yaml)
                .unwrap_or_else(|error| panic!("{} is not valid YAML: {error}", file.path.display()));
            (file.path.file_name().unwrap().to_string_lossy().into_owned(), value)
        })
        .collect()
}

fn service_entries(files: &[plan::RenderedFile], cluster: &str) -> Vec<Value> {
    read_back(files, cluster)
        .into_values()
        .filter(|object| object["kind"] == "ServiceEntry")
        .collect()
}

#[test]
fn seed_service_entries_equal_the_seed_field_for_field() {
    let scenario = scenario_file("seed.yaml");
    let files = plan::render(&plan::plan(&scenario, &inventory_with_gateways(&scenario))).unwrap();

    // The seed's "remote-endpoint-for-bar-in-cluster1", with <IPofCluster2IngressGateway> filled in.
    let bar_in_cluster1 = json!({
        "hosts": ["bar.ns2.svc.cluster.local"],
        "ports": [
            {"number": 80, "name": "http", "protocol": "HTTP"},
            {"number": 9090, "name": "tcp", "protocol": "TCP"}
        ],
        "resolution": "STATIC",
        "location": "MESH_INTERNAL",
        "endpoints": [{"address": "192.0.2.2", "ports": {"http": 15443, "tcp": 15443}}]
    });
    // The seed's "remote-endpoint-for-foo-in-cluster2". The seed also maps a `tcp` port that foo
    // does not have (a copy-paste slip in the document); meshfed maps exactly foo's ports.
    let foo_in_cluster2 = json!({
        "hosts": ["foo.ns1.svc.cluster.local"],
        "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
        "resolution": "STATIC",
        "location": "MESH_INTERNAL",
        "endpoints": [{"address": "192.0.2.1", "ports": {"http": 15443}}]
    });

    let cluster1 = service_entries(&files, "cluster1");
    let cluster2 = service_entries(&files, "cluster2");
    assert_eq!(cluster1.len(), 1, "cluster1 needs exactly one ServiceEntry (for bar)");
    assert_eq!(cluster2.len(), 1, "cluster2 needs exactly one ServiceEntry (for foo)");
    assert_eq!(cluster1[0]["spec"], bar_in_cluster1);
    assert_eq!(cluster2[0]["spec"], foo_in_cluster2);
    assert_eq!(cluster1[0]["metadata"]["name"], "remote-endpoint-for-bar-in-cluster1");
    assert_eq!(cluster2[0]["metadata"]["name"], "remote-endpoint-for-foo-in-cluster2");
}

#[test]
fn seed_namespaces_and_services_are_replicated_into_every_cluster() {
    let scenario = scenario_file("seed.yaml");
    let files = plan::render(&plan::plan(&scenario, &inventory_with_gateways(&scenario))).unwrap();
    for cluster in ["cluster1", "cluster2"] {
        let objects = read_back(&files, cluster);
        let named = |kind: &str| -> Vec<String> {
            objects
                .values()
                .filter(|object| object["kind"] == kind)
                .map(|object| object["metadata"]["name"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(named("Namespace"), ["ns1", "ns2"], "{cluster}");
        assert_eq!(named("Service"), ["foo", "bar"], "{cluster}");
        let namespace = objects.values().find(|object| object["kind"] == "Namespace").unwrap();
        assert_eq!(namespace["metadata"]["labels"]["istio-injection"], "enabled");
        let bar = objects
            .values()
            .find(|object| object["metadata"]["name"] == "bar")
            .unwrap();
        assert_eq!(bar["spec"]["ports"][1]["port"], 9090);
        assert_eq!(bar["spec"]["selector"]["app"], "bar");
        let rule = objects
            .values()
            .find(|object| object["kind"] == "DestinationRule")
            .unwrap();
        assert_eq!(
            rule["spec"],
            json!({"host": "*.local", "trafficPolicy": {"tls": {"mode": "ISTIO_MUTUAL"}}})
        );
        let gateway = objects.values().find(|object| object["kind"] == "Gateway").unwrap();
        assert_eq!(gateway["spec"]["servers"][0]["port"]["number"], 15443);
        assert_eq!(gateway["spec"]["servers"][0]["tls"]["mode"], "AUTO_PASSTHROUGH");
        assert_eq!(gateway["spec"]["servers"][0]["hosts"], json!(["*.local"]));
    }
}

#[test]
fn every_object_is_labelled_as_owned_by_meshfed() {
    for name in ["seed.yaml", "skew.yaml"] {
        let scenario = scenario_file(name);
        let plan = plan::plan(&scenario, &inventory::from_scenario(&scenario));
        for cluster in &plan.clusters {
            for object in &cluster.objects {
                let labels = object.metadata().labels.as_ref().expect("labels");
                assert_eq!(
                    labels.get(plan::MANAGED_BY_LABEL).map(String::as_str),
                    Some(plan::MANAGED_BY)
                );
            }
        }
    }
}

const THREE_CLUSTERS: &str = "\
name: three
clusters:
  - { name: cluster1, region: r1, zone: z1, podCidr: 10.10.0.0/16, serviceCidr: 10.96.0.0/16 }
  - { name: cluster2, region: r2, zone: z2, podCidr: 10.20.0.0/16, serviceCidr: 10.97.0.0/16 }
  - { name: cluster3, region: r3, zone: z3, podCidr: 10.30.0.0/16, serviceCidr: 10.98.0.0/16 }
services:
  - name: bar
    namespace: ns2
    ports: [{ name: http, number: 80, protocol: http }]
    replicas: { cluster1: 1, cluster2: 3 }
  - name: baz
    namespace: ns3
    ports: [{ name: tcp, number: 9000, protocol: tcp }]
    replicas: { cluster3: 5 }
federation:
  endpointWeights: ready-pods
  locality: true
";

/// (address, weight, locality) of each endpoint.
type Endpoint = (String, Option<u32>, Option<String>);

fn endpoints_of(plan: &plan::Plan, cluster: &str, host: &str) -> Option<Vec<Endpoint>> {
    let cluster = plan
        .clusters
        .iter()
        .find(|candidate| candidate.cluster == cluster)
        .unwrap();
    cluster.objects.iter().find_map(|object| match object {
        Object::ServiceEntry(entry) if entry.spec.hosts == [host] => Some(
            entry
                .spec
                .endpoints
                .iter()
                .map(|endpoint| (endpoint.address.clone(), endpoint.weight, endpoint.locality.clone()))
                .collect(),
        ),
        _ => None,
    })
}

#[test]
fn remote_gateway_weight_equals_ready_pods_and_clusters_without_pods_get_no_endpoint() {
    let scenario = scenario::parse(Path::new("three.yaml"), THREE_CLUSTERS).unwrap();
    let plan = plan::plan(&scenario, &inventory_with_gateways(&scenario));
    let bar = "bar.ns2.svc.cluster.local";
    let baz = "baz.ns3.svc.cluster.local";
    let endpoint =
        |address: &str, weight: u32, locality: &str| (address.to_owned(), Some(weight), Some(locality.to_owned()));
    // cluster3 has no bar pods: it never appears as an endpoint; cluster1 sees only cluster2's 3.
    assert_eq!(
        endpoints_of(&plan, "cluster1", bar),
        Some(vec![endpoint("192.0.2.2", 3, "r2/z2")])
    );
    assert_eq!(
        endpoints_of(&plan, "cluster2", bar),
        Some(vec![endpoint("192.0.2.1", 1, "r1/z1")])
    );
    assert_eq!(
        endpoints_of(&plan, "cluster3", bar),
        Some(vec![
            endpoint("192.0.2.1", 1, "r1/z1"),
            endpoint("192.0.2.2", 3, "r2/z2")
        ])
    );
    assert_eq!(
        endpoints_of(&plan, "cluster1", baz),
        Some(vec![endpoint("192.0.2.3", 5, "r3/z3")])
    );
    // Only cluster3 has baz pods: cluster3 itself has no remote endpoint for it, so no ServiceEntry.
    assert_eq!(endpoints_of(&plan, "cluster3", baz), None);
}

#[test]
fn equal_weights_write_no_weight_and_locality_off_writes_no_locality() {
    let text = THREE_CLUSTERS
        .replace("endpointWeights: ready-pods", "endpointWeights: equal")
        .replace("locality: true", "locality: false");
    let scenario = scenario::parse(Path::new("three.yaml"), &text).unwrap();
    let plan = plan::plan(&scenario, &inventory_with_gateways(&scenario));
    assert_eq!(
        endpoints_of(&plan, "cluster3", "bar.ns2.svc.cluster.local"),
        Some(vec![
            ("192.0.2.1".to_owned(), None, None),
            ("192.0.2.2".to_owned(), None, None)
        ])
    );
}

#[test]
fn replanning_the_same_input_is_byte_identical() {
    for name in ["seed.yaml", "skew.yaml"] {
        let render = || {
            let scenario = scenario_file(name);
            plan::render(&plan::plan(&scenario, &inventory::from_scenario(&scenario))).unwrap()
        };
        assert_eq!(render(), render(), "{name}");
    }
}

#[test]
fn istio_before_1_5_gets_meshpolicy_and_1_5_on_gets_peerauthentication() {
    let versions = [
        (
            "1.1.0",
            "MeshPolicy",
            "authentication.istio.io/v1alpha1",
            "networking.istio.io/v1alpha3",
        ),
        (
            "1.9.5",
            "PeerAuthentication",
            "security.istio.io/v1beta1",
            "networking.istio.io/v1alpha3",
        ),
        (
            "1.24.3",
            "PeerAuthentication",
            "security.istio.io/v1",
            "networking.istio.io/v1",
        ),
    ];
    for (version, kind, security, networking) in versions {
        let text = THREE_CLUSTERS.replace(
            "podCidr: 10.10.0.0/16",
            &format!("istioVersion: \"{version}\", podCidr: 10.10.0.0/16"),
        );
        let scenario = scenario::parse(Path::new("three.yaml"), &text).unwrap();
        let plan = plan::plan(&scenario, &inventory_with_gateways(&scenario));
        let files = plan::render(&plan).unwrap();
        let objects = read_back(&files, "cluster1");
        let policy = objects
            .values()
            .find(|object| object["spec"].get("mtls").is_some() || object["spec"].get("peers").is_some())
            .unwrap();
        assert_eq!(policy["kind"], kind, "{version}");
        assert_eq!(policy["apiVersion"], security, "{version}");
        let rule = objects
            .values()
            .find(|object| object["kind"] == "DestinationRule")
            .unwrap();
        assert_eq!(rule["apiVersion"], networking, "{version}");
        if kind == "MeshPolicy" {
            assert_eq!(policy["spec"], json!({"peers": [{"mtls": {"mode": "PERMISSIVE"}}]}));
            assert!(
                policy["metadata"].get("namespace").is_none(),
                "MeshPolicy is cluster-scoped"
            );
        }
    }
}

#[test]
fn endpoint_discovery_writes_network_label_eastwest_gateway_and_remote_secret_shapes() {
    let text = THREE_CLUSTERS.replace("federation:\n", "federation:\n  mode: endpoint-discovery\n");
    let scenario = scenario::parse(Path::new("three.yaml"), &text).unwrap();
    let files = plan::render(&plan::plan(&scenario, &inventory_with_gateways(&scenario))).unwrap();
    let objects = read_back(&files, "cluster2");
    assert!(
        objects.values().all(|object| object["kind"] != "ServiceEntry"),
        "endpoint discovery needs no ServiceEntries"
    );
    let root = objects
        .values()
        .find(|object| object["kind"] == "Namespace" && object["metadata"]["name"] == "istio-system")
        .unwrap();
    assert_eq!(root["metadata"]["labels"]["topology.istio.io/network"], "cluster2");
    let gateway = objects.values().find(|object| object["kind"] == "Gateway").unwrap();
    assert_eq!(gateway["metadata"]["name"], "cross-network-gateway");
    assert_eq!(gateway["spec"]["selector"]["istio"], "eastwestgateway");
    let secrets: Vec<&Value> = objects.values().filter(|object| object["kind"] == "Secret").collect();
    let remotes: Vec<&str> = secrets
        .iter()
        .map(|secret| {
            secret["metadata"]["annotations"]["networking.istio.io/cluster"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(remotes, ["cluster1", "cluster3"]);
    for secret in secrets {
        assert_eq!(secret["metadata"]["labels"]["istio/multiCluster"], "true");
        let remote = secret["metadata"]["annotations"]["networking.istio.io/cluster"]
            .as_str()
            .unwrap();
        let kubeconfig = secret["stringData"][remote].as_str().unwrap();
        assert!(
            kubeconfig.contains(&format!("<istio-reader-token-of-{remote}>")),
            "{kubeconfig}"
        );
    }
}

#[test]
fn placeholder_gateway_addresses_are_marked() {
    let scenario = scenario_file("seed.yaml");
    let plan = plan::plan(&scenario, &inventory::from_scenario(&scenario));
    let files = plan::render(&plan).unwrap();
    let entry = &service_entries(&files, "cluster1")[0];
    assert_eq!(
        entry["spec"]["endpoints"][0]["address"],
        "<gateway-address-of-cluster2>"
    );
    assert!(entry["metadata"]["annotations"][plan::PLACEHOLDER_ANNOTATION].is_string());
}

fn snapshot_text(name: &str) -> String {
    let scenario = scenario_file(name);
    let files = plan::render(&plan::plan(&scenario, &inventory::from_scenario(&scenario))).unwrap();
    files
        .iter()
        .map(|file| format!("# {}\n{}", file.path.display(), file.yaml))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[test]
fn seed_plan_snapshot() {
    insta::assert_snapshot!("seed_plan", snapshot_text("seed.yaml"));
}

#[test]
fn skew_plan_snapshot() {
    insta::assert_snapshot!("skew_plan", snapshot_text("skew.yaml"));
}

fn destination_rule(plan: &plan::Plan, cluster: usize) -> Option<Value> {
    plan.clusters[cluster].objects.iter().find_map(|object| match object {
        Object::DestinationRule(rule) => Some(serde_json::to_value(rule).unwrap()),
        _ => None,
    })
}

#[test]
fn each_phase_plans_its_connection_policy_and_traffic_policy_as_destination_rule_fields() {
    let scenario = scenario_file("skew.yaml");
    let inventory = inventory_with_gateways(&scenario);
    let per_request = plan::plan_phase(&scenario, &inventory, &scenario.phases[0]);
    assert_eq!(
        destination_rule(&per_request, 0).unwrap()["spec"]["trafficPolicy"],
        json!({
            "tls": { "mode": "ISTIO_MUTUAL" },
            "connectionPool": { "http": { "maxRequestsPerConnection": 1 } },
        })
    );
    let pooled = plan::plan_phase(&scenario, &inventory, &scenario.phases[2]);
    assert_eq!(
        destination_rule(&pooled, 0).unwrap()["spec"]["trafficPolicy"],
        json!({ "tls": { "mode": "ISTIO_MUTUAL" } })
    );
}

#[test]
fn without_the_destination_rule_and_traffic_policy_no_destination_rule_is_planned() {
    let scenario = scenario_file("permissive.yaml");
    let plan = plan::plan(&scenario, &inventory_with_gateways(&scenario));
    assert!(destination_rule(&plan, 0).is_none() && destination_rule(&plan, 1).is_none());
    let injection = |name: &str| {
        plan.clusters[0].objects.iter().find_map(|object| match object {
            Object::Namespace(namespace) if namespace.metadata.name.as_deref() == Some(name) => namespace
                .metadata
                .labels
                .as_ref()
                .unwrap()
                .get("istio-injection")
                .cloned(),
            _ => None,
        })
    };
    assert_eq!(injection("legacy").as_deref(), Some("disabled"));
    assert_eq!(injection("ns1").as_deref(), Some("enabled"));
    let modes: Vec<String> = plan
        .clusters
        .iter()
        .flat_map(|cluster| cluster.objects.iter())
        .filter_map(|object| match object {
            Object::PeerAuthentication(policy) => Some(policy.spec.mtls.mode.clone()),
            Object::MeshPolicy(policy) => policy.spec.peers.first().map(|peer| peer.mtls.mode.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        modes,
        ["PERMISSIVE", "STRICT"],
        "each cluster's own mode (1.4: MeshPolicy)"
    );
    assert_eq!(plan.clusters[0].install.istio_version.to_string(), "1.4.10");
    assert_eq!(plan.clusters[1].install.istio_version.to_string(), "1.30.3");
}

/// Rows 2b and 2d: `meshfed plan` warns where a Service and a same-host ServiceEntry meet on a
/// version with a gateway bug (pilot/pkg/xds/endpoint_builder.go@1.14.6, istio/istio#44356).
#[test]
fn the_plan_warns_about_gateway_bugs_only_on_affected_versions() {
    let at = |version: &str| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/skew.yaml");
        let text = std::fs::read_to_string(&path).unwrap().replace(
            "    podCidr:",
            &format!("    istioVersion: \"{version}\"\n    podCidr:"),
        );
        let scenario = scenario::parse(&path, &text).unwrap();
        plan::plan(&scenario, &inventory_with_gateways(&scenario)).warnings
    };
    let seven = at("1.7.8");
    assert_eq!(seven.len(), 2, "bar has pods in both clusters: {seven:?}");
    assert!(seven[0].message.contains("bounce between gateways"), "{seven:?}");
    let twenty = at("1.20.8");
    assert!(
        twenty[0].message.contains("rejects the gateway's whole 15443 listener"),
        "{twenty:?}"
    );
    // Row 2b starts at 1.1 (registry shards merge, pilot/pkg/proxy/envoy/v2/eds.go@1.1.0) and, from
    // the 1.8.6/1.9.5 security fix, needs the ISTIO_MUTUAL rule (pilot/pkg/xds/endpoint_builder.go@1.8.6).
    let four = at("1.4.6");
    assert_eq!(four.len(), 2, "{four:?}");
    assert!(four[0].message.contains("bounce between gateways"), "{four:?}");
    let without_rule = |version: &str| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/skew.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace(
                "    podCidr:",
                &format!("    istioVersion: \"{version}\"\n    podCidr:"),
            )
            .replace("  mtls: PERMISSIVE\n", "  mtls: PERMISSIVE\n  destinationRule: false\n");
        let scenario = scenario::parse(&path, &text).unwrap();
        plan::plan(&scenario, &inventory_with_gateways(&scenario)).warnings
    };
    assert_eq!(without_rule("1.8.5").len(), 2);
    // 1.8.6 without the rule: no bounce; row 2d (duplicated chains) warns whatever the rule says.
    let fixed_without_rule = without_rule("1.8.6");
    assert!(
        fixed_without_rule
            .iter()
            .all(|warning| !warning.message.contains("bounce between gateways")
                && warning.message.contains("rejects the gateway's whole 15443 listener")),
        "{fixed_without_rule:?}"
    );
    assert!(at("1.22.8").is_empty());
    assert!(at("1.30.3").is_empty());
    let seed = scenario_file("seed.yaml");
    assert!(plan::plan(&seed, &inventory_with_gateways(&seed)).warnings.is_empty());
}

/// Each warning's cluster and the host it warns about, in the plan's order.
fn warned_hosts(warnings: &[plan::PlanWarning]) -> Vec<(&str, &str)> {
    warnings
        .iter()
        .map(|warning| (warning.cluster.as_str(), warning.host.as_str()))
        .collect()
}

/// seed.yaml with every cluster on `version`, and `federation.dnsProxying: true` when asked.
fn seed_at(version: &str, dns_proxying: bool) -> (Scenario, plan::Plan) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap().replace(
        "    podCidr:",
        &format!("    istioVersion: \"{version}\"\n    podCidr:"),
    );
    if dns_proxying {
        text = text.replace("  mtls: PERMISSIVE\n", "  mtls: PERMISSIVE\n  dnsProxying: true\n");
    }
    let scenario = scenario::parse(&path, &text).unwrap();
    let plan = plan::plan(&scenario, &inventory_with_gateways(&scenario));
    (scenario, plan)
}

/// Row 2d on the seed itself: every cluster replicates the other's service and points a
/// ServiceEntry at it, so both gateways meet istio/istio#44356 on 1.8.6, 1.9.5-1.21
/// (`pilot/pkg/networking/core/v1alpha3/gateway.go@1.10.6`,
/// `pilot/pkg/serviceregistry/aggregate/controller.go@1.10.6`), and the warning offers DNS
/// proxying, since neither cluster has pods of the service it collides on.
#[test]
fn the_plan_warns_that_the_seed_takes_both_gateways_down_on_1_8_6_to_1_21_and_offers_dns_proxying() {
    for version in ["1.8.6", "1.9.5", "1.13.9", "1.20.8", "1.21.6"] {
        let (_, plan) = seed_at(version, false);
        let warned = warned_hosts(&plan.warnings);
        assert_eq!(
            warned,
            [
                ("cluster1", "bar.ns2.svc.cluster.local"),
                ("cluster2", "foo.ns1.svc.cluster.local")
            ],
            "{version}"
        );
        for warning in &plan.warnings {
            assert!(
                warning.message.contains("rejects the gateway's whole 15443 listener"),
                "{warning:?}"
            );
            assert!(warning.message.contains("federation.dnsProxying: true"), "{warning:?}");
        }
        let (_, with_dns) = seed_at(version, true);
        assert!(with_dns.warnings.is_empty(), "{version}: {:?}", with_dns.warnings);
    }
    for version in ["1.7.8", "1.8.5", "1.9.4", "1.22.0", "1.30.3"] {
        assert!(seed_at(version, false).1.warnings.is_empty(), "{version}");
    }
}

/// `federation.dnsProxying`: a Service only where the service runs, and there a ServiceEntry
/// without an address; elsewhere the ServiceEntry alone, with an address from Istio's
/// 240.240.0.0/16 (`pilot/pkg/serviceregistry/serviceentry/controller.go@1.20.8`) that the DNS
/// proxy answers (`pkg/dns/server/name_table.go@1.20.8`), and the install values turn the proxy on.
#[test]
fn dns_proxying_replicates_a_service_only_where_it_runs() {
    let (_, plan) = seed_at("1.20.8", true);
    for (cluster, own, other, other_host) in [
        (0, "foo", "bar", "bar.ns2.svc.cluster.local"),
        (1, "bar", "foo", "foo.ns1.svc.cluster.local"),
    ] {
        let objects = &plan.clusters[cluster].objects;
        let services: Vec<&str> = objects
            .iter()
            .filter_map(|object| match object {
                Object::Service(service) => service.metadata.name.as_deref(),
                _ => None,
            })
            .collect();
        assert_eq!(services, [own], "cluster{}", cluster + 1);
        let entries: Vec<(&str, &[String])> = objects
            .iter()
            .filter_map(|object| match object {
                Object::ServiceEntry(entry) => Some((entry.spec.hosts[0].as_str(), entry.spec.addresses.as_slice())),
                _ => None,
            })
            .collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0].0, other_host, "{other}");
        assert_eq!(entries[0].1.len(), 1, "{entries:?}");
        assert!(entries[0].1[0].starts_with("240.240."), "{entries:?}");
        assert!(plan.clusters[cluster].install.dns_capture);
    }
    let (_, plain) = seed_at("1.20.8", false);
    assert!(plain.clusters.iter().all(|cluster| !cluster.install.dns_capture));
    assert!(
        plain
            .clusters
            .iter()
            .flat_map(|cluster| &cluster.objects)
            .all(|object| match object {
                Object::ServiceEntry(entry) => entry.spec.addresses.is_empty(),
                _ => true,
            })
    );
    // Where the service runs and other clusters have pods too, the Service stays beside the
    // ServiceEntry (which gets no address): the collision remains and the warning says so.
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios/skew.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("    podCidr:", "    istioVersion: \"1.20.8\"\n    podCidr:")
        .replace("  mtls: PERMISSIVE\n", "  mtls: PERMISSIVE\n  dnsProxying: true\n");
    let skew = scenario::parse(&path, &text).unwrap();
    let warnings = plan::plan(&skew, &inventory_with_gateways(&skew)).warnings;
    let warned = warned_hosts(&warnings);
    assert_eq!(
        warned,
        [
            ("cluster1", "bar.ns2.svc.cluster.local"),
            ("cluster2", "bar.ns2.svc.cluster.local")
        ],
        "bar runs in both clusters, foo only in cluster1"
    );
    assert!(
        warnings
            .iter()
            .all(|warning| warning.message.contains("mode: endpoint-discovery")),
        "{warnings:?}"
    );
}
