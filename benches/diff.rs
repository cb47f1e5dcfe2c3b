//! Benchmark: `meshfed diff` of two reports of 100,000 requests each.
//!
//! Run with `cargo bench --bench diff`. The reports are built the way a run builds them: synthetic
//! request records (5 clusters, 40 pods, a few failures, spread latencies; B skewed and slower than
//! A) measured by `measure::measure`, four phases of 25,000 requests each. Prints the median of
//! several runs of: parsing the two report.json texts alone (the baseline), `diff()` on parsed
//! reports, and the whole command minus file reads (parse both, diff, render text and JSON).
//! Target: the whole under 1 s.
//!
//! Then the adversarial size, what a hostile or huge report can hold: two reports of one phase with 20,000
//! configuration rejections and 20,000 expectations each (half the rejections and a tenth of the
//! verdicts differ), written to files and compared by the built `meshfed diff` binary, as a user
//! runs it: wall time, and peak RSS as GNU time (`/usr/bin/time`, wait4's ru_maxrss) reports it.
//! Targets: under 1 s, and peak RSS under 50 MB + 3x the two files' combined size. A missed target
//! fails the bench (exit 101). `MESHFED_BENCH_KEEP_FILES=1` keeps the two files and prints where.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshfed::diff::{Thresholds, diff, summary};
use meshfed::measure::{ExpectedPod, measure};
use meshfed::provider::{ProviderInfo, TlsFailures};
use meshfed::record::RequestRecord;
use meshfed::report::{PhaseReport, REPORT_SCHEMA, Report, ScenarioInfo, Timings};
use meshfed::verdict::{ExpectationResult, Unit, Value};

const REQUESTS_PER_REPORT: u64 = 100_000;
const PHASES: u64 = 4;
const CLUSTERS: u64 = 5;
const PODS_PER_CLUSTER: u64 = 8;
const RUNS: usize = 11;
const IDENTITY: &str = "spiffe://cluster.local/ns/ns1/sa/foo";

/// A deterministic pseudo-random sequence (xorshift), so both runs of the bench see the same data.
struct Sequence(u64);

impl Sequence {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn expected_pods() -> Vec<ExpectedPod> {
    (0..CLUSTERS)
        .flat_map(|cluster| {
            (0..PODS_PER_CLUSTER).map(move |pod| ExpectedPod {
                pod: format!("bar-{pod}"),
                cluster: format!("cluster{cluster}"),
                share: 1.0,
            })
        })
        .collect()
}

/// `requests` records; `skew` sends that fraction of all requests to cluster0's first pod, and
/// `slowdown` multiplies latencies.
fn records(requests: u64, seed: u64, skew: f64, slowdown: u64) -> Vec<RequestRecord> {
    let mut random = Sequence(seed);
    let pods = CLUSTERS * PODS_PER_CLUSTER;
    (0..requests)
        .map(|seq| {
            let roll = random.next();
            let pod_index = if (roll % 1000) as f64 / 1000.0 < skew {
                0
            } else {
                random.next() % pods
            };
            let failed = roll.is_multiple_of(997);
            RequestRecord {
                seq,
                target: "10.96.0.10:80".into(),
                status: if failed { Some(503) } else { Some(200) },
                error: None,
                pod: Some(format!("bar-{}", pod_index % PODS_PER_CLUSTER)),
                cluster: Some(format!("cluster{}", pod_index / PODS_PER_CLUSTER)),
                peer_identity: Some(IDENTITY.into()),
                started_us: seq * 100,
                latency_us: (500 + random.next() % 20_000) * slowdown,
                connection: seq,
                server_connection: Some(format!("10.{}.0.9:{}", pod_index, 10_000 + seq % 50_000)),
            }
        })
        .collect()
}

fn report(seed: u64, skew: f64, slowdown: u64) -> Report {
    let expected = expected_pods();
    let per_phase = REQUESTS_PER_REPORT / PHASES;
    let phases = (0..PHASES)
        .map(|index| {
            let records = records(per_phase, seed + index, skew, slowdown);
            PhaseReport {
                name: format!("phase-{index}"),
                from: "foo.ns1@cluster0".into(),
                to: "bar.ns2:80 (http)".into(),
                requests: per_phase,
                concurrency: 8,
                connections: "new-connection-per-request".into(),
                endpoint_weights: "ready-pods".into(),
                faults: Vec::new(),
                expected_identity: IDENTITY.into(),
                measurement: measure(&records, &expected, IDENTITY),
                tls_failures: TlsFailures::default(),
                gateway_hops: Some(0),
                config_rejections: Vec::new(),
                timeline: None,
                caveats: Vec::new(),
                expectations: Vec::new(),
                passed: true,
            }
        })
        .collect();
    Report {
        schema: REPORT_SCHEMA.into(),
        meshfed_version: "0.1.0".into(),
        started_at: "2026-11-29T18:00:00Z".into(),
        host: None,
        exit_code: 0,
        clusters: Vec::new(),
        scenario: ScenarioInfo {
            name: "bench".into(),
            file: "bench.yaml".into(),
            description: None,
        },
        provider: ProviderInfo {
            name: "local".into(),
            emulates: Some("istio-gateway-connectivity".into()),
            mode: "root".into(),
            proxy: "envoy 1.40.0".into(),
        },
        timings: Timings::default(),
        service_entries: Vec::new(),
        isolation: Vec::new(),
        phases,
        passed: true,
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<T>(mut work: impl FnMut() -> T) -> Duration {
    let samples = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(work());
            start.elapsed()
        })
        .collect();
    median(samples)
}

fn millis(duration: Duration) -> String {
    format!("{:.3} ms", duration.as_secs_f64() * 1e3)
}

/// Rejections and expectations per report in the adversarial comparison.
const ADVERSARIAL_ITEMS: usize = 20_000;

/// A report of one phase with [`ADVERSARIAL_ITEMS`] rejections and expectations; `variant` 1
/// shares half the rejections of variant 0 and flips every tenth verdict.
fn adversarial_report(variant: usize) -> Report {
    let mut report = report(1, 0.0, 1);
    report.phases.truncate(1);
    let phase = &mut report.phases[0];
    phase.config_rejections = (0..ADVERSARIAL_ITEMS)
        .map(|index| {
            let owner = if index % 2 == 0 { 0 } else { variant };
            format!(
                "gateway istio-eastwestgateway-{owner} in cluster{}: listener 0.0.0.0_15443 rejected: error adding listener \
                 '0.0.0.0:15443': multiple filter chains with the same matching rules are defined (#{index})",
                index % 7
            )
        })
        .collect();
    phase.expectations = (0..ADVERSARIAL_ITEMS)
        .map(|index| ExpectationResult {
            key: format!("windows[{index}].successRateAtLeast"),
            expectation: format!("window [{index}, {}) ms success_rate >=", index + 1),
            unit: Unit::Ratio,
            observed: Value::Number(0.995),
            bound: Value::Number(0.99),
            passed: variant == 0 || index % 10 != 0,
            detail: format!("{index} of {} succeeded", index + 1),
        })
        .collect();
    report
}

/// Runs `meshfed diff a b` under GNU time; returns the wall time and the peak RSS in KiB (None
/// without GNU time).
fn run_diff_binary(a: &Path, b: &Path, scratch: &Path) -> (Duration, Option<u64>) {
    let meshfed = env!("CARGO_BIN_EXE_meshfed");
    let time = Path::new("/usr/bin/time");
    let rss_file = scratch.join("rss");
    let mut command = if time.exists() {
        let mut command = Command::new(time);
        command.args(["-f", "%M", "-o"]).arg(&rss_file).arg(meshfed);
        command
    } else {
        Command::new(meshfed)
    };
    command
        .arg("diff")
        .arg(a)
        .arg(b)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let start = Instant::now();
    let status = command.status().expect("run meshfed diff");
    let elapsed = start.elapsed();
    assert_eq!(status.code(), Some(1), "the two reports differ by design");
    let rss = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|text| text.lines().last()?.trim().parse().ok());
    (elapsed, rss)
}

fn adversarial() {
    let scratch = std::env::temp_dir().join(format!("meshfed-bench-diff-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let (a, b) = (scratch.join("a.json"), scratch.join("b.json"));
    std::fs::write(&a, serde_json::to_string_pretty(&adversarial_report(0)).unwrap()).unwrap();
    std::fs::write(&b, serde_json::to_string_pretty(&adversarial_report(1)).unwrap()).unwrap();
    let inputs = std::fs::metadata(&a).unwrap().len() + std::fs::metadata(&b).unwrap().len();
    let runs: Vec<(Duration, Option<u64>)> = (0..5).map(|_| run_diff_binary(&a, &b, &scratch)).collect();
    let wall = median(runs.iter().map(|(wall, _)| *wall).collect());
    let rss_kib = runs.iter().filter_map(|(_, rss)| *rss).max();
    let rss_limit_bytes = 50_000_000 + 3 * inputs;
    println!(
        "meshfed diff of two reports with {ADVERSARIAL_ITEMS} rejections and {ADVERSARIAL_ITEMS} expectations each ({:.1} MB together): median of 5 runs",
        inputs as f64 / 1e6
    );
    println!(
        "  wall time                              {}  (target < 1 s: {})",
        millis(wall),
        if wall < Duration::from_secs(1) { "met" } else { "MISSED" }
    );
    match rss_kib {
        Some(kib) => println!(
            "  peak RSS (GNU time, largest of 5)       {:.1} MB  (target < 50 MB + 3 x inputs = {:.1} MB: {})",
            kib as f64 * 1024.0 / 1e6,
            rss_limit_bytes as f64 / 1e6,
            if kib * 1024 < rss_limit_bytes { "met" } else { "MISSED" }
        ),
        None => println!("  peak RSS: not measured (/usr/bin/time, GNU time, is not installed)"),
    }
    if std::env::var_os("MESHFED_BENCH_KEEP_FILES").is_some() {
        println!("  kept: {} {}", a.display(), b.display());
    } else {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    assert!(wall < Duration::from_secs(1), "meshfed diff took {wall:?}");
    if let Some(kib) = rss_kib {
        assert!(kib * 1024 < rss_limit_bytes, "meshfed diff peaked at {kib} KiB");
    }
}

fn main() {
    adversarial();
    let start = Instant::now();
    let a = report(1, 0.0, 1);
    let b = report(7, 0.05, 2);
    let built = start.elapsed();
    let json_a = serde_json::to_string_pretty(&a).unwrap();
    let json_b = serde_json::to_string_pretty(&b).unwrap();
    let thresholds = Thresholds::default();
    println!(
        "diff of two reports of {REQUESTS_PER_REPORT} requests each ({PHASES} phases, {} pods; report.json {} and {} bytes; records measured in {}): median of {RUNS} runs",
        CLUSTERS * PODS_PER_CLUSTER,
        json_a.len(),
        json_b.len(),
        millis(built)
    );
    let parse = time(|| {
        let a: Report = serde_json::from_str(&json_a).unwrap();
        let b: Report = serde_json::from_str(&json_b).unwrap();
        (a, b)
    });
    let compare = time(|| diff(&a, "a", &b, "b", &thresholds).unwrap());
    let whole = time(|| {
        let a: Report = serde_json::from_str(&json_a).unwrap();
        let b: Report = serde_json::from_str(&json_b).unwrap();
        let compared = diff(&a, "a", &b, "b", &thresholds).unwrap();
        (summary(&compared), serde_json::to_string_pretty(&compared).unwrap())
    });
    let compared = diff(&a, "a", &b, "b", &thresholds).unwrap();
    println!("  baseline: parse both report.json       {}", millis(parse));
    println!("  diff() of the parsed reports           {}", millis(compare));
    println!("  parse + diff + text + JSON (the command) {}", millis(whole));
    println!(
        "  differences found: {} (B is skewed and slower by design)",
        compared.differences.len()
    );
    println!(
        "  target < 1 s for the whole: {}",
        if whole < Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        }
    );
}
