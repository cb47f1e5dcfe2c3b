//! Reading meshfed's own Rust sources, for the tests that keep rules about what code may name.

use std::path::{Path, PathBuf};

/// The `.rs` files at or below `path`, sorted.
pub fn rust_files(path: &Path) -> Vec<PathBuf> {
    fn walk(path: &Path, found: &mut Vec<PathBuf>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                walk(&entry.unwrap().path(), found);
            }
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            found.push(path.to_owned());
        }
    }
    let mut found = Vec::new();
    walk(path, &mut found);
    found.sort();
    found
}

/// Whether the name at byte `at` of `line` starts a path (`kube::`, not `my_kube::`).
pub fn starts_a_path(line: &str, at: usize) -> bool {
    line[..at]
        .chars()
        .next_back()
        .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
}
