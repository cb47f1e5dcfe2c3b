//! A kubeconfig for tests that need one without a cluster: two clusters (`c-one`, `c-two`) whose
//! API servers are one port on loopback, contexts `ctx-one` and `ctx-two`, a token user.

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
