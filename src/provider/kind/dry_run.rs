//! `meshfed run --provider kind --dry-run` (pure): every external command and every Kubernetes
//! object of the kind world's build, in the order [`super::world`] runs them, built by the same
//! functions (kind config, node image, routes, image, MetalLB pool, Istio namespace, IstioOperator,
//! invocations), with `<placeholders>` for what only a live run knows (the run and cache
//! directories, the binary's digest, addresses Docker and MetalLB hand out) and every download
//! named with its URL and where its checksum comes from. Nothing is run, read or downloaded.
//! `tests/kube/kind_sequence.rs` checks that the commands come in the order the live run (on fake tools)
//! runs them.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::plan::support_matrix::{KIND, istio_minors_for, istioctl_asset};
use crate::provider::kube_api::webhooks::{WEBHOOK_ATTEMPTS, WEBHOOK_RETRY_PAUSE};
use crate::scenario::{FederationMode, Scenario};

use super::addresses::{KindNetwork, address_pools};
use super::config::{kind_cluster_name, kind_config};
use super::install::{
    METALLB_PODS, METALLB_POOL_WEBHOOKS, METALLB_VERSION, federation_gateway, metallb_manifest_url, mk_istio_namespace,
    mk_istio_operator, mk_metallb_pool,
};
use super::isolation::unreachable_routes;
use super::tools::{DOCKER_INFO_TIMEOUT, Invocation};
use super::workload_image::{ARCHIVE_NAME, IMAGE_REPOSITORY, check_binary_runs_in_pods};
use super::world::{
    GATEWAY_ADDRESS_TIMEOUT, METALLB_TIMEOUT, build_image, create_cluster, export_kubeconfig, istioctl_install,
    istioctl_version, load_image_archive, save_image,
};

/// The run directory of a live run (`$TMPDIR/meshfed-kind-<pid>`), in the printout.
pub const RUN_DIR: &str = "<run-dir>";
/// meshfed's cache (`~/.cache/meshfed` or `$MESHFED_CACHE_DIR`), in the printout.
pub const CACHE_DIR: &str = "<cache-dir>";

/// What the printout depends on besides the scenario.
#[derive(Clone, Debug)]
pub struct DryRunInputs {
    /// Base URL of Istio releases ([`super::istioctl::releases_url`]).
    pub releases_url: String,
    /// `std::env::consts::OS` of the machine that would run it.
    pub os: String,
    /// `std::env::consts::ARCH`.
    pub arch: String,
    /// `MESHFED_WORKLOAD_IMAGE`, when set (the nodes pull it; nothing is built).
    pub workload_image: Option<String>,
}

/// The example network the MetalLB pools are shown for (kind's usual `kind` network).
const EXAMPLE_SUBNET: &str = "172.18.0.0/16";

fn run_path(parts: &[&str]) -> PathBuf {
    parts.iter().fold(PathBuf::from(RUN_DIR), |path, part| path.join(part))
}

fn command(out: &mut String, invocation: &Invocation) {
    let _ = writeln!(out, "$ {}", invocation.command_line());
    if let Some(stdin) = &invocation.stdin {
        quote(out, "stdin", &String::from_utf8_lossy(stdin));
    }
}

fn quote(out: &mut String, title: &str, text: &str) {
    let _ = writeln!(out, "  {title}:");
    for line in text.lines() {
        let _ = writeln!(out, "    | {line}");
    }
}

fn heading(out: &mut String, text: &str) {
    let _ = writeln!(out, "\n# {text}");
}

/// The printout, or why the live run would refuse (no istioctl published for this platform, a
/// workload image to build from a binary that cannot run in Linux pods).
pub fn dry_run(scenario: &Scenario, inputs: &DryRunInputs) -> Result<String, String> {
    if inputs.workload_image.is_none() {
        check_binary_runs_in_pods(&inputs.os)?;
    }
    let mut out = String::new();
    let versions: std::collections::BTreeSet<_> = scenario
        .clusters
        .iter()
        .map(|cluster| cluster.istio_version.value)
        .collect();
    let _ = writeln!(
        out,
        "meshfed run --provider kind --dry-run: scenario {} ({} clusters). Nothing is run, read or downloaded;\n\
         <angle brackets> stand for what only a live run knows.\n\
         kind {}: node image {} (Kubernetes 1.{}; {});\n\
         Istio versions that install on it: {}.",
        scenario.name,
        scenario.clusters.len(),
        KIND.kind_version,
        KIND.node_image,
        KIND.kubernetes_minor,
        KIND.source,
        istio_minors_for(KIND.kubernetes_minor).join(", "),
    );

    heading(
        &mut out,
        "preflight: kind and docker on PATH, the Docker engine answers",
    );
    command(
        &mut out,
        &Invocation::new(
            "docker",
            ["info", "--format", "{{.ServerVersion}}"],
            DOCKER_INFO_TIMEOUT,
        ),
    );
    command(&mut out, &Invocation::new("kind", ["version"], DOCKER_INFO_TIMEOUT));

    let mut istioctl = std::collections::BTreeMap::new();
    for version in &versions {
        heading(&mut out, &format!("istioctl {version}"));
        let asset = istioctl_asset(*version, &inputs.os, &inputs.arch).map_err(|error| error.to_string())?;
        let url = format!("{}/{version}/{asset}", inputs.releases_url.trim_end_matches('/'));
        let path = Path::new(CACHE_DIR).join(format!("istio-{version}")).join("istioctl");
        let _ = writeln!(
            out,
            "fetch {url}\n  unless {} exists; checked against the SHA-256 Istio publishes at {url}.sha256, then unpacked with tar",
            path.display()
        );
        command(&mut out, &istioctl_version(&path));
        istioctl.insert(*version, path);
    }

    heading(
        &mut out,
        "clusters, created in parallel (an existing meshfed-* cluster stops the run unless --reuse)",
    );
    command(
        &mut out,
        &Invocation::new("kind", ["get", "clusters"], DOCKER_INFO_TIMEOUT),
    );
    for cluster in &scenario.clusters {
        let name = &cluster.name.value;
        let config = run_path(&[name, "kind-config.yaml"]);
        command(
            &mut out,
            &create_cluster(&kind_cluster_name(name), &config, &run_path(&[name, "kubeconfig"])),
        );
        quote(&mut out, &config.display().to_string(), &kind_config(cluster));
    }
    for cluster in &scenario.clusters {
        let name = &cluster.name.value;
        command(
            &mut out,
            &export_kubeconfig(&kind_cluster_name(name), &run_path(&[name, "kubeconfig"])),
        );
    }

    heading(
        &mut out,
        "isolation: other clusters' pod and service networks unreachable on every node",
    );
    for (_, _, routes) in unreachable_routes(scenario) {
        for route in &routes {
            command(&mut out, route);
        }
    }

    heading(
        &mut out,
        "gateway address pools: the last addresses of docker network kind",
    );
    command(
        &mut out,
        &Invocation::new("docker", ["network", "inspect", "kind"], DOCKER_INFO_TIMEOUT),
    );
    let names = scenario.cluster_names();
    let example = KindNetwork {
        subnet: EXAMPLE_SUBNET.parse().map_err(|error| format!("{error:?}"))?,
        container_addresses: Vec::new(),
    };
    let pools = address_pools(&example, &names).map_err(|error| error.to_string())?;

    heading(&mut out, "workload image");
    let tag = match &inputs.workload_image {
        Some(image) => {
            let _ = writeln!(
                out,
                "{image} (MESHFED_WORKLOAD_IMAGE): the nodes pull it; nothing is built"
            );
            image.clone()
        }
        None => {
            let tag = format!("{IMAGE_REPOSITORY}:<sha256-of-this-meshfed-binary-first-16-hex-digits>");
            let _ = writeln!(
                out,
                "{} holds a copy of this meshfed binary",
                run_path(&["image"]).display()
            );
            command(&mut out, &build_image(&tag, &run_path(&["image"])));
            let archive = run_path(&[ARCHIVE_NAME]);
            command(&mut out, &save_image(&tag, &archive));
            for cluster in &scenario.clusters {
                command(
                    &mut out,
                    &load_image_archive(&archive, &kind_cluster_name(&cluster.name.value)),
                );
            }
            tag
        }
    };

    heading(&mut out, &format!("MetalLB {METALLB_VERSION}"));
    let _ = writeln!(
        out,
        "fetch {}\n  unless {CACHE_DIR}/metallb-{METALLB_VERSION}/metallb-native.yaml exists; MetalLB publishes no checksum: the pinned tag in the URL identifies it",
        metallb_manifest_url()
    );
    for (cluster, pool) in scenario.clusters.iter().zip(&pools) {
        let context = format!("kind-{}", kind_cluster_name(&cluster.name.value));
        let _ = writeln!(
            out,
            "apply [{context}] MetalLB {METALLB_VERSION}: every object of metallb-native.yaml (server-side apply)"
        );
        let _ = writeln!(
            out,
            "wait [{context}] every pod {METALLB_PODS} in metallb-system Ready, at most {} s",
            METALLB_TIMEOUT.as_secs()
        );
        let _ = writeln!(
            out,
            "apply [{context}] MetalLB address pool: tried again (at most {WEBHOOK_ATTEMPTS} times, {} s apart) \
             while the API server reports failed calling webhook {}",
            WEBHOOK_RETRY_PAUSE.as_secs(),
            METALLB_POOL_WEBHOOKS.join(" or ")
        );
        quote(
            &mut out,
            &format!(
                "the last {} addresses reserved for it, shown for a kind network of {EXAMPLE_SUBNET}",
                pool_len(pool.first, pool.last)
            ),
            &mk_metallb_pool(pool),
        );
    }

    let gateway = federation_gateway(scenario.federation.mode.value);
    for cluster in &scenario.clusters {
        let name = &cluster.name.value;
        let version = cluster.istio_version.value;
        let kind_name = kind_cluster_name(name);
        let context = format!("kind-{kind_name}");
        heading(&mut out, &format!("Istio {version} in {name}"));
        let _ = writeln!(out, "apply [{context}] namespace istio-system:");
        quote(&mut out, "object", &mk_istio_namespace(cluster));
        let _ = writeln!(
            out,
            "apply [{context}] secret istio-system/cacerts: ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem \
             (<an intermediate CA for {name} under a root CA made for this run; the root key never enters a cluster>)"
        );
        let operator = run_path(&[name, "istio-operator.yaml"]);
        let kube = super::KindCluster {
            cluster: name.clone(),
            kind_name: kind_name.clone(),
            kubeconfig: run_path(&[name, "kubeconfig"]),
            context: context.clone(),
            gateway_address: None,
        };
        command(&mut out, &istioctl_install(&istioctl[&version], &kube, &operator));
        quote(
            &mut out,
            &operator.display().to_string(),
            &mk_istio_operator(scenario, cluster),
        );
        let _ = writeln!(
            out,
            "wait [{context}] service istio-system/{gateway} load balancer address, at most {} s: <{name}'s gateway address, from its pool>",
            GATEWAY_ADDRESS_TIMEOUT.as_secs()
        );
    }

    if scenario.federation.mode.value == FederationMode::EndpointDiscovery {
        heading(
            &mut out,
            "remote secrets: each cluster's API server, for every other cluster's istiod",
        );
        for cluster in &scenario.clusters {
            let name = &cluster.name.value;
            let kind_name = kind_cluster_name(name);
            let container = super::config::control_plane_container(&kind_name);
            command(
                &mut out,
                &Invocation::new(
                    "docker",
                    [
                        "inspect",
                        "--format",
                        "{{(index .NetworkSettings.Networks \"kind\").IPAddress}}",
                        container.as_str(),
                    ],
                    DOCKER_INFO_TIMEOUT,
                ),
            );
            let _ = writeln!(
                out,
                "$ {} create-remote-secret --kubeconfig {} --context kind-{kind_name} --name {name} --server https://<{container}'s address on kind>:6443",
                istioctl[&cluster.istio_version.value].display(),
                run_path(&[name, "kubeconfig"]).display()
            );
            for other in scenario.clusters.iter().filter(|other| other.name.value != *name) {
                let _ = writeln!(
                    out,
                    "apply [kind-{}] remote secret of {name}: <the Secret that istioctl printed>",
                    kind_cluster_name(&other.name.value)
                );
            }
        }
    }

    heading(&mut out, "then through the Kubernetes API, per cluster");
    let _ = writeln!(
        out,
        "foo and bar as Deployments running {tag}, and each phase's federation plan: the objects \
         `meshfed plan SCENARIO --out DIR` writes, with each gateway's address as assigned above.\n\
         At the end: kind delete cluster --name <each cluster created> (kept with --reuse)."
    );
    Ok(out)
}

fn pool_len(first: Ipv4Addr, last: Ipv4Addr) -> u32 {
    u32::from(last) - u32::from(first) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Scenario {
        crate::scenario::parse(Path::new("seed.yaml"), include_str!("../../../scenarios/seed.yaml")).unwrap()
    }

    fn inputs(os: &str, arch: &str, workload_image: Option<&str>) -> DryRunInputs {
        DryRunInputs {
            releases_url: super::super::istioctl::DEFAULT_RELEASES_URL.to_owned(),
            os: os.to_owned(),
            arch: arch.to_owned(),
            workload_image: workload_image.map(str::to_owned),
        }
    }

    #[test]
    fn on_macos_the_dry_run_refuses_as_the_run_does_unless_an_image_is_named() {
        let refused = dry_run(&seed(), &inputs("macos", "x86_64", None)).unwrap_err();
        assert!(refused.contains("MESHFED_WORKLOAD_IMAGE"), "{refused}");
        let printed = dry_run(&seed(), &inputs("macos", "x86_64", Some("registry.example/meshfed:1"))).unwrap();
        assert!(printed.contains("/1.30.3/istioctl-1.30.3-osx.tar.gz"), "{printed}");
        assert!(
            printed.contains("registry.example/meshfed:1 (MESHFED_WORKLOAD_IMAGE)"),
            "{printed}"
        );
        assert!(!printed.contains("docker build"), "{printed}");
    }

    #[test]
    fn a_platform_without_istioctl_is_refused() {
        let refused = dry_run(&seed(), &inputs("linux", "riscv64", None)).unwrap_err();
        assert!(refused.contains("linux/riscv64"), "{refused}");
    }
}
