//! What meshfed installs into each kind cluster before the plan, as Kubernetes YAML (pure): the
//! MetalLB address pool, `istio-system` with its network label, the `cacerts` secret from meshfed's
//! PKI, and the IstioOperator `istioctl install` takes for the scenario's federation mode.
//!
//! - `serviceentry` (the seed): the default ingress gateway, with port 15443 added back to its
//!   Service (default profiles dropped it in 1.9; the plan's AUTO_PASSTHROUGH Gateway listens on it).
//! - `endpoint-discovery`: `meshID`, `clusterName` and `network` values and an east-west gateway
//!   labelled with its network, as Istio's `samples/multicluster/gen-eastwest-gateway.sh` makes it.
//!
//! Both modes log every request and connection of every sidecar as JSON with the peer's URI SAN
//! and the downstream address ([`ACCESS_LOG_FORMAT`]): the measurements read caller identity and
//! connections from there.
#![forbid(unsafe_code)]

use serde_json::{Value, json};

use crate::pki::CaCerts;
use crate::scenario::{Cluster, FederationMode, Scenario};

use super::addresses::AddressPool;

/// Label on every object meshfed writes (what the Kubernetes half checks before changing one).
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "meshfed";
/// The MetalLB release meshfed installs (the one Istio's `samples/kind-lb/setupkind.sh` uses).
pub const METALLB_VERSION: &str = "v0.14.9";

/// The label of every MetalLB pod (controller and speakers) in `metallb-native.yaml`.
pub const METALLB_PODS: &str = "app=metallb";
/// The validating webhooks of the pool's two kinds (`metallb-webhook-configuration` in
/// `metallb-native.yaml`).
pub const METALLB_POOL_WEBHOOKS: [&str; 2] = [
    "ipaddresspoolvalidationwebhook.metallb.io",
    "l2advertisementvalidationwebhook.metallb.io",
];

/// Where MetalLB's manifest for [`METALLB_VERSION`] is published.
pub fn metallb_manifest_url() -> String {
    format!("https://raw.githubusercontent.com/metallb/metallb/{METALLB_VERSION}/config/manifests/metallb-native.yaml")
}

pub use crate::provider::kube_api::kind_seam::{ACCESS_LOG_FORMAT, federation_gateway};

/// The Istio network of a cluster (its `network`, else its name, as the plan labels it).
pub fn network_of(cluster: &Cluster) -> String {
    cluster.network.clone().unwrap_or_else(|| cluster.name.value.clone())
}

/// The mesh ID: one mesh per scenario.
pub fn mesh_id(scenario: &Scenario) -> String {
    format!("meshfed-{}", scenario.name)
}

fn managed_metadata(name: &str, namespace: Option<&str>) -> Value {
    let mut metadata = json!({ "name": name, "labels": { MANAGED_BY_LABEL: MANAGED_BY } });
    if let Some(namespace) = namespace {
        metadata["namespace"] = json!(namespace);
    }
    metadata
}

fn yaml_documents(documents: &[Value]) -> String {
    documents
        .iter()
        .map(|document| serde_saphyr::to_string(document).expect("JSON values serialise as YAML"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// MetalLB's address pool and L2 advertisement for one cluster.
pub fn mk_metallb_pool(pool: &AddressPool) -> String {
    yaml_documents(&[
        json!({
            "apiVersion": "metallb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": managed_metadata("meshfed", Some("metallb-system")),
            "spec": { "addresses": [pool.range()] },
        }),
        json!({
            "apiVersion": "metallb.io/v1beta1",
            "kind": "L2Advertisement",
            "metadata": managed_metadata("meshfed", Some("metallb-system")),
            "spec": { "ipAddressPools": ["meshfed"] },
        }),
    ])
}

/// `istio-system`, labelled with the cluster's network (Istio reads it for multi-network).
pub fn mk_istio_namespace(cluster: &Cluster) -> String {
    let mut metadata = managed_metadata("istio-system", None);
    metadata["labels"]["topology.istio.io/network"] = json!(network_of(cluster));
    yaml_documents(&[json!({ "apiVersion": "v1", "kind": "Namespace", "metadata": metadata })])
}

/// The `cacerts` secret Istio's CA reads at start: the cluster's intermediate CA signed by the
/// mesh root. Holds a private key: never logged, never snapshot.
pub fn mk_cacerts_secret(cacerts: &CaCerts) -> String {
    let data: serde_json::Map<String, Value> = cacerts
        .files()
        .iter()
        .map(|file| (file.name.to_owned(), json!(file.contents)))
        .collect();
    yaml_documents(&[json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": managed_metadata("cacerts", Some("istio-system")),
        "type": "Opaque",
        "stringData": data,
    })])
}

/// Gateway pods keep the counters meshfed reads: Istio's default stats inclusion list drops most
/// listener stats, and only workloads get meshfed's `proxyStatsMatcher` (through
/// `proxy.istio.io/config`); without this the gateways' `listener.*.no_filter_chain_match` (the
/// report's "unknown SNI" counter) always reads 0 on kind. The annotation is read by every Istio
/// version's bootstrap (`pkg/bootstrap/config.go`, `SidecarStatsInclusionRegexps`, 1.8.0 through
/// 1.30.0), and `k8s.podAnnotations` is an IstioOperator field since the operator's first release.
pub const GATEWAY_STATS_ANNOTATION: (&str, &str) = (
    "sidecar.istio.io/statsInclusionRegexps",
    r".*\.ssl\..*,.*no_filter_chain_match.*",
);

/// The last Istio minor whose `samples/multicluster/gen-eastwest-gateway.sh` sets
/// `ISTIO_META_ROUTER_MODE=sni-dnat` (1.8 through 1.11; 1.12 dropped it). Before 1.11 a gateway
/// builds the `outbound_.<port>_._.<host>` clusters AUTO_PASSTHROUGH needs only in `sni-dnat` mode
/// (`pilot/pkg/networking/core/v1alpha3/cluster.go@1.10.0`; 1.11 builds them for any gateway with an
/// AUTO_PASSTHROUGH server, istio/istio#33129), and from 1.9 the ingress gateway chart's default is
/// `standard` (`manifests/charts/gateways/istio-ingress/values.yaml@1.9.0`).
pub const LAST_SNI_DNAT_MINOR: u32 = 11;

/// Whether the federation gateway of an Istio `version` runs in `sni-dnat` router mode.
pub fn needs_sni_dnat(version: crate::scenario::IstioVersion) -> bool {
    version.major == 1 && version.minor <= LAST_SNI_DNAT_MINOR
}

/// The environment of the federation gateway: `sni-dnat` where Istio's script sets it, then `extra`.
fn gateway_env(cluster: &Cluster, extra: Vec<Value>) -> Vec<Value> {
    let mut env = Vec::new();
    if needs_sni_dnat(cluster.istio_version.value) {
        env.push(json!({ "name": "ISTIO_META_ROUTER_MODE", "value": "sni-dnat" }));
    }
    env.extend(extra);
    env
}

fn port(name: &str, port: u16, target: u16) -> Value {
    json!({ "name": name, "port": port, "targetPort": target })
}

/// The IstioOperator `istioctl install -f` takes for one cluster.
pub fn mk_istio_operator(scenario: &Scenario, cluster: &Cluster) -> String {
    let network = network_of(cluster);
    let ingress_ports = vec![
        port("status-port", 15021, 15021),
        port("http2", 80, 8080),
        port("https", 443, 8443),
        // Dropped from the default profile in 1.9; the seed's federation goes through it.
        port("tls", 15443, 15443),
    ];
    let stats = json!({ GATEWAY_STATS_ANNOTATION.0: GATEWAY_STATS_ANNOTATION.1 });
    let endpoint_discovery = scenario.federation.mode.value == FederationMode::EndpointDiscovery;
    let mut ingress_k8s = json!({
        "podAnnotations": stats,
        "service": { "type": "LoadBalancer", "ports": ingress_ports },
    });
    if !endpoint_discovery {
        // The ingress gateway is the federation gateway (the plan's AUTO_PASSTHROUGH on 15443).
        let env = gateway_env(cluster, Vec::new());
        if !env.is_empty() {
            ingress_k8s["env"] = json!(env);
        }
    }
    let mut gateways = vec![json!({
        "name": "istio-ingressgateway",
        "enabled": true,
        "k8s": ingress_k8s,
    })];
    if endpoint_discovery {
        gateways.push(json!({
            "name": "istio-eastwestgateway",
            "label": {
                "istio": "eastwestgateway",
                "app": "istio-eastwestgateway",
                "topology.istio.io/network": network,
            },
            "enabled": true,
            "k8s": {
                "env": gateway_env(cluster, vec![json!({ "name": "ISTIO_META_REQUESTED_NETWORK_VIEW", "value": network })]),
                "podAnnotations": stats,
                "service": {
                    "type": "LoadBalancer",
                    "ports": [
                        port("status-port", 15021, 15021),
                        port("tls", 15443, 15443),
                        port("tls-istiod", 15012, 15012),
                        port("tls-webhook", 15017, 15017),
                    ],
                },
            },
        }));
    }
    // The same worker count the local emulation runs (plan::InstallValues), and with
    // `federation.dnsProxying` the sidecar's DNS proxy (Istio 1.8.0's release note
    // `releasenotes/notes/agent-dns-capture.yaml`: `proxyMetadata.ISTIO_META_DNS_CAPTURE`).
    let mut default_config = json!({ "concurrency": cluster.proxy_concurrency() });
    if scenario.federation.dns_proxying() {
        default_config["proxyMetadata"] = json!({ "ISTIO_META_DNS_CAPTURE": "true" });
    }
    let operator = json!({
        "apiVersion": "install.istio.io/v1alpha1",
        "kind": "IstioOperator",
        "metadata": { "name": format!("meshfed-{}", cluster.name.value), "namespace": "istio-system" },
        "spec": {
            "profile": "default",
            "meshConfig": {
                "trustDomain": scenario.trust_domain,
                "defaultConfig": default_config,
                "accessLogFile": "/dev/stdout",
                "accessLogEncoding": "JSON",
                "accessLogFormat": ACCESS_LOG_FORMAT,
            },
            "values": {
                "global": {
                    "meshID": mesh_id(scenario),
                    "multiCluster": { "clusterName": cluster.name.value },
                    "network": network,
                },
            },
            "components": { "ingressGateways": gateways },
        },
    });
    yaml_documents(&[operator])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metallb_pool_names_the_range_and_is_advertised() {
        let pool = AddressPool {
            first: "172.18.255.205".parse().unwrap(),
            last: "172.18.255.254".parse().unwrap(),
        };
        let yaml = mk_metallb_pool(&pool);
        assert!(yaml.contains("- 172.18.255.205-172.18.255.254"), "{yaml}");
        assert!(yaml.contains("kind: L2Advertisement"), "{yaml}");
    }
}
