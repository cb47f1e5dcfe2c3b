//! Rendering a plan: one YAML file per object with stable names and order, and a one-screen summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use super::{Object, Plan};

/// One object rendered to YAML, at its path relative to the output directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedFile {
    /// `<cluster>/NN-<kind>-<name>.yaml`.
    pub path: PathBuf,
    /// The object as a YAML document.
    pub yaml: String,
}

/// Renders every object of every cluster. Numbering follows apply order, so `ls` order is the
/// order to apply in.
pub fn render(plan: &Plan) -> Result<Vec<RenderedFile>, serde_saphyr::SerializeError> {
    let mut files = Vec::new();
    for cluster in &plan.clusters {
        let width = digits(cluster.objects.len().saturating_sub(1)).max(2);
        for (index, object) in cluster.objects.iter().enumerate() {
            let name = file_name(index, width, object);
            files.push(RenderedFile {
                path: PathBuf::from(&cluster.cluster).join(name),
                yaml: serde_saphyr::to_string(object)?,
            });
        }
    }
    Ok(files)
}

fn file_name(index: usize, width: usize, object: &Object) -> String {
    let metadata = object.metadata();
    let name = metadata.name.as_deref().unwrap_or("unnamed");
    let qualified = match &metadata.namespace {
        Some(namespace) => format!("{name}.{namespace}"),
        None => name.to_owned(),
    };
    format!(
        "{index:0width$}-{}-{qualified}.yaml",
        object.kind().to_ascii_lowercase()
    )
}

fn digits(mut number: usize) -> usize {
    let mut count = 1;
    while number >= 10 {
        number /= 10;
        count += 1;
    }
    count
}

/// Objects per cluster per kind, as a table that fits on one screen.
pub fn summary(plan: &Plan) -> String {
    let mut kinds: Vec<&'static str> = Vec::new();
    let mut counts: Vec<BTreeMap<&'static str, usize>> = Vec::new();
    for cluster in &plan.clusters {
        let mut per_kind = BTreeMap::new();
        for object in &cluster.objects {
            if !kinds.contains(&object.kind()) {
                kinds.push(object.kind());
            }
            *per_kind.entry(object.kind()).or_insert(0) += 1;
        }
        counts.push(per_kind);
    }
    let name_width = plan
        .clusters
        .iter()
        .map(|cluster| cluster.cluster.len())
        .max()
        .unwrap_or(7)
        .max(7);
    let mut table = format!("{:name_width$}", "cluster");
    for kind in &kinds {
        let _ = write!(table, "  {kind:>w$}", w = kind.len());
    }
    let _ = writeln!(table, "  {:>5}", "total");
    for (cluster, per_kind) in plan.clusters.iter().zip(&counts) {
        let _ = write!(table, "{:name_width$}", cluster.cluster);
        for kind in &kinds {
            let _ = write!(
                table,
                "  {:>w$}",
                per_kind.get(kind).copied().unwrap_or(0),
                w = kind.len()
            );
        }
        let _ = writeln!(table, "  {:>5}", cluster.objects.len());
    }
    table
}
