//! End-to-end tests of the `local` provider's sandbox, network and supervisor with real namespaces.
//!
//! A cargo test process is multi-threaded (libtest runs each test on its own thread, even with
//! `--test-threads=1`), and the kernel only moves single-threaded processes into new mount or user
//! namespaces. So each namespace test re-runs this test binary for that one test with
//! `MESHFED_TEST_SANDBOX` set; a constructor in `.init_array` then calls `sandbox::enter()` before
//! `main` (hence before libtest starts any thread), as `meshfed run` does early in `main`. The
//! test then runs in the sandbox's worker, PID 2 of meshfed's PID namespace, while the process the
//! outer half started only waits for it (see `sandbox`): the pids the sandboxed half prints are
//! that namespace's, which the outer half maps to host pids by marker. The outer half checks what
//! the sandboxed half printed, and that nothing is left on the host afterwards.

use crate::SANDBOX_ENV;
use crate::before_main;
use crate::support::libtest::libtest_name;
use crate::support::skip;
use before_main::SANDBOX;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;

use meshfed::provider::local::network::{self, ClusterNetwork, GatewayAddress, Ipv4Cidr, NetworkSpec, PodAddress};
use meshfed::provider::local::sandbox::{self, SandboxMode};
use meshfed::provider::local::supervisor::{self, ChildOutput, Supervisor};

/// The marker (a `sleep` duration) the sandboxed half gives its children.
const MARKER_ENV: &str = "MESHFED_TEST_MARKER";
/// The uid the rootless tests run as when the outer half is root.
const NOBODY: u32 = 65534;

/// In the sandboxed half: the sandbox mode (panics with the reason if entering failed).
/// In the outer half: `None`.
fn sandboxed_half() -> Option<SandboxMode> {
    SANDBOX.get().map(|result| match result {
        Ok(mode) => *mode,
        Err(error) => panic!("SANDBOX_ERROR {error}"),
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    nix::unistd::geteuid().is_root()
}

fn net(text: &str) -> Ipv4Cidr {
    text.parse().unwrap()
}

/// 2 clusters × (2 pods + 1 gateway).
fn two_clusters() -> NetworkSpec {
    let cluster = |index: u8| ClusterNetwork {
        name: format!("cluster{index}"),
        pod_cidr: net(&format!("10.{index}.0.0/24")),
        service_cidr: net(&format!("10.{}.0.0/16", 100 + index)),
        router_ip: format!("10.{index}.0.1").parse().unwrap(),
        pods: ["foo-0", "bar-0"]
            .iter()
            .zip(10..)
            .map(|(name, host)| PodAddress {
                name: name.to_string(),
                ip: format!("10.{index}.0.{host}").parse().unwrap(),
            })
            .collect(),
        gateway: GatewayAddress {
            name: "gateway".into(),
            pod_ip: format!("10.{index}.0.2").parse().unwrap(),
            outside_ip: format!("192.168.255.{}", 10 + index).parse().unwrap(),
        },
    };
    NetworkSpec {
        clusters: vec![cluster(1), cluster(2)],
        outside_cidr: net("192.168.255.0/24"),
        router_outside_ip: "192.168.255.1".parse().unwrap(),
    }
}

/// Every pod (gateways included) as (cluster, pod, pod IP).
fn all_pods(spec: &NetworkSpec) -> Vec<(String, String, std::net::Ipv4Addr)> {
    spec.clusters
        .iter()
        .flat_map(|cluster| {
            cluster
                .pods
                .iter()
                .map(|pod| (pod.name.clone(), pod.ip))
                .chain([(cluster.gateway.name.clone(), cluster.gateway.pod_ip)])
                .map(|(pod, ip)| (cluster.name.clone(), pod, ip))
        })
        .collect()
}

/// Answers every connection with `identity` and closes it.
fn serve_identity(listener: TcpListener, identity: String) {
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let _ = stream.write_all(identity.as_bytes());
        }
    });
}

/// Connects from `netns` to `addr` (retrying until `deadline`) and returns what the server said.
fn identity_at(netns: &Path, addr: SocketAddr) -> String {
    let mut stream = network::await_tcp_connect(netns, addr, Instant::now() + Duration::from_secs(5))
        .unwrap_or_else(|error| panic!("{error}: {:?}", error.last_error));
    let mut identity = String::new();
    stream.read_to_string(&mut identity).unwrap();
    identity
}

/// The sandboxed half of the topology tests: builds the network, proves reachability and
/// isolation.
fn check_topology_inside_sandbox(mode: SandboxMode) {
    let spec = two_clusters();
    println!("SANDBOX_MODE {mode}");

    // A network can be torn down and built again at once (the kernel cleans deleted namespaces up
    // asynchronously). How long this takes is a benchmark's business (`cargo bench --bench local`).
    for _ in 0..2 {
        network::create_network(&spec).unwrap().teardown().unwrap();
    }

    let network = network::create_network(&spec).unwrap();
    let netns = |cluster: &str, pod: &str| network.netns_path(cluster, pod).unwrap();
    for (cluster, pod, ip) in all_pods(&spec) {
        let listener = network::bind_in_netns(&netns(&cluster, &pod), SocketAddr::from((ip, 8080))).unwrap();
        serve_identity(listener, format!("{cluster}/{pod}"));
    }
    for cluster in &spec.clusters {
        let gateway = &cluster.gateway;
        let listener = network::bind_in_netns(
            &netns(&cluster.name, &gateway.name),
            SocketAddr::from((gateway.outside_ip, 15443)),
        )
        .unwrap();
        serve_identity(listener, format!("{}/{} outside", cluster.name, gateway.name));
    }

    // Within a cluster, every pod reaches every other pod (gateway included) on its pod IP.
    for (from_cluster, from_pod, _) in all_pods(&spec) {
        for (to_cluster, to_pod, to_ip) in all_pods(&spec) {
            if from_cluster == to_cluster && from_pod != to_pod {
                let answer = identity_at(&netns(&from_cluster, &from_pod), SocketAddr::from((to_ip, 8080)));
                assert_eq!(answer, format!("{to_cluster}/{to_pod}"));
            }
        }
    }
    println!("CHECKED pod-to-pod within each cluster");

    // Every pod reaches every cluster's gateway on its outside IP (its own cluster's too).
    for (from_cluster, from_pod, _) in all_pods(&spec) {
        for cluster in &spec.clusters {
            let answer = identity_at(
                &netns(&from_cluster, &from_pod),
                SocketAddr::from((cluster.gateway.outside_ip, 15443)),
            );
            assert_eq!(answer, format!("{}/gateway outside", cluster.name));
        }
    }
    println!("CHECKED every pod reaches every gateway's outside IP");

    // Across clusters, a direct connect to a pod IP fails fast, both ways, every time (the ICMP
    // rate limit would turn repeated failures into timeouts if it applied).
    let mut slowest = Duration::ZERO;
    let mut errors = BTreeSet::new();
    for round in 0..10 {
        for (from_cluster, from_pod, _) in all_pods(&spec) {
            for (to_cluster, to_pod, to_ip) in all_pods(&spec) {
                if from_cluster == to_cluster {
                    continue;
                }
                // A gateway forwards nothing itself, but replies to remote pods go via the router,
                // so it has routes to other clusters' pod CIDRs: only ordinary pods are isolated.
                if from_pod == "gateway" {
                    continue;
                }
                let started = Instant::now();
                let result = network::connect_in_netns(
                    &netns(&from_cluster, &from_pod),
                    SocketAddr::from((to_ip, 8080)),
                    Duration::from_secs(3),
                );
                let took = started.elapsed();
                slowest = slowest.max(took);
                match result {
                    Ok(_) => panic!(
                        "round {round}: {from_cluster}/{from_pod} connected directly to \
                         {to_cluster}/{to_pod} at {to_ip}"
                    ),
                    Err(error) => {
                        assert!(
                            matches!(
                                error.raw_os_error().map(Errno::from_raw),
                                Some(Errno::ENETUNREACH | Errno::EHOSTUNREACH | Errno::ECONNREFUSED)
                            ),
                            "{from_cluster}/{from_pod} -> {to_ip}: unexpected error {error}"
                        );
                        assert!(
                            took < Duration::from_secs(1),
                            "{from_cluster}/{from_pod} -> {to_ip} took {took:?} to fail"
                        );
                        errors.insert(error.to_string());
                    }
                }
            }
        }
    }
    println!("CHECKED cross-cluster pod IPs unreachable: slowest failure {slowest:?}, errors {errors:?}");

    // The router refuses pod-to-other-pod-CIDR traffic even if a pod had a route.
    let router_rules = Command::new("ip")
        .args(["-n", network.netns_names()[0].as_str(), "rule"])
        .output()
        .unwrap();
    let rules = String::from_utf8_lossy(&router_rules.stdout);
    assert!(rules.contains("from 10.1.0.0/24 to 10.2.0.0/24 prohibit"), "{rules}");

    // A sidecar can bind a cluster IP of its own cluster's service CIDR.
    let pod = netns("cluster1", "foo-0");
    let service_ip = SocketAddr::from(([10, 101, 3, 4], 80));
    serve_identity(network::bind_in_netns(&pod, service_ip).unwrap(), "service".into());
    assert_eq!(identity_at(&pod, service_ip), "service");
    println!("CHECKED a pod binds and reaches a service CIDR address");

    network.teardown().unwrap();
    println!("DONE");
}

/// Runs this test binary's test `test` in the sandbox (as `uid`, if given), with stdin piped.
fn spawn_sandboxed_half(test: &str, uid: Option<u32>, marker: &str) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .arg("--exact")
        .arg(libtest_name(module_path!(), test))
        .args(["--nocapture", "--test-threads=1"])
        .env(SANDBOX_ENV, "1")
        .env(MARKER_ENV, marker)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(uid) = uid {
        command.uid(uid).gid(uid);
    }
    command.spawn().unwrap()
}

fn finish(child: Child) -> String {
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "sandboxed half failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

fn host_netns() -> BTreeSet<String> {
    let output = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn host_links() -> BTreeSet<String> {
    let output = Command::new("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split(": ").nth(1))
        .map(|name| name.split('@').next().unwrap_or(name).to_string())
        .collect()
}

/// Interface names the network uses (bridges, router-side veth ends).
fn is_ours(link: &str) -> bool {
    let digits = |text: &str| !text.is_empty() && text.chars().all(|c| c.is_ascii_digit());
    link == "brout"
        || link.strip_prefix("br").is_some_and(digits)
        || link.strip_prefix('c').is_some_and(|rest| {
            rest.split_once(['p', 'g', 'o'])
                .is_some_and(|(cluster, pod)| digits(cluster) && (pod.is_empty() || digits(pod)))
        })
}

fn assert_host_untouched(netns_before: &BTreeSet<String>, links_before: &BTreeSet<String>) {
    let new_netns: Vec<_> = host_netns().difference(netns_before).cloned().collect();
    assert!(
        new_netns.iter().all(|name| !name.starts_with("mf")),
        "host has new network namespaces {new_netns:?}"
    );
    let new_links: Vec<_> = host_links().difference(links_before).cloned().collect();
    assert!(
        new_links.iter().all(|link| !is_ours(link)),
        "host has new links {new_links:?}"
    );
}

#[test]
fn pods_reach_own_cluster_and_every_gateway_but_not_other_clusters_pods() {
    if let Some(mode) = sandboxed_half() {
        return check_topology_inside_sandbox(mode);
    }
    let (netns_before, links_before) = (host_netns(), host_links());
    let stdout = finish(spawn_sandboxed_half(
        "pods_reach_own_cluster_and_every_gateway_but_not_other_clusters_pods",
        None,
        "",
    ));
    println!("{stdout}");
    let expected_mode = if is_root() { "root" } else { "rootless" };
    assert!(stdout.contains(&format!("SANDBOX_MODE {expected_mode}")), "{stdout}");
    assert!(stdout.contains("DONE"), "{stdout}");
    assert_host_untouched(&netns_before, &links_before);
}

/// Whether an unprivileged user can create user namespaces here (probed with util-linux `unshare`).
fn rootless_works() -> Result<(), String> {
    let probe = Command::new("unshare")
        .args(["--user", "--map-root-user", "--net", "--mount", "true"])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .map_err(|error| format!("cannot run `unshare` (util-linux): {error}"))?;
    if probe.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&probe.stderr).into_owned())
    }
}

/// The uid the rootless half runs as: `nobody` when this test runs as root, itself otherwise
/// (`Some(None)`). `None` when root cannot drop to a user that may create user namespaces here:
/// the test is skipped, with the reason.
fn rootless_uid() -> Option<Option<u32>> {
    if !is_root() {
        return Some(None);
    }
    match rootless_works() {
        Ok(()) => Some(Some(NOBODY)),
        Err(reason) => {
            skip::skip(&format!("user namespaces do not work for uid {NOBODY} here: {reason}"));
            None
        }
    }
}

#[test]
fn topology_also_works_rootless() {
    if let Some(mode) = sandboxed_half() {
        assert_eq!(mode, SandboxMode::Rootless);
        return check_topology_inside_sandbox(mode);
    }
    let Some(uid) = rootless_uid() else {
        return;
    };
    let (netns_before, links_before) = (host_netns(), host_links());
    let stdout = finish(spawn_sandboxed_half("topology_also_works_rootless", uid, ""));
    println!("{stdout}");
    assert!(stdout.contains("SANDBOX_MODE rootless"), "{stdout}");
    assert!(stdout.contains("DONE"), "{stdout}");
    assert_host_untouched(&netns_before, &links_before);
}

/// The sandboxed half of the leak tests: a network and a supervised `sleep` in every pod, then
/// either a clean shutdown or waiting to be SIGKILLed.
fn hold_children_inside_sandbox(marker: &str, clean_exit: bool) {
    let spec = two_clusters();
    let network = network::create_network(&spec).unwrap();
    let mut supervisor = Supervisor::new().unwrap();
    let logs = Path::new(sandbox::RUN_DIR).join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut pids = Vec::new();
    for (cluster, pod, _) in all_pods(&spec) {
        let mut sleep = Command::new("sleep");
        sleep.arg(marker);
        let id = supervisor
            .spawn(
                &format!("sleeper for pod {pod} in {cluster}"),
                sleep,
                network.netns_path(&cluster, &pod).as_deref(),
                ChildOutput::LogDir(logs.clone()),
            )
            .unwrap();
        pids.push(supervisor.pid(id).to_string());
    }
    supervisor.check_running().unwrap();
    println!("NETNS {}", network.netns_names().join(" "));
    println!("PIDS {}", pids.join(" "));
    println!("READY");
    // Hold everything until the outer half has looked: it then closes stdin, or SIGKILLs us.
    let _ = std::io::stdin().read_line(&mut String::new());
    if clean_exit {
        let report = supervisor.shutdown(Duration::from_secs(2)).unwrap();
        assert_eq!(report.terminated.len(), pids.len(), "{report:?}");
        network.teardown().unwrap();
        println!("SHUTDOWN {report:?}");
    } else {
        drop((supervisor, network));
        panic!("stdin closed before the SIGKILL");
    }
}

/// Pids of live (non-zombie) processes whose command line contains `marker`.
fn live_processes_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(marker))
        })
        .filter(|pid| supervisor::is_alive(*pid))
        .collect()
}

/// Waits until none of `pids` is alive and no live process has `marker` in its command line.
/// (A process being killed loses its command line before it is gone, so check both.)
fn await_gone(pids: &[u32], marker: &str, deadline: Instant) {
    loop {
        let mut left = live_processes_with(marker);
        left.extend(pids.iter().filter(|pid| supervisor::is_alive(**pid)));
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "processes outlived the sandbox (marker {marker}): {left:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `NSpid:` line of `/proc/<pid>/status`: the pid in each PID namespace, outermost first.
fn namespaced_pids(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .map(|pids| pids.split_whitespace().filter_map(|pid| pid.parse().ok()).collect())
        .unwrap_or_default()
}

/// Maps the pids the sandboxed half printed (its PID namespace's) to host pids, finding the
/// processes by `marker`; fails unless every one is exactly one PID namespace below the host's.
fn await_host_pids(marker: &str, inner_pids: &[u32], deadline: Instant) -> std::collections::BTreeMap<u32, u32> {
    loop {
        let mut map = std::collections::BTreeMap::new();
        for host_pid in live_processes_with(marker) {
            let levels = namespaced_pids(host_pid);
            assert_eq!(
                levels.len(),
                2,
                "process {host_pid} must be in a PID namespace one level below the host's: NSpid {levels:?}"
            );
            map.insert(levels[1], host_pid);
        }
        if inner_pids.iter().all(|inner| map.contains_key(inner)) {
            return map;
        }
        assert!(
            Instant::now() < deadline,
            "pids {inner_pids:?} not found among processes with marker {marker}: {map:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A `sleep` duration unique to this test run, so its command line identifies our children.
fn unique_marker(salt: u32) -> String {
    format!("{}.{}{salt}", 4000 + salt, std::process::id())
}

fn leak_test(test: &str, clean_exit: bool, uid: Option<u32>) {
    let marker = unique_marker(u32::from(clean_exit) + 2 * uid.map_or(0, |_| 1));
    let (netns_before, links_before) = (host_netns(), host_links());
    let mut child = spawn_sandboxed_half(test, uid, &marker);
    let mut child_stdin = child.stdin.take();
    // Kept open until the end: a closed pipe would make the sandboxed half's println! fail.
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut lines = Vec::new();
    let mut pids = Vec::new();
    loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let line = line.trim_end().to_string();
        if let Some(list) = line.strip_prefix("PIDS ") {
            pids = list.split(' ').map(|pid| pid.parse::<u32>().unwrap()).collect();
        }
        let ready = line == "READY";
        lines.push(line);
        if ready {
            break;
        }
    }
    assert_eq!(pids.len(), 6, "sandboxed half printed {lines:?}");
    // The sandboxed half lives in its own PID namespace: the pids it printed are that namespace's.
    // Find the same processes from here, by marker, and check that each is nested exactly there.
    let host_pids = await_host_pids(&marker, &pids, Instant::now() + Duration::from_secs(5));
    let pids: Vec<u32> = pids.iter().map(|inner| host_pids[inner]).collect();
    // While it runs: the children are alive, and the sandbox's namespaces are not on the host.
    for pid in &pids {
        assert!(supervisor::is_alive(*pid), "child {pid} not running");
    }
    assert_eq!(live_processes_with(&marker).len(), 6);
    assert_host_untouched(&netns_before, &links_before);
    if clean_exit {
        drop(child_stdin.take());
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{rest}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(rest.contains("SHUTDOWN"), "{rest}");
    } else {
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success());
        drop(child_stdin.take());
    }
    await_gone(&pids, &marker, Instant::now() + Duration::from_secs(5));
    assert_host_untouched(&netns_before, &links_before);
}

#[test]
fn nothing_remains_after_the_sandboxed_process_exits() {
    if sandboxed_half().is_some() {
        return hold_children_inside_sandbox(&unique_marker_from_env(), true);
    }
    leak_test("nothing_remains_after_the_sandboxed_process_exits", true, None);
}

#[test]
fn nothing_remains_after_the_sandboxed_process_is_sigkilled() {
    if sandboxed_half().is_some() {
        return hold_children_inside_sandbox(&unique_marker_from_env(), false);
    }
    leak_test("nothing_remains_after_the_sandboxed_process_is_sigkilled", false, None);
}

#[test]
fn nothing_remains_after_a_rootless_sandboxed_process_is_sigkilled() {
    if sandboxed_half().is_some() {
        return hold_children_inside_sandbox(&unique_marker_from_env(), false);
    }
    let Some(uid) = rootless_uid() else {
        return;
    };
    leak_test(
        "nothing_remains_after_a_rootless_sandboxed_process_is_sigkilled",
        false,
        uid,
    );
}

/// The marker the outer half chose.
fn unique_marker_from_env() -> String {
    std::env::var(MARKER_ENV).unwrap()
}

#[test]
fn entering_the_sandbox_from_a_multi_threaded_process_is_refused() {
    let (park, parked) = std::sync::mpsc::channel::<()>();
    let extra_thread = std::thread::spawn(move || parked.recv());
    let error = sandbox::enter().unwrap_err();
    assert!(
        matches!(error, sandbox::SandboxError::NotSingleThreaded { threads } if threads >= 2),
        "{error:?}"
    );
    assert!(error.to_string().contains("before starting a tokio runtime"));
    drop(park);
    let _ = extra_thread.join();
}

#[test]
fn shutdown_terminates_then_kills_and_leaves_no_process() {
    let marker = unique_marker(7);
    let logs = std::env::temp_dir().join(format!("meshfed-supervisor-test-{marker}"));
    std::fs::create_dir_all(&logs).unwrap();
    let mut supervisor = Supervisor::new().unwrap();
    let mut polite = Command::new("sleep");
    polite.arg(&marker);
    supervisor
        .spawn("polite sleeper", polite, None, ChildOutput::LogDir(logs.clone()))
        .unwrap();
    // Ignores SIGTERM and keeps a grandchild in its process group.
    let mut stubborn = Command::new("sh");
    stubborn.args([
        "-c",
        &format!("trap '' TERM; echo started; sleep {marker} & wait; wait"),
    ]);
    let stubborn_id = supervisor
        .spawn("stubborn shell", stubborn, None, ChildOutput::LogDir(logs.clone()))
        .unwrap();
    // Wait until the grandchild runs (so the trap is set and the group has two members): the
    // marker is then in three command lines, the polite sleep's, the shell's and the grandchild's.
    let deadline = Instant::now() + Duration::from_secs(5);
    while live_processes_with(&marker).len() < 3 {
        assert!(Instant::now() < deadline, "children did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
    let stubborn_pid = supervisor.pid(stubborn_id);

    let report = supervisor.shutdown(Duration::from_millis(300)).unwrap();

    assert_eq!(report.terminated, vec!["polite sleeper".to_string()], "{report:?}");
    assert_eq!(report.killed, vec!["stubborn shell".to_string()]);
    assert!(!supervisor::is_alive(stubborn_pid));
    assert_eq!(live_processes_with(&marker), Vec::<u32>::new());
    std::fs::remove_dir_all(&logs).unwrap();
}

#[test]
fn a_child_that_exits_early_is_reported_with_its_log_tail() {
    let logs = std::env::temp_dir().join(format!("meshfed-supervisor-test-{}", unique_marker(8)));
    std::fs::create_dir_all(&logs).unwrap();
    let mut supervisor = Supervisor::new().unwrap();
    let mut failing = Command::new("sh");
    failing.args(["-c", "echo loading config; echo 'bad listener: port 15443' >&2; exit 1"]);
    let id = supervisor
        .spawn(
            "envoy for pod bar-0 in cluster2",
            failing,
            None,
            ChildOutput::LogDir(logs.clone()),
        )
        .unwrap();
    supervisor
        .await_exit(id, Instant::now() + Duration::from_secs(5))
        .unwrap();

    let message = supervisor.check_running().unwrap_err().to_string();

    assert!(
        message.starts_with("envoy for pod bar-0 in cluster2 (pid "),
        "{message}"
    );
    assert!(message.contains("exited with status 1"), "{message}");
    assert!(
        message.contains("loading config\nbad listener: port 15443"),
        "{message}"
    );
    let report = supervisor.shutdown(Duration::from_millis(100)).unwrap();
    assert_eq!(report.already_exited.len(), 1);
    std::fs::remove_dir_all(&logs).unwrap();
}

/// Set by the outer half of the signal test: the re-run binary checks signal chaining.
const SIGNAL_CHILD_ENV: &str = "MESHFED_TEST_SIGNAL_CHILD";

/// meshfed installs its flag-setting handler first thing in `main`; tokio's signal streams
/// (signal-hook-registry) install theirs later and must call the earlier one, or an interrupt
/// during a runtime would no longer stop `ip` batches and version checks. Runs in a fresh process,
/// since the interrupt flag is process-wide.
#[test]
fn a_signal_reaches_both_the_interrupt_flag_and_tokio_after_tokio_listens() {
    use meshfed::interrupt;
    if std::env::var_os(SIGNAL_CHILD_ENV).is_some() {
        interrupt::install().unwrap();
        assert!(!interrupt::is_interrupted());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut stream = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).unwrap();
            // SAFETY: raise(3) sends SIGINT to this process, which handles it.
            nix::sys::signal::raise(Signal::SIGINT).unwrap();
            tokio::time::timeout(Duration::from_secs(5), stream.recv())
                .await
                .expect("tokio saw the signal")
                .expect("stream open");
        });
        assert!(interrupt::is_interrupted(), "the chained handler set the flag");
        assert_eq!(interrupt::received_signal(), Some(Signal::SIGINT));
        println!("BOTH_SAW_SIGINT");
        return;
    }
    let output = Command::new(std::env::current_exe().unwrap())
        .arg("--exact")
        .arg(libtest_name(
            module_path!(),
            "a_signal_reaches_both_the_interrupt_flag_and_tokio_after_tokio_listens",
        ))
        .args(["--nocapture", "--test-threads=1"])
        .env(SIGNAL_CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("BOTH_SAW_SIGINT"),
        "{}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
