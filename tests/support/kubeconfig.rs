//! A kubeconfig for tests that need one without a cluster: two clusters (`c-one`, `c-two`) whose
//! API servers are one port on loopback, contexts `ctx-one` and `ctx-two`, a token user; and the
//! seed scenario pointing its clusters at those contexts.

use std::path::{Path, PathBuf};

/// Writes the kubeconfig as `dir/name`, its servers at `https://127.0.0.1:<port>`.
pub fn write_loopback_kubeconfig(dir: &Path, name: &str, port: u16) -> PathBuf {
    let mut text = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for cluster in ["one", "two"] {
        text += &format!(
            "- name: c-{cluster}\n  cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\n"
        );
    }
    text += "users:\n- name: u\n  user:\n    token: not-a-real-token\ncontexts:\n";
    for cluster in ["one", "two"] {
        text += &format!("- name: ctx-{cluster}\n  context:\n    cluster: c-{cluster}\n    user: u\n");
    }
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Writes the seed scenario with a kubeconfig context on each cluster (`ctx-one`, `ctx-two`) as
/// `dir/seed-contexts.yaml`.
pub fn seed_with_contexts(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml")).unwrap();
    let text = text
        .replace("  - name: cluster1\n", "  - name: cluster1\n    context: ctx-one\n")
        .replace("  - name: cluster2\n", "  - name: cluster2\n    context: ctx-two\n");
    assert_eq!(text.matches("context: ctx-").count(), 2);
    let path = dir.join("seed-contexts.yaml");
    std::fs::write(&path, text).unwrap();
    path
}
