//! Re-running one test of the running binary: libtest names a test by its module path without the
//! crate (`network::pods_reach_...`), and `--exact` wants that name.

/// The name libtest gives `test` defined in the module whose `module_path!()` is `module_path`.
pub fn libtest_name(module_path: &str, test: &str) -> String {
    match module_path.split_once("::") {
        Some((_crate, module)) => format!("{module}::{test}"),
        None => test.to_owned(),
    }
}
