//! meshfed as a user's crate uses it: builds tests/user-crate (which depends on meshfed by path)
//! and runs its own `cargo test`, which runs the seed on the local provider through
//! `meshfed::Run` from a plain `#[test]` and a `#[tokio::test]` and asserts on the report.
//!
//! The user crate shares this build's target directory (and meshfed's Cargo.lock), so only meshfed
//! and the user crate themselves are compiled. Every process it starts carries a unique
//! `MESHFED_TEST_MARKER`; none may be left afterwards.

mod support;
use support::skip;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use meshfed::process::{BoundedRun, bounded_run};

const MESHFED: &str = env!("CARGO_BIN_EXE_meshfed");

/// Building meshfed as a dependency plus the user crate on two busy cores, then four seed runs.
const USER_CRATE_TIMEOUT: Duration = Duration::from_secs(40 * 60);

/// The lines the user crate's tests print once their assertions held (a skipped or empty test
/// cannot print them).
const PROOF_LINES: [&str; 4] = [
    "user-crate: seed passed from a plain test: 3 phases, mtls 1",
    "user-crate: seed passed from a tokio test",
    "user-crate: failed expectation reported",
    "user-crate: bad input reported",
];

fn local_provider_available() -> bool {
    let output = Command::new(MESHFED).arg("setup").output().expect("run meshfed setup");
    if output.status.success() {
        return true;
    }
    skip::skip(&format!(
        "the local provider cannot run here (`meshfed setup` failed):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    ));
    false
}

/// This build's target directory: the test binary is `<target>/<profile>/deps/user_crate-<hash>`.
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .expect("target dir above the test binary")
        .to_owned()
}

fn marked_processes(marker: &str) -> Vec<String> {
    let needle = format!("MESHFED_TEST_MARKER={marker}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|byte| byte.is_ascii_digit()) {
            continue;
        }
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .map(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
            .unwrap_or(true);
        let marked = std::fs::read(entry.path().join("environ"))
            .is_ok_and(|environ| environ.split(|byte| *byte == 0).any(|var| var == needle.as_bytes()));
        if marked && !zombie {
            found.push(name);
        }
    }
    found
}

#[test]
fn user_crate_runs_the_seed_from_its_own_cargo_test() {
    if !local_provider_available() {
        return;
    }
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/user-crate");
    // meshfed's own lock, so the user crate resolves to the versions already built.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"),
        crate_dir.join("Cargo.lock"),
    )
    .expect("copy Cargo.lock into the user crate");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let marker = format!("user-crate-{}-{nanos}", std::process::id());
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .args(["test", "--offline", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml"))
        .args(["--", "--nocapture"])
        .env("CARGO_TARGET_DIR", target_dir())
        .env("MESHFED_TEST_MARKER", &marker);
    // cargo runs this test with variables describing meshfed (CARGO_PKG_NAME, CARGO_MANIFEST_DIR,
    // ...). Build scripts that watch them (ring's does, through `rerun-if-env-changed`) would see
    // them change, run again and rebuild everything above them in the shared target dir, twice per
    // run. Without them the user crate's build sees the environment of the build that made this
    // test. (CI=true and the rest stay.)
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_for_tests = name == "CARGO"
            || name == "OUT_DIR"
            || name == "CARGO_PRIMARY_PACKAGE"
            || name == "CARGO_TARGET_TMPDIR"
            || name == "CARGO_RUSTC_CURRENT_DIR"
            || ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_BIN_", "CARGO_CRATE_"]
                .iter()
                .any(|prefix| name.starts_with(prefix));
        if set_by_cargo_for_tests {
            cargo.env_remove(name.as_ref());
        }
    }
    let output = bounded_run(
        cargo,
        &BoundedRun {
            what: "cargo test in tests/user-crate".to_owned(),
            timeout: USER_CRATE_TIMEOUT,
            stdin: None,
            capture: true,
            interruptible: false,
        },
    )
    .expect("cargo test in the user crate finishes");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // Shown with --nocapture (and by libtest on failure): what the user crate's build compiled.
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "the user crate's cargo test failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    for line in PROOF_LINES {
        assert!(
            stdout.lines().any(|printed| printed == line),
            "the user crate's tests did not print {line:?}:\n{stdout}\n{stderr}"
        );
    }
    assert!(
        stdout.contains("test result: ok. 4 passed; 0 failed; 0 ignored"),
        "expected the user crate's 4 tests to pass:\n{stdout}"
    );
    let left = marked_processes(&marker);
    assert!(left.is_empty(), "processes of the user crate's run are left: {left:?}");
}
