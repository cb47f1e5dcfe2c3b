//! Finding a test's own processes: each meshfed a test starts carries a unique
//! `MESHFED_TEST_MARKER=<test>-<pid>-<nanos>` in its environment, which every descendant inherits, so a
//! leftover check looks at that run's processes only, never at other tests' or other users'.
//! Include with `#[path = "support/marker.rs"] mod marker;`.

#![allow(dead_code)]

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
