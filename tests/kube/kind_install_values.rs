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

use crate::support::upstream;
use upstream::upstream_file as upstream;

/// The seed with `cluster1` at Istio `version` on network `network1`, in `mode`.
fn seed_at(version: &str, mode: &str) -> Scenario {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml"))
        .unwrap()
        .replace("mode: serviceentry", &format!("mode: {mode}"))
        .replace(
            "  - name: cluster1\n",
            &format!("  - name: cluster1\n    istioVersion: \"{version}\"\n    network: network1\n"),
        );
    scenario::parse(Path::new("seed-at.yaml"), &text).unwrap()
}

fn gateways(operator: &Value) -> &Vec<Value> {
    operator["spec"]["components"]["ingressGateways"].as_array().unwrap()
}

fn env_of(gateway: &Value) -> Vec<(String, String)> {
    gateway["k8s"]["env"]
        .as_array()
        .map(|env| {
            env.iter()
                .map(|var| {
                    (
                        var["name"].as_str().unwrap().to_owned(),
                        var["value"].as_str().unwrap().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_gateway_keeps_the_listener_counters_meshfed_reads() {
    for mode in ["serviceentry", "endpoint-discovery"] {
        let scenario = seed_at("1.30.3", mode);
        let operator: Value = serde_saphyr::from_str(&mk_istio_operator(&scenario, &scenario.clusters[0])).unwrap();
        for gateway in gateways(&operator) {
            let regexps = gateway["k8s"]["podAnnotations"]["sidecar.istio.io/statsInclusionRegexps"]
                .as_str()
                .unwrap_or_else(|| panic!("{mode}: {} has no stats inclusion annotation", gateway["name"]));
            let regexps: Vec<&str> = regexps.split(',').collect();
            assert!(regexps.contains(&".*no_filter_chain_match.*"), "{mode}: {regexps:?}");
            assert!(regexps.contains(&r".*\.ssl\..*"), "{mode}: {regexps:?}");
        }
    }
}

#[test]
fn the_federation_gateway_runs_sni_dnat_through_istio_1_11_only() {
    let router_mode = |version: &str, mode: &str, gateway: usize| {
        let scenario = seed_at(version, mode);
        let operator: Value = serde_saphyr::from_str(&mk_istio_operator(&scenario, &scenario.clusters[0])).unwrap();
        env_of(&gateways(&operator)[gateway])
            .into_iter()
            .find(|(name, _)| name == "ISTIO_META_ROUTER_MODE")
            .map(|(_, value)| value)
    };
    for version in ["1.9.9", "1.10.6", "1.11.8"] {
        assert_eq!(
            router_mode(version, "serviceentry", 0).as_deref(),
            Some("sni-dnat"),
            "{version}"
        );
        assert_eq!(
            router_mode(version, "endpoint-discovery", 1).as_deref(),
            Some("sni-dnat"),
            "{version}"
        );
        assert_eq!(
            router_mode(version, "endpoint-discovery", 0),
            None,
            "{version}: not the ingress gateway"
        );
    }
    for version in ["1.12.0", "1.29.0", "1.30.3"] {
        assert_eq!(router_mode(version, "serviceentry", 0), None, "{version}");
        assert_eq!(router_mode(version, "endpoint-discovery", 1), None, "{version}");
    }
}

/// meshfed's east-west gateway against the IstioOperator Istio's own
/// `samples/multicluster/gen-eastwest-gateway.sh` prints at that tag. What must match: the
/// component's name, labels (network included), `enabled`, environment (router mode, requested
/// network view), service ports (name, port, targetPort, in order), and `values.global.network`;
/// where Istio's file sets `meshID` and `clusterName`, meshfed sets them too. What may differ,
/// and why: `metadata.name`, `profile` and `revision` (meshfed installs the control plane and both
/// gateways with one IstioOperator, profile `default`, where the script prints a gateway-only one,
/// profile `empty`); the meshID's value (one mesh per scenario, `meshfed-<name>`);
/// `values.gateways.istio-ingressgateway.injectionTemplate` (the script renders gateways through
/// gateway injection; meshfed keeps the chart's own proxy container, which both work with);
/// `k8s.service.type: LoadBalancer` (the chart's default, written out) and `k8s.podAnnotations`
/// (meshfed's stats inclusion).
#[test]
fn the_east_west_gateway_matches_what_istios_script_prints() {
    for (file, version) in [
        ("istio/eastwest-gateway-1.11.8-mesh1-cluster1-network1.yaml", "1.11.8"),
        ("istio/eastwest-gateway-1.29.0-network1.yaml", "1.29.0"),
        ("istio/eastwest-gateway-1.30.3-network1.yaml", "1.30.3"),
    ] {
        let Some(text) = upstream(file) else {
            return;
        };
        let istio: Value = serde_saphyr::from_str(&text).unwrap();
        let scenario = seed_at(version, "endpoint-discovery");
        let meshfed: Value = serde_saphyr::from_str(&mk_istio_operator(&scenario, &scenario.clusters[0])).unwrap();
        let theirs = &gateways(&istio)[0];
        let ours = gateways(&meshfed)
            .iter()
            .find(|gateway| gateway["name"] == theirs["name"])
            .unwrap_or_else(|| panic!("{file}: meshfed has no {}", theirs["name"]));
        assert_eq!(ours["label"], theirs["label"], "{file}: labels");
        assert_eq!(ours["enabled"], theirs["enabled"], "{file}: enabled");
        assert_eq!(env_of(ours), env_of(theirs), "{file}: environment");
        let ports = |gateway: &Value| -> Vec<(String, u64, u64)> {
            gateway["k8s"]["service"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|port| {
                    (
                        port["name"].as_str().unwrap().to_owned(),
                        port["port"].as_u64().unwrap(),
                        port["targetPort"].as_u64().unwrap(),
                    )
                })
                .collect()
        };
        assert_eq!(ports(ours), ports(theirs), "{file}: service ports");
        let (our_global, their_global) = (&meshfed["spec"]["values"]["global"], &istio["spec"]["values"]["global"]);
        assert_eq!(our_global["network"], their_global["network"], "{file}: network");
        for key in ["meshID", "multiCluster"] {
            if !their_global[key].is_null() {
                assert!(!our_global[key].is_null(), "{file}: global.{key}");
            }
        }
        if !their_global["multiCluster"].is_null() {
            assert_eq!(
                our_global["multiCluster"]["clusterName"], their_global["multiCluster"]["clusterName"],
                "{file}: clusterName"
            );
        }
    }
}
