//! The shipped kind configs are real kind configs whose pod and service subnets don't overlap and
//! match the clusters of the shipped scenarios.

use std::path::Path;

use meshfed::scenario::{self, Ipv4Cidr};
use serde_json::Value;

fn kind_config(cluster: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("kind-configs")
        .join(format!("{cluster}.yaml"));
    serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn subnets(config: &Value) -> (Ipv4Cidr, Ipv4Cidr) {
    let networking = &config["networking"];
    let parse = |key: &str| {
        networking[key]
            .as_str()
            .unwrap_or_else(|| panic!("missing {key}"))
            .parse()
            .unwrap()
    };
    (parse("podSubnet"), parse("serviceSubnet"))
}

#[test]
fn kind_configs_are_kind_clusters_with_disjoint_subnets() {
    let mut networks: Vec<(String, Ipv4Cidr)> = Vec::new();
    for cluster in ["cluster1", "cluster2", "cluster3"] {
        let config = kind_config(cluster);
        assert_eq!(config["kind"], "Cluster");
        assert_eq!(config["apiVersion"], "kind.x-k8s.io/v1alpha4");
        assert_eq!(config["name"], cluster);
        let (pods, services) = subnets(&config);
        for (name, network) in [
            (format!("{cluster} pods"), pods),
            (format!("{cluster} services"), services),
        ] {
            for (other_name, other) in &networks {
                assert!(
                    !network.overlaps(*other),
                    "{name} {network} overlaps {other_name} {other}"
                );
            }
            networks.push((name, network));
        }
    }
}

#[test]
fn shipped_scenarios_use_the_kind_configs_subnets() {
    for name in ["seed.yaml", "skew.yaml", "three-clusters.yaml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name);
        let scenario = scenario::load(&path).unwrap();
        for cluster in &scenario.clusters {
            let (pods, services) = subnets(&kind_config(&cluster.name.value));
            assert_eq!(cluster.pod_cidr.value, pods, "{name} {}", cluster.name.value);
            assert_eq!(cluster.service_cidr.value, services, "{name} {}", cluster.name.value);
        }
    }
}
