//! A scratch directory that is removed, with everything in it, when dropped.
//! Include with `#[path = "support/temp_dir.rs"] mod temp_dir;`; each test file keeps its own
//! `TempDir::new(label)` (an inherent impl in the test crate) that picks the directory's name.

#![allow(dead_code)]

use std::path::PathBuf;

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// `<system temp dir>/<prefix>-<label>-<test pid>`: fixed for one test run, so whatever an
    /// earlier run of the same pid left there is removed first.
    pub fn for_this_process(prefix: &str, label: &str) -> TempDir {
        let path = std::env::temp_dir().join(format!("{prefix}-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// Creates `path` (with its parents), whose name the caller made unique.
    pub fn at(path: PathBuf) -> TempDir {
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
