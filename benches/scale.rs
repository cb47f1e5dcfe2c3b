//! `local` at scale and against the Envoy floor (`cargo bench --bench scale`; release build). Prints,
//! with the machine's load average before and after (the figures move with it):
//!
//! 1. **The floor**: N bare Envoys (admin socket only, meshfed's own command line) started at
//!    once until every one answers `/ready` with LIVE, polled as meshfed polls its own; N = 4 (the
//!    seed's Envoys) and N = 205 (scenarios/scale-4x50.yaml's).
//! 2. **The seed**: `meshfed run scenarios/seed.yaml` (1,000 requests) from process start to exit
//!    and set-up to first request (`timings.to_first_request_ms` of its report), each against the
//!    4-Envoy floor (targets: 3.5x and 1.2x).
//! 3. **The seed's set-up phase by phase**: the same scenario through meshfed's engine in a
//!    sandboxed child process, every provider call timed, the provider's progress steps stamped,
//!    and the first request's start and answer read from its records: where the time between
//!    "Envoys ready" and "first request" goes.
//! 4. **The 4x50 world** (scenarios/scale-4x50.yaml, 205 Envoys) through the engine the same way:
//!    ready time, each phase's run time, the Envoys' summed PSS (at ready and after the traffic),
//!    each cluster's share against the share its weights predict, cluster2's 50 pods scaled
//!    50 -> 0 -> 50 under traffic (each change's duration, convergence: new pods ready to the
//!    first request one of them answered) and the teardown.
//!
//! Figures are medians: of [`SEED_RUNS`] runs for the seed and the floor, of `MESHFED_BENCH_SCALE_RUNS`
//! (default 3) for the 4x50 world. Needs what the e2e tests need (root or user namespaces, Envoy);
//! the 4x50 world needs about 5 GiB of memory.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshfed::change::WorldChange;
use meshfed::inventory::Inventory;
use meshfed::inventory::InventoryEvent;
use meshfed::plan::Plan;
use meshfed::progress::Progress;
use meshfed::provider::local::envoy_binary::{await_ready, envoy_args, write_bootstrap};
use meshfed::provider::local::world::capacity::{APP_PSS_KIB, ENVOY_PSS_KIB};
use meshfed::provider::local::{LocalOptions, LocalProvider, provision_envoy, sandbox};
use meshfed::provider::{IsolationProbe, PhaseSettings, Provider, ProviderError, ProviderInfo, TlsFailures, Traffic};
use meshfed::record::RequestRecord;
use meshfed::report::Report;
use meshfed::scenario::Scenario;
use serde_json::{Value, json};

const MESHFED: &str = env!("CARGO_BIN_EXE_meshfed");
const SEED_RUNS: usize = 7;
const CHILD_FLAG: &str = "--engine-child";
/// How long a bare Envoy may take to be ready.
const FLOOR_READY_TIMEOUT: Duration = Duration::from_secs(60);

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios").join(name)
}

fn median(mut samples: Vec<f64>) -> f64 {
    assert!(!samples.is_empty(), "no samples");
    samples.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    samples[samples.len() / 2]
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

// ---------------------------------------------------------------------------------------------
// 1. The floor.

/// Starts `count` bare Envoys at once and returns how long until the last was ready.
fn floor_once(envoy: &Path, count: usize, runtime: &tokio::runtime::Runtime) -> Duration {
    let dir = std::env::temp_dir().join(format!("meshfed-bench-floor-{}-{count}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("floor dir");
    let sockets: Vec<PathBuf> = (0..count).map(|index| dir.join(format!("{index}.sock"))).collect();
    let bootstraps: Vec<PathBuf> = (0..count)
        .map(|index| {
            let path = dir.join(format!("{index}.json"));
            let bootstrap = json!({
                "node": { "id": format!("floor-{index}"), "cluster": "meshfed" },
                "admin": { "address": { "pipe": { "path": sockets[index] } } },
            });
            write_bootstrap(&path, &bootstrap).expect("bootstrap");
            path
        })
        .collect();
    let started = Instant::now();
    let mut children: Vec<std::process::Child> = bootstraps
        .iter()
        .map(|bootstrap| {
            Command::new(envoy)
                .args(envoy_args(bootstrap, "warning", 2))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start envoy")
        })
        .collect();
    runtime.block_on(async {
        let mut waits = tokio::task::JoinSet::new();
        for (index, socket) in sockets.iter().enumerate() {
            let socket = socket.clone();
            waits.spawn(async move { await_ready(&format!("bare envoy {index}"), &socket, FLOOR_READY_TIMEOUT).await });
        }
        while let Some(ready) = waits.join_next().await {
            ready.expect("join").expect("a bare envoy became ready");
        }
    });
    let elapsed = started.elapsed();
    for child in &mut children {
        let _ = child.kill();
    }
    for child in &mut children {
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
    elapsed
}

fn floor(envoy: &Path, count: usize, runs: usize) -> f64 {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _warm_up = floor_once(envoy, count, &runtime);
    median((0..runs).map(|_| ms(floor_once(envoy, count, &runtime))).collect())
}

// ---------------------------------------------------------------------------------------------
// 2. The seed through the binary.

struct BinaryRun {
    wall_ms: f64,
    to_first_request_ms: f64,
}

fn binary_run(scenario: &Path) -> BinaryRun {
    let dir = std::env::temp_dir().join(format!("meshfed-bench-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("report dir");
    let started = Instant::now();
    let status = Command::new(MESHFED)
        .arg("run")
        .arg(scenario)
        .arg("--report-dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run meshfed");
    let wall = started.elapsed();
    assert!(status.success(), "meshfed run {} failed: {status}", scenario.display());
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).expect("report")).expect("report json");
    let _ = std::fs::remove_dir_all(&dir);
    BinaryRun {
        wall_ms: ms(wall),
        to_first_request_ms: report.timings.to_first_request_ms as f64,
    }
}

// ---------------------------------------------------------------------------------------------
// 3 and 4. Runs through the engine in a sandboxed child, every provider call timed.

/// The local provider with every call timed from `origin` (ms) and the memory read when the
/// world is first ready.
struct Timed {
    inner: LocalProvider,
    origin: Instant,
    calls: Vec<(String, f64, f64)>,
    /// When each `send_traffic` or `start_traffic` was called, with its records' first start and
    /// answer once known (ms from `origin`).
    traffic_started: Vec<f64>,
    first_requests: Vec<(f64, f64)>,
    memory_at_ready: Option<meshfed::provider::local::world::capacity::WorldMemory>,
}

impl Timed {
    fn since(&self, at: Instant) -> f64 {
        ms(at.duration_since(self.origin))
    }

    fn note(&mut self, name: &str, started: Instant) {
        let (from, to) = (self.since(started), self.since(Instant::now()));
        self.calls.push((name.to_owned(), from, to));
    }

    fn note_records(&mut self, records: &[RequestRecord]) {
        let Some(&traffic_start) = self.traffic_started.last() else {
            return;
        };
        if let Some(first) = records
            .iter()
            .filter(|record| record.succeeded())
            .min_by_key(|record| record.started_us)
        {
            let start = traffic_start + first.started_us as f64 / 1e3;
            self.first_requests.push((start, start + first.latency_us as f64 / 1e3));
        }
    }
}

impl Provider for Timed {
    fn info(&self) -> ProviderInfo {
        self.inner.info()
    }

    fn capabilities(&self) -> meshfed::provider::capabilities::Capabilities {
        self.inner.capabilities()
    }

    async fn create_world(
        &mut self,
        scenario: &Scenario,
        progress: &mut dyn Progress,
    ) -> Result<Inventory, ProviderError> {
        let started = Instant::now();
        let created = self.inner.create_world(scenario, progress).await;
        self.note("create_world", started);
        created
    }

    async fn apply_plan(
        &mut self,
        plan: &Plan,
        settings: &PhaseSettings,
        progress: &mut dyn Progress,
    ) -> Result<(), ProviderError> {
        let started = Instant::now();
        let applied = self.inner.apply_plan(plan, settings, progress).await;
        self.note("apply_plan", started);
        if self.memory_at_ready.is_none() {
            self.memory_at_ready = Some(self.inner.memory());
        }
        applied
    }

    async fn check_isolation(&mut self) -> Result<Vec<IsolationProbe>, ProviderError> {
        let started = Instant::now();
        let probes = self.inner.check_isolation().await;
        self.note("check_isolation", started);
        probes
    }

    async fn send_traffic(
        &mut self,
        traffic: &Traffic,
        progress: &mut dyn Progress,
    ) -> Result<Vec<RequestRecord>, ProviderError> {
        let started = Instant::now();
        self.traffic_started.push(self.since(started));
        let records = self.inner.send_traffic(traffic, progress).await;
        self.note("send_traffic", started);
        if let Ok(records) = &records {
            self.note_records(records);
        }
        records
    }

    async fn start_traffic(&mut self, traffic: &Traffic, progress: &mut dyn Progress) -> Result<(), ProviderError> {
        let started = Instant::now();
        self.traffic_started.push(self.since(started));
        let running = self.inner.start_traffic(traffic, progress).await;
        self.note("start_traffic", started);
        running
    }

    async fn await_traffic(
        &mut self,
        until: Instant,
        progress: &mut dyn Progress,
    ) -> Result<Option<Vec<RequestRecord>>, ProviderError> {
        let records = self.inner.await_traffic(until, progress).await;
        if let Ok(Some(records)) = &records {
            self.note_records(records);
        }
        records
    }

    async fn change_world(
        &mut self,
        change: &WorldChange,
        progress: &mut dyn Progress,
    ) -> Result<Vec<InventoryEvent>, ProviderError> {
        let started = Instant::now();
        let changed = self.inner.change_world(change, progress).await;
        self.note(&format!("change_world {}", change.kind().name()), started);
        changed
    }

    async fn tls_failures(&mut self, service: &str) -> Result<TlsFailures, ProviderError> {
        let started = Instant::now();
        let failures = self.inner.tls_failures(service).await;
        self.note("tls_failures", started);
        failures
    }

    async fn gateway_hops(&mut self) -> Result<Option<u64>, ProviderError> {
        let started = Instant::now();
        let hops = self.inner.gateway_hops().await;
        self.note("gateway_hops", started);
        hops
    }

    async fn config_rejections(&mut self) -> Result<Vec<String>, ProviderError> {
        let started = Instant::now();
        let rejections = self.inner.config_rejections().await;
        self.note("config_rejections", started);
        rejections
    }

    async fn check_alive(&mut self) -> Result<(), ProviderError> {
        let started = Instant::now();
        let alive = self.inner.check_alive().await;
        self.note("check_alive", started);
        alive
    }

    async fn stuck(&mut self) -> Vec<String> {
        self.inner.stuck().await
    }

    async fn teardown(&mut self, progress: &mut dyn Progress) -> Result<(), ProviderError> {
        let started = Instant::now();
        let torn = self.inner.teardown(progress).await;
        self.note("teardown", started);
        torn
    }
}

/// One run of `scenario` through the engine, as a JSON line for the parent.
async fn engine_run(options: LocalOptions, scenario_file: &Path) -> Value {
    let scenario = meshfed::scenario::load(scenario_file).expect("scenario");
    let origin = Instant::now();
    let mut provider = Timed {
        inner: LocalProvider::new(options),
        origin,
        calls: Vec::new(),
        traffic_started: Vec::new(),
        first_requests: Vec::new(),
        memory_at_ready: None,
    };
    let mut steps: Vec<(f64, String)> = Vec::new();
    let report = {
        let mut progress = |step: &str| steps.push((ms(origin.elapsed()), step.to_owned()));
        meshfed::driver::drive_scenario(&mut provider, &scenario, scenario_file, &mut progress).await
    };
    let after = provider.inner.memory();
    let torn = provider.teardown(&mut |_: &str| {}).await;
    let report = report.expect("the run completed");
    torn.expect("teardown");
    let ready = provider.memory_at_ready.clone().unwrap_or_default();
    json!({
        "calls": provider.calls,
        "steps": steps,
        "first_requests": provider.first_requests,
        "report": report,
        "pss_ready": { "envoys": ready.envoys_pss_kib, "others": ready.others_pss_kib },
        "pss_after": { "envoys": after.envoys_pss_kib, "others": after.others_pss_kib },
    })
}

/// Child mode: enters a sandbox and runs `scenario` `runs` times, one JSON line each.
fn engine_child(scenario: &Path, runs: usize) {
    let (envoy, envoy_version) = provision_envoy(false).expect("envoy");
    let mode = sandbox::enter().expect("sandbox");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for run in 0..runs {
        let options = LocalOptions {
            envoy: envoy.clone(),
            envoy_version: envoy_version.to_string(),
            meshfed: PathBuf::from(MESHFED),
            run_dir: PathBuf::from(sandbox::RUN_DIR).join(format!("scale-bench-{run}")),
            mode,
        };
        let line = runtime.block_on(engine_run(options, scenario));
        println!("{line}");
    }
}

fn engine_runs(scenario: &Path, runs: usize) -> Vec<Value> {
    let output = Command::new(std::env::current_exe().expect("own path"))
        .arg(CHILD_FLAG)
        .arg(scenario)
        .arg(runs.to_string())
        .stderr(Stdio::inherit())
        .output()
        .expect("run the engine child");
    assert!(
        output.status.success(),
        "the engine child failed for {}",
        scenario.display()
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect()
}

/// `(from, to)` ms of the `nth` call named `name` in a run.
fn call(run: &Value, name: &str, nth: usize) -> Option<(f64, f64)> {
    run["calls"]
        .as_array()?
        .iter()
        .filter(|entry| entry[0] == name)
        .nth(nth)
        .map(|entry| (entry[1].as_f64().unwrap_or(0.0), entry[2].as_f64().unwrap_or(0.0)))
}

/// ms of the first progress step starting with `prefix`.
fn step(run: &Value, prefix: &str) -> Option<f64> {
    run["steps"]
        .as_array()?
        .iter()
        .find(|entry| entry[1].as_str().is_some_and(|text| text.starts_with(prefix)))
        .and_then(|entry| entry[0].as_f64())
}

/// The seed's set-up from the engine's start to the first request answered, phase by phase.
fn setup_breakdown(runs: &[Value], floor_4: f64) {
    // Each row: a name and, per run, its duration in ms.
    type Row = (&'static str, Box<dyn Fn(&Value) -> Option<f64>>);
    let rows: Vec<Row> = vec![
        (
            "PKI, workload certificates, topology",
            Box::new(|run| step(run, "creating network namespaces")),
        ),
        (
            "network namespaces",
            Box::new(|run| Some(step(run, "starting the apps")? - step(run, "creating network namespaces")?)),
        ),
        (
            "apps started (not awaited)",
            Box::new(|run| Some(call(run, "create_world", 0)?.1 - step(run, "starting the apps")?)),
        ),
        (
            "plan, proxy configuration, Envoys started and ready, apps awaited",
            Box::new(|run| {
                let (from, to) = call(run, "apply_plan", 0)?;
                Some(to - from)
            }),
        ),
        (
            "  of which Envoys ready -> apps listening",
            Box::new(|run| Some(call(run, "apply_plan", 0)?.1 - step(run, "proxies ready")?)),
        ),
        (
            "isolation check",
            Box::new(|run| {
                let (from, to) = call(run, "check_isolation", 0)?;
                Some(to - from)
            }),
        ),
        (
            "phase start: liveness, TLS counters and gateway hops before the traffic",
            Box::new(|run| Some(run["first_traffic_at"].as_f64()? - call(run, "check_isolation", 0)?.1)),
        ),
        (
            "client started -> first request sent",
            Box::new(|run| Some(run["first_requests"][0][0].as_f64()? - run["first_traffic_at"].as_f64()?)),
        ),
        (
            "first request sent -> answered",
            Box::new(|run| Some(run["first_requests"][0][1].as_f64()? - run["first_requests"][0][0].as_f64()?)),
        ),
    ];
    println!(
        "\nthe seed's set-up through the engine, phase by phase (medians of {} runs)",
        runs.len()
    );
    for (name, duration) in &rows {
        let samples: Vec<f64> = runs.iter().filter_map(duration).collect();
        if samples.is_empty() {
            println!("  {name:<72} n/a");
        } else {
            println!("  {name:<72} {:>7.1} ms", median(samples));
        }
    }
    let envoys_ready: Vec<f64> = runs.iter().filter_map(|run| step(run, "proxies ready")).collect();
    let first_answered: Vec<f64> = runs
        .iter()
        .filter_map(|run| run["first_requests"][0][1].as_f64())
        .collect();
    if !envoys_ready.is_empty() && !first_answered.is_empty() {
        let (ready, answered) = (median(envoys_ready), median(first_answered));
        println!("  {:<72} {ready:>7.1} ms", "engine start -> Envoys ready");
        println!(
            "  {:<72} {:>7.1} ms   ({:.2}x the 4-Envoy floor)",
            "engine start -> first request answered",
            answered,
            answered / floor_4
        );
        println!(
            "  {:<72} {:>7.1} ms",
            "Envoys ready -> first request answered",
            answered - ready
        );
    }
}

/// Adds `first_traffic_at` (ms of the first traffic call) to each run.
fn with_first_traffic(mut runs: Vec<Value>) -> Vec<Value> {
    for run in &mut runs {
        let first = ["send_traffic", "start_traffic"]
            .iter()
            .filter_map(|name| call(run, name, 0).map(|(from, _)| from))
            .fold(f64::INFINITY, f64::min);
        if first.is_finite() {
            run["first_traffic_at"] = json!(first);
        }
    }
    runs
}

fn kib_values(value: &Value) -> Vec<u64> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

fn scale_world(runs: &[Value], floor_205: f64) {
    let n = runs.len();
    let report = |run: &Value| -> Report { serde_json::from_value(run["report"].clone()).expect("report") };
    println!("\nscenarios/scale-4x50.yaml: 4 clusters x 50 bar pods, 205 Envoys (medians of {n} runs)");
    let ready: Vec<f64> = runs.iter().map(|run| report(run).timings.world_ms as f64).collect();
    let ready_median = median(ready.clone());
    println!(
        "  world ready (engine start -> every Envoy and app ready): {ready_median:>8.0} ms   (target < 10000 ms on 2 cores; {:.2}x the 205-Envoy floor; runs {ready:.0?})",
        ready_median / floor_205
    );
    let first: Vec<f64> = runs
        .iter()
        .filter_map(|run| run["first_requests"][0][1].as_f64())
        .collect();
    if !first.is_empty() {
        println!(
            "  engine start -> first request answered:                  {:>8.0} ms",
            median(first)
        );
    }
    let total: Vec<f64> = runs.iter().map(|run| report(run).timings.total_ms as f64).collect();
    println!(
        "  run, engine start -> verdict (teardown excluded):        {:>8.0} ms",
        median(total)
    );
    for (index, name) in ["shares-follow-weights", "scale-cluster2-50-0-50"].iter().enumerate() {
        let durations: Vec<f64> = runs
            .iter()
            .filter_map(|run| {
                let traffic = ["send_traffic", "start_traffic"]
                    .iter()
                    .filter_map(|call_name| {
                        run["calls"].as_array().map(|calls| {
                            calls
                                .iter()
                                .filter(|entry| entry[0] == *call_name)
                                .map(|entry| entry[1].as_f64().unwrap_or(0.0))
                                .collect::<Vec<_>>()
                        })
                    })
                    .flatten()
                    .collect::<Vec<f64>>();
                let mut starts = traffic;
                starts.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
                let start = *starts.get(index)?;
                let end = starts
                    .get(index + 1)
                    .copied()
                    .or_else(|| call(run, "teardown", 0).map(|(from, _)| from))?;
                Some(end - start)
            })
            .collect();
        if !durations.is_empty() {
            println!(
                "  phase {name:<28} traffic start -> next phase: {:>8.0} ms",
                median(durations)
            );
        }
    }
    let envoy_total = |key: &str| -> Vec<f64> {
        runs.iter()
            .map(|run| kib_values(&run[key]["envoys"]).iter().sum::<u64>() as f64 / 1024.0)
            .collect()
    };
    let per_envoy: Vec<f64> = runs
        .iter()
        .flat_map(|run| kib_values(&run["pss_after"]["envoys"]))
        .map(|kib| kib as f64 / 1024.0)
        .collect();
    let envoys_counted: Vec<f64> = runs
        .iter()
        .map(|run| kib_values(&run["pss_ready"]["envoys"]).len() as f64)
        .collect();
    println!(
        "  PSS of the Envoys at ready:        {:>8.0} MiB ({:.0} Envoys)",
        median(envoy_total("pss_ready")),
        median(envoys_counted)
    );
    println!(
        "  PSS of the Envoys after traffic:   {:>8.0} MiB",
        median(envoy_total("pss_after"))
    );
    if !per_envoy.is_empty() {
        println!(
            "  PSS per Envoy after traffic:       {:>8.1} MiB median (the capacity check assumes {:.1} MiB)",
            median(per_envoy),
            ENVOY_PSS_KIB as f64 / 1024.0
        );
    }
    let apps: Vec<f64> = runs
        .iter()
        .map(|run| run["pss_after"]["others"].as_u64().unwrap_or(0) as f64 / 1024.0)
        .collect();
    println!(
        "  PSS of the apps and client:        {:>8.0} MiB (the capacity check assumes {:.1} MiB per app)",
        median(apps),
        APP_PSS_KIB as f64 / 1024.0
    );
    println!("  shares of the first phase, per cluster (observed vs predicted by the weights), median:");
    let clusters: Vec<String> = report(&runs[0]).phases[0]
        .measurement
        .clusters
        .iter()
        .map(|cluster| cluster.cluster.clone())
        .collect();
    for cluster in clusters {
        let of = |field: fn(&meshfed::measure::ClusterLoad) -> Option<f64>| -> Vec<f64> {
            runs.iter()
                .filter_map(|run| {
                    report(run).phases[0]
                        .measurement
                        .clusters
                        .iter()
                        .find(|share| share.cluster == cluster)
                        .and_then(field)
                })
                .collect()
        };
        let observed = of(|share| Some(share.request_share));
        let predicted = of(|share| share.predicted_share);
        println!(
            "    {cluster:<10} {:>6.1}%  predicted {}",
            median(observed) * 100.0,
            if predicted.is_empty() {
                "n/a".to_owned()
            } else {
                format!("{:.1}%", median(predicted) * 100.0)
            }
        );
    }
    let action = |name: &str| -> Vec<f64> {
        runs.iter()
            .filter_map(|run| {
                let report = report(run);
                let timeline = report.phases.get(1)?.timeline.as_ref()?;
                let action = timeline.actions.iter().find(|action| action.name == name)?;
                Some(action.completed_ms.saturating_sub(action.started_ms) as f64)
            })
            .collect()
    };
    let down = action("to-zero");
    let up = action("back");
    if !down.is_empty() {
        println!(
            "  cluster2 50 -> 0 (out of the endpoints, drain started): {:>8.0} ms",
            median(down)
        );
    }
    if !up.is_empty() {
        println!(
            "  cluster2 0 -> 50 (50 pods created, apps and sidecars ready): {:>5.0} ms",
            median(up)
        );
    }
    let convergence: Vec<f64> = runs
        .iter()
        .filter_map(|run| {
            report(run)
                .phases
                .get(1)?
                .expectations
                .iter()
                .find(|expectation| expectation.key == "convergenceMillisAtMost")
                .and_then(|expectation| match expectation.observed {
                    meshfed::verdict::Value::Number(ms) => Some(ms),
                    _ => None,
                })
        })
        .collect();
    if !convergence.is_empty() {
        println!(
            "  convergence, new pods ready -> first request one answered: {:>6.0} ms   (target: no worse than the seed-size median of `cargo bench --bench convergence`; runs {convergence:.0?})",
            median(convergence.clone())
        );
    }
    let teardown: Vec<f64> = runs
        .iter()
        .filter_map(|run| call(run, "teardown", 0).map(|(from, to)| to - from))
        .collect();
    println!("  teardown of the world:             {:>8.0} ms", median(teardown));
    let passed = runs.iter().filter(|run| report(run).passed).count();
    println!("  runs that passed every expectation: {passed} of {n}");
    for (index, run) in runs.iter().enumerate() {
        for phase in &report(run).phases {
            for failed in phase.expectations.iter().filter(|expectation| !expectation.passed) {
                println!(
                    "    run {index}: phase {}: {} failed: {}",
                    phase.name, failed.expectation, failed.detail
                );
            }
        }
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    if args.next().as_deref() == Some(CHILD_FLAG) {
        let scenario = PathBuf::from(args.next().expect("scenario"));
        let runs = args.next().and_then(|runs| runs.parse().ok()).unwrap_or(1);
        engine_child(&scenario, runs);
        return;
    }
    let setup = Command::new(MESHFED).arg("setup").output().expect("meshfed setup");
    assert!(
        setup.status.success(),
        "meshfed setup failed: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let scale_runs: usize = std::env::var("MESHFED_BENCH_SCALE_RUNS")
        .ok()
        .and_then(|runs| runs.parse().ok())
        .unwrap_or(3);
    let (envoy, envoy_version) = provision_envoy(false).expect("envoy");
    println!(
        "meshfed `local` at scale (envoy {envoy_version}; {} build; {} CPUs); load average before: {}",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        std::thread::available_parallelism().map_or(0, usize::from),
        load_average()
    );

    // The seed and its floor alternate, so that both see the same load on a shared machine.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let seed = scenario_path("seed.yaml");
    let _warm_up = (floor_once(&envoy, 4, &runtime), binary_run(&seed));
    let mut floors_4 = Vec::new();
    let mut seed_runs = Vec::new();
    for _ in 0..SEED_RUNS {
        floors_4.push(ms(floor_once(&envoy, 4, &runtime)));
        seed_runs.push(binary_run(&seed));
    }
    let floor_4 = median(floors_4);
    let floor_205 = floor(&envoy, 205, scale_runs);
    println!(
        "\nthe floor: bare Envoys started at once until all answer /ready (no namespaces, meshfed's command line)"
    );
    println!(
        "  4 Envoys (the seed's):        {floor_4:>8.1} ms   (median of {SEED_RUNS}, alternated with the seed's runs)"
    );
    println!("  205 Envoys (scale-4x50's):    {floor_205:>8.1} ms   (median of {scale_runs})");

    let wall = median(seed_runs.iter().map(|run| run.wall_ms).collect());
    let to_first = median(seed_runs.iter().map(|run| run.to_first_request_ms).collect());
    println!("\n`meshfed run scenarios/seed.yaml` (1,000 requests), medians of {SEED_RUNS}");
    println!(
        "  start to verdict (process start to exit):  {wall:>7.0} ms   {:.2}x the floor (target <= 3.5x)",
        wall / floor_4
    );
    println!(
        "  set-up to first request (report timings):   {to_first:>7.0} ms   {:.2}x the floor (target <= 1.2x)",
        to_first / floor_4
    );

    let breakdown = with_first_traffic(engine_runs(&seed, SEED_RUNS));
    setup_breakdown(&breakdown, floor_4);

    let scale = with_first_traffic(engine_runs(&scenario_path("scale-4x50.yaml"), scale_runs));
    scale_world(&scale, floor_205);
    println!("\nload average after: {}", load_average());
}
