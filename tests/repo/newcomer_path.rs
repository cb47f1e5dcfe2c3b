//! The newcomer's path (README, "The two commands"): `scripts/setup`, run by the main command,
//! installs only what `meshfed run` needs; `scripts/setup --tests`, run by `scripts/test`, adds what
//! only the tests need. Each case runs the real script on a "bare machine": a `PATH` holding only
//! fakes, so nothing is installed here and every package counts as missing.
//!
//! The fake `apt-get` answers as apt-get(8) documents: `update` and `install -y PACKAGE...` print
//! nothing under `-qq` and exit 0 ("apt-get returns zero on normal operation", DIAGNOSTICS); it
//! records each call, one line of arguments per call. The fake `id -u` prints a numeric user id
//! (coreutils' `id`: "-u, --user: print only the effective user ID"), 0, so no `sudo` is used.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::support::temp_dir::{TempDir, temp_dir};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A temporary directory of fake programs, removed on drop.
struct BareMachine {
    dir: TempDir,
}

impl BareMachine {
    fn new(label: &str) -> BareMachine {
        let dir = temp_dir(&format!("newcomer-{label}"));
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        let machine = BareMachine { dir };
        machine.fake(
            "apt-get",
            &format!("echo \"$*\" >> '{}'\n", machine.apt_log().display()),
        );
        machine.fake("id", "echo 0\n");
        machine.fake("cargo", "exit 0\n");
        machine
    }

    fn fake(&self, name: &str, body: &str) {
        let path = self.dir.path().join("bin").join(name);
        std::fs::write(&path, format!("#!{}\n{body}", bash().display())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn apt_log(&self) -> PathBuf {
        self.dir.path().join("apt-get.log")
    }

    /// Runs `scripts/setup ARGS` with only the fakes on `PATH`.
    fn setup(&self, args: &[&str]) -> Output {
        Command::new(bash())
            .arg(Path::new(ROOT).join("scripts/setup"))
            .args(args)
            .env_clear()
            .env("PATH", self.dir.path().join("bin"))
            .output()
            .unwrap()
    }

    /// The packages of every `apt-get install` call, in order.
    fn installed(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.apt_log()).unwrap_or_default();
        log.lines()
            .filter_map(|line| line.strip_prefix("install -y -qq "))
            .flat_map(|packages| packages.split_whitespace().map(str::to_owned))
            .collect()
    }
}

/// This machine's bash, found on the test's own `PATH` (the script runs with the fakes' `PATH`).
fn bash() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("bash"))
        .find(|candidate| candidate.is_file())
        .expect("bash on PATH")
}

#[test]
fn the_main_command_installs_only_what_meshfed_run_needs() {
    let machine = BareMachine::new("main");
    let output = machine.setup(&[]);
    assert!(output.status.success(), "scripts/setup failed: {output:?}");
    assert_eq!(machine.installed(), ["iproute2", "python3-pip"]);
}

#[test]
fn the_test_command_also_installs_what_only_the_tests_need() {
    let machine = BareMachine::new("tests");
    let output = machine.setup(&["--tests"]);
    assert!(output.status.success(), "scripts/setup --tests failed: {output:?}");
    assert_eq!(
        machine.installed(),
        [
            "iproute2",
            "python3-pip",
            "openssl",
            "chromium-headless-shell",
            "libxml2-utils"
        ]
    );
    let test_script = std::fs::read_to_string(Path::new(ROOT).join("scripts/test")).unwrap();
    assert!(
        test_script.lines().any(|line| line.trim() == "scripts/setup --tests"),
        "scripts/test must set the machine up for the tests with `scripts/setup --tests`"
    );
}

#[test]
fn an_unknown_setup_argument_is_refused_with_what_is_allowed_and_nothing_installed() {
    let machine = BareMachine::new("unknown");
    let output = machine.setup(&["--test"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("'--test'") && stderr.contains("allowed: --tests"),
        "{stderr}"
    );
    assert!(
        !machine.apt_log().exists(),
        "apt-get ran although the argument was refused"
    );
}

#[test]
fn nothing_is_installed_when_everything_is_there() {
    let machine = BareMachine::new("complete");
    for program in ["ip", "openssl", "chromium-headless-shell", "xmllint"] {
        machine.fake(program, "exit 0\n");
    }
    machine.fake("python3", "exit 0\n");
    let output = machine.setup(&["--tests"]);
    assert!(output.status.success(), "{output:?}");
    assert!(!machine.apt_log().exists(), "apt-get ran on a complete machine");
}

/// No file of the repository names a path of a particular machine (a development machine's work
/// folder or a user's home): a fresh clone must work anywhere. The prefixes are assembled here so
/// that this file does not match itself.
#[test]
fn no_committed_file_names_a_path_of_a_particular_machine() {
    let forbidden = [
        ["/", "work", "/"].concat(),
        ["/", "home", "/"].concat(),
        ["/", "root", "/"].concat(),
    ];
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::from(ROOT)];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // Build output and git's own store are not the repository's files.
            if name == "target" || name == ".git" {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for (number, line) in text.lines().enumerate() {
                if forbidden.iter().any(|prefix| line.contains(prefix.as_str())) {
                    found.push(format!(
                        "{}:{}: {line}",
                        path.strip_prefix(ROOT).unwrap().display(),
                        number + 1
                    ));
                }
            }
        }
    }
    assert!(found.is_empty(), "paths of a particular machine:\n{}", found.join("\n"));
}
