//! Benchmark: planning N clusters × 2,000 services (N = 10..50).
//!
//! Run with `cargo bench --bench plan`. Prints, per N, the median of several runs of `plan()` (and
//! of rendering to YAML, separately), the objects produced, and the growth against N = 10 measured
//! in the same run. Target: under 1 s at 50 × 2,000, growing roughly linearly with objects produced.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use meshfed::{inventory, plan, scenario};

const SERVICES: usize = 2_000;
const NAMESPACES: usize = 20;
const RUNS: usize = 5;

/// A scenario with `clusters` clusters and 2,000 services, each with pods in three consecutive
/// clusters (1 to 3 replicas), spread over 20 namespaces.
fn scenario_text(clusters: usize) -> String {
    let mut text = String::from("name: bench\nclusters:\n");
    for index in 0..clusters {
        let _ = writeln!(
            text,
            "  - {{ name: c{index}, region: r{}, zone: z{index}, podCidr: 10.{index}.0.0/16, serviceCidr: 10.{}.0.0/16 }}",
            index % 5,
            100 + index
        );
    }
    text.push_str("services:\n");
    for service in 0..SERVICES {
        let replicas: Vec<String> = (0..3)
            .map(|offset| format!("c{}: {}", (service + offset) % clusters, 1 + (service + offset) % 3))
            .collect();
        let _ = writeln!(
            text,
            "  - {{ name: svc{service}, namespace: ns{}, ports: [{{ name: http, number: 80, protocol: http }}, {{ name: tcp, number: 9090, protocol: tcp }}], replicas: {{ {} }} }}",
            service % NAMESPACES,
            replicas.join(", ")
        );
    }
    text.push_str("federation: { endpointWeights: ready-pods, locality: true }\n");
    text
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    println!("planning N clusters x {SERVICES} services: median of {RUNS} runs");
    println!(
        "{:>8} {:>10} {:>12} {:>12} {:>14} {:>12} {:>12}",
        "clusters", "objects", "plan", "ns/object", "time vs N=10", "objs vs N=10", "render"
    );
    let mut baseline: Option<(Duration, usize)> = None;
    for clusters in [10, 20, 30, 40, 50] {
        let scenario =
            scenario::parse(Path::new("bench.yaml"), &scenario_text(clusters)).expect("bench scenario is valid");
        let inventory = inventory::from_scenario(&scenario);
        let mut plan_times = Vec::new();
        let mut render_times = Vec::new();
        let mut objects = 0;
        for _ in 0..RUNS {
            let start = Instant::now();
            let plan = plan::plan(&scenario, &inventory);
            plan_times.push(start.elapsed());
            objects = plan.clusters.iter().map(|cluster| cluster.objects.len()).sum();
            let start = Instant::now();
            let files = plan::render(&plan).expect("render");
            render_times.push(start.elapsed());
            std::hint::black_box(files);
        }
        let plan_median = median(plan_times);
        let render_median = median(render_times);
        let (base_time, base_objects) = *baseline.get_or_insert((plan_median, objects));
        println!(
            "{clusters:>8} {objects:>10} {:>10.1}ms {:>12.0} {:>13.2}x {:>11.2}x {:>10.1}ms",
            plan_median.as_secs_f64() * 1e3,
            plan_median.as_nanos() as f64 / objects as f64,
            plan_median.as_secs_f64() / base_time.as_secs_f64(),
            objects as f64 / base_objects as f64,
            render_median.as_secs_f64() * 1e3,
        );
    }
}
