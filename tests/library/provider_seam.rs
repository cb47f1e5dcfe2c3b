//! The provider seam: futures are `Send` (a provider may run on a multi-threaded runtime), the
//! sending pod comes from the live inventory (real pods are not `foo-0`), each provider declares
//! what it supports and a scenario asking for more is refused with its position, and create,
//! apply and teardown report progress.

use crate::support::meshfed_command::Meshfed;
use crate::support::temp_dir::temp_dir;
use crate::support::test_provider::test_provider_info;
use std::path::Path;

use meshfed::driver;
use meshfed::inventory::{self, GatewayAddress, Inventory};
use meshfed::plan::Plan;
use meshfed::progress::Progress;
use meshfed::provider::capabilities::{Action, Capabilities, FaultKind};
use meshfed::provider::kubeconfig::{KubeconfigOptions, KubeconfigProvider, WorkloadImage};
use meshfed::provider::local::{LocalOptions, LocalProvider};
use meshfed::provider::{IsolationProbe, PhaseSettings, Provider, ProviderError, ProviderInfo, TlsFailures, Traffic};
use meshfed::record::RequestRecord;
use meshfed::scenario::{self, Scenario};

fn assert_send<T: Send>(_: &T) {}

fn seed() -> Scenario {
    scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml")).unwrap()
}

#[test]
fn every_providers_run_is_a_send_future() {
    let scenario = seed();
    let mut progress = |_: &str| {};
    let mut kubeconfig = KubeconfigProvider::new(KubeconfigOptions::new(WorkloadImage {
        image: "example/meshfed:test".into(),
        command: "meshfed".into(),
    }));
    // Compile-time: these lines fail to build if a provider's future is not Send.
    assert_send(&driver::drive_scenario(
        &mut kubeconfig,
        &scenario,
        Path::new("seed.yaml"),
        &mut progress,
    ));
    let mut local = LocalProvider::new(LocalOptions {
        envoy: "envoy".into(),
        envoy_version: "1.40.0".into(),
        meshfed: "meshfed".into(),
        run_dir: std::env::temp_dir(),
        mode: meshfed::provider::local::sandbox::SandboxMode::Root,
    });
    assert_send(&driver::drive_scenario(
        &mut local,
        &scenario,
        Path::new("seed.yaml"),
        &mut progress,
    ));
}

/// A world whose pods have generated names, like a Deployment's.
#[derive(Default)]
struct RealNames {
    senders: Vec<String>,
}

const FOO_POD: &str = "foo-7d9c5b6f4-x2x9q";

impl Provider for RealNames {
    fn info(&self) -> ProviderInfo {
        test_provider_info("real-names")
    }

    async fn create_world(
        &mut self,
        scenario: &Scenario,
        progress: &mut dyn Progress,
    ) -> Result<Inventory, ProviderError> {
        progress.step("real-names: creating");
        let mut inventory = inventory::from_scenario_with_gateways(scenario, |_| GatewayAddress {
            address: "192.0.2.1".into(),
            port: 15443,
            placeholder: false,
        });
        for cluster in inventory.clusters.values_mut() {
            for (service, pods) in cluster.ready_pods.iter_mut() {
                for (index, pod) in pods.iter_mut().enumerate() {
                    pod.name = if service == "foo.ns1" {
                        FOO_POD.into()
                    } else {
                        format!("bar-5d8f7-{index}abcd")
                    };
                }
            }
        }
        Ok(inventory)
    }

    async fn apply_plan(
        &mut self,
        _: &Plan,
        _: &PhaseSettings,
        progress: &mut dyn Progress,
    ) -> Result<(), ProviderError> {
        progress.step("real-names: applying");
        Ok(())
    }

    async fn check_isolation(&mut self) -> Result<Vec<IsolationProbe>, ProviderError> {
        Ok(Vec::new())
    }

    async fn send_traffic(
        &mut self,
        traffic: &Traffic,
        _: &mut dyn Progress,
    ) -> Result<Vec<RequestRecord>, ProviderError> {
        self.senders
            .push(format!("{}@{}", traffic.from_pod, traffic.from_cluster));
        Ok(Vec::new())
    }

    async fn tls_failures(&mut self, _: &str) -> Result<TlsFailures, ProviderError> {
        Ok(TlsFailures::default())
    }

    async fn check_alive(&mut self) -> Result<(), ProviderError> {
        Ok(())
    }

    async fn stuck(&mut self) -> Vec<String> {
        Vec::new()
    }

    async fn teardown(&mut self, progress: &mut dyn Progress) -> Result<(), ProviderError> {
        progress.step("real-names: tearing down");
        Ok(())
    }
}

#[test]
fn traffic_is_sent_from_the_pod_the_live_inventory_names() {
    let mut provider = RealNames::default();
    let mut steps = Vec::new();
    let mut progress = |line: &str| steps.push(line.to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let scenario = seed();
    let report = runtime.block_on(async {
        let report = driver::drive_scenario(&mut provider, &scenario, Path::new("seed.yaml"), &mut progress).await;
        provider.teardown(&mut progress).await.unwrap();
        report
    });
    report.unwrap();
    assert_eq!(
        provider.senders,
        [
            format!("{FOO_POD}@cluster1"),
            format!("{FOO_POD}@cluster1"),
            "bar-5d8f7-0abcd@cluster2".to_owned()
        ]
    );
    for step in [
        "real-names: creating",
        "real-names: applying",
        "real-names: tearing down",
    ] {
        assert!(steps.iter().any(|line| line == step), "{step} missing from {steps:?}");
    }
}

#[test]
fn a_sender_missing_from_the_inventory_is_an_error_naming_service_and_cluster() {
    let scenario = seed();
    let inventory = Inventory {
        clusters: Default::default(),
    };
    let error = driver::sending_pod(&inventory, "cluster1", "foo.ns1").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("foo.ns1 has no ready pod in cluster cluster1"),
        "{error}"
    );
    let live = inventory::from_scenario(&scenario);
    assert_eq!(driver::sending_pod(&live, "cluster1", "foo.ns1").unwrap(), "foo-0");
}

#[test]
fn a_provider_refuses_faults_and_actions_it_does_not_support_with_their_position() {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml")).unwrap();
    let with_fault = text.replacen(
        "    requests: 400\n",
        "    requests: 400\n    faults:\n      - foreignClientCert: {}\n",
        1,
    );
    let scenario = scenario::parse(Path::new("f.yaml"), &with_fault).unwrap();
    assert!(
        LocalProvider::CAPABILITIES
            .check(&scenario, Path::new("f.yaml"))
            .is_ok()
    );
    let refusal = KubeconfigProvider::CAPABILITIES
        .check(&scenario, Path::new("f.yaml"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        refusal,
        "f.yaml:41:9: phase foo-to-bar-http: fault foreignClientCert is not supported by provider kubeconfig; it supports: scale"
    );
    let with_weights = text.replacen(
        "    requests: 400\n",
        "    requests: 400\n    endpointWeights: ready-pods\n",
        1,
    );
    let scenario = scenario::parse(Path::new("w.yaml"), &with_weights).unwrap();
    let weights_only = Capabilities {
        provider: "minimal",
        faults: &[FaultKind::ForeignClientCert],
        actions: &[Action::NewConnectionPerRequest],
        changes: &[],
        federation_modes: &[meshfed::scenario::FederationMode::Serviceentry],
    };
    let refusal = weights_only
        .check(&scenario, Path::new("w.yaml"))
        .unwrap_err()
        .to_string();
    assert!(
        refusal.starts_with("w.yaml:")
            && refusal
                .contains("phase foo-to-bar-http: endpointWeights (per phase) is not supported by provider minimal"),
        "{refusal}"
    );
    assert!(
        KubeconfigProvider::CAPABILITIES
            .check(&scenario, Path::new("w.yaml"))
            .is_ok()
    );
}

/// The seed in endpoint-discovery mode, written to a temporary file: (its path, the line of `mode:`).
fn endpoint_discovery_seed(dir: &Path) -> (std::path::PathBuf, usize) {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml"))
        .unwrap()
        .replace("  mode: serviceentry", "  mode: endpoint-discovery");
    let line = text
        .lines()
        .position(|line| line == "  mode: endpoint-discovery")
        .unwrap()
        + 1;
    let path = dir.join("seed-endpoint-discovery.yaml");
    std::fs::write(&path, text).unwrap();
    (path, line)
}

#[test]
fn endpoint_discovery_is_refused_by_kind_and_kubeconfig_at_its_position_and_run_by_local() {
    let dir = temp_dir("provider-seam");
    let (path, line) = endpoint_discovery_seed(dir.path());
    let scenario = scenario::load(&path).unwrap();
    assert!(LocalProvider::CAPABILITIES.check(&scenario, &path).is_ok());
    for (capabilities, provider) in [
        (meshfed::provider::kind::KIND_CAPABILITIES, "kind"),
        (KubeconfigProvider::CAPABILITIES, "kubeconfig"),
    ] {
        let refusal = capabilities.check(&scenario, &path).unwrap_err().to_string();
        assert_eq!(
            refusal,
            format!(
                "{}:{line}:9: federation mode endpoint-discovery is not supported by provider {provider}; it supports: serviceentry",
                path.display()
            )
        );
    }
}

#[test]
fn endpoint_discovery_on_kind_exits_2_before_looking_for_kind_or_docker() {
    let dir = temp_dir("provider-seam-cli");
    let (path, line) = endpoint_discovery_seed(dir.path());
    // No kind and no docker on PATH: a refusal that came later would be exit 3 naming them.
    let output = Meshfed::new(["run", path.to_str().unwrap(), "--provider", "kind"])
        .env("PATH", "/usr/bin:/bin")
        .env("MESHFED_CACHE_DIR", dir.path().join("cache"))
        .output();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("seed-endpoint-discovery.yaml:{line}:9: federation mode endpoint-discovery is not supported by provider kind")),
        "{stderr}"
    );
    assert!(!dir.path().join("cache").exists(), "nothing was created");
}
