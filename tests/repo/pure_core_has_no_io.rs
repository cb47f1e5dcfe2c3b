//! The pure core (scenario, inventory, plan, PKI, measurements, records, verdicts, reports, diff) stays
//! free of the Kubernetes edge: no kube-rs, hyper, rustls, tower or tokio in its source. The
//! providers are the only place those crates may appear; this test is what keeps it so while the
//! crate is one package (a workspace split would make it a compile error instead).
//!
//! It also keeps the layers free of cycles: `scripts/module-cycles` follows every `crate::`,
//! `super::` and `self::` path of `src/` (test code aside) and must find no module that imports one
//! that imports it back.
//!
//! It also keeps one module convention: a module with sub-modules is a folder with `mod.rs`.

use std::path::Path;
use std::process::Command;

use crate::support::{rust_sources, skip};
use rust_sources::{rust_files, starts_a_path};

/// Crates the pure core must not name.
const EDGE_CRATES: [&str; 9] = [
    "kube",
    "hyper",
    "hyper_util",
    "hyper_rustls",
    "http_body_util",
    "rustls",
    "tower",
    "tokio",
    "k8s_openapi::api::apps",
];

/// Sources of the pure core.
const PURE: [&str; 15] = [
    "src/scenario",
    "src/value_types.rs",
    "src/change.rs",
    "src/inventory.rs",
    "src/plan",
    "src/pki.rs",
    "src/measure",
    "src/record.rs",
    "src/verdict",
    "src/report",
    "src/reconcile.rs",
    "src/diff",
    "src/printable.rs",
    "src/exit_code.rs",
    "src/observation.rs",
];

/// The same modules as `scripts/module-cycles` names them.
const PURE_MODULES: [&str; 15] = [
    "scenario",
    "value_types",
    "change",
    "inventory",
    "plan",
    "pki",
    "measure",
    "record",
    "verdict",
    "report",
    "reconcile",
    "diff",
    "printable",
    "exit_code",
    "observation",
];

/// Imports from the pure core into meshfed's edges that remain, each with its reason: the PKI and
/// the report files are written through `atomic_files` (files replaced in one step), which a pure core
/// crate would leave to its callers.
const KNOWN_UPWARD: [(&str, &str); 2] = [("pki", "atomic_files"), ("report", "atomic_files")];

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

/// Runs `scripts/module-cycles` with `args`; `None` (recorded as a skip) without python3.
fn module_cycles(args: &[&str]) -> Option<(bool, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = match Command::new("python3")
        .arg(root.join("scripts/module-cycles"))
        .args(args)
        .output()
    {
        Ok(output) => output,
        Err(error) => {
            skip::skip(&format!("scripts/module-cycles needs python3: {error}"));
            return None;
        }
    };
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Some((output.status.success(), shown))
}

#[test]
fn the_cycle_finder_finds_the_cycles_of_a_tree_that_has_them() {
    let Some((passed, shown)) = module_cycles(&["--self-test"]) else {
        return;
    };
    assert!(passed, "{shown}");
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let Some((acyclic, shown)) = module_cycles(&[]) else {
        return;
    };
    assert!(acyclic, "scripts/module-cycles found cycles between modules:\n{shown}");
    assert!(shown.contains("no module cycles"), "{shown}");
}

#[test]
fn the_pure_core_imports_only_the_pure_core() {
    let Some((_, shown)) = module_cycles(&["--edges"]) else {
        return;
    };
    let upward: Vec<&str> = shown
        .lines()
        .filter(|line| {
            let Some((from, rest)) = line.split_once(" -> ") else {
                return false;
            };
            let to = rest.split(':').next().unwrap_or_default();
            PURE_MODULES.contains(&from) && !PURE_MODULES.contains(&to) && !KNOWN_UPWARD.contains(&(from, to))
        })
        .collect();
    assert!(
        shown.contains("scenario -> value_types"),
        "the edge list is not what the test reads:\n{shown}"
    );
    assert!(
        upward.is_empty(),
        "the pure core imports meshfed's edges:\n{}",
        upward.join("\n")
    );
}

/// One convention for modules with sub-modules: `x/mod.rs`, never `x.rs` beside a folder `x/`
/// (`cli`, `output` and `run` were once the exceptions), so a module's code is found in one
/// place.
#[test]
fn every_module_with_sub_modules_is_a_folder_with_mod_rs() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let both: Vec<String> = rust_files(&src)
        .iter()
        .filter(|file| {
            file.file_name()
                .is_some_and(|name| name != "mod.rs" && name != "lib.rs" && name != "main.rs")
        })
        .filter(|file| file.with_extension("").is_dir())
        .map(|file| file.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    assert!(
        both.is_empty(),
        "these modules are a file beside a folder of the same name; move each to <name>/mod.rs: {both:?}"
    );
}
