//! The kind world's life: preflight, istioctl per version, clusters created in parallel,
//! kubeconfigs, MetalLB pools from the `kind` network, the workload image, Istio per cluster,
//! remote secrets, the in-place upgrade, teardown and `down`. Every program runs through
//! [`Tools`] (deadline, death signal, named in errors); every API-server step goes through
//! [`KubeSide`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::plan::support_matrix::KIND;
use crate::progress::Progress;
use crate::provider::ProviderError;
use crate::scenario::{FederationMode, IstioVersion, Scenario};

use super::addresses::{address_pools, parse_network_inspect};
use super::config::{control_plane_container, is_meshfed_cluster, kind_cluster_name, kind_config};
use super::download::download;
use super::install::{
    METALLB_PODS, METALLB_POOL_WEBHOOKS, METALLB_VERSION, federation_gateway, metallb_manifest_url, mk_cacerts_secret,
    mk_istio_namespace, mk_istio_operator, mk_metallb_pool,
};
use super::isolation::unreachable_routes;
use super::istioctl::{fetch_istioctl, sha256_hex};
use super::tools::{Invocation, ToolError, Tools};
use super::workload_image::{ARCHIVE_NAME, IMAGE_LABEL, check_binary_runs_in_pods, dockerfile, image_tag};
use super::{KindCluster, KindOptions, KubeSide};

/// `kind create cluster` may take this long (image pull on a cold machine included).
const CREATE_TIMEOUT: Duration = Duration::from_secs(420);
/// kind's own wait for the control plane, inside [`CREATE_TIMEOUT`].
const KIND_WAIT: &str = "180s";
/// Short kind/docker queries.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a download into the cache (the MetalLB manifest, tens of kilobytes) may take.
const CACHED_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// `kind delete cluster`.
const DELETE_TIMEOUT: Duration = Duration::from_secs(180);
/// `docker build` of the workload image (base image pull included).
const BUILD_TIMEOUT: Duration = Duration::from_secs(600);
/// `kind load image-archive` into one cluster.
const LOAD_TIMEOUT: Duration = Duration::from_secs(300);
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
    let names: Vec<&str> = scenario
        .clusters
        .iter()
        .map(|cluster| cluster.name.value.as_str())
        .collect();
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

/// istioctl of `version`, checked to report that version.
async fn istioctl_for(
    tools: &Tools,
    cache_dir: &Path,
    releases_url: &str,
    version: IstioVersion,
    progress: &mut dyn Progress,
) -> Result<PathBuf, ProviderError> {
    let path = fetch_istioctl(tools, cache_dir, releases_url, version, progress)
        .await
        .map_err(|error| ProviderError::failed(format!("providing istioctl {version}"), error))?;
    let reported = text(
        tools
            .run(&istioctl_version(&path))
            .map_err(failed(format!("running istioctl {version}")))?,
    );
    if !reported.split_whitespace().any(|word| word == version.to_string()) {
        return Err(ProviderError::Unavailable(format!(
            "{} reports version {reported:?}, not {version}; delete it so meshfed downloads it again",
            path.display()
        )));
    }
    Ok(path)
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

/// The workload image: the named one, or one built from the binary and loaded into every cluster.
fn workload_image(
    named: Option<&str>,
    binary: &Path,
    tools: &Tools,
    run_dir: &Path,
    clusters: &[KindCluster],
    progress: &mut dyn Progress,
) -> Result<String, ProviderError> {
    if let Some(image) = named {
        progress.step(&format!(
            "workload image {image} (MESHFED_WORKLOAD_IMAGE; pulled by the nodes)"
        ));
        return Ok(image.to_owned());
    }
    let bytes = std::fs::read(binary).map_err(io_failed(format!("reading {}", binary.display())))?;
    let tag = image_tag(&sha256_hex(&bytes));
    let context = run_dir.join("image");
    std::fs::create_dir_all(&context).map_err(io_failed(format!("creating {}", context.display())))?;
    let copy = context.join("meshfed");
    std::fs::write(&copy, &bytes).map_err(io_failed(format!("writing {}", copy.display())))?;
    std::fs::set_permissions(&copy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(io_failed(format!("making {} executable", copy.display())))?;
    progress.step(&format!("building workload image {tag} from {}", binary.display()));
    tools
        .run(&build_image(&tag, &context))
        .map_err(failed(format!("building the workload image {tag}")))?;
    // Beside the build context, not in it (the next build would send it to the daemon).
    let archive = run_dir.join(ARCHIVE_NAME);
    tools
        .run(&save_image(&tag, &archive))
        .map_err(failed(format!("saving the workload image {tag}")))?;
    for cluster in clusters {
        tools
            .run(&load_image_archive(&archive, &cluster.kind_name))
            .map_err(failed(format!("loading {tag} into {}", cluster.kind_name)))?;
    }
    let _ = std::fs::remove_file(&archive);
    Ok(tag)
}

/// `kind create cluster` of one cluster, on the pinned node image.
pub(super) fn create_cluster(kind_name: &str, config_file: &Path, kubeconfig: &Path) -> Invocation {
    Invocation::new(
        "kind",
        [
            "create".into(),
            "cluster".into(),
            "--name".into(),
            kind_name.into(),
            "--image".into(),
            KIND.node_image.into(),
            "--config".into(),
            config_file.as_os_str().to_owned(),
            "--kubeconfig".into(),
            kubeconfig.as_os_str().to_owned(),
            "--wait".into(),
            KIND_WAIT.into(),
        ]
        .into_iter()
        .collect::<Vec<std::ffi::OsString>>(),
        CREATE_TIMEOUT,
    )
}

/// `kind export kubeconfig` of one cluster into meshfed's own kubeconfig file.
pub(super) fn export_kubeconfig(kind_name: &str, kubeconfig: &Path) -> Invocation {
    Invocation::new(
        "kind",
        [
            "export".into(),
            "kubeconfig".into(),
            "--name".into(),
            kind_name.into(),
            "--kubeconfig".into(),
            kubeconfig.as_os_str().to_owned(),
        ]
        .into_iter()
        .collect::<Vec<std::ffi::OsString>>(),
        QUERY_TIMEOUT,
    )
}

/// `docker build` of the workload image from `context`, the Dockerfile on stdin.
pub(super) fn build_image(tag: &str, context: &Path) -> Invocation {
    Invocation::new(
        "docker",
        [
            "build".into(),
            "--tag".into(),
            tag.into(),
            "--label".into(),
            IMAGE_LABEL.into(),
            "--file".into(),
            "-".into(),
            context.as_os_str().to_owned(),
        ]
        .into_iter()
        .collect::<Vec<std::ffi::OsString>>(),
        BUILD_TIMEOUT,
    )
    .stdin(dockerfile())
}

/// `istioctl version --remote=false --short`: the client's own version, no cluster needed, as
/// the bare version (`1.30.3`); without `--short` istioctl prints its `BuildInfo` long form
/// (`pkg/version/cobra.go`, `CobraCommandWithOptions`), whose version is not a word of its own.
pub(super) fn istioctl_version(istioctl: &Path) -> Invocation {
    Invocation::new(istioctl, ["version", "--remote=false", "--short"], QUERY_TIMEOUT)
}

/// `docker save` of the workload image into `archive`.
pub(super) fn save_image(tag: &str, archive: &Path) -> Invocation {
    Invocation::new(
        "docker",
        [
            "save".into(),
            "--output".into(),
            archive.as_os_str().to_owned(),
            tag.into(),
        ]
        .into_iter()
        .collect::<Vec<std::ffi::OsString>>(),
        BUILD_TIMEOUT,
    )
}

/// `kind load image-archive` of `archive` into every node of `kind_name`.
pub(super) fn load_image_archive(archive: &Path, kind_name: &str) -> Invocation {
    Invocation::new(
        "kind",
        [
            "load".into(),
            "image-archive".into(),
            archive.as_os_str().to_owned(),
            "--name".into(),
            kind_name.into(),
        ]
        .into_iter()
        .collect::<Vec<std::ffi::OsString>>(),
        LOAD_TIMEOUT,
    )
}

/// A file fetched once into the cache (no published checksum exists: the pinned tag in the URL
/// is what identifies it).
async fn fetch_cached(
    cache_dir: &Path,
    subdir: &str,
    name: &str,
    url: &str,
    progress: &mut dyn Progress,
) -> Result<String, ProviderError> {
    let dir = cache_dir.join(subdir);
    let file = dir.join(name);
    if !file.is_file() {
        std::fs::create_dir_all(&dir).map_err(io_failed(format!("creating {}", dir.display())))?;
        let partial = dir.join(format!(".{name}.{}.partial", std::process::id()));
        progress.step(&format!("downloading {url}"));
        let downloaded = download(url, &partial, CACHED_DOWNLOAD_TIMEOUT, progress).await;
        if let Err(error) = downloaded {
            let _ = std::fs::remove_file(&partial);
            return Err(ProviderError::failed(format!("downloading {url}"), error));
        }
        std::fs::rename(&partial, &file).map_err(io_failed(format!("writing {}", file.display())))?;
    }
    std::fs::read_to_string(&file).map_err(io_failed(format!("reading {}", file.display())))
}

fn operator_file(run_dir: &Path, cluster: &str, operator: &str) -> Result<PathBuf, ProviderError> {
    let file = run_dir.join(cluster).join("istio-operator.yaml");
    std::fs::write(&file, operator).map_err(io_failed(format!("writing {}", file.display())))?;
    Ok(file)
}

pub(super) fn istioctl_install(istioctl: &Path, cluster: &KindCluster, operator: &Path) -> Invocation {
    Invocation::new(
        istioctl,
        [
            "install".into(),
            "--skip-confirmation".into(),
            "--kubeconfig".into(),
            cluster.kubeconfig.clone().into_os_string(),
            "--context".into(),
            cluster.context.clone().into(),
            "--readiness-timeout".into(),
            ISTIO_READINESS.into(),
            "--filename".into(),
            operator.as_os_str().to_owned(),
        ]
        .into_iter()
        .collect::<Vec<std::ffi::OsString>>(),
        INSTALL_TIMEOUT,
    )
}

/// Remote secrets as `istioctl create-remote-secret` makes them, with the API server at its
/// control-plane container's address on the `kind` network (what other clusters' istiods reach),
/// applied to every other cluster.
async fn create_remote_secrets<K: KubeSide>(
    tools: &Tools,
    kube: &mut K,
    clusters: &[KindCluster],
    istioctl: &BTreeMap<IstioVersion, PathBuf>,
    scenario: &Scenario,
    progress: &mut dyn Progress,
) -> Result<(), ProviderError> {
    for (cluster, scenario_cluster) in clusters.iter().zip(&scenario.clusters) {
        let container = control_plane_container(&cluster.kind_name);
        let address = text(
            tools
                .run(&Invocation::new(
                    "docker",
                    [
                        "inspect",
                        "--format",
                        "{{(index .NetworkSettings.Networks \"kind\").IPAddress}}",
                        container.as_str(),
                    ],
                    QUERY_TIMEOUT,
                ))
                .map_err(failed(format!("finding the address of {container}")))?,
        );
        let address: Ipv4Addr = address.parse().map_err(|_| {
            ProviderError::Unavailable(format!(
                "{container} has no IPv4 address on docker network kind (docker said {address:?})"
            ))
        })?;
        let secret = text(
            tools
                .run(&Invocation::new(
                    istioctl[&scenario_cluster.istio_version.value].clone(),
                    [
                        "create-remote-secret".into(),
                        "--kubeconfig".into(),
                        cluster.kubeconfig.clone().into_os_string(),
                        "--context".into(),
                        cluster.context.clone().into(),
                        "--name".into(),
                        cluster.cluster.clone().into(),
                        "--server".into(),
                        format!("https://{address}:6443").into(),
                    ]
                    .into_iter()
                    .collect::<Vec<std::ffi::OsString>>(),
                    QUERY_TIMEOUT,
                ))
                .map_err(failed(format!("creating the remote secret of {}", cluster.cluster)))?,
        );
        for other in clusters.iter().filter(|other| other.cluster != cluster.cluster) {
            progress.step(&format!("{}: remote secret of {}", other.cluster, cluster.cluster));
            kube.apply_manifests(other, &format!("remote secret of {}", cluster.cluster), &secret)
                .await?;
        }
    }
    Ok(())
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

/// Deletes the clusters this run created (none with `--reuse` kept ones) and the run directory.
pub(super) fn teardown(options: &mut KindOptions, world: &mut KindWorld) -> Result<(), ProviderError> {
    let mut errors = Vec::new();
    for kind_name in std::mem::take(&mut world.created) {
        if options.reuse {
            (options.progress)(&format!("keeping kind cluster {kind_name} (--reuse)"));
            continue;
        }
        (options.progress)(&format!("deleting kind cluster {kind_name}"));
        if let Err(error) = delete_cluster(&options.tools, &kind_name) {
            errors.push(error.to_string());
        }
    }
    world.clusters.clear();
    if world.made_run_dir {
        world.made_run_dir = false;
        if let Err(error) = std::fs::remove_dir_all(&options.run_dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            errors.push(format!("removing {}: {error}", options.run_dir.display()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ProviderError::failed(
            "tearing down the kind world",
            anyhow::anyhow!(errors.join("; ")),
        ))
    }
}

fn delete_cluster(tools: &Tools, kind_name: &str) -> Result<Vec<u8>, ToolError> {
    tools.run_uninterruptible(&Invocation::new(
        "kind",
        ["delete", "cluster", "--name", kind_name],
        DELETE_TIMEOUT,
    ))
}

/// Deletes every kind cluster named with meshfed's prefix and every image carrying meshfed's label,
/// and nothing else; returns what it deleted.
pub(super) fn down(tools: &Tools, progress: &mut dyn Progress) -> Result<Vec<String>, ProviderError> {
    let listed = text(
        tools
            .run_uninterruptible(&Invocation::new("kind", ["get", "clusters"], QUERY_TIMEOUT))
            .map_err(failed("listing kind clusters"))?,
    );
    let mut deleted = Vec::new();
    for name in listed.lines().map(str::trim).filter(|name| is_meshfed_cluster(name)) {
        progress.step(&format!("deleting kind cluster {name}"));
        delete_cluster(tools, name).map_err(failed(format!("deleting kind cluster {name}")))?;
        deleted.push(format!("kind cluster {name}"));
    }
    let images = text(
        tools
            .run_uninterruptible(&Invocation::new(
                "docker",
                [
                    "image",
                    "ls",
                    "--filter",
                    &format!("label={IMAGE_LABEL}"),
                    "--format",
                    "{{.Repository}}:{{.Tag}}",
                ],
                QUERY_TIMEOUT,
            ))
            .map_err(failed("listing meshfed's workload images"))?,
    );
    for image in images.lines().map(str::trim).filter(|image| !image.is_empty()) {
        progress.step(&format!("removing image {image}"));
        tools
            .run_uninterruptible(&Invocation::new("docker", ["image", "rm", image], QUERY_TIMEOUT))
            .map_err(failed(format!("removing image {image}")))?;
        deleted.push(format!("image {image}"));
    }
    deleted.extend(remove_stale_run_dirs(&std::env::temp_dir(), progress)?);
    Ok(deleted)
}

/// The run directory of the meshfed process `pid` (kind configs, kubeconfigs, install files).
pub(super) fn run_dir_name(pid: u32) -> String {
    format!("meshfed-kind-{pid}")
}

/// Run directories of meshfed processes that no longer exist (a run killed with SIGKILL cannot
/// remove its own); those of live processes are left alone.
fn remove_stale_run_dirs(temp_dir: &Path, progress: &mut dyn Progress) -> Result<Vec<String>, ProviderError> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(temp_dir) else {
        return Ok(removed);
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("meshfed-kind-")
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if run_dir_name(pid) != name || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let path = entry.path();
        if !path.symlink_metadata().is_ok_and(|metadata| metadata.is_dir()) {
            continue;
        }
        progress.step(&format!(
            "removing {} (its run ended without cleaning up)",
            path.display()
        ));
        std::fs::remove_dir_all(&path).map_err(io_failed(format!("removing {}", path.display())))?;
        removed.push(format!("run directory {}", path.display()));
    }
    Ok(removed)
}
