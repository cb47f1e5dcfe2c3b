//! Skipped tests are counted, never a silent `ok`.
//!
//! libtest cannot mark a test ignored at run time, so a test that cannot run here calls [`skip`]:
//! under `CI=true` that is a failure (CI must run every tier); elsewhere it prints why and appends
//! one line (`<test binary>\t<test>\t<reason>`) to the file named by `MESHFED_SKIP_LOG`, which
//! `scripts/test` sets, counts and prints in its per-tier summary.

use std::io::Write as _;

/// The file `scripts/test` reads skips from.
pub const SKIP_LOG_ENV: &str = "MESHFED_SKIP_LOG";

/// Whether this process runs under CI (`CI=true`), where nothing may be skipped.
pub fn under_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Records that the calling test did not run, and why. Panics under `CI=true`.
pub fn skip(reason: &str) {
    let test = std::thread::current().name().unwrap_or("test").to_owned();
    assert!(!under_ci(), "{test} cannot be skipped under CI=true: {reason}");
    let _ = writeln!(std::io::stderr(), "skipped {test}: {reason}");
    let Some(log) = std::env::var_os(SKIP_LOG_ENV) else {
        return;
    };
    let binary = std::env::current_exe()
        .ok()
        .and_then(|path| path.file_stem().map(|stem| stem.to_string_lossy().into_owned()))
        .map(|stem| binary_name(&stem).to_owned())
        .unwrap_or_default();
    let first_line = reason.lines().next().unwrap_or_default();
    let line = format!("{binary}\t{test}\t{first_line}\n");
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(error) = appended {
        panic!("{test} was skipped but the skip could not be recorded in {log:?}: {error}");
    }
}

/// `local_e2e-0123abcd` -> `local_e2e` (cargo appends a hash to test binaries).
fn binary_name(stem: &str) -> &str {
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|byte| byte.is_ascii_hexdigit()) => name,
        _ => stem,
    }
}
