//! Files are never lost: `plan`, `certs` and `run --report-dir` replace what they write in one step,
//! refuse what they must not replace, never write through a symlink, and keep working when the
//! output lives under /run (hidden inside meshfed's sandbox) or on a full disk.
//!
//! Every check compares whole directory trees byte for byte (contents, kinds, modes and symlink
//! targets), so "nothing was lost" means exactly that. Tests that need root (mounting a tmpfs) or
//! the local provider (Envoy) skip with a message outside CI and fail under `CI=true`.

use crate::support::kubeconfig::{seed_with_contexts, write_loopback_kubeconfig};
use crate::support::libtest::libtest_name;
use crate::support::local_provider;
use crate::support::marker::processes_with_marker;
use crate::support::meshfed_command::{MESHFED, Meshfed};
use crate::support::skip;
use crate::support::temp_dir::{TempDir, temp_dir};
use local_provider::local_provider_available;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use meshfed::atomic_files::Dir;

fn scenario(name: &str) -> String {
    format!("{}/scenarios/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn unique(label: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    format!(
        "{label}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs meshfed in `cwd` with a marker so leftover-process checks elsewhere can tell runs apart.
fn meshfed_in(cwd: &Path, args: &[&str]) -> Output {
    Meshfed::new(args).current_dir(cwd).marker(&unique("files")).output()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// One entry of a directory tree as a test compares it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    Dir { mode: u32 },
    File { mode: u32, bytes: Vec<u8> },
    Symlink { target: PathBuf },
}

/// Every entry under `root` (not following symlinks), keyed by its path relative to `root`.
fn tree(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, dir: &Path, nodes: &mut BTreeMap<PathBuf, Node>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let metadata = std::fs::symlink_metadata(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            let mode = metadata.permissions().mode() & 0o7777;
            if metadata.file_type().is_symlink() {
                nodes.insert(
                    relative,
                    Node::Symlink {
                        target: std::fs::read_link(&path).unwrap(),
                    },
                );
            } else if metadata.is_dir() {
                nodes.insert(relative, Node::Dir { mode });
                walk(root, &path, nodes);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                nodes.insert(relative, Node::File { mode, bytes });
            }
        }
    }
    let mut nodes = BTreeMap::new();
    walk(root, root, &mut nodes);
    nodes
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Files only, with contents: what a plan or PKI consists of.
fn file_contents(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    tree(root)
        .into_iter()
        .filter_map(|(path, node)| match node {
            Node::File { bytes, .. } => Some((path, bytes)),
            _ => None,
        })
        .collect()
}

/// Writes `scenario` to `out` from `cwd`, asserting success.
fn plan(cwd: &Path, scenario_name: &str, out: &str) {
    let output = meshfed_in(cwd, &["plan", &scenario(scenario_name), "--out", out]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
}

/// A complete plan of `scenario_name`, written fresh into an empty place, for comparison.
fn reference_plan(scenario_name: &str) -> (TempDir, BTreeMap<PathBuf, Vec<u8>>) {
    let dir = temp_dir("reference");
    plan(dir.path(), scenario_name, "plan");
    let files = file_contents(&dir.path().join("plan"));
    assert!(files.contains_key(Path::new(".meshfed-plan")), "{:?}", files.keys());
    assert!(files.len() > 10, "{:?}", files.keys());
    (dir, files)
}

// ---------------------------------------------------------------------------------------------
// plan --out
// ---------------------------------------------------------------------------------------------

#[test]
fn plan_out_dot_inside_a_plan_refuses_with_exit_2_and_keeps_the_plan_byte_identical() {
    let dir = temp_dir("plan-dot");
    plan(dir.path(), "seed.yaml", "p");
    let plan_dir = dir.path().join("p");
    let before = tree(dir.path());

    // From inside the plan, and from inside one of its cluster directories.
    for (cwd, out) in [(plan_dir.clone(), "."), (plan_dir.join("cluster1"), "..")] {
        let output = meshfed_in(&cwd, &["plan", &scenario("skew.yaml"), "--out", out]);
        let stderr = text(&output.stderr);
        assert_eq!(
            output.status.code(),
            Some(2),
            "--out {out} from {}: {stderr}",
            cwd.display()
        );
        assert!(
            stderr.contains("current directory") && stderr.contains(&plan_dir.display().to_string()),
            "the message names the directory and why: {stderr}"
        );
        assert_eq!(
            tree(dir.path()),
            before,
            "--out {out} from {} changed files",
            cwd.display()
        );
    }
}

#[test]
fn plan_out_p_dot_replaces_the_plan_completely_and_leaves_no_staging_behind() {
    let dir = temp_dir("plan-p-dot");
    plan(dir.path(), "seed.yaml", "p");
    let (_reference_dir, skew) = reference_plan("skew.yaml");

    plan(dir.path(), "skew.yaml", "p/.");
    assert_eq!(
        file_contents(&dir.path().join("p")),
        skew,
        "p holds exactly a fresh skew plan"
    );
    assert_eq!(names(dir.path()), ["p"], "no staging or old copy left next to it");

    plan(dir.path(), "seed.yaml", "./p/");
    let (_seed_dir, seed) = reference_plan("seed.yaml");
    assert_eq!(file_contents(&dir.path().join("p")), seed);
    assert_eq!(names(dir.path()), ["p"]);
}

#[test]
fn plan_out_through_a_symlink_replaces_the_plan_it_points_to_and_keeps_the_link() {
    let dir = temp_dir("plan-link");
    plan(dir.path(), "seed.yaml", "p");
    std::os::unix::fs::symlink("p", dir.path().join("link-to-p")).unwrap();
    let (_reference_dir, skew) = reference_plan("skew.yaml");

    let output = meshfed_in(dir.path(), &["plan", &scenario("skew.yaml"), "--out", "link-to-p/"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let resolved = std::fs::canonicalize(dir.path().join("p")).unwrap();
    assert!(
        stdout.contains(&resolved.display().to_string()) && stdout.contains("symlink"),
        "says where the plan really went: {stdout}"
    );
    assert_eq!(
        std::fs::read_link(dir.path().join("link-to-p")).unwrap(),
        Path::new("p")
    );
    assert_eq!(file_contents(&dir.path().join("p")), skew);
    assert_eq!(names(dir.path()), ["link-to-p", "p"]);
}

// A symlink inside a plan directory is something a user put there (meshfed plan writes regular
// files only): replacing the plan would delete it, so it is refused like any added file
// (before, the link was removed, its target kept).
#[test]
fn replacing_a_plan_that_holds_a_symlink_the_user_added_refuses_and_keeps_the_link_and_its_target() {
    let dir = temp_dir("plan-inner-link");
    plan(dir.path(), "seed.yaml", "p");
    let precious = dir.path().join("precious");
    std::fs::create_dir(&precious).unwrap();
    std::fs::write(precious.join("keep.txt"), "mine").unwrap();
    std::os::unix::fs::symlink(&precious, dir.path().join("p/cluster1/extra")).unwrap();
    let before = tree(dir.path());

    let output = meshfed_in(dir.path(), &["plan", &scenario("skew.yaml"), "--out", "p"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cluster1/extra"), "names what is in the way: {stderr}");
    assert_eq!(tree(dir.path()), before, "nothing changed, inside or out");
}

#[test]
fn plan_out_over_a_plan_with_a_file_the_user_added_refuses_with_exit_2_and_keeps_everything() {
    let dir = temp_dir("plan-added-file");
    plan(dir.path(), "seed.yaml", "p");
    std::fs::write(dir.path().join("p/notes.txt"), "my notes").unwrap();
    std::fs::write(dir.path().join("p/cluster1/99-my-extra.yaml"), "kind: Mine\n").unwrap();
    let before = tree(dir.path());

    let output = meshfed_in(dir.path(), &["plan", &scenario("skew.yaml"), "--out", "p"]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("notes.txt") && stderr.contains("cluster1/99-my-extra.yaml"),
        "names every added file: {stderr}"
    );
    assert_eq!(
        tree(dir.path()),
        before,
        "the plan and the added files are byte-identical"
    );

    // Without the added files the same plan is replaced as before.
    std::fs::remove_file(dir.path().join("p/notes.txt")).unwrap();
    std::fs::remove_file(dir.path().join("p/cluster1/99-my-extra.yaml")).unwrap();
    plan(dir.path(), "skew.yaml", "p");
    let (_reference_dir, skew) = reference_plan("skew.yaml");
    assert_eq!(file_contents(&dir.path().join("p")), skew);
}

#[test]
fn plan_out_that_is_a_file_or_a_dangling_symlink_exits_2_and_changes_nothing() {
    let dir = temp_dir("plan-bad-out");
    std::fs::write(dir.path().join("file"), "not a directory").unwrap();
    std::os::unix::fs::symlink("nowhere", dir.path().join("dangling")).unwrap();
    let before = tree(dir.path());
    for (out, expected) in [
        ("file", "not a directory"),
        ("dangling", "does not exist"),
        ("file/sub", "not a directory"),
    ] {
        let output = meshfed_in(dir.path(), &["plan", &scenario("seed.yaml"), "--out", out]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "--out {out}: {stderr}");
        assert!(stderr.contains(expected), "--out {out}: {stderr}");
        assert_eq!(tree(dir.path()), before, "--out {out}");
    }
}

// ---------------------------------------------------------------------------------------------
// certs --out
// ---------------------------------------------------------------------------------------------

const CACERTS_FILES: [&str; 4] = ["ca-cert.pem", "ca-key.pem", "cert-chain.pem", "root-cert.pem"];

fn certs(cwd: &Path, out: &str, force: bool) -> Output {
    let seed = scenario("seed.yaml");
    let mut args = vec!["certs", seed.as_str(), "--out", out];
    if force {
        args.push("--force");
    }
    meshfed_in(cwd, &args)
}

fn assert_complete_pki(out: &Path) {
    assert_eq!(names(out), ["cluster1", "cluster2", "root-ca"]);
    assert_eq!(names(&out.join("root-ca")), ["root-cert.pem", "root-key.pem"]);
    for cluster in ["cluster1", "cluster2"] {
        assert_eq!(names(&out.join(cluster)), CACERTS_FILES);
    }
    for key in ["root-ca/root-key.pem", "cluster1/ca-key.pem", "cluster2/ca-key.pem"] {
        let metadata = std::fs::symlink_metadata(out.join(key)).unwrap();
        assert!(metadata.is_file(), "{key}");
        assert_eq!(metadata.mode() & 0o777, 0o600, "{key}");
    }
}

#[test]
fn certs_twice_into_one_folder_refuses_naming_force_and_changes_nothing() {
    let dir = temp_dir("certs-twice");
    let first = certs(dir.path(), "pki", false);
    assert_eq!(first.status.code(), Some(0), "{}", text(&first.stderr));
    assert_complete_pki(&dir.path().join("pki"));
    let before = tree(dir.path());

    let second = certs(dir.path(), "pki", false);
    let stderr = text(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(
        stderr.contains("root-ca/root-key.pem"),
        "names the existing files: {stderr}"
    );
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
    assert_eq!(tree(dir.path()), before, "every file byte-identical");
}

#[test]
fn certs_force_replaces_the_root_in_one_step_with_keys_0600() {
    let dir = temp_dir("certs-force");
    let pki = dir.path().join("pki");
    assert_eq!(certs(dir.path(), "pki", false).status.code(), Some(0));
    let old_root = std::fs::read(pki.join("root-ca/root-cert.pem")).unwrap();

    let output = certs(dir.path(), "pki", true);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(!text(&output.stdout).contains("PRIVATE KEY") && !text(&output.stderr).contains("PRIVATE KEY"));
    assert_complete_pki(&pki);
    let new_root = std::fs::read(pki.join("root-ca/root-cert.pem")).unwrap();
    assert_ne!(new_root, old_root, "a new root CA");
    for cluster in ["cluster1", "cluster2"] {
        assert_eq!(
            std::fs::read(pki.join(cluster).join("root-cert.pem")).unwrap(),
            new_root
        );
    }
    assert_eq!(names(dir.path()), ["pki"], "no staging or old copy left next to it");
}

#[test]
fn certs_never_follow_a_symlink_in_the_out_dir_even_with_force() {
    let dir = temp_dir("certs-symlink");
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("ca-key.pem"), "someone else's key").unwrap();
    std::fs::write(outside.join("precious.txt"), "mine").unwrap();

    // A directory symlink where a cluster directory would go.
    let linked_dir = dir.path().join("linked-dir");
    std::fs::create_dir(&linked_dir).unwrap();
    std::os::unix::fs::symlink(&outside, linked_dir.join("cluster1")).unwrap();
    // A file symlink inside an otherwise complete PKI.
    assert_eq!(certs(dir.path(), "linked-file", false).status.code(), Some(0));
    let linked_file = dir.path().join("linked-file");
    std::fs::remove_file(linked_file.join("cluster1/ca-key.pem")).unwrap();
    std::os::unix::fs::symlink(outside.join("ca-key.pem"), linked_file.join("cluster1/ca-key.pem")).unwrap();
    let before = tree(dir.path());

    for out in ["linked-dir", "linked-file"] {
        for force in [false, true] {
            let output = certs(dir.path(), out, force);
            let stderr = text(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{out} force={force}: {stderr}");
            assert!(stderr.contains("symlink") && stderr.contains("cluster1"), "{stderr}");
            assert_eq!(
                tree(dir.path()),
                before,
                "{out} force={force}: nothing changed, inside or out"
            );
        }
    }
}

#[test]
fn certs_out_that_is_a_symlink_to_a_pki_is_refused_even_with_force_and_the_pki_kept() {
    let dir = temp_dir("certs-out-link");
    assert_eq!(certs(dir.path(), "real-pki", false).status.code(), Some(0));
    std::os::unix::fs::symlink("real-pki", dir.path().join("link")).unwrap();
    let before = tree(dir.path());
    for (out, force) in [("link", true), ("link", false), ("link/", true)] {
        let output = certs(dir.path(), out, force);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "--out {out} force={force}: {stderr}");
        assert!(stderr.contains("symlink"), "says why: {stderr}");
        assert_eq!(
            tree(dir.path()),
            before,
            "--out {out} force={force}: the PKI it points to is unchanged"
        );
    }
}

#[test]
fn certs_refuse_a_folder_with_foreign_files_even_with_force() {
    let dir = temp_dir("certs-foreign");
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::write(home.join("notes.txt"), "mine").unwrap();
    let before = tree(dir.path());
    for force in [false, true] {
        let output = certs(dir.path(), "home", force);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains("notes.txt"), "{stderr}");
        assert_eq!(tree(dir.path()), before);
    }
}

#[test]
fn certs_force_with_out_dot_inside_the_pki_refuses_and_keeps_it() {
    let dir = temp_dir("certs-dot");
    assert_eq!(certs(dir.path(), "pki", false).status.code(), Some(0));
    let before = tree(dir.path());
    let output = certs(&dir.path().join("pki"), ".", true);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("current directory"), "{stderr}");
    assert_eq!(tree(dir.path()), before);
}

#[test]
fn certs_into_an_empty_existing_folder_needs_no_force() {
    let dir = temp_dir("certs-empty");
    std::fs::create_dir(dir.path().join("pki")).unwrap();
    let output = certs(dir.path(), "pki", false);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert_complete_pki(&dir.path().join("pki"));
}

// ---------------------------------------------------------------------------------------------
// The atomic writer, directly
// ---------------------------------------------------------------------------------------------

#[test]
fn atomic_write_replaces_a_symlink_instead_of_writing_through_it() {
    let dir = temp_dir("atomic-symlink");
    let outside = dir.path().join("outside.json");
    std::fs::write(&outside, "precious").unwrap();
    let reports = dir.path().join("reports");
    std::fs::create_dir(&reports).unwrap();
    std::os::unix::fs::symlink(&outside, reports.join("report.json")).unwrap();

    let handle = Dir::open(&reports).unwrap();
    handle
        .write_file_atomic("report.json", b"{\"new\":true}\n", 0o644)
        .unwrap();
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "precious");
    let metadata = std::fs::symlink_metadata(reports.join("report.json")).unwrap();
    assert!(metadata.is_file());
    assert_eq!(std::fs::read(reports.join("report.json")).unwrap(), b"{\"new\":true}\n");
    assert_eq!(names(&reports), ["report.json"]);
}

#[test]
fn atomic_write_creates_private_files_with_their_mode_from_the_start() {
    let dir = temp_dir("atomic-mode");
    let handle = Dir::open(dir.path()).unwrap();
    handle.write_file_atomic("key.pem", b"secret", 0o600).unwrap();
    assert_eq!(
        std::fs::metadata(dir.path().join("key.pem")).unwrap().mode() & 0o777,
        0o600
    );
    handle.write_file_atomic("key.pem", b"secret2", 0o600).unwrap();
    assert_eq!(std::fs::read(dir.path().join("key.pem")).unwrap(), b"secret2");
    assert_eq!(names(dir.path()), ["key.pem"]);
}

// ---------------------------------------------------------------------------------------------
// Full disk and /run (root: mounting a tmpfs; the local provider: Envoy)
// ---------------------------------------------------------------------------------------------

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    nix::unistd::geteuid().is_root()
}

/// The old report a full-disk run must not lose.
const OLD_REPORT: &str = "{\"schema\": \"an earlier, good report\"}\n";

/// Runs `meshfed run seed.yaml --report-dir M` in a private mount namespace where M is a 12 KiB
/// tmpfs holding [`OLD_REPORT`] and filled up to leave `free_pages` 4 KiB pages. Afterwards a copy
/// of M's contents is in `<work>/after`. Returns meshfed's output (the shell's exit code is
/// meshfed's).
fn run_with_full_report_dir(work: &Path, free_pages: u32) -> Output {
    let mount_point = work.join("reports");
    let after = work.join("after");
    std::fs::create_dir_all(&mount_point).unwrap();
    std::fs::create_dir_all(&after).unwrap();
    let script = r#"
        set -u
        mount -t tmpfs -o size=12k meshfed-test-full "$REPORTS" || exit 90
        printf '%s' "$OLD_REPORT" > "$REPORTS/report.json" || exit 91
        head -c 1000000 /dev/zero > "$REPORTS/filler" 2>/dev/null
        if [ "$FREE_PAGES" -gt 0 ]; then truncate -s "-$((FREE_PAGES * 4096))" "$REPORTS/filler" || exit 92; fi
        "$MESHFED" run "$SCENARIO" --report-dir "$REPORTS"
        code=$?
        cp -a "$REPORTS/." "$AFTER/" || exit 93
        exit $code
    "#;
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", script])
        .env("REPORTS", &mount_point)
        .env("AFTER", &after)
        .env("OLD_REPORT", OLD_REPORT)
        .env("FREE_PAGES", free_pages.to_string())
        .env("MESHFED", MESHFED)
        .env("SCENARIO", scenario("seed.yaml"))
        .env("MESHFED_TEST_MARKER", unique("full-disk"))
        .output()
        .expect("run unshare")
}

fn assert_old_report_kept(after: &Path, output: &Output) {
    let stderr = text(&output.stderr);
    assert!(
        !(90..=93).contains(&output.status.code().unwrap_or(0)),
        "test set-up failed: {stderr}"
    );
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("No space left") || stderr.contains("full"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(after.join("report.json")).unwrap(),
        OLD_REPORT,
        "the old report is byte-identical"
    );
    assert_eq!(names(after), ["filler", "report.json"], "no temporary file left behind");
}

#[test]
fn full_report_dir_exits_3_before_building_anything_and_keeps_the_old_report() {
    if !is_root() {
        return skip::skip("needs root to mount a tmpfs");
    }
    let work = temp_dir("full-disk-up-front");
    let output = run_with_full_report_dir(work.path(), 0);
    assert_old_report_kept(&work.path().join("after"), &output);
    let stderr = text(&output.stderr);
    assert!(
        !stderr.contains("sandbox entered") && !stderr.contains("checking envoy"),
        "refused before any world is built: {stderr}"
    );
}

#[test]
fn report_that_no_longer_fits_exits_3_and_keeps_the_old_report() {
    if !is_root() {
        return skip::skip("needs root to mount a tmpfs");
    }
    if !local_provider_available() {
        return;
    }
    let work = temp_dir("full-disk-late");
    // Two free pages: the run's holder note (`.meshfed-run`, one page while the run holds the
    // directory) takes one and the up-front check passes on the other; seed's report (about
    // 14 KB) does not fit in it.
    let output = run_with_full_report_dir(work.path(), 2);
    let stdout = text(&output.stdout);
    assert!(stdout.contains("verdict: PASS"), "the run itself passed: {stdout}");
    assert_old_report_kept(&work.path().join("after"), &output);
    assert!(
        text(&output.stderr).contains("unchanged"),
        "says the old report is kept: {}",
        text(&output.stderr)
    );
}

/// A directory under /run, removed when dropped.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn report_dir_under_run_gets_the_report_despite_the_sandbox_tmpfs() {
    if !is_root() {
        return skip::skip("needs root to write under /run");
    }
    if !local_provider_available() {
        return;
    }
    let run_dir = RunDir(PathBuf::from(format!("/run/{}", unique("meshfed-test"))));
    let report_dir = run_dir.0.join("r");
    let cwd = temp_dir("run-dir");
    let output = meshfed_in(
        cwd.path(),
        &[
            "run",
            &scenario("seed.yaml"),
            "--report-dir",
            report_dir.to_str().unwrap(),
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let report = std::fs::read_to_string(report_dir.join("report.json")).expect("report.json under /run");
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    assert_eq!(report["passed"], serde_json::Value::Bool(true));
    assert_eq!(
        names(&report_dir),
        ["junit.xml", "report.html", "report.json"],
        "the three reports and no temporary file left behind"
    );
}

#[test]
fn unwritable_report_dir_exits_2_before_building_anything() {
    let dir = temp_dir("report-file");
    std::fs::write(dir.path().join("file"), "not a directory").unwrap();
    let output = meshfed_in(
        dir.path(),
        &["run", &scenario("seed.yaml"), "--report-dir", "file/reports"],
    );
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("file/reports"), "{stderr}");
    assert!(
        !stderr.contains("checking envoy"),
        "refused before anything else: {stderr}"
    );
}

/// The child half of the next test runs in its own mount namespace with this variable naming an
/// empty directory to mount a tmpfs on.
const FULL_TMPFS_CHILD: &str = "MESHFED_TEST_FULL_TMPFS_DIR";

#[test]
fn a_full_file_system_keeps_the_old_file_and_tree_and_leaves_no_temporary() {
    const NAME: &str = "a_full_file_system_keeps_the_old_file_and_tree_and_leaves_no_temporary";
    if let Some(dir) = std::env::var_os(FULL_TMPFS_CHILD) {
        // Inside `unshare --mount`: the tmpfs vanishes with this process.
        let dir = PathBuf::from(dir);
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=12k", "meshfed-test-full"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(mounted.success(), "mount a tmpfs on {}", dir.display());
        std::fs::write(dir.join("report.json"), OLD_REPORT).unwrap();
        std::fs::create_dir(dir.join("plan")).unwrap();
        std::fs::write(dir.join("plan/.meshfed-plan"), "old plan").unwrap();
        let mut filler = std::fs::File::create(dir.join("filler")).unwrap();
        let fill_error = loop {
            if let Err(error) = std::io::Write::write_all(&mut filler, &[0; 512]) {
                break error;
            }
        };
        assert!(meshfed::atomic_files::is_out_of_space(&fill_error), "{fill_error}");

        let handle = Dir::open(&dir).unwrap();
        let full = handle.check_writable().unwrap_err();
        assert!(full.is_out_of_space(), "{full}");
        let error = handle
            .write_file_atomic("report.json", &vec![b'x'; 64 * 1024], 0o644)
            .unwrap_err();
        assert!(meshfed::atomic_files::is_out_of_space(&error), "{error}");
        assert_eq!(std::fs::read_to_string(dir.join("report.json")).unwrap(), OLD_REPORT);
        assert_eq!(
            names(&dir),
            ["filler", "plan", "report.json"],
            "no temporary file left behind"
        );

        // A whole directory tree that cannot be finished leaves the old one and no staging.
        let old_plan = tree(&dir.join("plan"));
        let out = meshfed::atomic_files::OutDir::resolve(&dir.join("plan")).unwrap();
        let error = out
            .stage(0o755)
            .and_then(|staged| {
                staged.dir().create_file("big.yaml", &vec![b'x'; 64 * 1024], 0o644)?;
                staged.commit()
            })
            .unwrap_err();
        assert!(meshfed::atomic_files::is_out_of_space(&error), "{error}");
        assert_eq!(tree(&dir.join("plan")), old_plan);
        assert_eq!(names(&dir), ["filler", "plan", "report.json"], "no staging left behind");
        return;
    }
    if !is_root() {
        return skip::skip("needs root to mount a tmpfs");
    }
    let work = temp_dir("atomic-full");
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(std::env::current_exe().unwrap())
        .arg("--exact")
        .arg(libtest_name(module_path!(), NAME))
        .args(["--nocapture", "--test-threads=1"])
        .env(FULL_TMPFS_CHILD, work.path())
        .output()
        .expect("run unshare");
    let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
    assert!(output.status.success(), "{all}");
    assert!(all.contains("1 passed"), "the child really ran the test: {all}");
}

// ---------------------------------------------------------------------------------------------
// run --report-dir: what meshfed does not own, one run at a time, leftovers
// ---------------------------------------------------------------------------------------------

/// A directory for `PATH` with no program in it: `--provider kind` then fails at once (exit 3),
/// a failed run that needs no Envoy.
fn empty_path(dir: &TempDir) -> PathBuf {
    let empty = dir.path().join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    empty
}

/// `meshfed run` on kind with nothing on `PATH`, in `cwd`, with `args` after the scenario.
fn failing_kind_run(dir: &TempDir, cwd: &Path, args: &[&str]) -> Output {
    Command::new(MESHFED)
        .args(["run", &scenario("seed.yaml"), "--provider", "kind"])
        .args(args)
        .current_dir(cwd)
        .env("PATH", empty_path(dir))
        .env("TMPDIR", dir.path().join("tmp"))
        .env("MESHFED_CACHE_DIR", dir.path().join("cache"))
        .env("MESHFED_TEST_MARKER", unique("files"))
        .output()
        .expect("run meshfed")
}

#[test]
fn a_failed_run_into_report_dir_dot_keeps_a_users_logs_folder_and_its_diagnostics_go_beside_it() {
    let dir = temp_dir("report-dot-logs");
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("logs/app")).unwrap();
    std::fs::write(project.join("logs/app/today.log"), "the user's own log").unwrap();
    let logs_before = tree(&project.join("logs"));

    for _ in 0..2 {
        let output = failing_kind_run(&dir, &project, &["--report-dir", "."]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{stderr}");
        assert_eq!(
            tree(&project.join("logs")),
            logs_before,
            "the user's logs/ is untouched: {stderr}"
        );
        assert!(
            project.join("meshfed-logs/.meshfed-logs").is_file(),
            "the failed run kept its diagnostics in meshfed-logs/ (marked as meshfed's): {:?}\n{stderr}",
            names(&project)
        );
    }
}

#[test]
fn a_report_dir_whose_junit_xml_is_a_directory_is_refused_before_the_run() {
    let dir = temp_dir("report-junit-dir");
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    let report = dir.path().join("report");
    std::fs::create_dir_all(report.join("junit.xml")).unwrap();
    std::fs::write(report.join("report.json"), "{\"an\": \"earlier report\"}\n").unwrap();
    let before = tree(&report);
    let output = failing_kind_run(&dir, dir.path(), &["--report-dir", report.to_str().unwrap()]);
    let stderr = text(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "refused up front, not after the run: {stderr}"
    );
    assert!(stderr.contains("junit.xml") && stderr.contains("directory"), "{stderr}");
    assert!(!stderr.contains("kind` was not found"), "nothing ran: {stderr}");
    assert_eq!(tree(&report), before);
}

#[test]
fn a_matrix_checks_every_versions_report_directory_before_creating_anything() {
    let dir = temp_dir("matrix-dirs");
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    empty_path(&dir);
    let reports = dir.path().join("reports");
    std::fs::create_dir_all(reports.join("1.29.0")).unwrap();
    // The second version's directory is a file; then, separately, its junit.xml is a directory.
    for (label, prepare) in [
        (
            "a file",
            (|reports: &Path| std::fs::write(reports.join("1.30.3"), "a file").unwrap()) as fn(&Path),
        ),
        ("a directory as junit.xml", |reports: &Path| {
            let _ = std::fs::remove_file(reports.join("1.30.3"));
            std::fs::create_dir_all(reports.join("1.30.3/junit.xml")).unwrap();
        }),
    ] {
        prepare(&reports);
        let before = tree(dir.path());
        let output = failing_kind_run(
            &dir,
            dir.path(),
            &[
                "--istio-version",
                "1.29.0",
                "--istio-version",
                "1.30.3",
                "--report-dir",
                reports.to_str().unwrap(),
            ],
        );
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{label}: {stderr}");
        assert!(
            stderr.contains("1.30.3"),
            "{label}: names the version's directory: {stderr}"
        );
        assert!(!stderr.contains("running"), "{label}: no version ran: {stderr}");
        assert_eq!(tree(dir.path()), before, "{label}: nothing was created");
    }
}

#[test]
fn leftover_temporaries_of_a_killed_writer_are_removed_by_the_next_run_and_only_those() {
    let dir = temp_dir("leftover-temporaries");
    std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
    // What a meshfed killed while writing left, named as it names them (inside its PID namespace
    // its PID is 2), next to files of the user's that look alike.
    let report = dir.path().join("report");
    std::fs::create_dir_all(&report).unwrap();
    std::fs::write(report.join(".report.json.meshfed-tmp-2-0"), "{\"half\": ").unwrap();
    std::fs::write(report.join(".junit.xml.meshfed-tmp-2-3"), "<testsuites").unwrap();
    std::fs::write(report.join(".notes.txt.meshfed-tmp-2-0"), "not a report file's").unwrap();
    let output = failing_kind_run(&dir, dir.path(), &["--report-dir", report.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output.stderr));
    let left = names(&report);
    assert!(
        !left
            .iter()
            .any(|name| name.starts_with(".report.json.") || name.starts_with(".junit.xml.")),
        "{left:?}"
    );
    assert!(left.contains(&".notes.txt.meshfed-tmp-2-0".to_owned()), "{left:?}");

    // A plan: a half-built staging tree is removed; an old plan set aside is put back first.
    plan(dir.path(), "seed.yaml", "p");
    std::fs::create_dir_all(dir.path().join(".p.meshfed-tmp-2-7/cluster1")).unwrap();
    std::fs::write(dir.path().join(".p.meshfed-tmp-2-7/cluster1/00-half.yaml"), "kind: Na").unwrap();
    std::fs::rename(dir.path().join("p"), dir.path().join(".p.meshfed-old-2-8")).unwrap();
    let output = meshfed_in(dir.path(), &["plan", &scenario("skew.yaml"), "--out", "p"]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let (_reference_dir, skew) = reference_plan("skew.yaml");
    assert_eq!(file_contents(&dir.path().join("p")), skew);
    let left = names(dir.path());
    assert!(!left.iter().any(|name| name.starts_with(".p.")), "{left:?}");
}

/// An API server that accepts connections (the kernel completes them in the listen backlog) and
/// never answers: a kubeconfig run waits for it until meshfed's reachability deadline (10 s),
/// holding its report directory meanwhile. Dropping the listener ends it.
fn silent_api_server() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap()
}

/// A loopback port nothing listens on: a kubeconfig run against it fails at once (exit 3).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `meshfed run SCENARIO --provider kubeconfig --image unused ARGS` against `kubeconfig`.
fn spawn_kubeconfig_run(
    scenario: &Path,
    kubeconfig: &Path,
    tmpdir: &Path,
    marker: &str,
    args: &[&str],
) -> std::process::Child {
    Command::new(MESHFED)
        .arg("run")
        .arg(scenario)
        .args(["--provider", "kubeconfig", "--image", "example.invalid/unused:1"])
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("TMPDIR", tmpdir)
        .env("MESHFED_TEST_MARKER", marker)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start meshfed")
}

/// Waits (at most `within`) for `condition`; returns whether it held.
fn await_condition(within: std::time::Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn three_runs_into_one_report_directory_one_runs_and_the_others_are_refused_up_front_naming_it() {
    let dir = temp_dir("report-lock");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let scenario = seed_with_contexts(dir.path());
    let server = silent_api_server();
    let silent = write_loopback_kubeconfig(dir.path(), "silent", server.local_addr().unwrap().port());
    let report = dir.path().join("report");
    let marker = unique("report-lock");
    let args = ["--report-dir", report.to_str().unwrap()];
    let mut runs: Vec<std::process::Child> = (0..3)
        .map(|_| spawn_kubeconfig_run(&scenario, &silent, &tmp, &marker, &args))
        .collect();

    // Two are refused at once; the third holds the directory while it waits for the API server.
    let mut ended: Vec<(u32, Output)> = Vec::new();
    let two_ended = await_condition(std::time::Duration::from_secs(9), || {
        let mut index = 0;
        while index < runs.len() {
            if runs[index].try_wait().unwrap().is_some() {
                let child = runs.remove(index);
                let pid = child.id();
                ended.push((pid, child.wait_with_output().unwrap()));
            } else {
                index += 1;
            }
        }
        ended.len() >= 2
    });
    let mut holder = runs.pop().expect("one run still holds the directory");
    let holder_pid = holder.id();
    let _ = holder.kill();
    let holder_output = holder.wait_with_output().unwrap();
    assert!(
        two_ended && ended.len() == 2,
        "two runs ended at once: {:?}\nholder: {}",
        ended.iter().map(|(_, output)| text(&output.stderr)).collect::<Vec<_>>(),
        text(&holder_output.stderr)
    );
    for (pid, output) in &ended {
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "run {pid}: {stderr}");
        assert!(
            stderr.contains("in use by another meshfed run") && stderr.contains(&format!("pid {holder_pid} ")),
            "run {pid} names the holder (pid {holder_pid}): {stderr}"
        );
    }
    assert!(await_condition(std::time::Duration::from_secs(20), || {
        processes_with_marker(&marker).is_empty()
    }));

    // The holder was killed (SIGKILL): its lock went with it, so the next run is not refused.
    let refused_port = write_loopback_kubeconfig(dir.path(), "refused", closed_port());
    let next = spawn_kubeconfig_run(&scenario, &refused_port, &tmp, &unique("report-lock-next"), &args)
        .wait_with_output()
        .unwrap();
    let stderr = text(&next.stderr);
    assert_eq!(next.status.code(), Some(3), "{stderr}");
    assert!(!stderr.contains("in use"), "{stderr}");
    let left = names(&report);
    assert!(
        !left
            .iter()
            .any(|name| name.contains(".meshfed-tmp-") || name == ".meshfed-run"),
        "no temporary or holder note left: {left:?}"
    );
    drop(server);
}

/// Work directories (`meshfed-run-*`) in `tmp`.
fn work_dirs(tmp: &Path) -> Vec<String> {
    names(tmp)
        .into_iter()
        .filter(|name| name.starts_with("meshfed-run-"))
        .collect()
}

#[test]
fn a_matrix_ended_by_sighup_exits_130_and_after_sigkill_sigusr1_or_sigalrm_the_next_run_removes_its_work_dir() {
    use nix::sys::signal::Signal;
    let dir = temp_dir("matrix-signals");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let scenario = seed_with_contexts(dir.path());
    let server = silent_api_server();
    let silent = write_loopback_kubeconfig(dir.path(), "silent", server.local_addr().unwrap().port());
    let refused_port = write_loopback_kubeconfig(dir.path(), "refused", closed_port());
    let matrix = ["--istio-version", "1.29.0", "--istio-version", "1.30.3"];
    for signal in [Signal::SIGHUP, Signal::SIGKILL, Signal::SIGUSR1, Signal::SIGALRM] {
        let marker = unique("matrix-signal");
        let mut run = spawn_kubeconfig_run(&scenario, &silent, &tmp, &marker, &matrix);
        assert!(
            await_condition(std::time::Duration::from_secs(8), || !work_dirs(&tmp).is_empty()),
            "{signal}: the matrix made its work directory"
        );
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.id() as i32), signal).unwrap();
        let ended = await_condition(std::time::Duration::from_secs(20), || run.try_wait().unwrap().is_some());
        if !ended {
            let _ = run.kill();
        }
        let output = run.wait_with_output().unwrap();
        let stderr = text(&output.stderr);
        assert!(ended, "{signal}: the matrix ended: {stderr}");
        assert!(
            await_condition(std::time::Duration::from_secs(20), || processes_with_marker(&marker)
                .is_empty()),
            "{signal}: its helper ended too"
        );
        if signal == Signal::SIGHUP {
            assert_eq!(
                output.status.code(),
                Some(130),
                "{signal}: handled like SIGTERM: {stderr}"
            );
            assert_eq!(work_dirs(&tmp), Vec::<String>::new(), "{signal}: nothing left");
            continue;
        }
        // Not handled (SIGKILL cannot be): the next run removes what it left.
        let next = spawn_kubeconfig_run(&scenario, &refused_port, &tmp, &unique("matrix-next"), &matrix)
            .wait_with_output()
            .unwrap();
        assert_eq!(next.status.code(), Some(3), "{signal}: {}", text(&next.stderr));
        assert_eq!(
            work_dirs(&tmp),
            Vec::<String>::new(),
            "{signal}: the next run cleaned up"
        );
    }
    drop(server);
}
