//! Scratch directories for tests: `tempfile`'s, removed with everything in them when dropped,
//! named after the test's label so a leftover one (after a crash) says whose it was.

use std::path::Path;

pub use tempfile::TempDir;

/// A new directory `meshfed-test-<label>-<random>` in the system's temporary directory.
pub fn temp_dir(label: &str) -> TempDir {
    temp_dir_in(&std::env::temp_dir(), label)
}

/// A new directory `meshfed-test-<label>-<random>` in `parent`.
pub fn temp_dir_in(parent: &Path, label: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(&format!("meshfed-test-{label}-"))
        .tempdir_in(parent)
        .unwrap_or_else(|error| panic!("creating a temporary directory in {}: {error}", parent.display()))
}
