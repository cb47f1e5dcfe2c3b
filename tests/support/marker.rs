//! Finding a test's own processes: each meshfed a test starts carries a unique
//! `MESHFED_TEST_MARKER=<test>-<pid>-<nanos>` in its environment, which every descendant inherits, so a
//! leftover check looks at that run's processes only, never at other tests' or other users'.

/// The environment variable that carries the marker.
pub const MARKER_ENV: &str = "MESHFED_TEST_MARKER";

/// `<test>-<pid>-<nanos>`: unique to one meshfed started by one test run.
pub fn unique_marker(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}

/// PIDs of live (not zombie) processes whose environment carries `MESHFED_TEST_MARKER=<marker>`.
pub fn processes_with_marker(marker: &str) -> Vec<u32> {
    let needle = format!("{MARKER_ENV}={marker}");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let alive = std::fs::read_to_string(entry.path().join("stat"))
            .map(|stat| !stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            .unwrap_or(false);
        if alive && environ.split(|byte| *byte == 0).any(|var| var == needle.as_bytes()) {
            pids.push(pid);
        }
    }
    pids
}

/// Nothing of one run is left: none of its processes (by marker; polled for up to 5 s), no
/// temporary entry named after its meshfed's pid. Other runs on the machine (parallel tests, other
/// checkouts) are not looked at; meshfed's namespaces live in its private sandbox and go with its
/// processes.
pub fn assert_own_run_left_nothing(marker: &str, meshfed_pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !processes_with_marker(marker).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        processes_with_marker(marker),
        Vec::<u32>::new(),
        "{marker}: processes remain"
    );
    let suffix = format!("-{meshfed_pid}");
    let temporary: Vec<String> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("meshfed") && (name.ends_with(&suffix) || name.contains(&format!("{suffix}-"))))
        .collect();
    assert_eq!(
        temporary,
        Vec::<String>::new(),
        "{marker}: temporary entries of meshfed {meshfed_pid} remain"
    );
}
