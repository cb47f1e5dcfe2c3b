//! Benchmarks of the `local` provider (run with `scripts/bench` or `cargo bench --bench local`):
//!
//! 1. `meshfed run scenarios/seed.yaml` (1,000 requests) from process start to verdict, against a
//!    baseline run in the same go: the same world with no phases (build, isolation check, teardown).
//!    Also world set-up to first request (from report.json) and the peak memory of the whole world
//!    (meshfed, Envoys and apps, summed RSS sampled every 10 ms).
//! 2. Throughput of meshfed's client through the full path (foo's sidecar, cluster2's gateway,
//!    bar's sidecar, bar's echo) against `wrk` with the same 16 connections through the same path,
//!    alternated, in a world this benchmark builds itself.
//!
//! Figures are medians. Needs what the e2e tests need (root or user namespaces, Envoy) plus `wrk`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use meshfed::provider::Provider as _;
use meshfed::provider::local::{LocalOptions, LocalProvider, provision_envoy, sandbox};
use meshfed::report::Report;

const MESHFED: &str = env!("CARGO_BIN_EXE_meshfed");
const RUNS: usize = 7;
const THROUGHPUT_ROUNDS: usize = 3;
const CONNECTIONS: u32 = 16;
const WRK_SECONDS: u64 = 4;
const CHILD_FLAG: &str = "--throughput-child";

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name)
}

fn median<T: PartialOrd + Copy>(mut samples: Vec<T>) -> T {
    samples.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    samples[samples.len() / 2]
}

/// Summed resident memory (KiB) of the processes whose environment carries the marker.
fn marked_rss_kib(marker: &str) -> u64 {
    let needle = format!("MESHFED_BENCH_MARKER={marker}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            std::fs::read(entry.path().join("environ"))
                .map(|environ| environ.split(|byte| *byte == 0).any(|var| var == needle.as_bytes()))
                .unwrap_or(false)
        })
        .map(|entry| rss_kib(&entry.path()))
        .sum()
}

fn rss_kib(proc_dir: &Path) -> u64 {
    std::fs::read_to_string(proc_dir.join("status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:")?.trim().trim_end_matches(" kB").parse().ok())
        })
        .unwrap_or(0)
}

struct RunSample {
    wall: Duration,
    to_first_request_ms: u64,
    world_ms: u64,
    peak_rss_kib: u64,
}

/// One `meshfed run`, timed from spawn to exit, with its world's memory sampled meanwhile.
fn timed_run(scenario: &Path, marker: &str) -> RunSample {
    let dir = std::env::temp_dir().join(format!("meshfed-bench-{}-{marker}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("report dir");
    let done = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (done, peak, marker) = (done.clone(), peak.clone(), marker.to_owned());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(marked_rss_kib(&marker), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let started = Instant::now();
    let status = Command::new(MESHFED)
        .args([
            "run",
            scenario.to_str().expect("utf-8 path"),
            "--report-dir",
            dir.to_str().expect("utf-8 path"),
        ])
        .env("MESHFED_BENCH_MARKER", marker)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run meshfed");
    let wall = started.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    assert!(status.success(), "meshfed run {} failed: {status}", scenario.display());
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report")).expect("report json");
    let _ = std::fs::remove_dir_all(&dir);
    RunSample {
        wall,
        to_first_request_ms: report.timings.to_first_request_ms,
        world_ms: report.timings.world_ms,
        peak_rss_kib: peak.load(Ordering::Relaxed),
    }
}

/// The seed's world with its phases removed: the baseline of the start-to-verdict figure.
fn empty_scenario() -> PathBuf {
    let seed = std::fs::read_to_string(scenario("seed.yaml")).expect("seed");
    let body = seed.split("phases:\n").next().expect("seed has phases");
    let path = std::env::temp_dir().join(format!("meshfed-bench-empty-{}.yaml", std::process::id()));
    std::fs::write(&path, format!("{body}phases: []\n")).expect("write scenario");
    path
}

fn start_to_verdict() {
    let empty = empty_scenario();
    let mut seed_samples = Vec::new();
    let mut empty_samples = Vec::new();
    // Warm-up (page cache, Envoy binary) outside the measurement.
    let _ = timed_run(&scenario("seed.yaml"), "warmup");
    for run in 0..RUNS {
        empty_samples.push(timed_run(&empty, &format!("empty-{run}")));
        seed_samples.push(timed_run(&scenario("seed.yaml"), &format!("seed-{run}")));
    }
    let _ = std::fs::remove_file(&empty);
    let wall = |samples: &[RunSample]| median(samples.iter().map(|s| s.wall.as_secs_f64()).collect());
    let (seed_wall, empty_wall) = (wall(&seed_samples), wall(&empty_samples));
    println!("\nmeshfed run, medians of {RUNS} alternated runs (release build)");
    println!(
        "  seed (1,000 requests), start to verdict: {:>7.0} ms   (target < 3000 ms; {:.2}x the no-phase baseline)",
        seed_wall * 1e3,
        seed_wall / empty_wall
    );
    println!("  baseline: same world, no phases:        {:>7.0} ms", empty_wall * 1e3);
    println!(
        "  world set-up to first request:          {:>7} ms   (target < 1500 ms; world ready {} ms)",
        median(seed_samples.iter().map(|s| s.to_first_request_ms).collect()),
        median(seed_samples.iter().map(|s| s.world_ms).collect())
    );
    println!(
        "  peak memory of the whole world (RSS):   {:>7.0} MiB  (meshfed + 4 Envoys + 2 apps + clients; baseline {:.0} MiB)",
        median(seed_samples.iter().map(|s| s.peak_rss_kib).collect()) as f64 / 1024.0,
        median(empty_samples.iter().map(|s| s.peak_rss_kib).collect()) as f64 / 1024.0
    );
}

fn throughput() {
    let output = Command::new(std::env::current_exe().expect("own path"))
        .arg(CHILD_FLAG)
        .stderr(Stdio::inherit())
        .output()
        .expect("run the throughput half");
    print!("{}", String::from_utf8_lossy(&output.stdout));
    assert!(output.status.success(), "the throughput benchmark failed");
}

fn requests_per_second(wrk_output: &str) -> Option<f64> {
    wrk_output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:")?.trim().parse().ok())
}

/// Runs inside its own sandbox (a fresh, single-threaded process).
fn throughput_child() {
    let (envoy, envoy_version) = provision_envoy(false).expect("envoy");
    let mode = sandbox::enter().expect("sandbox");
    let options = LocalOptions {
        envoy,
        envoy_version: envoy_version.to_string(),
        meshfed: PathBuf::from(MESHFED),
        run_dir: PathBuf::from(sandbox::RUN_DIR).join("bench"),
        mode,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let scenario = meshfed::scenario::load(&scenario("seed.yaml")).expect("seed");
        let mut provider = LocalProvider::new(options);
        let inventory = provider.create_world(&scenario, &mut |_: &str| {}).await.expect("world");
        provider
            .apply_plan(&meshfed::plan::plan(&scenario, &inventory), &Default::default(), &mut |_: &str| {})
            .await
            .expect("plan");
        let target = provider.service_address("cluster1", "bar.ns2", 80).expect("bar's cluster IP");
        let host = "bar.ns2.svc.cluster.local";
        let mut wrk_rates = Vec::new();
        let mut client_rates = Vec::new();
        let mut world_rss = Vec::new();
        for _ in 0..THROUGHPUT_ROUNDS {
            let mut wrk = Command::new("wrk");
            wrk.args(["-t1", &format!("-c{CONNECTIONS}"), &format!("-d{WRK_SECONDS}s"), "-H", &format!("Host: {host}")])
                .arg(format!("http://{target}/"));
            let out = provider.exec_in_pod("cluster1", "foo-0", wrk, Duration::from_secs(60)).expect("wrk");
            let wrk_rate = requests_per_second(&out.stdout).unwrap_or_else(|| panic!("wrk said:\n{}{}", out.stdout, out.stderr));
            wrk_rates.push(wrk_rate);
            let requests = (wrk_rate * WRK_SECONDS as f64) as u64;
            let mut client = Command::new(MESHFED);
            client.args(["workload", "client", "--target", &target.to_string(), "--host", host, "--protocol", "http"]);
            client.args(["--requests", &requests.to_string(), "--concurrency", &CONNECTIONS.to_string()]);
            client.args(["--connections", "pooled", "--threads", "1"]);
            let started = Instant::now();
            let out = provider.exec_in_pod("cluster1", "foo-0", client, Duration::from_secs(120)).expect("client");
            let elapsed = started.elapsed().as_secs_f64();
            let records = out.stdout.lines().count() as u64;
            let ok = out.stdout.lines().filter(|line| line.contains("\"error\":null")).count() as u64;
            assert_eq!(records, requests, "the client must report every request: {}", out.stderr);
            assert!(ok * 100 >= requests * 99, "the client's requests must succeed: {ok} of {requests}");
            client_rates.push(requests as f64 / elapsed);
            world_rss.push(provider.process_ids().iter().map(|pid| rss_kib(&Path::new("/proc").join(pid.to_string()))).sum::<u64>());
        }
        let (wrk_rate, client_rate) = (median(wrk_rates.clone()), median(client_rates.clone()));
        println!("\nthroughput through the full path (foo sidecar -> cluster2 gateway -> bar sidecar -> echo), {CONNECTIONS} connections, {THROUGHPUT_ROUNDS} alternated rounds");
        println!("  wrk -t1:               {wrk_rate:>8.0} req/s   (rounds: {wrk_rates:.0?})");
        println!("  meshfed client:        {client_rate:>8.0} req/s   (rounds: {client_rates:.0?})");
        println!("  client / wrk:          {:>8.2}         (target >= 0.90)", client_rate / wrk_rate);
        println!("  Envoys + apps RSS:     {:>8.0} MiB", median(world_rss) as f64 / 1024.0);
        provider.teardown(&mut |_: &str| {}).await.expect("teardown");
    });
}

fn main() {
    if std::env::args().any(|arg| arg == CHILD_FLAG) {
        throughput_child();
        return;
    }
    let setup = Command::new(MESHFED).arg("setup").output().expect("meshfed setup");
    assert!(
        setup.status.success(),
        "meshfed setup failed: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    if Command::new("wrk").arg("--version").output().is_err() {
        eprintln!("wrk is missing: install it (apt-get install wrk) or run scripts/bench");
        std::process::exit(1);
    }
    start_to_verdict();
    throughput();
}
