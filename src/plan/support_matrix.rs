//! What works together on the providers that run real Istio (pure), as one table: the kind
//! release meshfed targets → the node image it pins (by digest) → that image's Kubernetes → the
//! Istio versions that install on it (istio.io's support table) → the istioctl asset each Istio
//! version is published as. The `kind` and `kubeconfig` providers refuse a scenario that leaves
//! this table (an Istio that does not install on the node image, an in-place upgrade that skips a
//! minor) before anything is created; `local` emulates any version.
#![forbid(unsafe_code)]

use std::path::Path;

use crate::scenario::{IstioVersion, Scenario, ScenarioError, Spanned};

use super::upgrade_rules::in_place_upgrade_skips_minors;

/// One kind release and the node image meshfed pins with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindRelease {
    /// `kind version` of the release (`v0.30.0`).
    pub kind_version: &'static str,
    /// The node image, by digest (`kind create cluster --image`).
    pub node_image: &'static str,
    /// Kubernetes minor version of that image (1.`minor`).
    pub kubernetes_minor: u32,
    /// Where the image and its digest come from.
    pub source: &'static str,
}

/// The kind release meshfed targets and its default node image, pinned by digest so another
/// kind version cannot bring another Kubernetes. The release notes of v0.30.0 name this image as
/// the release's default; the same string is the constant `Image` of
/// `pkg/apis/config/defaults/image.go` at tag v0.30.0 of kubernetes-sigs/kind.
pub const KIND: KindRelease = KindRelease {
    kind_version: "v0.30.0",
    node_image: "kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a",
    kubernetes_minor: 34,
    source: "kubernetes-sigs/kind v0.30.0: release notes, pkg/apis/config/defaults/image.go",
};

/// The Kubernetes versions one Istio minor installs on (1.`first` to 1.`last`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IstioSupport {
    /// Istio 1.`minor`.
    pub istio_minor: u32,
    /// Oldest Kubernetes minor.
    pub first_kubernetes: u32,
    /// Newest Kubernetes minor.
    pub last_kubernetes: u32,
    /// Where the range comes from.
    pub source: &'static str,
}

const SUPPORT_STATUS: &str = "istio.io supported-releases table (data/compatibility/supportStatus.yml)";

const fn row(istio_minor: u32, first_kubernetes: u32, last_kubernetes: u32, source: &'static str) -> IstioSupport {
    IstioSupport {
        istio_minor,
        first_kubernetes,
        last_kubernetes,
        source,
    }
}

/// "Supported Kubernetes Versions" of istio.io's support table, per Istio minor. Istio 1.5 and
/// earlier have no row there; their CRDs are `apiextensions.k8s.io/v1beta1`, which Kubernetes
/// 1.22 stopped serving, so they end at 1.21 (the same removal ends 1.9, whose row ends at 1.20).
/// Two rows were not in the copies of the table meshfed's authors could read and are the
/// intersection of their neighbours' ranges (a Kubernetes version both neighbours support), said
/// so in their source: widen them when istio.io's row says more.
pub const ISTIO_SUPPORT: &[IstioSupport] = &[
    row(
        5,
        0,
        21,
        "no istio.io row for 1.5 and earlier; CRDs apiextensions.k8s.io/v1beta1, removed in Kubernetes 1.22",
    ),
    row(6, 15, 18, SUPPORT_STATUS),
    row(7, 16, 18, SUPPORT_STATUS),
    row(8, 16, 19, SUPPORT_STATUS),
    row(9, 17, 20, SUPPORT_STATUS),
    row(10, 18, 21, SUPPORT_STATUS),
    row(11, 18, 22, SUPPORT_STATUS),
    row(12, 19, 22, SUPPORT_STATUS),
    row(13, 20, 23, SUPPORT_STATUS),
    row(14, 21, 24, SUPPORT_STATUS),
    row(15, 22, 25, SUPPORT_STATUS),
    row(16, 22, 25, SUPPORT_STATUS),
    row(17, 23, 26, SUPPORT_STATUS),
    row(18, 24, 27, SUPPORT_STATUS),
    row(19, 25, 28, SUPPORT_STATUS),
    row(20, 25, 29, SUPPORT_STATUS),
    row(21, 26, 29, SUPPORT_STATUS),
    row(22, 27, 30, SUPPORT_STATUS),
    row(23, 27, 30, SUPPORT_STATUS),
    row(24, 28, 31, SUPPORT_STATUS),
    row(25, 29, 32, SUPPORT_STATUS),
    row(26, 29, 33, SUPPORT_STATUS),
    row(27, 29, 33, "not read: the intersection of the 1.26 and 1.28 rows"),
    row(
        28,
        29,
        34,
        "Istio 1.28.0 announcement (istio.io news): Kubernetes 1.29 through 1.34",
    ),
    row(29, 32, 34, "not read: the intersection of the 1.28 and 1.30 rows"),
    row(30, 32, 36, SUPPORT_STATUS),
];

/// The row of `version`'s minor; versions before 1.6 share the 1.5 row; `None` past the table.
pub fn istio_support(version: &IstioVersion) -> Option<&'static IstioSupport> {
    if version.major != 1 {
        return None;
    }
    let minor = version.minor.max(5);
    ISTIO_SUPPORT.iter().find(|row| row.istio_minor == minor)
}

/// Whether `version` installs on Kubernetes 1.`kubernetes_minor`.
pub fn installs_on(version: &IstioVersion, kubernetes_minor: u32) -> bool {
    istio_support(version).is_some_and(|row| (row.first_kubernetes..=row.last_kubernetes).contains(&kubernetes_minor))
}

/// The Istio minors (`1.28`, …) that install on Kubernetes 1.`kubernetes_minor`.
pub fn istio_minors_for(kubernetes_minor: u32) -> Vec<String> {
    ISTIO_SUPPORT
        .iter()
        .filter(|row| row.istio_minor > 5 && (row.first_kubernetes..=row.last_kubernetes).contains(&kubernetes_minor))
        .map(|row| format!("1.{}", row.istio_minor))
        .collect()
}

/// Why no istioctl asset fits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Istio publishes no istioctl {version} for {os}/{arch}")]
pub struct NoIstioctlAsset {
    /// The version.
    pub version: IstioVersion,
    /// `std::env::consts::OS`.
    pub os: String,
    /// `std::env::consts::ARCH`.
    pub arch: String,
}

/// The release asset istioctl `version` is published as for `os`/`arch` (Rust's names), as
/// istio/istio's `release/downloadIstioCtl.sh` picks it: Linux has an arch suffix from 1.6
/// (`istioctl-1.30.3-linux-amd64.tar.gz`; `istioctl-1.5.10-linux.tar.gz` before, amd64 only);
/// macOS has none for Intel (`istioctl-1.30.3-osx.tar.gz`) and `-arm64` from 1.10.
pub fn istioctl_asset(version: IstioVersion, os: &str, arch: &str) -> Result<String, NoIstioctlAsset> {
    let none = || NoIstioctlAsset {
        version,
        os: os.to_owned(),
        arch: arch.to_owned(),
    };
    let with_arch_from = |minor: u32| version.major > 1 || version.minor >= minor;
    let suffix = match (os, arch) {
        ("linux", "x86_64") if with_arch_from(6) => "linux-amd64",
        ("linux", "x86_64") => "linux",
        ("linux", "aarch64") if with_arch_from(6) => "linux-arm64",
        ("macos", "x86_64") => "osx",
        ("macos", "aarch64") if with_arch_from(10) => "osx-arm64",
        _ => return Err(none()),
    };
    Ok(format!("istioctl-{version}-{suffix}.tar.gz"))
}

/// Where a value was written, or (for a default) where its cluster was.
fn position<T>(value: &Spanned<T>, fallback: &Spanned<String>) -> (u64, u64) {
    let at = if value.referenced.line() == 0 {
        fallback.referenced
    } else {
        value.referenced
    };
    (at.line(), at.column())
}

fn refuse(file: &Path, (line, column): (u64, u64), message: String) -> ScenarioError {
    ScenarioError {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

/// Refuses, pointing at it, what real Istio cannot do: a cluster's Istio that does not install on
/// Kubernetes 1.`kubernetes_minor` (when it is known before anything is created: kind's pinned
/// node image; `None` for clusters meshfed does not create), an upgrade to such a version, and
/// an in-place upgrade that skips a minor version (offering a canary upgrade instead).
pub fn check_real_istio(
    scenario: &Scenario,
    file: &Path,
    provider: &str,
    kubernetes_minor: Option<u32>,
) -> Result<(), ScenarioError> {
    let not_installable = |version: &IstioVersion| -> Option<String> {
        let kubernetes = kubernetes_minor?;
        if installs_on(version, kubernetes) {
            return None;
        }
        let listed = match istio_support(version) {
            Some(row) => format!(
                "its range is Kubernetes 1.{}–1.{} ({})",
                row.first_kubernetes, row.last_kubernetes, row.source
            ),
            None => "meshfed's support table has no row for it".to_owned(),
        };
        Some(format!(
            "Istio {version} does not install on Kubernetes 1.{kubernetes} (provider {provider}: kind {}, node image {}): \
             {listed}; Istio versions that install there: {} (provider local emulates any version)",
            KIND.kind_version,
            KIND.node_image,
            istio_minors_for(kubernetes).join(", ")
        ))
    };
    let mut installed = std::collections::BTreeMap::new();
    for cluster in &scenario.clusters {
        let version = cluster.istio_version.value;
        if let Some(why) = not_installable(&version) {
            return Err(refuse(
                file,
                position(&cluster.istio_version, &cluster.name),
                format!("cluster {}: {why}", cluster.name.value),
            ));
        }
        installed.insert(cluster.name.value.clone(), version);
    }
    for phase in &scenario.phases {
        let mut upgrades: Vec<(Vec<String>, &Spanned<IstioVersion>)> = Vec::new();
        if let Some(upgrade) = &phase.upgrade {
            let clusters = if upgrade.value.clusters.is_empty() {
                scenario
                    .clusters
                    .iter()
                    .map(|cluster| cluster.name.value.clone())
                    .collect()
            } else {
                upgrade
                    .value
                    .clusters
                    .iter()
                    .map(|cluster| cluster.value.clone())
                    .collect()
            };
            upgrades.push((clusters, &upgrade.value.to));
        }
        for action in &phase.actions {
            if let Some(upgrade) = &action.value.upgrade {
                upgrades.push((vec![upgrade.value.cluster.value.clone()], &upgrade.value.to));
            }
        }
        for (clusters, to) in upgrades {
            let at = position(to, &phase.name);
            if let Some(why) = not_installable(&to.value) {
                return Err(refuse(
                    file,
                    at,
                    format!("phase {}: upgrade to {why}", phase.name.value),
                ));
            }
            for cluster in clusters {
                let Some(from) = installed.get(&cluster).copied() else {
                    continue;
                };
                if in_place_upgrade_skips_minors(&from, &to.value) {
                    return Err(refuse(
                        file,
                        at,
                        format!(
                            "phase {}: the in-place upgrade of {cluster} from Istio {from} to {} skips minor versions: \
                             Istio upgrades in place only from the previous minor (istio.io, in-place upgrades); \
                             upgrade one minor at a time, or use a canary (revision) upgrade",
                            phase.name.value, to.value
                        ),
                    ));
                }
                installed.insert(cluster, to.value);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_node_image_is_kinds_default_by_digest() {
        assert!(KIND.node_image.starts_with("kindest/node:v1.34.0@sha256:"));
        assert_eq!(KIND.node_image.rsplit_once(':').unwrap().1.len(), 64);
        assert!(KIND.node_image.contains(&format!("v1.{}.", KIND.kubernetes_minor)));
    }

    #[test]
    fn the_table_is_ordered_without_gaps_and_each_range_is_a_range() {
        for (row, next) in ISTIO_SUPPORT.iter().zip(&ISTIO_SUPPORT[1..]) {
            assert_eq!(next.istio_minor, row.istio_minor + 1);
            assert!(next.first_kubernetes >= row.first_kubernetes, "{next:?}");
        }
        assert!(
            ISTIO_SUPPORT
                .iter()
                .all(|row| row.first_kubernetes <= row.last_kubernetes)
        );
    }

    #[test]
    fn on_kubernetes_1_34_the_late_istio_lines_install_and_old_ones_do_not() {
        assert_eq!(istio_minors_for(34), ["1.28", "1.29", "1.30"]);
        assert!(installs_on(&IstioVersion::new(1, 30, 3), 34));
        assert!(!installs_on(&IstioVersion::new(1, 9, 9), 34));
        assert!(!installs_on(&IstioVersion::new(1, 5, 10), 34));
        assert!(installs_on(&IstioVersion::new(1, 4, 0), 16));
        assert!(!installs_on(&IstioVersion::new(1, 31, 0), 34), "past the table");
    }

    #[test]
    fn istioctl_assets_follow_downloadistioctl() {
        let asset = |minor, os, arch| istioctl_asset(IstioVersion::new(1, minor, 0), os, arch);
        assert_eq!(
            asset(30, "linux", "x86_64").unwrap(),
            "istioctl-1.30.0-linux-amd64.tar.gz"
        );
        assert_eq!(
            asset(30, "linux", "aarch64").unwrap(),
            "istioctl-1.30.0-linux-arm64.tar.gz"
        );
        assert_eq!(asset(5, "linux", "x86_64").unwrap(), "istioctl-1.5.0-linux.tar.gz");
        assert!(asset(5, "linux", "aarch64").is_err());
        assert_eq!(asset(30, "macos", "x86_64").unwrap(), "istioctl-1.30.0-osx.tar.gz");
        assert_eq!(
            asset(30, "macos", "aarch64").unwrap(),
            "istioctl-1.30.0-osx-arm64.tar.gz"
        );
        assert!(asset(9, "macos", "aarch64").is_err());
        assert!(asset(30, "windows", "x86_64").is_err());
    }
}
