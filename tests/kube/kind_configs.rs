//! The shipped kind configs are what the shipped scenarios generate (`kind::config::kind_config`),
//! are real kind configs whose pod and service subnets don't overlap, and carry meshfed's name
//! prefix. `MESHFED_UPDATE_KIND_CONFIGS=1 cargo test --test kube kind_configs::` rewrites them; review the
//! diff like code.

use std::path::{Path, PathBuf};

use meshfed::provider::kind::config::{CLUSTER_PREFIX, kind_config};
use meshfed::scenario::{self, Ipv4Cidr};
use serde_json::Value;

const SHIPPED_SCENARIOS: [&str; 4] = ["seed.yaml", "skew.yaml", "three-clusters.yaml", "upgrade.yaml"];

fn kind_config_path(cluster: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("kind-configs")
        .join(format!("{cluster}.yaml"))
}

fn kind_config_file(cluster: &str) -> Value {
    serde_saphyr::from_str(&std::fs::read_to_string(kind_config_path(cluster)).unwrap()).unwrap()
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
        let config = kind_config_file(cluster);
        assert_eq!(config["kind"], "Cluster");
        assert_eq!(config["apiVersion"], "kind.x-k8s.io/v1alpha4");
        assert_eq!(config["name"], format!("{CLUSTER_PREFIX}{cluster}"));
        assert_eq!(config["nodes"][0]["labels"]["meshfed.io/cluster"], cluster);
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
fn shipped_kind_configs_are_what_the_shipped_scenarios_generate() {
    let update = std::env::var_os("MESHFED_UPDATE_KIND_CONFIGS").is_some();
    let mut checked = 0;
    for name in SHIPPED_SCENARIOS {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name);
        let scenario = scenario::load(&path).unwrap();
        for cluster in &scenario.clusters {
            let generated = kind_config(cluster);
            let file = kind_config_path(&cluster.name.value);
            if update {
                std::fs::write(&file, &generated).unwrap();
            }
            let shipped = std::fs::read_to_string(&file).unwrap();
            assert_eq!(
                shipped,
                generated,
                "{} differs from what {name} generates for {} (MESHFED_UPDATE_KIND_CONFIGS=1 rewrites it)",
                file.display(),
                cluster.name.value
            );
            let (pods, services) = subnets(&kind_config_file(&cluster.name.value));
            assert_eq!(cluster.pod_cidr.value, pods, "{name} {}", cluster.name.value);
            assert_eq!(cluster.service_cidr.value, services, "{name} {}", cluster.name.value);
            checked += 1;
        }
    }
    assert_eq!(checked, 9, "clusters of the shipped scenarios");
}
