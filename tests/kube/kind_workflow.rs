//! `.github/workflows/kind-e2e.yml` runs what it says, each job able to pass: read as YAML and
//! checked against the repository (the live tests it names exist and are ignored ones, each
//! scenario runs once, the kubeconfig job gets the contexts and image its test needs, path
//! filters cover every file a kind run builds from, reports are uploaded, kind is the release whose
//! node image meshfed pins).

use std::collections::BTreeMap;
use std::path::Path;

use meshfed::plan::support_matrix::{self, KIND};
use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn workflow() -> Value {
    let text = std::fs::read_to_string(repo().join(".github/workflows/kind-e2e.yml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn jobs(workflow: &Value) -> &serde_json::Map<String, Value> {
    workflow["jobs"].as_object().unwrap()
}

/// Every `run:` of a job, with the step's env.
fn runs(job: &Value) -> Vec<(String, BTreeMap<String, String>)> {
    job["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|step| {
            let run = step["run"].as_str()?.to_owned();
            let env = step["env"]
                .as_object()
                .map(|env| {
                    env.iter()
                        .map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            Some((run, env))
        })
        .collect()
}

/// Whether a `paths` filter of GitHub Actions (`dir/**`, or a file) matches `path`.
fn filter_matches(filter: &str, path: &str) -> bool {
    match filter.strip_suffix("/**") {
        Some(dir) => path.starts_with(&format!("{dir}/")),
        None => filter == path,
    }
}

fn files_under(dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path.strip_prefix(repo()).unwrap().to_string_lossy().into_owned());
        }
    }
}

#[test]
fn live_tests_run_only_the_kind_live_binary_one_test_at_a_time() {
    let workflow = workflow();
    let mut kind_live = 0;
    for (name, job) in jobs(&workflow) {
        for (run, _) in runs(job) {
            if !run.contains("cargo test") {
                continue;
            }
            // `cargo test -- --ignored` over every binary runs kubeconfig_live without its
            // contexts and image: every ignored run names its test binary.
            assert!(run.contains("--test "), "{name}: {run}");
            if run.contains("--test kind_live") {
                assert!(run.contains("-- --ignored --test-threads=1"), "{name}: {run}");
                kind_live += 1;
            }
        }
    }
    assert_eq!(kind_live, 1);
}

#[test]
fn the_kubeconfig_job_builds_the_image_exports_the_kind_contexts_and_names_the_image() {
    let workflow = workflow();
    let job = &jobs(&workflow)["kubeconfig"];
    let runs = runs(job);
    let all: String = runs.iter().map(|(run, _)| run.as_str()).collect::<Vec<_>>().join("\n");
    let (test, env) = runs
        .iter()
        .find(|(run, _)| run.contains("--test kubeconfig_live"))
        .expect("the kubeconfig job runs kubeconfig_live");
    let image = env
        .get("MESHFED_IMAGE")
        .expect("MESHFED_IMAGE is set for kubeconfig_live");
    assert!(all.contains(&format!("docker build --tag {image} .")), "{all}");
    assert!(all.contains("docker save --output"), "{all}");
    // The contexts kubeconfig_live uses are those `kind export kubeconfig` writes for meshfed's
    // clusters (kind names a context `kind-<cluster name>`).
    let live_test = std::fs::read_to_string(repo().join("tests/kubeconfig_live.rs")).unwrap();
    for cluster in ["cluster1", "cluster2"] {
        assert!(
            all.contains(&format!("kind export kubeconfig --name meshfed-{cluster}")),
            "{all}"
        );
        assert!(all.contains("kind load image-archive"), "{all}");
        assert!(
            live_test.contains(&format!("context: kind-meshfed-{cluster}")),
            "{cluster}"
        );
    }
    assert!(
        !live_test.contains("\"kind-cluster"),
        "kubeconfig_live names contexts kind never writes"
    );
    // The clusters the test runs on are kept by the run before it.
    let keep = all
        .find("--provider kind --reuse")
        .expect("a kind run keeps its clusters");
    assert!(keep < all.find("kind export kubeconfig").unwrap(), "{all}");
    assert!(test.contains("--ignored"), "{test}");
}

#[test]
fn no_scenario_runs_twice_across_jobs_and_each_is_one_kind_runs() {
    let workflow = workflow();
    let mut runs_of: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, job) in jobs(&workflow) {
        let matrix: Vec<String> = job["strategy"]["matrix"]["scenario"]
            .as_array()
            .map(|list| list.iter().map(|value| value.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        for (run, _) in runs(job) {
            for word in run.split_whitespace() {
                if let Some(scenario) = word
                    .strip_prefix("scenarios/")
                    .and_then(|rest| rest.strip_suffix(".yaml"))
                {
                    if scenario == "${{ matrix.scenario }}" {
                        for each in &matrix {
                            runs_of.entry(each.clone()).or_default().push(name.clone());
                        }
                    } else {
                        runs_of.entry(scenario.to_owned()).or_default().push(name.clone());
                    }
                }
            }
            if run.contains("--test kind_live") {
                // tests/kind_live.rs: `fn <test>() { run_live("<scenario>") }` per shipped scenario.
                let live = std::fs::read_to_string(repo().join("tests/kind_live.rs")).unwrap();
                for (test, body) in live.split("\nfn ").skip(1).filter_map(|part| part.split_once('(')) {
                    let Some(scenario) = body.split("run_live(\"").nth(1).and_then(|rest| rest.split('"').next())
                    else {
                        continue;
                    };
                    if !run.contains(&format!("--skip {test}")) {
                        runs_of
                            .entry(scenario.to_owned())
                            .or_default()
                            .push(format!("{name} ({test})"));
                    }
                }
            }
        }
    }
    assert!(
        runs_of.contains_key("seed") && runs_of.contains_key("skew"),
        "{runs_of:?}"
    );
    for (scenario, jobs) in &runs_of {
        assert_eq!(jobs.len(), 1, "scenario {scenario} runs in {jobs:?}");
        // Each can pass on kind: nothing in it is refused before the world is built.
        let file = repo().join("scenarios").join(format!("{scenario}.yaml"));
        let loaded = meshfed::scenario::load(&file).unwrap();
        meshfed::driver::check_runnable(&loaded, &file, &meshfed::provider::kind::KIND_CAPABILITIES)
            .unwrap_or_else(|error| panic!("{scenario}: {error}"));
        support_matrix::check_real_istio(&loaded, &file, "kind", Some(KIND.kubernetes_minor))
            .unwrap_or_else(|error| panic!("{scenario}: {error}"));
    }
}

#[test]
fn path_filters_cover_every_file_a_kind_run_builds_from() {
    let workflow = workflow();
    let filters: Vec<&str> = workflow["on"]["pull_request"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|filter| filter.as_str().unwrap())
        .collect();
    let mut needed = Vec::new();
    for dir in ["src", "scenarios", "kind-configs", "tests/support"] {
        files_under(&repo().join(dir), &mut needed);
    }
    needed.extend(
        [
            "Cargo.toml",
            "Cargo.lock",
            "Dockerfile",
            "tests/kind_live.rs",
            "tests/kubeconfig_live.rs",
            ".github/workflows/kind-e2e.yml",
        ]
        .map(str::to_owned),
    );
    for path in &needed {
        assert!(
            filters.iter().any(|filter| filter_matches(filter, path)),
            "{path} is not covered by {filters:?}"
        );
    }
}

#[test]
fn every_job_raises_inotify_uploads_reports_and_uses_the_pinned_kind() {
    let workflow = workflow();
    assert_eq!(workflow["env"]["KIND_VERSION"], KIND.kind_version);
    for (name, job) in jobs(&workflow) {
        let steps = job["steps"].as_array().unwrap();
        let all: String = runs(job)
            .iter()
            .map(|(run, _)| run.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        // kind's known issue "Pod errors due to too many open files" (inotify instances).
        let raise = all
            .find("fs.inotify.max_user_instances=")
            .unwrap_or_else(|| panic!("{name}: {all}"));
        let limit: u32 = all[raise + "fs.inotify.max_user_instances=".len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(limit >= 512, "{name}: {limit}");
        let first_kind_run = all
            .find("--provider kind")
            .or_else(|| all.find("--test kind_live"))
            .unwrap_or(all.len());
        assert!(raise < first_kind_run, "{name}: limits raised before clusters exist");
        let upload = steps
            .iter()
            .find(|step| {
                step["uses"]
                    .as_str()
                    .is_some_and(|uses| uses.starts_with("actions/upload-artifact"))
            })
            .unwrap_or_else(|| panic!("{name} uploads no report"));
        assert_eq!(upload["if"], "always()", "{name}");
        assert!(
            all.contains("reports/")
                || runs(job)
                    .iter()
                    .any(|(_, env)| env.values().any(|value| value.ends_with("/reports"))),
            "{name} writes its reports where it uploads them"
        );
        assert!(
            all.contains("down --provider kind"),
            "{name} removes what a failed run left"
        );
    }
}
