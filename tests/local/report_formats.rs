//! The report's three forms from real `local` runs of the seed (passing) and of the seed with one
//! impossible expectation (failing): report.json v2 (metadata, every field documented in
//! docs/report.md), junit.xml (valid against tests/support/junit.xsd with xmllint, counts equal the
//! report's, failures carry observed and bound) and report.html (rendered by headless Chromium in
//! scripts/check-html-report: share bars drawn, nothing external).

use crate::support::local_provider::local_provider_available;
use crate::support::meshfed_command::MESHFED;
use crate::support::skip;
use crate::support::temp_dir::{TempDir, temp_dir};

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Runs meshfed on `scenario_text` and returns (exit code, report.json, the report directory), or
/// None (skipped) when the local provider cannot run here.
fn run(label: &str, scenario_text: &str) -> Option<(i32, Value, TempDir)> {
    if !local_provider_available() {
        return None;
    }
    let dir = temp_dir(label);
    let scenario = dir.path().join("scenario.yaml");
    std::fs::write(&scenario, scenario_text).unwrap();
    let report_dir = dir.path().join("report");
    let marker = format!(
        "report-formats-{label}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let output = Command::new(MESHFED)
        .arg("run")
        .arg(&scenario)
        .arg("--report-dir")
        .arg(&report_dir)
        .env("MESHFED_TEST_MARKER", marker)
        .output()
        .expect("start meshfed");
    let code = output.status.code().expect("meshfed exited");
    let text = std::fs::read_to_string(report_dir.join("report.json")).unwrap_or_else(|error| {
        panic!(
            "no report.json ({error}); exit {code}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    Some((code, serde_json::from_str(&text).unwrap(), dir))
}

fn seed() -> String {
    std::fs::read_to_string(Path::new(ROOT).join("scenarios/seed.yaml")).unwrap()
}

/// The seed with its first `clustersReached` asking for a cluster that has no bar pod.
fn failing_seed() -> String {
    let seed = seed();
    assert!(seed.contains("clustersReached: [cluster2]"));
    seed.replacen("clustersReached: [cluster2]", "clustersReached: [cluster1]", 1)
}

fn failures(report: &Value) -> usize {
    let isolation = report["isolation"].as_array().unwrap();
    let phases = report["phases"].as_array().unwrap();
    isolation.iter().filter(|probe| probe["isolated"] == false).count()
        + phases
            .iter()
            .flat_map(|phase| phase["expectations"].as_array().unwrap())
            .filter(|result| result["passed"] == false)
            .count()
}

fn checks(report: &Value) -> usize {
    report["isolation"].as_array().unwrap().len()
        + report["phases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|phase| phase["expectations"].as_array().unwrap().len())
            .sum::<usize>()
}

fn xmllint(args: &[&str]) -> Option<std::process::Output> {
    match Command::new("xmllint").args(args).output() {
        Ok(output) => Some(output),
        Err(error) => {
            skip::skip(&format!(
                "xmllint not installed (scripts/setup installs libxml2-utils): {error}"
            ));
            None
        }
    }
}

fn xpath_count(file: &Path, expression: &str) -> usize {
    let output = xmllint(&["--xpath", expression, file.to_str().unwrap()]).unwrap();
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap()
}

/// junit.xml is valid JUnit, has one case per probe and expectation, one suite per phase plus
/// isolation, and as many failures as the report, each carrying the observed value and bound.
fn check_junit(report: &Value, dir: &Path) {
    let junit = dir.join("report/junit.xml");
    let xsd = Path::new(ROOT).join("tests/support/junit.xsd");
    let Some(valid) = xmllint(&["--noout", "--schema", xsd.to_str().unwrap(), junit.to_str().unwrap()]) else {
        return;
    };
    assert!(valid.status.success(), "{}", String::from_utf8_lossy(&valid.stderr));
    assert_eq!(xpath_count(&junit, "count(//testcase)"), checks(report));
    assert_eq!(xpath_count(&junit, "count(//failure)"), failures(report));
    assert_eq!(
        xpath_count(&junit, "count(/testsuites/testsuite)"),
        report["phases"].as_array().unwrap().len() + 1
    );
    let text = std::fs::read_to_string(&junit).unwrap();
    for phase in report["phases"].as_array().unwrap() {
        for result in phase["expectations"].as_array().unwrap() {
            if result["passed"] == true {
                continue;
            }
            let unit = result["unit"].as_str().unwrap();
            let observed = format!("observed: {}", xml_escaped(&shown(&result["observed"], unit)));
            let bound = format!(
                "{} {}",
                xml_escaped(&result["expectation"]),
                xml_escaped(&shown(&result["bound"], unit))
            );
            assert!(text.contains(&observed), "{observed} missing from\n{text}");
            assert!(text.contains(&bound), "{bound} missing from\n{text}");
        }
    }
}

/// A report.json value as the summary and junit.xml write it: ratios with 3 decimals, counts and
/// milliseconds whole, cluster lists in brackets, null as "none".
fn shown(value: &Value, unit: &str) -> Value {
    Value::String(match value {
        Value::Number(number) if unit == "ratio" => format!("{:.3}", number.as_f64().unwrap()),
        Value::Number(number) => format!("{}", number.as_f64().unwrap()),
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|item| item.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Null => "none".to_owned(),
        other => panic!("observed/bound must be a number, a cluster list or null: {other}"),
    })
}

fn xml_escaped(value: &Value) -> String {
    let text = match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Every key serialised anywhere in the report is named in docs/report.md.
fn check_documented(report: &Value) {
    let docs = std::fs::read_to_string(Path::new(ROOT).join("docs/report.md")).unwrap();
    let mut keys = std::collections::BTreeSet::new();
    fn walk(value: &Value, keys: &mut std::collections::BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    keys.insert(key.clone());
                    walk(inner, keys);
                }
            }
            Value::Array(items) => items.iter().for_each(|item| walk(item, keys)),
            _ => {}
        }
    }
    walk(report, &mut keys);
    let undocumented: Vec<&String> = keys.iter().filter(|key| !docs.contains(key.as_str())).collect();
    assert!(
        undocumented.is_empty(),
        "fields not in docs/report.md: {undocumented:?}"
    );
}

fn check_metadata(report: &Value, code: i32) {
    assert_eq!(report["schema"], "meshfed.report/v2");
    assert_eq!(report["exit_code"], code);
    let started_at = report["started_at"].as_str().unwrap();
    let bytes = started_at.as_bytes();
    assert!(
        started_at.len() == 20 && bytes[4] == b'-' && bytes[10] == b'T' && started_at.ends_with('Z'),
        "{started_at}"
    );
    for result in report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|phase| phase["expectations"].as_array().unwrap())
    {
        assert!(result["key"].as_str().is_some_and(|key| !key.contains(' ')), "{result}");
        for value in [&result["observed"], &result["bound"]] {
            assert!(value.is_number() || value.is_array() || value.is_null(), "{result}");
        }
    }
    assert!(report["host"].as_str().is_some_and(|host| !host.is_empty()));
    let clusters = report["clusters"].as_array().unwrap();
    assert_eq!(clusters.len(), 2);
    assert!(
        clusters
            .iter()
            .all(|cluster| cluster["istio_version"].as_str().unwrap().split('.').count() == 3)
    );
}

fn check_html(dir: &Path) {
    if which("chromium-headless-shell").is_none() {
        skip::skip("chromium-headless-shell not installed (scripts/setup installs it)");
        return;
    }
    let output = Command::new(Path::new(ROOT).join("scripts/check-html-report"))
        .arg(dir.join("report/report.html"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The check can fail: a page naming an external image, and a page whose bars are not drawn in
/// the bar colour, are both refused.
fn check_html_refuses_broken_pages(dir: &Path) {
    if which("chromium-headless-shell").is_none() {
        return;
    }
    let page = std::fs::read_to_string(dir.join("report/report.html")).unwrap();
    let external = page.replacen("<body>", "<body><img src=\"https://example.com/x.png\">", 1);
    let undrawn = page.replace("fill=\"#1f6fd0\"", "fill=\"#eeeeee\"");
    for (name, broken, says) in [
        ("external.html", external, "outside itself"),
        ("undrawn.html", undrawn, "share bars not drawn"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, broken).unwrap();
        let output = Command::new(Path::new(ROOT).join("scripts/check-html-report"))
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{name}: {stderr}");
        assert!(stderr.contains(says), "{name}: {stderr}");
    }
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
}

#[test]
fn a_passing_run_writes_a_documented_v2_report_valid_junit_and_a_drawn_self_contained_page() {
    let Some((code, report, dir)) = run("pass", &seed()) else {
        return;
    };
    assert_eq!(code, 0);
    assert_eq!(failures(&report), 0);
    check_metadata(&report, code);
    check_documented(&report);
    check_junit(&report, dir.path());
    check_html(dir.path());
    check_html_refuses_broken_pages(dir.path());
}

#[test]
fn a_failing_run_writes_junit_failures_with_observed_and_bound_and_a_drawn_page() {
    let Some((code, report, dir)) = run("fail", &failing_seed()) else {
        return;
    };
    assert_eq!(code, 1);
    assert_eq!(failures(&report), 1);
    let failed = &report["phases"][0]["expectations"][2];
    assert_eq!(failed["key"], "clustersReached");
    assert_eq!(failed["passed"], false);
    assert_eq!(failed["observed"], serde_json::json!(["cluster2"]));
    assert_eq!(failed["bound"], serde_json::json!(["cluster1"]));
    check_metadata(&report, code);
    check_documented(&report);
    check_junit(&report, dir.path());
    check_html(dir.path());
}
