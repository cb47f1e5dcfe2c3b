//! Memory of the `local` world counted as the kernel counts it: each process's proportional set
//! size (PSS, `/proc/<pid>/smaps_rollup`), which splits a page shared by N processes N ways, so the
//! Envoy binary's ~48 MiB of text mapped by 200 Envoys is counted once in their sum instead of
//! 200 times as summed RSS would; and the memory the machine can still give (`MemAvailable` of
//! `/proc/meminfo`, the kernel's estimate of what can be allocated without swapping).

use std::io;

/// The `Pss:` line of a `/proc/<pid>/smaps_rollup` text, in KiB (proc(5): "Pss: the process's
/// proportional share of this mapping"; the rollup sums it over every mapping).
pub fn parse_pss_kib(smaps_rollup: &str) -> Option<u64> {
    kib_field(smaps_rollup, "Pss:")
}

/// The `MemAvailable:` line of a `/proc/meminfo` text, in KiB (proc(5), since Linux 3.14).
pub fn parse_mem_available_kib(meminfo: &str) -> Option<u64> {
    kib_field(meminfo, "MemAvailable:")
}

/// `name   12345 kB` on a line of its own.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.trim();
        value.strip_suffix("kB")?.trim().parse().ok()
    })
}

/// PSS of process `pid` in KiB.
///
/// # Errors
///
/// When the process is gone or its `smaps_rollup` cannot be read or has no `Pss:` line.
pub fn pss_kib(pid: u32) -> io::Result<u64> {
    let path = format!("/proc/{pid}/smaps_rollup");
    let text = std::fs::read_to_string(&path)?;
    parse_pss_kib(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{path} has no Pss line")))
}

/// `MemAvailable` of this machine in KiB.
///
/// # Errors
///
/// When `/proc/meminfo` cannot be read or has no `MemAvailable:` line (kernels before 3.14).
pub fn mem_available_kib() -> io::Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo")?;
    parse_mem_available_kib(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "/proc/meminfo has no MemAvailable line"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines as Linux 6.x prints them (fs/proc/task_mmu.c `show_smaps_rollup`, fs/proc/meminfo.c).
    #[test]
    fn pss_and_mem_available_are_read_from_the_kernels_own_lines() {
        let rollup = "5587e5a5b000-7ffd1cbd1000 ---p 00000000 00:00 0                          [rollup]\n\
                      Rss:               63200 kB\n\
                      Pss:               22078 kB\n\
                      Pss_Dirty:         13760 kB\n\
                      Pss_Anon:          13760 kB\n";
        assert_eq!(parse_pss_kib(rollup), Some(22078), "Pss, not Pss_Dirty or Rss");
        let meminfo = "MemTotal:       24683664 kB\nMemFree:         1234567 kB\nMemAvailable:   20917432 kB\n";
        assert_eq!(parse_mem_available_kib(meminfo), Some(20_917_432));
        assert_eq!(parse_pss_kib("Rss: 5 kB\n"), None);
        assert_eq!(parse_mem_available_kib("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn this_process_has_a_pss_and_the_machine_some_memory() {
        let own = pss_kib(std::process::id()).unwrap();
        assert!(own > 0, "{own}");
        assert!(mem_available_kib().unwrap() > 0);
        assert!(pss_kib(u32::MAX).is_err(), "no such process");
    }
}
