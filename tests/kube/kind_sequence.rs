//! The whole `kind` sequence for the shipped scenarios with fake `kind`, `docker` and `istioctl` on
//! `PATH` (tests/support/fake_tools.rs): every program call, in order, snapshot-tested. Downloads are
//! no program call (src/provider/kind/download.rs, tested on loopback there and in
//! tests/kube/istioctl_download.rs): the cache already holds istioctl and the MetalLB manifest.
//! The Kubernetes API half is a recording fake [`KubeSide`] writing into the same log (`kube[...]`
//! lines): it stands in for the kube-rs client (server-side apply, waits, workloads, traffic),
//! which is tested against a mock API server elsewhere. Also: `meshfed down` deletes only
//! `meshfed-*` clusters, and `meshfed run --provider kind` without Docker or kind exits 3 at once,
//! naming what is missing.

use crate::support::fake_tools;
use crate::support::meshfed_command::{MESHFED, Meshfed};
use crate::support::skip;

use std::io::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fake_tools::FakeTools;
use meshfed::change::WorldChange;
use meshfed::inventory::InventoryEvent;
use meshfed::inventory::{self, Inventory};
use meshfed::plan::Plan;
use meshfed::progress::Progress;
use meshfed::provider::kind::install::METALLB_VERSION;
use meshfed::provider::kind::{KindCluster, KindOptions, KindProvider, KubeSide, Tools};
use meshfed::provider::{IsolationProbe, PhaseSettings, Provider, ProviderError, ProviderInfo, TlsFailures, Traffic};
use meshfed::record::RequestRecord;
use meshfed::scenario::{self, Scenario};
use serde_json::Value;

/// The Kubernetes half, recorded: applies name each document's kind, namespace/name (and what
/// matters of it); the LoadBalancer address is the first of the MetalLB pool applied to that
/// cluster, as MetalLB assigns it.
struct RecordingKube {
    log: PathBuf,
    pools: std::collections::BTreeMap<String, Ipv4Addr>,
    attached: Vec<KindCluster>,
    image: String,
}

impl RecordingKube {
    fn record(&self, line: &str) {
        let mut file = std::fs::OpenOptions::new().append(true).open(&self.log).unwrap();
        writeln!(file, "{line}").unwrap();
    }
}

fn describe_documents(yaml: &str) -> Vec<(String, Value)> {
    yaml.trim_start_matches("---\n")
        .split("\n---\n")
        .filter(|document| !document.trim().is_empty())
        .map(|document| {
            let value: Value = serde_saphyr::from_str(document).unwrap();
            let metadata = &value["metadata"];
            let name = match metadata["namespace"].as_str() {
                Some(namespace) => format!("{namespace}/{}", metadata["name"].as_str().unwrap_or("?")),
                None => metadata["name"].as_str().unwrap_or("?").to_owned(),
            };
            (format!("{} {name}", value["kind"].as_str().unwrap_or("?")), value)
        })
        .collect()
}

impl Provider for RecordingKube {
    fn info(&self) -> ProviderInfo {
        unreachable!("the kind provider answers info itself")
    }
    async fn create_world(
        &mut self,
        scenario: &Scenario,
        _: &mut dyn meshfed::progress::Progress,
    ) -> Result<Inventory, ProviderError> {
        let clusters: Vec<String> = self
            .attached
            .iter()
            .map(|cluster| {
                format!(
                    "{} via {} gateway {:?}",
                    cluster.cluster, cluster.context, cluster.gateway_address
                )
            })
            .collect();
        self.record(&format!(
            "kube create_world image={} [{}]",
            self.image,
            clusters.join("; ")
        ));
        Ok(inventory::from_scenario(scenario))
    }
    async fn apply_plan(
        &mut self,
        _: &Plan,
        _: &PhaseSettings,
        _: &mut dyn meshfed::progress::Progress,
    ) -> Result<(), ProviderError> {
        unreachable!()
    }
    async fn check_isolation(&mut self) -> Result<Vec<IsolationProbe>, ProviderError> {
        unreachable!()
    }
    async fn send_traffic(
        &mut self,
        traffic: &Traffic,
        _: &mut dyn Progress,
    ) -> Result<Vec<RequestRecord>, ProviderError> {
        self.record(&format!(
            "kube send_traffic {} requests from {} to {}",
            traffic.requests, traffic.from_service, traffic.to_service
        ));
        Ok(Vec::new())
    }
    async fn tls_failures(&mut self, _: &str) -> Result<TlsFailures, ProviderError> {
        unreachable!()
    }
    async fn check_alive(&mut self) -> Result<(), ProviderError> {
        unreachable!()
    }
    async fn stuck(&mut self) -> Vec<String> {
        Vec::new()
    }
    async fn teardown(&mut self, _: &mut dyn meshfed::progress::Progress) -> Result<(), ProviderError> {
        self.record("kube teardown");
        Ok(())
    }
}

impl KubeSide for RecordingKube {
    fn check_available(&self) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn apply_manifests(&mut self, cluster: &KindCluster, what: &str, yaml: &str) -> Result<(), ProviderError> {
        let mut described = Vec::new();
        for (name, value) in describe_documents(yaml) {
            let detail = match value["kind"].as_str() {
                Some("IPAddressPool") => {
                    let range = value["spec"]["addresses"][0].as_str().unwrap().to_owned();
                    let first = range.split('-').next().unwrap().parse().unwrap();
                    self.pools.insert(cluster.cluster.clone(), first);
                    format!(" {range}")
                }
                Some("Namespace") if name.ends_with("istio-system") => format!(
                    " network={}",
                    value["metadata"]["labels"]["topology.istio.io/network"]
                        .as_str()
                        .unwrap()
                ),
                Some("Secret") if name.ends_with("cacerts") => {
                    let mut keys: Vec<&str> = value["stringData"]
                        .as_object()
                        .unwrap()
                        .keys()
                        .map(String::as_str)
                        .collect();
                    keys.sort();
                    format!(" keys={}", keys.join(","))
                }
                _ => String::new(),
            };
            described.push(format!("{name}{detail}"));
        }
        self.record(&format!(
            "kube[{}] apply {what}: {}",
            cluster.context,
            described.join(", ")
        ));
        Ok(())
    }
    async fn apply_manifests_when_webhooks_serve(
        &mut self,
        cluster: &KindCluster,
        what: &str,
        yaml: &str,
        webhooks: &[&str],
    ) -> Result<(), ProviderError> {
        self.record(&format!(
            "kube[{}] (retried while webhooks {} do not serve)",
            cluster.context,
            webhooks.join(", ")
        ));
        self.apply_manifests(cluster, what, yaml).await
    }
    async fn await_pods_ready(
        &mut self,
        cluster: &KindCluster,
        namespace: &str,
        labels: &str,
        deadline: Duration,
    ) -> Result<(), ProviderError> {
        self.record(&format!(
            "kube[{}] await every pod {labels} in {namespace} Ready within {} s",
            cluster.context,
            deadline.as_secs()
        ));
        Ok(())
    }
    async fn await_load_balancer_address(
        &mut self,
        cluster: &KindCluster,
        namespace: &str,
        service: &str,
        deadline: Duration,
    ) -> Result<Ipv4Addr, ProviderError> {
        self.record(&format!(
            "kube[{}] await service {namespace}/{service} load balancer address within {} s",
            cluster.context,
            deadline.as_secs()
        ));
        self.pools.get(&cluster.cluster).copied().ok_or_else(|| {
            ProviderError::Unavailable(format!(
                "no MetalLB pool was applied to {} before its gateway",
                cluster.cluster
            ))
        })
    }
    fn attach(&mut self, clusters: &[KindCluster], workload_image: &str) {
        self.attached = clusters.to_vec();
        self.image = workload_image.to_owned();
    }
}

fn load_scenario(name: &str) -> Scenario {
    scenario::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name)).unwrap()
}

/// A kind provider on the fakes, with a cache holding a fake istioctl of each version given and
/// a MetalLB manifest, a fixed "binary" for the workload image (so its tag is stable).
fn kind_provider(
    fakes: &FakeTools,
    versions: &[&str],
    reuse: bool,
) -> (KindProvider<RecordingKube>, std::sync::mpsc::Receiver<String>) {
    let cache = fakes.root.join("cache");
    for version in versions {
        fakes.write_istioctl(&cache.join(format!("istio-{version}")).join("istioctl"), version);
    }
    let metallb = cache.join(format!("metallb-{METALLB_VERSION}"));
    std::fs::create_dir_all(&metallb).unwrap();
    std::fs::write(
        metallb.join("metallb-native.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: metallb-system\n",
    )
    .unwrap();
    let binary = fakes.root.join("meshfed-binary");
    std::fs::write(&binary, b"not really meshfed").unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    let options = KindOptions {
        tools: Tools::with_path(fakes.path()),
        cache_dir: cache,
        releases_url: "http://127.0.0.1:9/unused".to_owned(),
        run_dir: fakes.root.join("run"),
        reuse,
        workload_binary: binary,
        workload_image: None,
        progress: Box::new(move |line: &str| {
            let _ = sender.send(line.to_owned());
        }),
    };
    let kube = RecordingKube {
        log: fakes.root.join("log"),
        pools: Default::default(),
        attached: Vec::new(),
        image: String::new(),
    };
    (KindProvider::new(options, kube), receiver)
}

/// The log with the temp dir redacted and the (parallel, so unordered) cluster creations sorted.
fn normalised_log(fakes: &FakeTools) -> String {
    let log = fakes
        .log()
        .replace(&fakes.root.display().to_string(), "[TMP]")
        .replace(&format!(".{}.partial", std::process::id()), ".[PID].partial");
    let mut lines: Vec<String> = log.lines().map(str::to_owned).collect();
    let mut start = 0;
    while start < lines.len() {
        let mut end = start;
        while end < lines.len() && lines[end].starts_with("kind create cluster") {
            end += 1;
        }
        lines[start..end].sort();
        start = end.max(start + 1);
    }
    lines.join("\n") + "\n"
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn seed_on_kind_runs_the_documented_sequence_and_deletes_what_it_created() {
    let fakes = FakeTools::new("seed-sequence", &["kind", "dev"], 2);
    let scenario = load_scenario("seed.yaml");
    let (mut provider, progress) = kind_provider(&fakes, &["1.30.3"], false);
    let runtime = runtime();
    let inventory = runtime
        .block_on(provider.create_world(&scenario, &mut |_: &str| {}))
        .unwrap();
    assert_eq!(inventory.clusters.len(), 2);
    let gateways: Vec<Option<Ipv4Addr>> = provider
        .clusters()
        .iter()
        .map(|cluster| cluster.gateway_address)
        .collect();
    assert_eq!(
        gateways,
        [
            Some(Ipv4Addr::new(172, 18, 255, 205)),
            Some(Ipv4Addr::new(172, 18, 255, 155))
        ]
    );
    // kind got exactly the shipped configs.
    for cluster in ["cluster1", "cluster2"] {
        let shipped =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("kind-configs/{cluster}.yaml")))
                .unwrap();
        assert_eq!(fakes.kind_config_given(&format!("meshfed-{cluster}")), shipped);
    }
    // The seed's gateway keeps 15443 and carries each cluster's identity.
    let operator: Value = serde_saphyr::from_str(&fakes.operator_given("kind-meshfed-cluster2")).unwrap();
    assert_eq!(
        operator["spec"]["values"]["global"]["multiCluster"]["clusterName"],
        "cluster2"
    );
    let ports = &operator["spec"]["components"]["ingressGateways"][0]["k8s"]["service"]["ports"];
    assert!(
        ports.as_array().unwrap().iter().any(|port| port["port"] == 15443),
        "{ports}"
    );
    assert_eq!(provider.info().proxy, "istio 1.30.3");
    assert!(provider.info().mode.starts_with("kind v0.30.0"));
    runtime.block_on(provider.teardown(&mut |_: &str| {})).unwrap();
    assert_eq!(fakes.clusters(), ["kind", "dev"], "foreign clusters stay, meshfed's go");
    assert!(!fakes.root.join("run").exists(), "the run directory is removed");
    let progress: Vec<String> = progress.try_iter().collect();
    for expected in ["cluster1: creating kind cluster", "cluster2: kind cluster created in"] {
        assert!(
            progress.iter().any(|line| line.starts_with(expected)),
            "{expected}: {progress:#?}"
        );
    }
    insta::assert_snapshot!("seed_kind_sequence", normalised_log(&fakes));
}

#[test]
fn endpoint_discovery_adds_an_east_west_gateway_and_remote_secrets_everywhere_else() {
    let fakes = FakeTools::new("ed-sequence", &[], 3);
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/three-clusters.yaml"))
        .unwrap()
        .replace("mode: serviceentry", "mode: endpoint-discovery");
    let scenario = scenario::parse(Path::new("three-clusters-ed.yaml"), &text).unwrap();
    let (mut provider, _progress) = kind_provider(&fakes, &["1.30.3"], false);
    let runtime = runtime();
    runtime
        .block_on(provider.create_world(&scenario, &mut |_: &str| {}))
        .unwrap();
    runtime.block_on(provider.teardown(&mut |_: &str| {})).unwrap();
    let log = normalised_log(&fakes);
    let operator: Value = serde_saphyr::from_str(&fakes.operator_given("kind-meshfed-cluster3")).unwrap();
    let eastwest = &operator["spec"]["components"]["ingressGateways"][1];
    assert_eq!(eastwest["label"]["topology.istio.io/network"], "cluster3");
    assert_eq!(operator["spec"]["values"]["global"]["network"], "cluster3");
    assert_eq!(operator["spec"]["values"]["global"]["meshID"], "meshfed-three-clusters");
    // Each cluster's secret goes to the two others, and only there.
    for cluster in ["cluster1", "cluster2", "cluster3"] {
        let applied: Vec<&str> = log
            .lines()
            .filter(|line| line.contains(&format!("apply remote secret of {cluster}:")))
            .collect();
        assert_eq!(applied.len(), 2, "{cluster}: {applied:#?}");
        assert!(
            !applied
                .iter()
                .any(|line| line.contains(&format!("kube[kind-meshfed-{cluster}]")))
        );
    }
    insta::assert_snapshot!("endpoint_discovery_kind_sequence", log);
}

#[test]
fn an_existing_meshfed_cluster_is_refused_without_reuse_and_kept_with_it() {
    let fakes = FakeTools::new("reuse", &["meshfed-cluster1", "meshfed-cluster2"], 0);
    let scenario = load_scenario("seed.yaml");
    let runtime = runtime();
    let (mut provider, _progress) = kind_provider(&fakes, &["1.30.3"], false);
    let error = runtime
        .block_on(provider.create_world(&scenario, &mut |_: &str| {}))
        .unwrap_err()
        .to_string();
    assert!(error.contains("meshfed-cluster1 already exists"), "{error}");
    runtime.block_on(provider.teardown(&mut |_: &str| {})).unwrap();
    assert_eq!(
        fakes.clusters(),
        ["meshfed-cluster1", "meshfed-cluster2"],
        "nothing deleted"
    );

    let (mut provider, _progress) = kind_provider(&fakes, &["1.30.3"], true);
    runtime
        .block_on(provider.create_world(&scenario, &mut |_: &str| {}))
        .unwrap();
    runtime.block_on(provider.teardown(&mut |_: &str| {})).unwrap();
    let log = fakes.log();
    assert!(!log.contains("kind create cluster"), "{log}");
    assert!(!log.contains("kind delete cluster"), "{log}");
    assert!(
        log.contains("kube teardown"),
        "kept clusters lose this run's workloads: {log}"
    );
    assert_eq!(fakes.clusters(), ["meshfed-cluster1", "meshfed-cluster2"]);
}

#[test]
fn a_failed_creation_deletes_the_clusters_it_started() {
    // Parallelism 3 for a 2-cluster scenario: the fake kind gives up waiting and fails both.
    let fakes = FakeTools::new("create-fails", &["kind"], 3);
    let scenario = load_scenario("seed.yaml");
    let (mut provider, _progress) = kind_provider(&fakes, &["1.30.3"], false);
    let runtime = runtime();
    let error = format!(
        "{:#}",
        anyhow::Error::new(
            runtime
                .block_on(provider.create_world(&scenario, &mut |_: &str| {}))
                .unwrap_err()
        )
    );
    assert!(error.contains("creating the kind cluster of cluster"), "{error}");
    assert!(error.contains("not created in parallel"), "{error}");
    runtime.block_on(provider.teardown(&mut |_: &str| {})).unwrap();
    let log = fakes.log();
    for name in ["meshfed-cluster1", "meshfed-cluster2"] {
        assert!(log.contains(&format!("kind delete cluster --name {name}")), "{log}");
    }
    assert!(!log.contains("kind delete cluster --name kind"), "{log}");
}

fn meshfed(path: &Path, args: &[&str]) -> (std::process::Output, Duration) {
    meshfed_with_tmpdir(path, &std::env::temp_dir(), args)
}

fn meshfed_with_tmpdir(path: &Path, tmpdir: &Path, args: &[&str]) -> (std::process::Output, Duration) {
    let started = std::time::Instant::now();
    let output = Meshfed::new(args)
        .env("PATH", path)
        .env("TMPDIR", tmpdir)
        .env(
            "MESHFED_CACHE_DIR",
            std::env::temp_dir().join("meshfed-kind-test-cache-unused"),
        )
        .output();
    (output, started.elapsed())
}

#[test]
fn down_deletes_only_clusters_meshfed_named() {
    let fakes = FakeTools::new(
        "down",
        &[
            "kind",
            "meshfed-cluster1",
            "dev-meshfed-cluster1",
            "meshfed-",
            "istio-primary",
            "meshfed-cluster3",
        ],
        0,
    );
    // The fake docker lists only images with meshfed's label (it exits 64 on any other filter).
    fakes.set_labelled_images(&["meshfed-workload:450942e915326e45"]);
    // Run directories: one of a process that is gone (a reaped child's pid), one of a live one
    // (this test), one that only looks similar.
    let mut child = Command::new("true").spawn().unwrap();
    let dead_pid = child.id();
    child.wait().unwrap();
    let temp = fakes.root.join("tmp");
    for name in [
        format!("meshfed-kind-{dead_pid}"),
        format!("meshfed-kind-{}", std::process::id()),
        "meshfed-kind-notes".to_owned(),
    ] {
        std::fs::create_dir_all(temp.join(&name).join("cluster1")).unwrap();
        std::fs::write(temp.join(&name).join("cluster1/kubeconfig"), "secret").unwrap();
    }
    let (output, _) = meshfed_with_tmpdir(Path::new(&fakes.path()), &temp, &["down", "--provider", "kind"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(
        fakes.clusters(),
        ["kind", "dev-meshfed-cluster1", "meshfed-", "istio-primary"]
    );
    assert!(
        stderr.contains(
            "deleted kind cluster meshfed-cluster1, kind cluster meshfed-cluster3, image meshfed-workload:450942e915326e45"
        ),
        "{stderr}"
    );
    assert_eq!(fakes.labelled_images(), Vec::<String>::new());
    assert!(!temp.join(format!("meshfed-kind-{dead_pid}")).exists(), "{stderr}");
    assert!(temp.join(format!("meshfed-kind-{}", std::process::id())).exists());
    assert!(temp.join("meshfed-kind-notes").exists());
    let deletions = fakes
        .log()
        .lines()
        .filter(|line| line.contains(" delete ") || line.contains(" rm "))
        .count();
    assert_eq!(deletions, 3, "{}", fakes.log());
}

#[test]
fn run_on_kind_without_kind_or_docker_exits_3_naming_both() {
    let empty = std::env::temp_dir().join(format!("meshfed-empty-path-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml");
    let (output, took) = meshfed(&empty, &["run", seed.to_str().unwrap(), "--provider", "kind"]);
    let _ = std::fs::remove_dir(&empty);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("`kind` was not found on PATH"), "{stderr}");
    assert!(stderr.contains("`docker` was not found on PATH"), "{stderr}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
}

#[test]
fn run_on_kind_with_a_docker_cli_but_no_engine_exits_3_quoting_docker() {
    // The real docker CLI, pointed at an engine that does not exist (as on meshfed's own machines).
    let Some(docker) = meshfed::process::find_on_path("docker", std::env::var_os("PATH").as_deref()) else {
        skip::skip("no docker CLI on PATH");
        return;
    };
    let fakes = FakeTools::new("no-engine", &[], 0);
    std::fs::remove_file(fakes.bin().join("docker")).unwrap();
    std::os::unix::fs::symlink(&docker, fakes.bin().join("docker")).unwrap();
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml");
    let started = std::time::Instant::now();
    let output = Command::new(MESHFED)
        .args(["run", seed.to_str().unwrap(), "--provider", "kind"])
        .env("PATH", fakes.path())
        .env("DOCKER_HOST", format!("unix://{}/no-engine.sock", fakes.root.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("the Docker engine does not answer"), "{stderr}");
    assert!(stderr.contains("docker info"), "{stderr}");
    assert!(!stderr.contains("`kind` was not found"), "kind is there: {stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!fakes.log().contains("kind create"), "nothing created: {}", fakes.log());
}

#[test]
fn run_on_kind_with_a_fake_docker_whose_engine_is_down_exits_3() {
    let fakes = FakeTools::new("engine-down", &[], 0);
    fakes.write_docker(false);
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml");
    let (output, _) = meshfed(
        Path::new(&fakes.path()),
        &["run", seed.to_str().unwrap(), "--provider", "kind"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("Cannot connect to the Docker daemon"), "{stderr}");
    assert_eq!(fakes.log().trim(), "docker info --format {{.ServerVersion}}");
}

#[test]
fn an_upgrade_is_istioctl_of_the_new_version_installing_over_the_cluster_and_done_when_istioctl_is() {
    let fakes = FakeTools::new("upgrade", &[], 2);
    let scenario = load_scenario("upgrade.yaml");
    let (mut provider, _progress) = kind_provider(&fakes, &["1.29.0", "1.30.0"], false);
    let runtime = runtime();
    runtime
        .block_on(provider.create_world(&scenario, &mut |_: &str| {}))
        .unwrap();
    // istioctl of the version upgraded to is fetched and checked with the world, before any
    // cluster exists: the upgrade under traffic downloads nothing.
    let log = fakes.log();
    let checked = log.find("istioctl-1.30.0 version --remote=false").expect(&log);
    assert!(checked < log.find("kind create cluster").unwrap(), "{log}");
    assert_eq!(provider.info().proxy, "istio 1.29.0");
    let before = fakes.log().lines().count();

    let asked = std::time::SystemTime::now();
    let mut lines = Vec::new();
    let events = runtime
        .block_on(provider.change_world(
            &WorldChange::Upgrade {
                cluster: "cluster2".to_owned(),
                to: "1.30.0".parse().unwrap(),
            },
            &mut |line: &str| lines.push(line.to_owned()),
        ))
        .unwrap();
    let returned = std::time::SystemTime::now();
    // The change is done exactly when istioctl is: it started after meshfed was asked and ended
    // before meshfed answered, so the action's started and completed times bracket the real
    // install (which waits for readiness, see the fake).
    let (install_started, install_ended) = fakes.install_times("kind-meshfed-cluster2");
    assert!(asked <= install_started && install_ended <= returned);
    assert!(returned.duration_since(asked).unwrap() >= install_ended.duration_since(install_started).unwrap());
    assert_eq!(
        events,
        [InventoryEvent::IstioVersion {
            cluster: "cluster2".to_owned(),
            version: "1.30.0".parse().unwrap()
        }]
    );
    assert_eq!(provider.info().proxy, "istio 1.29.0 (cluster1), 1.30.0 (cluster2)");
    let during: Vec<String> = fakes
        .log()
        .replace(&fakes.root.display().to_string(), "[TMP]")
        .lines()
        .skip(before)
        .map(str::to_owned)
        .collect();
    assert_eq!(
        during,
        [
            "istioctl-1.30.0 install --skip-confirmation --kubeconfig [TMP]/run/cluster2/kubeconfig --context kind-meshfed-cluster2 --readiness-timeout 5m0s --filename [TMP]/run/cluster2/istio-operator.yaml",
        ]
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("cluster2: upgraded in place to Istio 1.30.0")),
        "{lines:?}"
    );
    runtime.block_on(provider.teardown(&mut |_: &str| {})).unwrap();
}

/// A `meshfed run --provider kind` on the fakes, with stderr a pseudo-terminal when `on_a_terminal`
/// (util-linux `script -qec CMD /dev/null` runs CMD on a new pty and copies what it prints to its
/// own stdout) or a pipe otherwise; returns what stderr got. The run gets as far as the Kubernetes
/// API (there is none behind the fake kubeconfigs), which is far enough for every cluster to show
/// steps.
fn kind_run_stderr(fakes: &FakeTools, script: &Path, on_a_terminal: bool) -> String {
    let cache = fakes.root.join("cache");
    fakes.write_istioctl(&cache.join("istio-1.30.3").join("istioctl"), "1.30.3");
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml");
    let meshfed = env!("CARGO_BIN_EXE_meshfed");
    let mut command = if on_a_terminal {
        let mut command = Command::new(script);
        command.args([
            "-qec",
            &format!("{meshfed} run {} --provider kind", seed.display()),
            "/dev/null",
        ]);
        command
    } else {
        let mut command = Command::new(meshfed);
        command.args(["run", seed.to_str().unwrap(), "--provider", "kind"]);
        command
    };
    let output = command
        .env("PATH", fakes.path())
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "100")
        .env_remove("NO_COLOR")
        .env_remove("CI")
        .env("TMPDIR", &fakes.root)
        .env("MESHFED_CACHE_DIR", &cache)
        .env("KUBECONFIG", fakes.root.join("no-kubeconfig"))
        .output()
        .unwrap();
    // On the pty, stdout and stderr are one stream, which script copies to its stdout.
    String::from_utf8_lossy(if on_a_terminal { &output.stdout } else { &output.stderr }).into_owned()
}

#[test]
fn on_a_terminal_a_kind_run_redraws_each_clusters_step_in_place_and_elsewhere_prints_plain_lines() {
    let Some(script) = meshfed::process::find_on_path("script", Some(std::ffi::OsStr::new("/usr/bin:/bin"))) else {
        skip::skip("no util-linux `script` to give meshfed a pseudo-terminal");
        return;
    };
    let fakes = FakeTools::new("live-view", &[], 2);
    let live = kind_run_stderr(&fakes, &script, true);
    // Frames: each redraw moves the cursor up over the previous frame and rewrites its rows.
    assert!(
        live.contains("\x1b[3A\r\x1b[2K["),
        "no in-place redraw of 3 rows:\n{live:?}"
    );
    let last_frame = live.rsplit("\x1b[3A").next().unwrap();
    let rows: Vec<&str> = last_frame
        .split("\r\x1b[2K")
        .skip(1)
        .map(|row| row.trim_end_matches(['\r', '\n']))
        .collect();
    assert_eq!(rows.len(), 3, "{last_frame:?}");
    assert!(
        rows[0].starts_with('['),
        "the run's elapsed time and latest step: {rows:?}"
    );
    for (row, cluster) in rows[1..].iter().zip(["cluster1", "cluster2"]) {
        let mut words = row.split_whitespace();
        assert_eq!(words.next(), Some(cluster), "{row:?}");
        let time = words.next().unwrap_or_default();
        assert!(
            time.ends_with('s') && time.starts_with(|c: char| c.is_ascii_digit()),
            "the time on its step, then the step: {row:?}"
        );
        assert!(words.next().is_some(), "{row:?}");
    }
    // Plain lines for a pipe, as before: no terminal control at all.
    let plain = kind_run_stderr(&fakes, &script, false);
    assert!(!plain.contains('\x1b'), "{plain:?}");
    assert!(plain.contains("] cluster1: creating kind cluster"), "{plain}");
}

#[test]
fn seed_on_kind_pins_the_node_image_makes_other_networks_unreachable_and_loads_an_image_archive() {
    let fakes = FakeTools::new("pinned-isolated", &[], 2);
    let scenario = load_scenario("seed.yaml");
    let (mut provider, progress) = kind_provider(&fakes, &["1.30.3"], false);
    let runtime = runtime();
    runtime
        .block_on(provider.create_world(&scenario, &mut |_: &str| {}))
        .unwrap();
    // kind v0.30.0's default node image, by digest (pkg/apis/config/defaults/image.go@v0.30.0).
    let pinned = "kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a";
    assert_eq!(
        fakes.node_images_created(),
        [
            format!("meshfed-cluster1 {pinned}"),
            format!("meshfed-cluster2 {pinned}")
        ]
    );
    // Each node: the other cluster's pod and service networks, and nothing of its own.
    assert_eq!(
        fakes.unreachable_routes(),
        [
            "meshfed-cluster1-control-plane 10.20.0.0/16",
            "meshfed-cluster1-control-plane 10.97.0.0/16",
            "meshfed-cluster2-control-plane 10.10.0.0/16",
            "meshfed-cluster2-control-plane 10.96.0.0/16",
        ]
    );
    // `docker save` + `kind load image-archive`, never `kind load docker-image` (kind#3795, #4066).
    assert_eq!(
        fakes.loaded_archives(),
        [
            "meshfed-cluster1 archive of meshfed-workload:450942e915326e45",
            "meshfed-cluster2 archive of meshfed-workload:450942e915326e45",
        ]
    );
    assert!(!fakes.log().contains("docker-image"), "{}", fakes.log());
    // The report names the image the clusters ran on.
    assert!(provider.info().mode.contains(pinned), "{}", provider.info().mode);
    runtime.block_on(provider.teardown(&mut |_: &str| {})).unwrap();
    let progress: Vec<String> = progress.try_iter().collect();
    assert!(
        progress
            .iter()
            .any(|line| line == "cluster1: other clusters' networks unreachable (10.20.0.0/16, 10.97.0.0/16)"),
        "{progress:#?}"
    );
}

#[test]
fn on_kind_a_probe_that_times_out_is_not_isolated_and_on_kubeconfig_it_is_when_the_gateway_connects() {
    use meshfed::provider::IsolationRule;
    let options =
        meshfed::provider::kubeconfig::KubeconfigOptions::for_kind(meshfed::scenario::FederationMode::Serviceentry);
    assert_eq!(options.isolation, IsolationRule::Unreachable);
    assert!(!options.isolation.isolated("timed out", "connected"));
    assert!(options.isolation.isolated("unreachable", "connected"));
    // Clusters meshfed did not network itself: a dropped packet times out there.
    let kubeconfig =
        meshfed::provider::kubeconfig::KubeconfigOptions::new(meshfed::provider::kubeconfig::WorkloadImage {
            image: "unused".to_owned(),
            command: "meshfed".to_owned(),
        });
    assert_eq!(kubeconfig.isolation, IsolationRule::UnreachableOrTimeout);
    assert!(kubeconfig.isolation.isolated("timed out", "connected"));
    assert!(!kubeconfig.isolation.isolated("timed out", "timed out"));
}

#[test]
fn dry_run_is_refused_for_other_providers() {
    let seed = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml");
    let (output, _) = meshfed(
        Path::new("/usr/bin:/bin"),
        &["run", seed.to_str().unwrap(), "--dry-run"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--dry-run shows a kind run"), "{stderr}");
}

/// `meshfed run SCENARIO --provider kind` on the fakes, the scenario given as text.
fn run_on_kind(fakes: &FakeTools, name: &str, text: &str, provider: &str) -> std::process::Output {
    let file = fakes.root.join(name);
    std::fs::write(&file, text).unwrap();
    let mut args = vec!["run", file.to_str().unwrap(), "--provider", provider];
    if provider == "kubeconfig" {
        args.extend(["--image", "unused"]);
    }
    meshfed(Path::new(&fakes.path()), &args).0
}

#[test]
fn an_istio_that_does_not_install_on_the_pinned_node_image_is_refused_before_anything_runs() {
    let fakes = FakeTools::new("not-installable", &[], 0);
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/rolling-upgrade.yaml")).unwrap();
    let output = run_on_kind(&fakes, "rolling-upgrade.yaml", &text, "kind");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    // The position of cluster1's istioVersion, found rather than hard-coded.
    let line = text
        .lines()
        .position(|line| line.contains("name: cluster1") && line.contains("istioVersion"))
        .expect("rolling-upgrade.yaml names cluster1's version on its line")
        + 1;
    assert!(stderr.contains(&format!("rolling-upgrade.yaml:{line}:")), "{stderr}");
    assert!(
        stderr.contains("Istio 1.9.4 does not install on Kubernetes 1.34"),
        "{stderr}"
    );
    assert!(stderr.contains("Kubernetes 1.17–1.20"), "{stderr}");
    assert!(stderr.contains("1.28, 1.29, 1.30"), "{stderr}");
    assert_eq!(fakes.log(), "", "nothing ran");
}

#[test]
fn an_in_place_upgrade_skipping_a_minor_is_refused_on_kind_and_kubeconfig_offering_a_canary() {
    let fakes = FakeTools::new("skips-minor", &[], 0);
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/upgrade.yaml"))
        .unwrap()
        .replace("istioVersion: 1.29.0", "istioVersion: 1.28.4");
    for provider in ["kind", "kubeconfig"] {
        let text = if provider == "kubeconfig" {
            text.replace(
                "  - name: cluster1\n",
                "  - name: cluster1\n    context: kind-meshfed-cluster1\n",
            )
            .replace(
                "  - name: cluster2\n",
                "  - name: cluster2\n    context: kind-meshfed-cluster2\n",
            )
        } else {
            text.clone()
        };
        let output = run_on_kind(&fakes, "upgrade-skipping.yaml", &text, provider);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{provider}: {stderr}");
        assert!(
            stderr.contains("the in-place upgrade of cluster2 from Istio 1.28.4 to 1.30.0 skips minor versions"),
            "{provider}: {stderr}"
        );
        assert!(stderr.contains("canary (revision) upgrade"), "{provider}: {stderr}");
    }
    assert_eq!(fakes.log(), "", "nothing ran");
}

/// `meshfed run SCENARIO --provider kind --dry-run` with nothing on PATH (no docker, no kind).
fn dry_run(scenario: &str) -> std::process::Output {
    dry_run_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(scenario))
}

fn dry_run_file(file: &Path) -> std::process::Output {
    let empty = std::env::temp_dir().join(format!("meshfed-dry-run-path-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    Command::new(MESHFED)
        .args(["run", file.to_str().unwrap(), "--provider", "kind", "--dry-run"])
        .env("PATH", &empty)
        .env_remove("MESHFED_WORKLOAD_IMAGE")
        .env_remove("MESHFED_ISTIO_RELEASES_URL")
        .output()
        .unwrap()
}

/// The platform's istioctl asset suffix, redacted so the snapshot holds on amd64 and arm64.
fn redact_arch(text: &str) -> String {
    text.replace("linux-amd64", "linux-[ARCH]")
        .replace("linux-arm64", "linux-[ARCH]")
}

#[test]
fn seed_dry_run_prints_every_command_and_object_in_order_without_docker_or_network() {
    let output = dry_run("seed.yaml");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "--image kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a",
        "$ docker exec meshfed-cluster1-control-plane ip route replace unreachable 10.20.0.0/16",
        "$ docker exec meshfed-cluster1-control-plane ip route replace unreachable 10.97.0.0/16",
        "wait [kind-meshfed-cluster2] every pod app=metallb in metallb-system Ready",
        "fetch https://github.com/istio/istio/releases/download/1.30.3/istioctl-1.30.3-linux-",
        "install --skip-confirmation --kubeconfig <run-dir>/cluster2/kubeconfig --context kind-meshfed-cluster2",
        "$ kind load image-archive <run-dir>/workload-image.tar --name meshfed-cluster2",
    ] {
        assert!(stdout.contains(expected), "{expected}\n{stdout}");
    }
    insta::assert_snapshot!("seed_kind_dry_run", redact_arch(&stdout));
}

#[test]
fn rolling_upgrade_dry_run_exits_2_naming_the_version_that_cannot_install() {
    let output = dry_run("rolling-upgrade.yaml");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("Istio 1.9.4 does not install on Kubernetes 1.34"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty(), "{}", String::from_utf8_lossy(&output.stdout));
}

/// The external commands and API steps of a printout or a fake run's log, in one spelling:
/// `$ program args` with the run directory, istioctl's path and the image tag made alike, and
/// `apply [context] what` / `wait [context] kind namespace/name`.
fn steps(lines: impl Iterator<Item = String>, printed: bool) -> Vec<String> {
    fn same_tag(line: &str) -> String {
        match line.find("meshfed-workload:") {
            None => line.to_owned(),
            Some(start) => {
                let end = line[start..].find(' ').map_or(line.len(), |end| start + end);
                format!("{}meshfed-workload:<tag>{}", &line[..start], &line[end..])
            }
        }
    }
    lines
        .filter_map(|line| {
            if let Some(rest) = line.strip_prefix("kube[") {
                let (context, rest) = rest.split_once("] ").unwrap();
                // A note on how the next apply is retried, not a step of its own.
                if rest.starts_with("(retried while") {
                    return None;
                }
                return Some(match rest.strip_prefix("await ") {
                    Some(wait) => format!(
                        "wait [{context}] {}",
                        wait.split(' ').take(2).collect::<Vec<_>>().join(" ")
                    ),
                    None => format!(
                        "[{context}] {}",
                        rest.strip_prefix("apply ").unwrap().split_once(':').unwrap().0
                    ),
                });
            }
            if let Some(rest) = line.strip_prefix("apply [") {
                return Some(format!("[{}", rest.split_once(':').unwrap().0));
            }
            if let Some(rest) = line.strip_prefix("wait [") {
                return Some(format!(
                    "wait [{}",
                    rest.split(' ').take(3).collect::<Vec<_>>().join(" ")
                ));
            }
            let command = if printed {
                line.strip_prefix("$ ")?
            } else {
                line.as_str()
            };
            let program = command.split(' ').next().unwrap();
            let known = ["kind", "docker"].contains(&program)
                || program.starts_with("istioctl-")
                || program.ends_with("/istioctl");
            if !known {
                return None;
            }
            let command = match program.strip_suffix("/istioctl") {
                Some(dir) => command.replacen(
                    program,
                    &format!("istioctl-{}", dir.rsplit_once("istio-").unwrap().1),
                    1,
                ),
                None => command.to_owned(),
            };
            // The API server's address (endpoint discovery) is known only live.
            let command = command.split(" --server ").next().unwrap();
            Some(same_tag(&command.replace("[TMP]/run", "<run-dir>")))
        })
        .filter(|step| !step.starts_with("kind delete"))
        .collect()
}

/// The live run of `text` on the fakes and its dry run, as [`steps`].
fn live_and_printed_steps(test: &str, text: &str, clusters: usize) -> (Vec<String>, Vec<String>) {
    let fakes = FakeTools::new(test, &[], clusters);
    let file = fakes.root.join("scenario.yaml");
    std::fs::write(&file, text).unwrap();
    let scenario = scenario::load(&file).unwrap();
    let (mut provider, _progress) = kind_provider(&fakes, &["1.30.3"], false);
    let runtime = runtime();
    runtime
        .block_on(provider.create_world(&scenario, &mut |_: &str| {}))
        .unwrap();
    let live = steps(normalised_log(&fakes).lines().map(str::to_owned), false);
    let output = dry_run_file(&file);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = steps(String::from_utf8_lossy(&output.stdout).lines().map(str::to_owned), true);
    runtime.block_on(provider.teardown(&mut |_: &str| {})).unwrap();
    (live, printed)
}

#[test]
fn the_dry_run_lists_the_commands_and_api_steps_of_the_live_run_in_its_order() {
    let seed = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml")).unwrap();
    let (live, printed) = live_and_printed_steps("dry-run-order", &seed, 2);
    assert!(live.len() > 20, "{live:#?}");
    assert_eq!(printed, live);
}
