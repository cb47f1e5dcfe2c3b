//! The kind world's life: preflight, istioctl per version, clusters created in parallel,
//! kubeconfigs, MetalLB pools from the `kind` network, the workload image, Istio per cluster,
//! remote secrets, the in-place upgrade, teardown and `down`. Every program runs through
//! [`Tools`] (deadline, death signal, named in errors); every API-server step goes through
//! [`KubeSide`].
//!
//! One job per file: this one is the sequence ([`create_world`]) with the cluster and Istio steps
//! and the in-place upgrade; [`downloads`] fetches into the cache, [`image`] provides the workload
//! image, [`secrets`] makes endpoint discovery's remote secrets, [`cleanup`] is teardown and `down`.

mod cleanup;
mod downloads;
mod image;
mod secrets;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::plan::support_matrix::KIND;
use crate::provider::ProviderError;
use crate::scenario::{FederationMode, IstioVersion, Scenario};

use super::addresses::{address_pools, parse_network_inspect};
use super::config::{kind_cluster_name, kind_config};
use super::install::{
    METALLB_PODS, METALLB_POOL_WEBHOOKS, METALLB_VERSION, federation_gateway, metallb_manifest_url, mk_cacerts_secret,
    mk_istio_namespace, mk_istio_operator, mk_metallb_pool,
};
use super::isolation::unreachable_routes;
use super::tools::{Invocation, ToolError, Tools, os_args};
use super::workload_image::check_binary_runs_in_pods;
use super::{KindCluster, KindOptions, KubeSide};

pub(super) use cleanup::{down, run_dir_name, teardown};
pub(super) use downloads::istioctl_version;
use downloads::{fetch_cached, istioctl_for};
use image::workload_image;
pub(super) use image::{build_image, load_image_archive, save_image};
use secrets::create_remote_secrets;

/// `kind create cluster` may take this long (image pull on a cold machine included).
const CREATE_TIMEOUT: Duration = Duration::from_secs(420);
/// kind's own wait for the control plane, inside [`CREATE_TIMEOUT`].
const KIND_WAIT: &str = "180s";
/// Short kind/docker queries.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Every MetalLB pod becoming Ready.
pub(super) const METALLB_TIMEOUT: Duration = Duration::from_secs(240);
/// istioctl's own readiness wait; the process deadline adds a margin.
const ISTIO_READINESS: &str = "5m0s";
const INSTALL_TIMEOUT: Duration = Duration::from_secs(420);
/// A gateway's LoadBalancer address being assigned.
pub(super) const GATEWAY_ADDRESS_TIMEOUT: Duration = Duration::from_secs(180);

/// What the kind world holds so far.
#[derive(Debug, Default)]
pub(super) struct KindWorld {
    /// Clusters, in scenario order.
    pub clusters: Vec<KindCluster>,
    /// kind clusters this run created (deleted at teardown unless `--reuse`).
    pub created: Vec<String>,
    /// `kind version`.
    pub kind_version: Option<String>,
    /// Istio version per cluster.
    pub versions: BTreeMap<String, IstioVersion>,
    /// The scenario (for the upgrade's install files).
    scenario: Option<Scenario>,
    /// istioctl of every version the scenario installs or upgrades to, fetched and checked before
    /// any cluster exists.
    istioctl: BTreeMap<IstioVersion, PathBuf>,
    /// Whether this run made `run_dir`.
    made_run_dir: bool,
}

impl KindWorld {
    /// `istio 1.29.0` or `istio 1.29.0 (cluster1), 1.30.0 (cluster2)`.
    pub fn istio_versions(&self) -> String {
        let distinct: BTreeSet<IstioVersion> = self.versions.values().copied().collect();
        match distinct.len() {
            0 => "istio".to_owned(),
            1 => format!("istio {}", distinct.first().expect("one")),
            _ => format!(
                "istio {}",
                self.versions
                    .iter()
                    .map(|(cluster, version)| format!("{version} ({cluster})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

fn failed(what: impl Into<String>) -> impl FnOnce(ToolError) -> ProviderError {
    let what = what.into();
    move |error| ProviderError::failed(what, error)
}

fn io_failed(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ProviderError {
    let what = what.into();
    move |error| ProviderError::failed(what, error)
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).trim().to_owned()
}

/// Builds everything up to the workloads, then [`KubeSide::attach`].
pub(super) async fn create_world<K: KubeSide>(
    options: &mut KindOptions,
    kube: &mut K,
    world: &mut KindWorld,
    scenario: &Scenario,
) -> Result<(), ProviderError> {
    let progress = &mut options.progress;
    let tools = &options.tools;
    progress("checking kind and docker");
    tools.preflight().map_err(|missing| {
        ProviderError::Unavailable(format!(
            "the kind provider cannot run on this machine:\n  {}",
            missing.join("\n  ")
        ))
    })?;
    kube.check_available()?;
    if options.workload_image.is_none() {
        check_binary_runs_in_pods(std::env::consts::OS).map_err(ProviderError::Unavailable)?;
    }
    world.scenario = Some(scenario.clone());
    let kind_version = text(
        tools
            .run(&Invocation::new("kind", ["version"], QUERY_TIMEOUT))
            .map_err(failed("asking kind for its version"))?,
    );
    progress(&format!("{kind_version}; docker engine answers"));
    if !kind_version.split_whitespace().any(|word| word == KIND.kind_version) {
        progress(&format!(
            "warning: meshfed pins kind {}'s node image {}; this kind may not run it",
            KIND.kind_version, KIND.node_image
        ));
    }
    world.kind_version = Some(kind_version);

    // istioctl first, for the versions installed and those upgraded to: a missing or corrupt
    // release fails before any cluster exists, and an upgrade under traffic downloads nothing.
    let mut istioctl = BTreeMap::new();
    for version in istio_versions_used(scenario) {
        if let std::collections::btree_map::Entry::Vacant(entry) = istioctl.entry(version) {
            entry.insert(istioctl_for(tools, &options.cache_dir, &options.releases_url, version, progress).await?);
        }
    }

    let existing: BTreeSet<String> = text(
        tools
            .run(&Invocation::new("kind", ["get", "clusters"], QUERY_TIMEOUT))
            .map_err(failed("listing kind clusters"))?,
    )
    .lines()
    .map(|line| line.trim().to_owned())
    .filter(|line| !line.is_empty())
    .collect();

    std::fs::create_dir_all(&options.run_dir).map_err(io_failed(format!(
        "creating the run directory {}",
        options.run_dir.display()
    )))?;
    world.made_run_dir = true;
    let mut to_create = Vec::new();
    for cluster in &scenario.clusters {
        let name = &cluster.name.value;
        let kind_name = kind_cluster_name(name);
        let dir = options.run_dir.join(name);
        std::fs::create_dir_all(&dir).map_err(io_failed(format!("creating {}", dir.display())))?;
        let kubeconfig = dir.join("kubeconfig");
        if existing.contains(&kind_name) {
            if !options.reuse {
                return Err(ProviderError::Unavailable(format!(
                    "kind cluster {kind_name} already exists (left by an earlier run?); delete it with `meshfed down --provider kind` \
                     or keep it with `meshfed run --reuse`"
                )));
            }
            progress(&format!("{name}: reusing kind cluster {kind_name}"));
        } else {
            let config_file = dir.join("kind-config.yaml");
            std::fs::write(&config_file, kind_config(cluster))
                .map_err(io_failed(format!("writing {}", config_file.display())))?;
            let create = create_cluster(&kind_name, &config_file, &kubeconfig);
            to_create.push((name.clone(), create));
            // Recorded before it starts: a half-created cluster is deleted at teardown too.
            world.created.push(kind_name.clone());
        }
        world.clusters.push(KindCluster {
            cluster: name.clone(),
            context: format!("kind-{kind_name}"),
            kind_name,
            kubeconfig,
            gateway_address: None,
        });
    }
    create_clusters(tools, &to_create, progress)?;
    for cluster in &world.clusters {
        tools
            .run(&export_kubeconfig(&cluster.kind_name, &cluster.kubeconfig))
            .map_err(failed(format!("writing the kubeconfig of {}", cluster.kind_name)))?;
    }

    // Other clusters' networks answer "unreachable" on every node, as on `local`.
    for (cluster, cidrs, routes) in unreachable_routes(scenario) {
        progress(&format!(
            "{cluster}: other clusters' networks unreachable ({})",
            cidrs.join(", ")
        ));
        for route in &routes {
            tools.run(route).map_err(failed(format!(
                "making other clusters' networks unreachable in {cluster}"
            )))?;
        }
    }

    // Gateway address pools from the end of the `kind` network.
    let inspect = text(
        tools
            .run(&Invocation::new(
                "docker",
                ["network", "inspect", "kind"],
                QUERY_TIMEOUT,
            ))
            .map_err(failed("inspecting docker network kind"))?,
    );
    let names = scenario.cluster_names();
    let pools = parse_network_inspect(&inspect)
        .and_then(|network| address_pools(&network, &names))
        .map_err(|error| ProviderError::failed("carving gateway address pools from docker network kind", error))?;

    let image = workload_image(
        options.workload_image.as_deref(),
        &options.workload_binary,
        tools,
        &options.run_dir,
        &world.clusters,
        progress,
    )?;

    // MetalLB.
    let metallb = fetch_cached(
        &options.cache_dir,
        &format!("metallb-{METALLB_VERSION}"),
        "metallb-native.yaml",
        &metallb_manifest_url(),
        progress,
    )
    .await?;
    for (cluster, pool) in world.clusters.iter().zip(&pools) {
        progress(&format!(
            "{}: MetalLB {METALLB_VERSION}, gateway pool {}",
            cluster.cluster,
            pool.range()
        ));
        kube.apply_manifests(cluster, &format!("MetalLB {METALLB_VERSION}"), &metallb)
            .await?;
        // As Istio's kind_provisioner.sh: every MetalLB pod Ready, then the pool, retried while
        // MetalLB's validating webhook does not serve yet (its controller is Ready before it).
        kube.await_pods_ready(cluster, "metallb-system", METALLB_PODS, METALLB_TIMEOUT)
            .await?;
        kube.apply_manifests_when_webhooks_serve(
            cluster,
            "MetalLB address pool",
            &mk_metallb_pool(pool),
            &METALLB_POOL_WEBHOOKS,
        )
        .await?;
    }

    // Istio, with meshfed's CA.
    let cluster_names: Vec<&str> = names.clone();
    let mesh_pki = crate::pki::pki(&scenario.trust_domain, &cluster_names, scenario.pki.key_algorithm)
        .map_err(|error| ProviderError::failed("creating the mesh PKI", error))?;
    let gateway = federation_gateway(scenario.federation.mode.value);
    for (cluster, scenario_cluster) in world.clusters.iter_mut().zip(&scenario.clusters) {
        let version = scenario_cluster.istio_version.value;
        progress(&format!("{}: installing Istio {version}", cluster.cluster));
        kube.apply_manifests(cluster, "namespace istio-system", &mk_istio_namespace(scenario_cluster))
            .await?;
        let cacerts = mesh_pki
            .cacerts(&cluster.cluster)
            .map_err(|error| ProviderError::failed(format!("cacerts of {}", cluster.cluster), error))?;
        kube.apply_manifests(cluster, "secret istio-system/cacerts", &mk_cacerts_secret(&cacerts))
            .await?;
        let operator = operator_file(
            &options.run_dir,
            &cluster.cluster,
            &mk_istio_operator(scenario, scenario_cluster),
        )?;
        let started = Instant::now();
        tools
            .run(&istioctl_install(&istioctl[&version], cluster, &operator))
            .map_err(failed(format!("installing Istio {version} into {}", cluster.cluster)))?;
        let address = kube
            .await_load_balancer_address(cluster, "istio-system", gateway, GATEWAY_ADDRESS_TIMEOUT)
            .await?;
        cluster.gateway_address = Some(address);
        world.versions.insert(cluster.cluster.clone(), version);
        progress(&format!(
            "{}: Istio {version} installed in {:.0} s; gateway {gateway} at {address}",
            cluster.cluster,
            started.elapsed().as_secs_f64()
        ));
    }

    if scenario.federation.mode.value == FederationMode::EndpointDiscovery {
        create_remote_secrets(tools, kube, &world.clusters, &istioctl, scenario, progress).await?;
    }
    world.istioctl = istioctl;
    kube.attach(&world.clusters, &image);
    Ok(())
}

/// Every Istio version `scenario` runs: its clusters' and those its phases upgrade to (a phase's
/// `upgrade:` or an `upgrade` action), in order, each once.
fn istio_versions_used(scenario: &Scenario) -> BTreeSet<IstioVersion> {
    let installed = scenario.clusters.iter().map(|cluster| cluster.istio_version.value);
    let upgraded = scenario.phases.iter().flat_map(|phase| {
        let actions = phase.actions.iter().filter_map(|action| match action.value.change() {
            Some(crate::change::WorldChange::Upgrade { to, .. }) => Some(to),
            _ => None,
        });
        phase
            .upgrade
            .iter()
            .map(|upgrade| upgrade.value.to.value)
            .chain(actions)
    });
    installed.chain(upgraded).collect()
}

/// Creates the clusters in parallel, one thread each (so each kind process's death signal is tied
/// to a thread that waits for it), reporting as each starts and ends.
fn create_clusters(
    tools: &Tools,
    to_create: &[(String, Invocation)],
    progress: &mut Box<dyn FnMut(&str) + Send>,
) -> Result<(), ProviderError> {
    let (sender, receiver) = std::sync::mpsc::channel::<String>();
    let results: Vec<(String, Result<Vec<u8>, ToolError>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = to_create
            .iter()
            .map(|(cluster, invocation)| {
                let sender = sender.clone();
                scope.spawn(move || {
                    let started = Instant::now();
                    let _ = sender.send(format!("{cluster}: creating kind cluster"));
                    let result = tools.run(invocation);
                    let _ = sender.send(match &result {
                        Ok(_) => format!(
                            "{cluster}: kind cluster created in {:.0} s",
                            started.elapsed().as_secs_f64()
                        ),
                        Err(_) => format!("{cluster}: kind cluster creation failed"),
                    });
                    (cluster.clone(), result)
                })
            })
            .collect();
        drop(sender);
        for message in receiver {
            progress(&message);
        }
        handles
            .into_iter()
            .map(|handle| handle.join().expect("a cluster creation thread panicked"))
            .collect()
    });
    for (cluster, result) in results {
        result.map_err(failed(format!("creating the kind cluster of {cluster}")))?;
    }
    Ok(())
}

/// `kind create cluster` of one cluster, on the pinned node image.
pub(super) fn create_cluster(kind_name: &str, config_file: &Path, kubeconfig: &Path) -> Invocation {
    Invocation::new(
        "kind",
        os_args![
            "create",
            "cluster",
            "--name",
            kind_name,
            "--image",
            KIND.node_image,
            "--config",
            config_file,
            "--kubeconfig",
            kubeconfig,
            "--wait",
            KIND_WAIT,
        ],
        CREATE_TIMEOUT,
    )
}

/// `kind export kubeconfig` of one cluster into meshfed's own kubeconfig file.
pub(super) fn export_kubeconfig(kind_name: &str, kubeconfig: &Path) -> Invocation {
    Invocation::new(
        "kind",
        os_args!["export", "kubeconfig", "--name", kind_name, "--kubeconfig", kubeconfig],
        QUERY_TIMEOUT,
    )
}

fn operator_file(run_dir: &Path, cluster: &str, operator: &str) -> Result<PathBuf, ProviderError> {
    let file = run_dir.join(cluster).join("istio-operator.yaml");
    std::fs::write(&file, operator).map_err(io_failed(format!("writing {}", file.display())))?;
    Ok(file)
}

pub(super) fn istioctl_install(istioctl: &Path, cluster: &KindCluster, operator: &Path) -> Invocation {
    Invocation::new(
        istioctl,
        os_args![
            "install",
            "--skip-confirmation",
            "--kubeconfig",
            &cluster.kubeconfig,
            "--context",
            &cluster.context,
            "--readiness-timeout",
            ISTIO_READINESS,
            "--filename",
            operator,
        ],
        INSTALL_TIMEOUT,
    )
}

/// One cluster's in-place upgrade, ready to run.
pub(super) struct PreparedUpgrade {
    cluster: String,
    version: IstioVersion,
    install: Invocation,
}

/// The in-place upgrade of `cluster` to `to`: istioctl of `to` (fetched with the world) installing
/// the cluster's IstioOperator over the running Istio, as istio.io's in-place upgrade does with the
/// new release's istioctl.
pub(super) fn prepare_upgrade(
    options: &KindOptions,
    world: &KindWorld,
    cluster: &str,
    to: IstioVersion,
) -> Result<PreparedUpgrade, ProviderError> {
    let scenario = world
        .scenario
        .as_ref()
        .ok_or_else(|| ProviderError::Unsupported("upgrade before the world exists".to_owned()))?;
    let istioctl = world.istioctl.get(&to).ok_or_else(|| {
        ProviderError::Unsupported(format!(
            "upgrade of {cluster} to Istio {to}: no istioctl {to} was fetched with the world"
        ))
    })?;
    let unknown = || ProviderError::Unsupported(format!("upgrade of unknown cluster {cluster}"));
    let kind_cluster = world
        .clusters
        .iter()
        .find(|known| known.cluster == cluster)
        .ok_or_else(unknown)?;
    // The operator of the version upgraded to (its version-dependent settings follow it).
    let mut upgraded = scenario.cluster(cluster).ok_or_else(unknown)?.clone();
    upgraded.istio_version.value = to;
    let operator = operator_file(&options.run_dir, cluster, &mk_istio_operator(scenario, &upgraded))?;
    Ok(PreparedUpgrade {
        cluster: cluster.to_owned(),
        version: to,
        install: istioctl_install(istioctl, kind_cluster, &operator),
    })
}

/// Runs a prepared upgrade; istioctl returns once the upgraded components are ready (its
/// `--readiness-timeout`), so its return is when the upgrade completed. Returns a progress line.
pub(super) fn upgrade_in_place(tools: &Tools, upgrade: &PreparedUpgrade) -> Result<String, ProviderError> {
    let started = Instant::now();
    tools.run(&upgrade.install).map_err(failed(format!(
        "upgrading {} to Istio {}",
        upgrade.cluster, upgrade.version
    )))?;
    Ok(format!(
        "{}: upgraded in place to Istio {} in {:.0} s",
        upgrade.cluster,
        upgrade.version,
        started.elapsed().as_secs_f64()
    ))
}
