//! The install values meshfed generates for real Istio (pure, snapshot-tested): the IstioOperator
//! per federation mode, `istio-system` with its network, and the MetalLB pool.

use std::path::Path;

use meshfed::provider::kind::addresses::{address_pools, parse_network_inspect};
use meshfed::provider::kind::install::{mk_istio_namespace, mk_istio_operator, mk_metallb_pool};
use meshfed::scenario::{self, Scenario};
use serde_json::Value;

fn load(name: &str) -> Scenario {
    scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name)).unwrap()
}

fn gateway_ports(operator: &Value, gateway: usize) -> Vec<u64> {
    operator["spec"]["components"]["ingressGateways"][gateway]["k8s"]["service"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|port| port["port"].as_u64().unwrap())
        .collect()
}

#[test]
fn serviceentry_mode_puts_15443_back_on_the_ingress_gateway() {
    let scenario = load("seed.yaml");
    let yaml = mk_istio_operator(&scenario, &scenario.clusters[0]);
    let operator: Value = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(gateway_ports(&operator, 0), [15021, 80, 443, 15443]);
    assert_eq!(
        operator["spec"]["components"]["ingressGateways"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "no east-west gateway in serviceentry mode"
    );
    let log_format = operator["spec"]["meshConfig"]["accessLogFormat"].as_str().unwrap();
    // What the kubeconfig measurements join requests on: caller identity, the connection's remote
    // address, the sidecar's address toward the app, and the inbound cluster.
    for field in [
        "%DOWNSTREAM_PEER_URI_SAN%",
        "%DOWNSTREAM_REMOTE_ADDRESS%",
        "%UPSTREAM_LOCAL_ADDRESS%",
        "%UPSTREAM_CLUSTER_RAW%",
    ] {
        assert!(log_format.contains(field), "{field} missing from {log_format}");
    }
    insta::assert_snapshot!("seed_cluster1_istio_operator", yaml);
}

#[test]
fn endpoint_discovery_mode_names_mesh_cluster_network_and_adds_an_east_west_gateway() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml"))
        .unwrap()
        .replace("mode: serviceentry", "mode: endpoint-discovery");
    let scenario = scenario::parse(Path::new("seed-ed.yaml"), &text).unwrap();
    let yaml = mk_istio_operator(&scenario, &scenario.clusters[1]);
    let operator: Value = serde_saphyr::from_str(&yaml).unwrap();
    let global = &operator["spec"]["values"]["global"];
    assert_eq!(global["meshID"], "meshfed-seed");
    assert_eq!(global["multiCluster"]["clusterName"], "cluster2");
    assert_eq!(global["network"], "cluster2");
    let eastwest = &operator["spec"]["components"]["ingressGateways"][1];
    assert_eq!(eastwest["name"], "istio-eastwestgateway");
    assert_eq!(eastwest["k8s"]["env"][0]["value"], "cluster2");
    assert_eq!(gateway_ports(&operator, 1), [15021, 15443, 15012, 15017]);
    insta::assert_snapshot!("seed_endpoint_discovery_cluster2_istio_operator", yaml);
}

/// `federation.dnsProxying` turns on the sidecar's DNS proxy the way Istio's 1.8.0 release note
/// (`releasenotes/notes/agent-dns-capture.yaml`) says:
/// `meshConfig.defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE="true"`; without it, nothing.
#[test]
fn dns_proxying_turns_on_the_sidecars_dns_capture() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml"))
        .unwrap()
        .replace("  mtls: PERMISSIVE\n", "  mtls: PERMISSIVE\n  dnsProxying: true\n");
    let scenario = scenario::parse(Path::new("seed-dns.yaml"), &text).unwrap();
    let operator: Value = serde_saphyr::from_str(&mk_istio_operator(&scenario, &scenario.clusters[0])).unwrap();
    let default_config = &operator["spec"]["meshConfig"]["defaultConfig"];
    assert_eq!(default_config["proxyMetadata"]["ISTIO_META_DNS_CAPTURE"], "true");
    assert_eq!(default_config["concurrency"], 2);
    let plain = load("seed.yaml");
    let operator: Value = serde_saphyr::from_str(&mk_istio_operator(&plain, &plain.clusters[0])).unwrap();
    assert!(
        operator["spec"]["meshConfig"]["defaultConfig"]
            .get("proxyMetadata")
            .is_none()
    );
}

#[test]
fn istio_system_carries_the_network_and_metallb_gets_the_carved_pool() {
    let scenario = load("seed.yaml");
    insta::assert_snapshot!(
        "seed_cluster2_istio_namespace",
        mk_istio_namespace(&scenario.clusters[1])
    );
    let network = parse_network_inspect(
        r#"[{"IPAM":{"Config":[{"Subnet":"172.19.0.0/16","Gateway":"172.19.0.1"}]},"Containers":{}}]"#,
    )
    .unwrap();
    let pools = address_pools(&network, &["cluster1", "cluster2"]).unwrap();
    insta::assert_snapshot!("cluster2_metallb_pool", mk_metallb_pool(&pools[1]));
}
