//! Convergence on `local` (run with `cargo bench --bench convergence`): how long after new pods
//! are ready the first request is answered by one of them, while traffic runs.
//!
//! World: scenarios/skew.yaml (bar has 1 pod in cluster1, 3 in cluster2); foo-0 in cluster1 sends
//! one request at a time, a new connection each, without pause, for the whole round. Each round:
//!
//! - **scale-up** (the figure): bar in cluster2 is scaled to 0 (reconciled, applied), then back to
//!   3. From the moment `change_world` returns (the new pods' apps and sidecars are ready) through
//!   the reconcile loop and the live apply of its plan to the moment meshfed reads the first
//!   record answered by a cluster2 pod.
//! - **baseline, endpoints only**: the same change with the pods left running: the reconcile loop
//!   is told cluster2's pods are gone and the plan applied (traffic stays in cluster1), then that
//!   they are back; from the events to the first record answered by cluster2. This is the EDS
//!   path alone (re-plan, write CDS/EDS files, every proxy applies them), without creating pods.
//!
//! Times are taken when meshfed reads the record from the client's output, so they include the
//! request's own latency: an upper bound. Medians of [`ROUNDS`] rounds after one warm-up round.
//! Needs what the e2e tests need (root or user namespaces, Envoy).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use meshfed::change::WorldChange;
use meshfed::inventory::InventoryEvent;
use meshfed::inventory::ReadyPod;
use meshfed::provider::local::{LocalOptions, LocalProvider, provision_envoy, sandbox};
use meshfed::provider::{PhaseSettings, Provider as _};
use meshfed::reconcile::Controller;
use meshfed::record::RequestRecord;

const MESHFED: &str = env!("CARGO_BIN_EXE_meshfed");
const ROUNDS: usize = 7;
/// How long a round may wait for the first request answered by cluster2.
const ANSWER_DEADLINE: Duration = Duration::from_secs(20);
const REPLICAS: u32 = 3;

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    samples[samples.len() / 2]
}

/// foo-0's traffic: a client in its namespace; every record it prints is sent on with the moment
/// it was read.
struct Traffic {
    client: Child,
    records: mpsc::Receiver<(Instant, RequestRecord)>,
}

impl Traffic {
    fn start(netns: &Path, target: &str) -> Traffic {
        let mut client = Command::new("ip")
            .args(["netns", "exec"])
            .arg(netns.file_name().expect("netns name"))
            .arg(MESHFED)
            .args([
                "workload",
                "client",
                "--target",
                target,
                "--host",
                "bar.ns2.svc.cluster.local",
            ])
            .args(["--protocol", "http", "--requests", "10000000", "--concurrency", "1"])
            .args(["--connections", "new-connection-per-request", "--timeout-ms", "2000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the client");
        let stdout = client.stdout.take().expect("client stdout");
        let (sender, records) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(record) = serde_json::from_str::<RequestRecord>(&line)
                    && sender.send((Instant::now(), record)).is_err()
                {
                    return;
                }
            }
        });
        let traffic = Traffic { client, records };
        traffic.await_answer(Instant::now(), |_| true);
        traffic
    }

    /// Drops what was read so far.
    fn drain(&self) {
        while self.records.try_recv().is_ok() {}
    }

    /// When the first record read after `since` that `wanted` accepts was read.
    fn await_answer(&self, since: Instant, wanted: impl Fn(&RequestRecord) -> bool) -> Instant {
        let deadline = Instant::now() + ANSWER_DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.records.recv_timeout(left) {
                Ok((read, record)) if read >= since && record.error.is_none() && wanted(&record) => return read,
                Ok(_) => {}
                Err(_) => panic!("no wanted answer within {ANSWER_DEADLINE:?}"),
            }
        }
    }

    fn stop(mut self) {
        let _ = self.client.kill();
        let _ = self.client.wait();
    }
}

fn in_cluster2(record: &RequestRecord) -> bool {
    record.cluster.as_deref() == Some("cluster2")
}

fn bar_events(ready: bool) -> Vec<InventoryEvent> {
    (0..REPLICAS)
        .map(|index| {
            let pod = format!("bar-{index}");
            if ready {
                InventoryEvent::PodReady {
                    cluster: "cluster2".into(),
                    service: "bar.ns2".into(),
                    pod: ReadyPod {
                        name: pod,
                        region: "region2".into(),
                        zone: "zone2".into(),
                    },
                }
            } else {
                InventoryEvent::PodGone {
                    cluster: "cluster2".into(),
                    service: "bar.ns2".into(),
                    pod,
                }
            }
        })
        .collect()
}

fn scale(replicas: u32) -> WorldChange {
    WorldChange::Scale {
        cluster: "cluster2".into(),
        service: "bar.ns2".into(),
        replicas,
    }
}

async fn reconcile_and_apply(provider: &mut LocalProvider, controller: &mut Controller, events: &[InventoryEvent]) {
    let reconciled = controller.observe(events);
    assert!(!reconciled.changes.is_empty(), "{events:?} changed nothing");
    provider
        .apply_plan(&reconciled.plan, &PhaseSettings::default(), &mut |_: &str| {})
        .await
        .expect("apply");
}

fn foo_netns() -> PathBuf {
    std::fs::read_dir(sandbox::NETNS_DIR)
        .expect("netns dir")
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.to_string_lossy().ends_with("cluster1.foo-0"))
        .expect("foo-0's namespace")
}

fn main() {
    let setup = Command::new(MESHFED).arg("setup").output().expect("meshfed setup");
    assert!(
        setup.status.success(),
        "meshfed setup failed: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let (envoy, envoy_version) = provision_envoy(false).expect("envoy");
    let mode = sandbox::enter().expect("sandbox");
    let options = LocalOptions {
        envoy,
        envoy_version: envoy_version.to_string(),
        meshfed: PathBuf::from(MESHFED),
        run_dir: PathBuf::from(sandbox::RUN_DIR).join("convergence"),
        mode,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/skew.yaml");
        let scenario = meshfed::scenario::load(&path).expect("skew");
        let mut provider = LocalProvider::new(options);
        let mut quiet = |_: &str| {};
        let inventory = provider.create_world(&scenario, &mut quiet).await.expect("world");
        let mut controller = Controller::new(&scenario, inventory);
        provider
            .apply_plan(controller.plan(), &PhaseSettings::default(), &mut quiet)
            .await
            .expect("plan");
        let target = provider.service_address("cluster1", "bar.ns2", 80).expect("bar's cluster IP").to_string();
        let traffic = Traffic::start(&foo_netns(), &target);

        let (mut convergence, mut pods_ready, mut applied, mut baseline) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for round in 0..=ROUNDS {
            // Scale-up: pods created, then the reconcile loop.
            let events = provider.change_world(&scale(0), &mut quiet).await.expect("scale to 0");
            reconcile_and_apply(&mut provider, &mut controller, &events).await;
            let change_started = Instant::now();
            let events = provider.change_world(&scale(REPLICAS), &mut quiet).await.expect("scale up");
            let ready = Instant::now();
            traffic.drain();
            reconcile_and_apply(&mut provider, &mut controller, &events).await;
            let plan_applied = Instant::now();
            let answered = traffic.await_answer(ready, in_cluster2);

            // Baseline: the same endpoints change without creating pods.
            reconcile_and_apply(&mut provider, &mut controller, &bar_events(false)).await;
            traffic.drain();
            let observed = Instant::now();
            reconcile_and_apply(&mut provider, &mut controller, &bar_events(true)).await;
            let baseline_answered = traffic.await_answer(observed, in_cluster2);
            if round == 0 {
                continue;
            }
            convergence.push(answered.duration_since(ready).as_secs_f64() * 1e3);
            pods_ready.push(ready.duration_since(change_started).as_secs_f64() * 1e3);
            applied.push(plan_applied.duration_since(ready).as_secs_f64() * 1e3);
            baseline.push(baseline_answered.duration_since(observed).as_secs_f64() * 1e3);
        }
        traffic.stop();
        provider.teardown(&mut quiet).await.expect("teardown");
        println!("\nconvergence on local (skew.yaml: bar in cluster2 scaled 0 -> {REPLICAS}), medians of {ROUNDS} rounds");
        println!(
            "  new pods ready -> first request answered by a new pod: {:>7.1} ms   (target < 1000 ms; rounds {convergence:.1?})",
            median(convergence.clone())
        );
        println!("    of which reconcile + live apply of the plan:          {:>7.1} ms", median(applied));
        println!(
            "  baseline, endpoints only (events -> first answer):       {:>7.1} ms   (rounds {baseline:.1?})",
            median(baseline.clone())
        );
        println!("  scale-up itself (change_world: 3 pods created, ready):   {:>7.1} ms", median(pods_ready));
    });
}
