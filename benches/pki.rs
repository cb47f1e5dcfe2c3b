//! Benchmark: building a three-cluster mesh PKI and ten workload certificates, per key algorithm.
//!
//! Run with `cargo bench --bench pki`. Prints the median of several runs per algorithm, and its
//! ratio to the P-256 median measured in the same run.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use meshfed::pki::{self, KeyAlgorithm};

const RUNS: usize = 9;
const CLUSTERS: [&str; 3] = ["cluster1", "cluster2", "cluster3"];

fn median_build_time(algorithm: KeyAlgorithm) -> Duration {
    let mut durations: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            let mesh = pki::pki("cluster.local", &CLUSTERS, algorithm).expect("pki");
            let certs: Vec<_> = (0..10)
                .map(|i| {
                    mesh.workload_cert(CLUSTERS[i % 3], "ns1", &format!("sa{i}"))
                        .expect("workload cert")
                })
                .collect();
            let took = started.elapsed();
            let distinct: BTreeSet<&str> = certs.iter().map(|cert| cert.key_pem.expose_pem()).collect();
            assert_eq!(distinct.len(), 10, "every workload gets its own key");
            took
        })
        .collect();
    durations.sort();
    durations[RUNS / 2]
}

fn main() {
    let mut baseline = None;
    for algorithm in KeyAlgorithm::ALL {
        let median = median_build_time(algorithm);
        let base = *baseline.get_or_insert(median);
        println!(
            "{algorithm}: 3-cluster PKI + 10 workload certs, median of {RUNS}: {median:?} ({:.2}x the first algorithm)",
            median.as_secs_f64() / base.as_secs_f64()
        );
    }
}
