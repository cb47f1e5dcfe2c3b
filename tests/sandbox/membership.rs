//! Membership changes on the `local` provider with real Envoy, driven through `LocalProvider`
//! and the reconcile loop directly: a service scaled to zero in a cluster and back, a cluster
//! that joins with a foreign root, the same cluster leaving. Pods scaled away and a cluster that
//! left keep running while they drain (Istio's `terminationDrainDuration`, docs/fidelity.md row 8)
//! and are gone once it is over.
//!
//! Like tests/sandbox/network.rs, the test re-runs this binary for itself with `MESHFED_TEST_SANDBOX`
//! set, and a constructor in `.init_array` enters the sandbox before libtest starts a thread; the
//! outer half then checks that no process carrying its marker outlived the run.

use crate::SANDBOX_ENV;
use crate::before_main;
use crate::support::libtest::libtest_name;
use crate::support::local_provider::local_provider_available;
use crate::support::meshfed_command::MESHFED;
use crate::support::plan_gateways;
use before_main::SANDBOX;
use plan_gateways::named_gateways;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use meshfed::change::WorldChange;
use meshfed::inventory::InventoryEvent;
use meshfed::plan::Plan;
use meshfed::provider::local::{LocalOptions, LocalProvider, TERMINATION_DRAIN, provision_envoy, sandbox};
use meshfed::provider::{PhaseSettings, Provider as _, Traffic};
use meshfed::reconcile::Controller;
use meshfed::record::RequestRecord;
use meshfed::scenario::{ConnectionPolicy, Protocol, Scenario};

const MARKER_ENV: &str = "MESHFED_TEST_MARKER";
const REQUESTS: u64 = 120;

/// three-clusters.yaml with foo also in cluster3, bar at 1, 2 and 1 pods, and cluster3 joining
/// later with an intermediate signed by a foreign root.
fn scenario() -> Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/three-clusters.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("replicas: { cluster1: 1 }", "replicas: { cluster1: 1, cluster3: 1 }")
        // Istio's default retries (2, on connect failures among others) would send a call refused
        // by the foreign-root cluster on to another cluster; without them the refusal is counted.
        .replace("  mtls: STRICT\n", "  mtls: STRICT\n  retries: { attempts: 0 }\n")
        .replace(
            "replicas: { cluster1: 1, cluster2: 2, cluster3: 3 }",
            "replicas: { cluster1: 1, cluster2: 2, cluster3: 1 }",
        );
    // Validation wants a joinCluster action for a joinsLater cluster (this test joins it through
    // the provider itself), so the flags are set on the parsed scenario.
    let mut scenario = meshfed::scenario::parse(&path, &text).unwrap();
    let cluster3 = scenario
        .clusters
        .iter_mut()
        .find(|cluster| cluster.name.value == "cluster3")
        .unwrap();
    cluster3.joins_later = true;
    cluster3.foreign_root = true;
    let cluster3 = scenario.cluster("cluster3").unwrap();
    assert!(cluster3.joins_later && cluster3.foreign_root, "the edit took");
    scenario
}

fn traffic_from(cluster: &str) -> Traffic {
    Traffic {
        from_cluster: cluster.to_owned(),
        from_service: "foo.ns1".to_owned(),
        from_pod: "foo-0".to_owned(),
        to_service: "bar.ns2".to_owned(),
        port: 80,
        protocol: Protocol::Http,
        requests: REQUESTS,
        concurrency: 1,
        connections: ConnectionPolicy::NewConnectionPerRequest,
        rate_per_second: None,
    }
}

/// Answered requests per cluster, and failed requests.
fn tally(records: &[RequestRecord]) -> (BTreeMap<String, u64>, u64) {
    let mut answered = BTreeMap::new();
    let mut failed = 0;
    for record in records {
        match (&record.error, &record.cluster) {
            (None, Some(cluster)) => *answered.entry(cluster.clone()).or_insert(0) += 1,
            _ => failed += 1,
        }
    }
    (answered, failed)
}

fn gateway_of(controller: &Controller, cluster: &str) -> String {
    controller.inventory().clusters[cluster].gateway.address.clone()
}

/// Processes in this (sandboxed) PID namespace whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(needle))
        .collect()
}

fn namespaces_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir(sandbox::NETNS_DIR)
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .filter(|name| name.contains(needle))
                .collect()
        })
        .unwrap_or_default()
}

async fn reconcile_and_apply(
    provider: &mut LocalProvider,
    controller: &mut Controller,
    events: &[InventoryEvent],
) -> Plan {
    let reconciled = controller.observe(events);
    assert!(!reconciled.changes.is_empty(), "{events:?} must change the plan");
    provider
        .apply_plan(&reconciled.plan, &PhaseSettings::default(), &mut |_: &str| {})
        .await
        .expect("apply the reconciled plan");
    reconciled.plan
}

/// The sandboxed half: the whole story, step by step, each checked.
async fn membership_story(options: LocalOptions) {
    let scenario = scenario();
    let mut provider = LocalProvider::new(options);
    let mut quiet = |_: &str| {};
    let inventory = provider.create_world(&scenario, &mut quiet).await.expect("world");
    assert!(!inventory.clusters.contains_key("cluster3"), "cluster3 joins later");
    assert!(namespaces_mentioning("cluster3.").is_empty());
    let mut controller = Controller::new(&scenario, inventory);
    provider
        .apply_plan(controller.plan(), &PhaseSettings::default(), &mut quiet)
        .await
        .expect("plan");
    let records = provider
        .send_traffic(&traffic_from("cluster1"), &mut quiet)
        .await
        .unwrap();
    let (answered, failed) = tally(&records);
    assert_eq!(failed, 0, "{records:?}");
    assert!(answered.contains_key("cluster2"), "{answered:?}");
    println!("CHECKED before: {answered:?}");

    // Scale bar in cluster2 to 0.
    let cluster2_gateway = gateway_of(&controller, "cluster2");
    let started = provider.process_ids().len();
    let scale_down = WorldChange::Scale {
        cluster: "cluster2".to_owned(),
        service: "bar.ns2".to_owned(),
        replicas: 0,
    };
    let started_scale_down = Instant::now();
    let events = provider
        .change_world(&scale_down, &mut quiet)
        .await
        .expect("scale to 0");
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events
            .iter()
            .all(|event| matches!(event, InventoryEvent::PodGone { .. }))
    );
    let plan = reconcile_and_apply(&mut provider, &mut controller, &events).await;
    assert!(
        !named_gateways(&plan, "cluster1").contains(&cluster2_gateway),
        "cluster1's ServiceEntries still name cluster2's gateway {cluster2_gateway}"
    );
    assert_eq!(
        provider.process_ids().len(),
        started,
        "no process started (the rest were reconfigured live) and none ended yet: the scaled-away pods drain"
    );
    assert!(
        !processes_mentioning("--pod bar-1 --cluster cluster2").is_empty(),
        "a scaled-away pod keeps serving while its sidecar drains (Istio's terminationDrainDuration)"
    );
    provider.check_alive().await.expect("pods scaled away are no deaths");
    let records = provider
        .send_traffic(&traffic_from("cluster1"), &mut quiet)
        .await
        .unwrap();
    let (answered, failed) = tally(&records);
    assert_eq!(failed, 0, "{records:?}");
    assert_eq!(answered.keys().collect::<Vec<_>>(), ["cluster1"], "{answered:?}");
    println!("CHECKED scaled to 0: {answered:?}");
    provider
        .await_terminated()
        .await
        .expect("the scaled-away pods end after their drain");
    assert!(
        started_scale_down.elapsed() >= TERMINATION_DRAIN,
        "ended after the drain, not before: {:?}",
        started_scale_down.elapsed()
    );
    assert_eq!(
        processes_mentioning("--pod bar-1 --cluster cluster2"),
        Vec::<String>::new(),
        "drained pods end"
    );
    println!(
        "CHECKED drained: the scaled-away pods ended {:?} after the scale-down",
        started_scale_down.elapsed()
    );

    // Back to 2.
    let started = provider.process_ids().len();
    let scale_up = WorldChange::Scale {
        cluster: "cluster2".to_owned(),
        service: "bar.ns2".to_owned(),
        replicas: 2,
    };
    let events = provider.change_world(&scale_up, &mut quiet).await.expect("scale to 2");
    assert_eq!(events.len(), 2, "{events:?}");
    let plan = reconcile_and_apply(&mut provider, &mut controller, &events).await;
    assert!(named_gateways(&plan, "cluster1").contains(&cluster2_gateway));
    assert_eq!(
        provider.process_ids().len(),
        started + 4,
        "exactly the new pods' apps and sidecars started; nothing restarted"
    );
    let records = provider
        .send_traffic(&traffic_from("cluster1"), &mut quiet)
        .await
        .unwrap();
    let (answered, failed) = tally(&records);
    assert_eq!(failed, 0, "{records:?}");
    assert!(
        answered.contains_key("cluster2"),
        "remote pods answer again: {answered:?}"
    );
    println!("CHECKED scaled back: {answered:?}");

    // cluster3 joins with a foreign root.
    let join = WorldChange::JoinCluster {
        cluster: "cluster3".to_owned(),
    };
    let events = provider.change_world(&join, &mut quiet).await.expect("join");
    assert!(
        matches!(events.as_slice(), [InventoryEvent::ClusterJoined { .. }]),
        "{events:?}"
    );
    let plan = reconcile_and_apply(&mut provider, &mut controller, &events).await;
    let cluster3_gateway = gateway_of(&controller, "cluster3");
    assert!(named_gateways(&plan, "cluster1").contains(&cluster3_gateway));
    let before = provider.tls_failures("bar.ns2").await.unwrap();
    let records = provider
        .send_traffic(&traffic_from("cluster1"), &mut quiet)
        .await
        .unwrap();
    let (answered, failed) = tally(&records);
    assert!(
        !answered.contains_key("cluster3"),
        "nothing of the foreign root answers: {answered:?}"
    );
    assert!(failed > 0, "calls towards cluster3 fail: {answered:?}");
    let identity = "spiffe://cluster.local/ns/ns1/sa/foo";
    assert!(
        records
            .iter()
            .filter(|record| record.cluster.is_some())
            .all(|record| record.peer_identity.as_deref() == Some(identity)),
        "calls answered by cluster1 and cluster2 are still mTLS with foo's identity"
    );
    assert!(
        answered.contains_key("cluster1") && answered.contains_key("cluster2"),
        "{answered:?}"
    );
    let records = provider
        .send_traffic(&traffic_from("cluster3"), &mut quiet)
        .await
        .unwrap();
    let (answered_from_3, _) = tally(&records);
    assert!(
        answered_from_3.is_empty(),
        "no call of the foreign root gets through: {answered_from_3:?}"
    );
    let after = provider.tls_failures("bar.ns2").await.unwrap();
    assert!(
        after.fail_verify_error > before.fail_verify_error,
        "bar's sidecars refused cluster3's client certificates: {before:?} -> {after:?}"
    );
    println!(
        "CHECKED foreign root: from cluster1 {answered:?} + {failed} failed; verify failures {} -> {}",
        before.fail_verify_error, after.fail_verify_error
    );

    // cluster3 leaves.
    assert!(
        !processes_mentioning("cluster3").is_empty(),
        "cluster3 runs processes before it leaves"
    );
    let leave = WorldChange::LeaveCluster {
        cluster: "cluster3".to_owned(),
    };
    let started_leave = Instant::now();
    let events = provider.change_world(&leave, &mut quiet).await.expect("leave");
    assert_eq!(
        events,
        [InventoryEvent::ClusterLeft {
            cluster: "cluster3".to_owned()
        }]
    );
    let plan = reconcile_and_apply(&mut provider, &mut controller, &events).await;
    assert!(!named_gateways(&plan, "cluster1").contains(&cluster3_gateway));
    assert!(
        !processes_mentioning("cluster3").is_empty() && !namespaces_mentioning("cluster3.").is_empty(),
        "a cluster that left keeps serving while it drains, after the re-plan was applied"
    );
    provider
        .await_terminated()
        .await
        .expect("cluster3 ends after its drain");
    assert!(
        started_leave.elapsed() >= TERMINATION_DRAIN,
        "{:?}",
        started_leave.elapsed()
    );
    assert_eq!(
        namespaces_mentioning("cluster3."),
        Vec::<String>::new(),
        "its namespaces are gone"
    );
    assert_eq!(
        processes_mentioning("cluster3"),
        Vec::<String>::new(),
        "its processes are gone"
    );
    provider.check_alive().await.expect("a cluster that left is no death");
    let records = provider
        .send_traffic(&traffic_from("cluster1"), &mut quiet)
        .await
        .unwrap();
    let (answered, failed) = tally(&records);
    assert_eq!(failed, 0, "{records:?}");
    assert!(!answered.contains_key("cluster3"), "{answered:?}");
    println!("CHECKED left: {answered:?}");
    provider.teardown(&mut quiet).await.expect("teardown");
    println!("DONE");
}

fn run_dir() -> PathBuf {
    PathBuf::from(sandbox::RUN_DIR).join("membership")
}

/// Host processes whose environment carries `marker`.
fn marked_processes(marker: &str) -> Vec<u32> {
    let needle = format!("{MARKER_ENV}={marker}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            environ
                .split(|byte| *byte == 0)
                .any(|var| var == needle.as_bytes())
                .then_some(pid)
        })
        .collect()
}

#[test]
fn scale_to_zero_and_back_then_a_foreign_root_cluster_joins_and_leaves() {
    if let Some(entered) = SANDBOX.get() {
        let mode = entered.as_ref().map_err(Clone::clone).expect("sandbox");
        let (envoy, version) = provision_envoy(false).expect("envoy (the outer half ran meshfed setup)");
        let options = LocalOptions {
            envoy,
            envoy_version: version.to_string(),
            meshfed: PathBuf::from(MESHFED),
            run_dir: run_dir(),
            mode: *mode,
        };
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(membership_story(options));
        return;
    }
    if !local_provider_available() {
        return;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let marker = format!("local-membership-{}-{nanos}", std::process::id());
    let output = Command::new(std::env::current_exe().unwrap())
        .arg("--exact")
        .arg(libtest_name(
            module_path!(),
            "scale_to_zero_and_back_then_a_foreign_root_cluster_joins_and_leaves",
        ))
        .args(["--nocapture", "--test-threads=1"])
        .env(SANDBOX_ENV, "1")
        .env(MARKER_ENV, &marker)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    assert!(
        output.status.success(),
        "sandboxed half failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("DONE"), "{stdout}");
    assert_eq!(
        marked_processes(&marker),
        Vec::<u32>::new(),
        "processes of this run outlived it"
    );
}
