//! Data-plane changes on `local` with real Envoy, through `LocalProvider::change_world`: a
//! gateway stopped and started, a cluster partitioned and healed, replies delayed, a sidecar and
//! an app killed and restarted, an intermediate CA rotated under continuous traffic, an Istio
//! upgrade rolled through one cluster's proxies.
//!
//! The provider must run in meshfed's sandbox, which only a single-threaded process can enter; so
//! each test re-runs this test binary for itself with [`SANDBOX_ENV`] set, and a constructor in
//! `.init_array` enters the sandbox before `main` (as in `tests/sandbox/network.rs`). The outer half
//! checks the sandboxed half passed and that none of its processes (found by a unique
//! `MESHFED_TEST_MARKER`) outlived it.

use crate::SANDBOX_ENV;
use crate::before_main;
use crate::support::libtest::libtest_name;
use crate::support::local_provider::local_provider_available;
use crate::support::marker;
use crate::support::meshfed_command::MESHFED;
use before_main::SANDBOX;
use marker::{MARKER_ENV, processes_with_marker};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use meshfed::change::{Container, WorldChange};
use meshfed::inventory::Inventory;
use meshfed::provider::local::sandbox::{self, SandboxMode};
use meshfed::provider::local::{LocalOptions, LocalProvider, provision_envoy};
use meshfed::provider::{PhaseSettings, Provider, Traffic};
use meshfed::record::RequestRecord;
use meshfed::scenario::{self, ConnectionPolicy, IstioVersion, Protocol, Scenario};

/// `true` in the sandboxed half. In the outer half, runs `test` sandboxed, checks it passed and
/// left nothing, and returns `false`.
fn sandboxed(test: &str) -> bool {
    if let Some(entered) = SANDBOX.get() {
        if let Err(error) = entered {
            panic!("entering the sandbox failed: {error}");
        }
        return true;
    }
    if !local_provider_available() {
        return false;
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let marker = format!("{test}-{}-{nanos}", std::process::id());
    let output = Command::new(std::env::current_exe().unwrap())
        .arg("--exact")
        .arg(libtest_name(module_path!(), test))
        .args(["--nocapture", "--test-threads=1"])
        .env(SANDBOX_ENV, "1")
        .env(MARKER_ENV, &marker)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "the sandboxed half failed:\n{all}");
    assert!(
        all.contains("1 passed"),
        "the sandboxed half really ran the test:\n{all}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = processes_with_marker(&marker);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "processes outlived the test: {left:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("{all}");
    false
}

fn seed_text() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/seed.yaml")).unwrap()
}

fn parse(text: &str) -> Scenario {
    scenario::parse(Path::new("faults.yaml"), text).unwrap_or_else(|error| panic!("{error}"))
}

/// A running world of `scenario` with its plan applied.
struct World {
    runtime: tokio::runtime::Runtime,
    provider: LocalProvider,
    scenario: Scenario,
    inventory: Inventory,
    run_dir: PathBuf,
}

fn no_progress() -> impl FnMut(&str) {
    |_: &str| {}
}

impl World {
    fn start(scenario: Scenario) -> World {
        let (envoy, envoy_version) = provision_envoy(false).expect("envoy");
        let run_dir = PathBuf::from(sandbox::RUN_DIR).join("faults");
        let options = LocalOptions {
            envoy,
            envoy_version: envoy_version.to_string(),
            meshfed: PathBuf::from(MESHFED),
            run_dir: run_dir.clone(),
            mode: SandboxMode::Root,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut provider = LocalProvider::new(options);
        let inventory = runtime
            .block_on(provider.create_world(&scenario, &mut no_progress()))
            .expect("world");
        let mut world = World {
            runtime,
            provider,
            scenario,
            inventory,
            run_dir,
        };
        world.apply();
        world
    }

    fn apply(&mut self) {
        let plan = meshfed::plan::plan(&self.scenario, &self.inventory);
        self.runtime
            .block_on(
                self.provider
                    .apply_plan(&plan, &PhaseSettings::default(), &mut no_progress()),
            )
            .expect("apply the plan");
    }

    fn change(&mut self, change: WorldChange) -> Vec<meshfed::inventory::InventoryEvent> {
        let what = format!("{change:?}");
        self.runtime
            .block_on(self.provider.change_world(&change, &mut no_progress()))
            .unwrap_or_else(|error| panic!("{what}: {error}"))
    }

    /// `requests` HTTP calls from foo-0 in cluster1 to bar.ns2, one connection each.
    fn foo_to_bar(&mut self, requests: u64) -> Vec<RequestRecord> {
        self.send("cluster1", "foo-0", "bar.ns2", requests)
    }

    fn send(&mut self, cluster: &str, pod: &str, service: &str, requests: u64) -> Vec<RequestRecord> {
        let from_service = if pod.starts_with("foo") { "foo.ns1" } else { "bar.ns2" };
        let traffic = Traffic {
            from_cluster: cluster.into(),
            from_service: from_service.into(),
            from_pod: pod.into(),
            to_service: service.into(),
            port: 80,
            protocol: Protocol::Http,
            requests,
            concurrency: 2,
            connections: ConnectionPolicy::NewConnectionPerRequest,
            rate_per_second: None,
        };
        self.runtime
            .block_on(self.provider.send_traffic(&traffic, &mut no_progress()))
            .expect("traffic")
    }

    fn alive(&mut self) {
        self.runtime
            .block_on(self.provider.check_alive())
            .expect("every app and Envoy runs");
    }

    fn teardown(mut self) {
        self.runtime
            .block_on(self.provider.teardown(&mut no_progress()))
            .expect("teardown");
    }

    fn admin(&self, cluster: &str, pod: &str, path: &str) -> String {
        let socket = self.run_dir.join(cluster).join(pod).join("envoy/admin.sock");
        self.runtime
            .block_on(meshfed::provider::local::envoy_binary::admin_get(&socket, path))
            .unwrap_or_else(|error| panic!("{path} of {pod} in {cluster}: {error}"))
    }
}

fn answered(records: &[RequestRecord]) -> usize {
    records
        .iter()
        .filter(|record| record.status == Some(200) && record.error.is_none())
        .count()
}

fn failures(records: &[RequestRecord]) -> Vec<String> {
    records
        .iter()
        .filter(|record| record.status != Some(200) || record.error.is_some())
        .map(|record| format!("{:?} {:?}", record.status, record.error))
        .collect()
}

fn cluster2(change: fn(String) -> WorldChange) -> WorldChange {
    change("cluster2".into())
}

/// While meshfed is busy with something else for seconds (a scale-up creating 50 pods took 4-40 s
/// in scenarios/scale-4x50.yaml) nothing awaits the traffic; the client's records must still be
/// read, or the client blocks on its full output pipe (64 KiB, ~280 records) and stops starting
/// requests: the 4x50 world's timeline showed no request started for 40 s while cluster2 scaled up.
#[test]
fn paced_traffic_keeps_its_pace_while_meshfed_is_busy_elsewhere() {
    if !sandboxed("paced_traffic_keeps_its_pace_while_meshfed_is_busy_elsewhere") {
        return;
    }
    let mut world = World::start(parse(&seed_text()));
    let requests = 2000;
    let traffic = Traffic {
        from_cluster: "cluster1".into(),
        from_service: "foo.ns1".into(),
        from_pod: "foo-0".into(),
        to_service: "bar.ns2".into(),
        port: 80,
        protocol: Protocol::Http,
        requests,
        concurrency: 8,
        connections: ConnectionPolicy::NewConnectionPerRequest,
        rate_per_second: Some(400),
    };
    world
        .runtime
        .block_on(world.provider.start_traffic(&traffic, &mut no_progress()))
        .expect("start the traffic");
    // Busy as a long change keeps it: this thread blocked, nothing awaits the traffic.
    std::thread::sleep(Duration::from_secs(4));
    let records = loop {
        let awaited = world.runtime.block_on(
            world
                .provider
                .await_traffic(Instant::now() + Duration::from_secs(1), &mut no_progress()),
        );
        if let Some(records) = awaited.expect("await the traffic") {
            break records;
        }
    };
    assert_eq!(answered(&records), requests as usize, "{:?}", failures(&records));
    let mut starts: Vec<u64> = records.iter().map(|record| record.started_us).collect();
    starts.sort_unstable();
    let (gap_at, largest_gap) = starts
        .windows(2)
        .map(|pair| (pair[0], pair[1] - pair[0]))
        .max_by_key(|(_, gap)| *gap)
        .unwrap();
    // Paced at 400/s a request starts every 2.5 ms; a stalled client starts none for seconds.
    assert!(
        largest_gap < 1_000_000,
        "no request started for {} ms from {} ms on: the client waited on its output",
        largest_gap / 1000,
        gap_at / 1000
    );
    world.alive();
    world.teardown();
}

#[test]
fn a_stopped_gateway_fails_calls_to_its_cluster_and_a_started_one_answers_them_again() {
    if !sandboxed("a_stopped_gateway_fails_calls_to_its_cluster_and_a_started_one_answers_them_again") {
        return;
    }
    let mut world = World::start(parse(&seed_text()));
    assert_eq!(answered(&world.foo_to_bar(20)), 20, "before the stop");
    // Envoys take their configuration and secrets over ADS, not watched files: none holds an
    // inotify instance, so `fs.inotify.max_user_instances` (128 by default) no longer bounds a
    // world (it allowed 56 Envoys when each watched two files).
    let mut envoys = 0;
    for pid in world.provider.process_ids() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let instances = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.flatten()
                    .filter(|fd| {
                        std::fs::read_link(fd.path()).is_ok_and(|target| target.to_string_lossy().contains("inotify"))
                    })
                    .count()
            })
            .unwrap_or(0);
        println!("MEASURED inotify instances of pid {pid} ({}): {instances}", comm.trim());
        if comm.trim() == "envoy" {
            envoys += 1;
            assert_eq!(instances, 0, "envoy pid {pid} holds {instances} inotify instances");
        }
    }
    assert_eq!(envoys, 4, "the seed's Envoys: two pods and two gateways");
    let events = world.change(cluster2(|cluster| WorldChange::StopGateway { cluster }));
    assert!(events.is_empty(), "{events:?}");
    let stopped = world.foo_to_bar(20);
    assert_eq!(
        answered(&stopped),
        0,
        "with cluster2's gateway stopped: {:?}",
        failures(&stopped)
    );
    println!(
        "MEASURED gateway stopped: median failed call {:.1} ms, e.g. {:?}",
        median_latency_ms(&stopped),
        failures(&stopped).first()
    );
    // A gateway stopped on purpose is no death.
    world.alive();
    assert!(world.runtime.block_on(world.provider.stuck()).is_empty());
    world.change(cluster2(|cluster| WorldChange::StartGateway { cluster }));
    let started = world.foo_to_bar(20);
    assert_eq!(answered(&started), 20, "after the start: {:?}", failures(&started));
    world.alive();
    world.teardown();
}

#[test]
fn a_partitioned_cluster_is_unreachable_from_the_others_and_answers_again_after_heal() {
    if !sandboxed("a_partitioned_cluster_is_unreachable_from_the_others_and_answers_again_after_heal") {
        return;
    }
    let mut world = World::start(parse(&seed_text()));
    assert_eq!(answered(&world.foo_to_bar(20)), 20, "before the partition");
    world.change(cluster2(|cluster| WorldChange::Partition { cluster }));
    let cut = world.foo_to_bar(20);
    assert_eq!(answered(&cut), 0, "cluster1 -> cluster2 during the partition");
    println!(
        "MEASURED partition: median failed call {:.1} ms, failures {:?}",
        median_latency_ms(&cut),
        failures(&cut)
    );
    // Both directions: bar-0 in cluster2 cannot reach foo in cluster1 either.
    let back = world.send("cluster2", "bar-0", "foo.ns1", 10);
    assert_eq!(answered(&back), 0, "cluster2 -> cluster1 during the partition");
    world.alive();
    world.change(cluster2(|cluster| WorldChange::Heal { cluster }));
    let healed = world.foo_to_bar(20);
    assert_eq!(answered(&healed), 20, "after heal: {:?}", failures(&healed));
    assert!(
        healed
            .iter()
            .all(|record| record.cluster.as_deref() == Some("cluster2"))
    );
    assert_eq!(answered(&world.send("cluster2", "bar-0", "foo.ns1", 10)), 10);
    // A heal without a partition changes nothing and is no error.
    world.change(cluster2(|cluster| WorldChange::Heal { cluster }));
    world.teardown();
}

fn median_latency_ms(records: &[RequestRecord]) -> f64 {
    let mut latencies: Vec<u64> = records.iter().map(|record| record.latency_us).collect();
    latencies.sort_unstable();
    latencies[latencies.len() / 2] as f64 / 1000.0
}

/// CPU time (user + system, ms) used so far by the world's echo apps.
fn apps_cpu_ms(world: &World) -> u64 {
    let ticks_per_second = 100; // USER_HZ on Linux
    world
        .provider
        .process_ids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| cmdline.contains("echo"))
        })
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
            // After the command: state is field 3, utime 14, stime 15 (1-based).
            let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some(ticks * 1000 / ticks_per_second)
        })
        .sum()
}

#[test]
fn a_delay_shows_in_the_latency_of_replies_and_zero_removes_it() {
    if !sandboxed("a_delay_shows_in_the_latency_of_replies_and_zero_removes_it") {
        return;
    }
    let mut world = World::start(parse(&seed_text()));
    let before = world.foo_to_bar(20);
    let delay = |millis| WorldChange::Delay {
        cluster: "cluster2".into(),
        service: "bar.ns2".into(),
        millis,
    };
    let cpu_before = apps_cpu_ms(&world);
    std::thread::sleep(Duration::from_secs(2));
    let idle_cpu = apps_cpu_ms(&world) - cpu_before;
    println!("MEASURED the apps' CPU while idle for 2 s (re-reading their delay files every 20 ms): {idle_cpu} ms");
    world.change(delay(300));
    let delayed = world.foo_to_bar(20);
    world.change(delay(0));
    let after = world.foo_to_bar(20);
    let (before, delayed_ms, after) = (
        median_latency_ms(&before),
        median_latency_ms(&delayed),
        median_latency_ms(&after),
    );
    println!(
        "MEASURED median latency before {before:.1} ms, with a 300 ms delay {delayed_ms:.1} ms, after removing it {after:.1} ms"
    );
    assert_eq!(answered(&delayed), 20);
    assert!(
        delayed.iter().all(|record| record.latency_us >= 300_000),
        "every reply waited 300 ms"
    );
    assert!(after < 300.0, "the delay is gone after 0: median {after} ms");
    world.alive();
    world.teardown();
}

#[test]
fn a_killed_sidecar_or_app_is_restarted_and_liveness_does_not_fail_the_run() {
    if !sandboxed("a_killed_sidecar_or_app_is_restarted_and_liveness_does_not_fail_the_run") {
        return;
    }
    let mut world = World::start(parse(&seed_text()));
    for container in [Container::Sidecar, Container::App] {
        let started = Instant::now();
        let events = world.change(WorldChange::Kill {
            cluster: "cluster2".into(),
            pod: "bar-0".into(),
            container,
        });
        let took = started.elapsed();
        println!("MEASURED kill of the {container:?} to ready again: {took:?}");
        assert!(took >= Duration::from_secs(1), "the back-off is kept: {took:?}");
        assert!(
            matches!(&events[..], [meshfed::inventory::InventoryEvent::PodGone { pod, .. }, meshfed::inventory::InventoryEvent::PodReady { .. }] if pod == "bar-0"),
            "{events:?}"
        );
        world.alive();
        let records = world.foo_to_bar(20);
        assert_eq!(
            answered(&records),
            20,
            "after the {container:?} restarted: {:?}",
            failures(&records)
        );
    }
    let restarts = world.provider.proxy_restarts();
    assert_eq!(
        restarts.len(),
        1,
        "the sidecar kill is recorded as a restart: {restarts:?}"
    );
    assert!(
        restarts[0].proxy.contains("bar-0") && restarts[0].reason.contains("SIGKILL"),
        "{restarts:?}"
    );
    world.teardown();
}

/// The certificates bar-0's sidecar presents to a caller, PEM, leaf first (as `openssl
/// s_client` saw them from inside bar-0's pod, with an Istio ALPN so the mTLS chain answers).
fn presented_chain(world: &mut World) -> Vec<String> {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "ip=$(ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1); \
         openssl s_client -connect \"$ip:80\" -alpn istio-http/1.1 -showcerts </dev/null 2>/dev/null",
    ]);
    let output = world
        .provider
        .exec_in_pod("cluster2", "bar-0", command, Duration::from_secs(10))
        .expect("openssl s_client");
    let mut chain = Vec::new();
    let mut current: Option<String> = None;
    for line in output.stdout.lines() {
        if line == "-----BEGIN CERTIFICATE-----" {
            current = Some(String::new());
        }
        if let Some(pem) = current.as_mut() {
            pem.push_str(line);
            pem.push('\n');
        }
        if line == "-----END CERTIFICATE-----" {
            chain.extend(current.take());
        }
    }
    assert!(
        !chain.is_empty(),
        "openssl saw no certificate:\n{}\n{}",
        output.stdout,
        output.stderr
    );
    chain
}

/// TLS handshakes bar-0's inbound listeners completed so far.
fn handshakes(world: &World) -> u64 {
    world
        .admin("cluster2", "bar-0", "/stats?filter=ssl.handshake")
        .lines()
        .filter(|line| line.starts_with("listener.") && line.contains(".ssl.handshake: "))
        .filter_map(|line| line.rsplit(": ").next()?.trim().parse::<u64>().ok())
        .sum()
}

#[test]
fn rotating_an_intermediate_under_traffic_fails_no_call_and_servers_present_the_new_one() {
    if !sandboxed("rotating_an_intermediate_under_traffic_fails_no_call_and_servers_present_the_new_one") {
        return;
    }
    let mut world = World::start(parse(&seed_text()));
    let old_intermediate = world
        .provider
        .intermediate_cert_pem("cluster2")
        .expect("cluster2's intermediate");
    assert_eq!(presented_chain(&mut world)[1].trim(), old_intermediate.trim());
    let envoy_pids_before = world.provider.process_ids().len();

    // Continuous traffic foo -> bar (a new connection, so a new handshake, per request) from a
    // client this test starts in foo-0's pod, read as it goes (the client writes its records in
    // 8 KiB blocks, so their arrival times say little; the Envoy's gauge does).
    // One request per upstream connection all the way to bar-0's sidecar, so every call after a
    // rotation is a new TLS handshake with the certificate bar-0 has then.
    let settings = meshfed::plan::TrafficSettings {
        connections: ConnectionPolicy::NewConnectionPerRequest,
        ..meshfed::plan::TrafficSettings::of_scenario(&world.scenario)
    };
    let plan = meshfed::plan::plan_with(&world.scenario, &world.inventory, settings);
    world
        .runtime
        .block_on(
            world
                .provider
                .apply_plan(&plan, &PhaseSettings::default(), &mut no_progress()),
        )
        .expect("apply the per-request plan");
    // Replies wait REPLY_DELAY so that requests are in flight whenever the rotation runs.
    const REPLY_DELAY: Duration = Duration::from_millis(200);
    world.change(WorldChange::Delay {
        cluster: "cluster2".into(),
        service: "bar.ns2".into(),
        millis: REPLY_DELAY.as_millis() as u32,
    });
    let netns = world
        .provider
        .pod_netns("cluster1", "foo-0")
        .expect("foo-0's namespace");
    let target = world.provider.service_address("cluster1", "bar.ns2", 80).unwrap();
    let mut client = Command::new(MESHFED);
    client
        .args(["workload", "client", "--target", &target.to_string()])
        .args(["--host", "bar.ns2.svc.cluster.local", "--protocol", "http"])
        .args(["--requests", "1000000", "--concurrency", "8"])
        .args(["--connections", "new-connection-per-request", "--timeout-ms", "5000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut client = meshfed::provider::local::network::run_in_netns(&netns, move || client.spawn())
        .unwrap()
        .expect("start the client");
    let (lines, received) = mpsc::channel::<(Instant, String)>();
    let stdout = client.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let await_records = |count: usize, records: &mut Vec<(Instant, RequestRecord)>| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while records.len() < count {
            let (at, line) = received
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("only {} records within 30 s", records.len()));
            records.push((at, serde_json::from_str(&line).unwrap()));
        }
    };
    // Requests in flight at bar-0 (its inbound HTTP connection managers' active requests).
    let active = |world: &World| -> u64 {
        world
            .admin("cluster2", "bar-0", "/stats?filter=downstream_rq_active")
            .lines()
            .filter(|line| {
                line.starts_with("http.")
                    && !line.starts_with("http.admin.")
                    && line.contains(".downstream_rq_active: ")
            })
            .filter_map(|line| line.rsplit(": ").next()?.trim().parse::<u64>().ok())
            .sum()
    };
    let mut records = Vec::new();
    let mut rotations = Vec::new();
    for _ in 0..3 {
        await_records(records.len() + 40, &mut records);
        // Start the rotation while requests are in flight (the client's slots run in step, so
        // there are short gaps between its waves).
        let deadline = Instant::now() + Duration::from_secs(5);
        let active_before = loop {
            let now_active = active(&world);
            if now_active > 0 || Instant::now() >= deadline {
                break now_active;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        let started = Instant::now();
        world.change(cluster2(|cluster| WorldChange::RotateIntermediate { cluster }));
        let took = started.elapsed();
        rotations.push((took, active_before, active(&world)));
    }
    let handshakes_after_rotations = handshakes(&world);
    await_records(records.len() + 80, &mut records);
    let new_handshakes = handshakes(&world) - handshakes_after_rotations;
    let _ = client.kill();
    let _ = client.wait();
    drop(received);
    let _ = reader.join();

    let all: Vec<RequestRecord> = records.into_iter().map(|(_, record)| record).collect();
    println!(
        "MEASURED rotations (took, requests in flight at bar-0 before, after): {rotations:?}; {} calls, {new_handshakes} TLS handshakes at bar-0 after the last, {} failed",
        all.len(),
        all.len() - answered(&all)
    );
    // Each reply takes REPLY_DELAY, far longer than a rotation: requests in flight before and
    // after each one means the rotation happened under load.
    assert!(
        new_handshakes >= 80,
        "calls after the rotations were new handshakes: {new_handshakes}"
    );
    for (took, before, after) in &rotations {
        assert!(*took < REPLY_DELAY, "a rotation took {took:?}");
        assert!(
            *before > 0 && *after > 0,
            "traffic in flight across the rotation: {rotations:?}"
        );
    }
    assert_eq!(
        failures(&all),
        Vec::<String>::new(),
        "zero failed calls across the rotation"
    );
    let new_intermediate = world.provider.intermediate_cert_pem("cluster2").unwrap();
    assert_ne!(new_intermediate, old_intermediate, "a new intermediate");
    let chain = presented_chain(&mut world);
    assert_eq!(
        chain[1].trim(),
        new_intermediate.trim(),
        "bar-0 presents the new intermediate"
    );
    assert_eq!(
        world.provider.process_ids().len(),
        envoy_pids_before + 1,
        "no Envoy restarted (only openssl ran)"
    );
    assert!(world.provider.proxy_restarts().is_empty());
    world.alive();
    world.teardown();
}

#[test]
fn an_upgrade_restarts_the_clusters_proxies_one_at_a_time_with_the_new_versions_config() {
    if !sandboxed("an_upgrade_restarts_the_clusters_proxies_one_at_a_time_with_the_new_versions_config") {
        return;
    }
    // 1.13 balances with ROUND_ROBIN by default, 1.14 with LEAST_REQUEST (src/plan/versions.rs).
    // Both are in docs/fidelity.md row 2d's range, where the seed's replicated Services beside
    // their ServiceEntries take both gateways' 15443 listeners down and no call crosses clusters:
    // the seed runs with `dnsProxying`, the way out of row 2d, so the calls at the end can succeed.
    let text = seed_text()
        .replace("    zone: zone1a\n", "    zone: zone1a\n    istioVersion: \"1.13.9\"\n")
        .replace("    zone: zone2a\n", "    zone: zone2a\n    istioVersion: \"1.13.9\"\n")
        .replace("replicas: { cluster2: 1 }", "replicas: { cluster2: 2 }")
        .replace("  mtls: PERMISSIVE\n", "  mtls: PERMISSIVE\n  dnsProxying: true\n");
    assert!(text.contains("dnsProxying: true"));
    let mut world = World::start(parse(&text));
    let lb_policy = |world: &World, pod: &str| {
        let dump = world.admin("cluster2", pod, "/config_dump?resource=dynamic_active_clusters");
        if dump.contains("\"LEAST_REQUEST\"") {
            "LEAST_REQUEST"
        } else {
            "ROUND_ROBIN"
        }
    };
    assert_eq!(lb_policy(&world, "bar-0"), "ROUND_ROBIN");
    let to = IstioVersion {
        major: 1,
        minor: 14,
        patch: 6,
    };
    let events = world.change(WorldChange::Upgrade {
        cluster: "cluster2".into(),
        to,
    });
    assert_eq!(
        events,
        vec![meshfed::inventory::InventoryEvent::IstioVersion {
            cluster: "cluster2".into(),
            version: to
        }]
    );
    assert_eq!(world.provider.istio_version("cluster2"), Some(to));
    assert!(
        world.provider.proxy_restarts().is_empty(),
        "nothing restarts before the plan changes"
    );
    // The reconcile loop turns the event into the inventory's version, and the plan follows it.
    world.inventory.clusters.get_mut("cluster2").unwrap().istio_version = to;
    world.apply();
    let restarts = world.provider.proxy_restarts();
    let mut restarted: Vec<String> = restarts.iter().map(|restart| restart.proxy.clone()).collect();
    restarted.sort_unstable();
    // The gateway is not restarted: its rollout surges (a new pod ready before the old one
    // stops), emulated as a live push of the new version's configuration.
    assert_eq!(
        restarted,
        [
            "envoy for pod bar-0 in cluster2".to_owned(),
            "envoy for pod bar-1 in cluster2".to_owned(),
        ],
        "only cluster2's sidecars restart: {restarts:?}"
    );
    let mut by_stop = restarts.clone();
    by_stop.sort_by_key(|restart| restart.stopped);
    for pair in by_stop.windows(2) {
        assert!(
            pair[1].stopped >= pair[0].ready,
            "one at a time: {} stopped before {} was ready",
            pair[1].proxy,
            pair[0].proxy
        );
    }
    assert!(
        restarts
            .iter()
            .all(|restart| restart.reason == "istio 1.13.9 -> 1.14.6"),
        "{restarts:?}"
    );
    assert_eq!(lb_policy(&world, "bar-0"), "LEAST_REQUEST");
    assert_eq!(lb_policy(&world, "bar-1"), "LEAST_REQUEST");
    world.alive();
    assert_eq!(answered(&world.foo_to_bar(20)), 20);
    world.teardown();
}

/// Row 2d and order: a listener update Envoy rejects leaves the one it accepted earlier in place.
/// On 1.20.8 with bar at 0 pods, cluster1 has no ServiceEntry, so its gateway accepts a listener
/// with foo's and bar's chains (`builtAutoPassthroughFilterChains`,
/// pilot/pkg/networking/core/v1alpha3/gateway.go@1.10.6); cluster2's is pushed with foo's chain
/// twice (its Service and the ServiceEntry for cluster1's foo) and never has one. Scaling bar up
/// in cluster2 brings a ServiceEntry for bar into cluster1: the reconciled push gives cluster1's
/// gateway bar's chain twice, real Envoy rejects it and keeps the earlier listener, so calls into
/// cluster1 (bar -> foo) still get through while calls into cluster2 (foo -> bar) are refused.
#[test]
fn a_rejected_gateway_update_keeps_the_listener_accepted_before_it() {
    if !sandboxed("a_rejected_gateway_update_keeps_the_listener_accepted_before_it") {
        return;
    }
    let text = seed_text()
        .replace("    zone: zone1a\n", "    zone: zone1a\n    istioVersion: \"1.20.8\"\n")
        .replace("    zone: zone2a\n", "    zone: zone2a\n    istioVersion: \"1.20.8\"\n")
        .replace("replicas: { cluster2: 1 }", "replicas: { cluster2: 0 }");
    // bar has no pod to send from before the scale: the world needs no phase from it.
    let text = &text[..text.find("  - name: bar-to-foo-http").unwrap()];
    let mut world = World::start(parse(text));
    let rejections = |world: &mut World| {
        world
            .runtime
            .block_on(world.provider.config_rejections())
            .expect("read rejections")
    };
    let before = rejections(&mut world);
    assert_eq!(before.len(), 1, "only cluster2's gateway: {before:?}");
    assert!(
        before[0].contains("gateway istio-ingressgateway in cluster2"),
        "{before:?}"
    );
    assert!(before[0].contains("has no 15443 listener"), "{before:?}");

    let mut controller = meshfed::reconcile::Controller::new(&world.scenario, world.inventory.clone());
    let events = world.change(WorldChange::Scale {
        cluster: "cluster2".into(),
        service: "bar.ns2".into(),
        replicas: 1,
    });
    let reconciled = controller.observe(&events);
    assert!(
        reconciled.plan.clusters[0]
            .objects
            .iter()
            .any(|object| object.kind() == "ServiceEntry"),
        "cluster1 now has a ServiceEntry for bar"
    );
    world
        .runtime
        .block_on(
            world
                .provider
                .apply_plan(&reconciled.plan, &PhaseSettings::default(), &mut no_progress()),
        )
        .expect("apply the reconciled plan");
    world.inventory = controller.inventory().clone();
    let after = rejections(&mut world);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after[0].contains("gateway istio-ingressgateway in cluster1"),
        "{after:?}"
    );
    assert!(after[0].contains("the same matching rules"), "{after:?}");
    assert!(after[0].contains("accepted earlier stays in place"), "{after:?}");
    assert!(after[1].contains("has no 15443 listener"), "{after:?}");
    world.alive();
    assert_eq!(
        answered(&world.send("cluster2", "bar-0", "foo.ns1", 20)),
        20,
        "cluster1's earlier listener still routes foo"
    );
    assert_eq!(
        answered(&world.foo_to_bar(20)),
        0,
        "cluster2's gateway has no 15443 listener"
    );
    world.teardown();
}
