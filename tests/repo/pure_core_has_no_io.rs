//! The pure core (scenario, inventory, plan, PKI, measurements, records, verdicts, reports, diff) stays
//! free of the Kubernetes edge: no kube-rs, hyper, rustls, tower or tokio in its source. The
//! providers are the only place those crates may appear; this test is what keeps it so while the
//! crate is one package (a workspace split would make it a compile error instead).

use std::path::Path;

use crate::support::rust_sources;
use rust_sources::{rust_files, starts_a_path};

/// Crates the pure core must not name.
const EDGE_CRATES: [&str; 6] = ["kube", "hyper", "rustls", "tower", "tokio", "k8s_openapi::api::apps"];

/// Sources of the pure core.
const PURE: [&str; 11] = [
    "src/scenario",
    "src/inventory.rs",
    "src/plan",
    "src/pki.rs",
    "src/measure",
    "src/record.rs",
    "src/verdict.rs",
    "src/report",
    "src/reconcile.rs",
    "src/diff",
    "src/printable.rs",
];

/// Lines of `source` that name one of the edge crates as a path (`kube::`, `use tokio`).
fn edge_uses(source: &str) -> Vec<String> {
    source
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .filter(|line| {
            EDGE_CRATES.iter().any(|name| {
                line.match_indices(name).any(|(at, _)| {
                    let after = &line[at + name.len()..];
                    starts_a_path(line, at)
                        && (after.starts_with("::")
                            || (line.trim_start().starts_with("use ") && after.starts_with([';', ' ', ','])))
                })
            })
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_check_finds_an_edge_crate_where_there_is_one() {
    assert_eq!(edge_uses("use kube::Api;\nlet x = 1;"), ["use kube::Api;"]);
    assert_eq!(
        edge_uses("    tokio::time::sleep(d).await;"),
        ["    tokio::time::sleep(d).await;"]
    );
    assert!(edge_uses("// kube::Api is for providers\nlet kubeconfig = 1; let my_kube::x = 2;").is_empty());
}

#[test]
fn pure_core_modules_do_not_use_kubernetes_or_async_io_crates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files: Vec<_> = PURE.iter().flat_map(|pure| rust_files(&root.join(pure))).collect();
    assert!(
        files.len() >= PURE.len(),
        "the pure core's files were not found: {files:?}"
    );
    let offenders: Vec<String> = files
        .iter()
        .flat_map(|file| {
            let source = std::fs::read_to_string(file).unwrap();
            edge_uses(&source)
                .into_iter()
                .map(move |line| format!("{}: {}", file.strip_prefix(root).unwrap().display(), line.trim()))
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "the pure core names edge crates:\n{}",
        offenders.join("\n")
    );
}
