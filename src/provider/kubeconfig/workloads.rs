//! The scenario's workloads on a real cluster, as desired objects (no I/O): per service with pods
//! in the cluster a ServiceAccount (its SPIFFE identity) and a Deployment running meshfed's echo in
//! the image the user names, with Istio's sidecar injected; and the plan's namespaces labelled for
//! injection.
//!
//! Every object and every pod carries meshfed's ownership labels, so `meshfed down` finds them and
//! a namespace holding only meshfed's pods may be deleted.

use serde_json::{Value, json};

use crate::plan::{MANAGED_BY, MANAGED_BY_LABEL, SCENARIO_LABEL};
use crate::scenario::{Protocol, Scenario};

/// The image the workloads run and how meshfed is invoked in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadImage {
    /// Image reference, e.g. `ghcr.io/example/meshfed:0.1.0` or a user's own registry.
    pub image: String,
    /// The meshfed executable inside the image (the echo runs `<command> workload echo …`, the
    /// client `<command> workload client …`).
    pub command: String,
}

/// Label of the pods of a service (`app: bar`), as Istio's samples use.
pub const APP_LABEL: &str = "app";
/// Name of the workload container (the sidecar is `istio-proxy`).
pub const APP_CONTAINER: &str = "app";
/// Istio's sidecar container.
pub const SIDECAR_CONTAINER: &str = "istio-proxy";
/// Proxy settings on each pod: keep the TLS failure counters meshfed reads (Istio drops most
/// listener stats by default).
pub const PROXY_CONFIG: &str =
    r#"{"proxyStatsMatcher":{"inclusionRegexps":[".*\\.ssl\\..*",".*no_filter_chain_match.*"]}}"#;

fn labels(scenario: &Scenario, app: Option<&str>) -> Value {
    let mut labels = json!({MANAGED_BY_LABEL: MANAGED_BY, SCENARIO_LABEL: scenario.name});
    if let Some(app) = app {
        labels[APP_LABEL] = json!(app);
    }
    labels
}

/// ServiceAccounts and Deployments of the services with pods in `cluster`.
pub fn workload_objects(scenario: &Scenario, cluster: &str, image: &WorkloadImage) -> Vec<Value> {
    let mut objects = Vec::new();
    for service in scenario.services_in(cluster) {
        let name = &service.name.value;
        let namespace = &service.namespace.value;
        objects.push(json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": service.service_account(), "namespace": namespace, "labels": labels(scenario, None)},
        }));
        let mut args = vec![
            "workload".to_owned(),
            "echo".to_owned(),
            "--pod".to_owned(),
            "$(POD_NAME)".to_owned(),
            "--cluster".to_owned(),
            cluster.to_owned(),
            // Since Istio 1.10 the sidecar forwards to the pod IP, not loopback.
            "--bind".to_owned(),
            "0.0.0.0".to_owned(),
        ];
        for port in &service.ports {
            args.push(match port.protocol {
                Protocol::Http | Protocol::Http2 => "--http".to_owned(),
                Protocol::Tcp => "--tcp".to_owned(),
            });
            args.push(port.number.value.to_string());
        }
        let container_ports: Vec<Value> = service
            .ports
            .iter()
            .map(|port| json!({"name": port.name.value, "containerPort": port.number.value}))
            .collect();
        objects.push(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": labels(scenario, Some(name))},
            "spec": {
                "replicas": service.replicas_in(cluster),
                "selector": {"matchLabels": {APP_LABEL: name, SCENARIO_LABEL: scenario.name}},
                "template": {
                    "metadata": {
                        "labels": labels(scenario, Some(name)),
                        "annotations": {"proxy.istio.io/config": PROXY_CONFIG},
                    },
                    "spec": {
                        "serviceAccountName": service.service_account(),
                        "containers": [{
                            "name": APP_CONTAINER,
                            "image": image.image,
                            "command": [image.command],
                            "args": args,
                            "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                            "ports": container_ports,
                            "readinessProbe": {"tcpSocket": {"port": service.ports[0].number.value}, "periodSeconds": 2},
                        }],
                    },
                },
            },
        }));
    }
    objects
}

/// The plan's objects with its namespaces labelled for sidecar injection (one apply carries both,
/// so re-applying the plan never drops the label meshfed set).
pub fn with_injection(mut objects: Vec<Value>) -> Vec<Value> {
    for object in &mut objects {
        let is_workload_namespace =
            object["kind"] == "Namespace" && object["metadata"]["name"] != crate::plan::ROOT_NAMESPACE;
        if is_workload_namespace {
            object["metadata"]["labels"]["istio-injection"] = json!("enabled");
        }
    }
    objects
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Scenario {
        crate::scenario::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scenarios/seed.yaml"
        )))
        .unwrap()
    }

    #[test]
    fn bar_runs_the_named_image_with_its_ports_identity_and_ownership_labels() {
        let image = WorkloadImage {
            image: "registry.example/meshfed:test".into(),
            command: "/usr/local/bin/meshfed".into(),
        };
        let objects = workload_objects(&seed(), "cluster2", &image);
        let kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["ServiceAccount", "Deployment"], "only bar has pods in cluster2");
        let deployment = &objects[1];
        assert_eq!(deployment["spec"]["replicas"], 1);
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["image"], "registry.example/meshfed:test");
        assert_eq!(container["command"][0], "/usr/local/bin/meshfed");
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(
            args,
            [
                "workload",
                "echo",
                "--pod",
                "$(POD_NAME)",
                "--cluster",
                "cluster2",
                "--bind",
                "0.0.0.0",
                "--http",
                "80",
                "--tcp",
                "9090"
            ]
        );
        assert_eq!(deployment["spec"]["template"]["spec"]["serviceAccountName"], "bar");
        for labelled in [
            &deployment["metadata"],
            &deployment["spec"]["template"]["metadata"],
            &objects[0]["metadata"],
        ] {
            assert_eq!(labelled["labels"][MANAGED_BY_LABEL], "meshfed");
            assert_eq!(labelled["labels"][SCENARIO_LABEL], "seed");
        }
    }

    #[test]
    fn workload_namespaces_get_injection_and_the_root_namespace_does_not() {
        let objects = with_injection(vec![
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns2", "labels": {MANAGED_BY_LABEL: MANAGED_BY}}}),
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system", "labels": {}}}),
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bar", "labels": {}}}),
        ]);
        assert_eq!(objects[0]["metadata"]["labels"]["istio-injection"], "enabled");
        assert_eq!(objects[0]["metadata"]["labels"][MANAGED_BY_LABEL], "meshfed");
        assert!(objects[1]["metadata"]["labels"].get("istio-injection").is_none());
        assert!(objects[2]["metadata"]["labels"].get("istio-injection").is_none());
    }
}
