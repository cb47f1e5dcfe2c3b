//! meshfed makes its system calls through nix's checked wrappers (typed flags, `Result`s with
//! `Errno`, owned descriptors), not through raw `libc` and `unsafe`. The few `libc` names left are
//! those nix has no wrapper for, each listed here with why; this test keeps the list honest.

use std::path::Path;

use crate::support::rust_sources;
use rust_sources::{rust_files, starts_a_path};

/// `(file, libc name, why nix does not serve)`.
const ALLOWED: [(&str, &str, &str); 10] = [
    ("src/provider/local/sandbox/fork.rs", "_exit", "nix has no _exit(2)"),
    (
        "src/provider/local/sandbox/loopback.rs",
        "SIOCGIFFLAGS",
        "the request nix's ioctl macro wraps",
    ),
    (
        "src/provider/local/sandbox/loopback.rs",
        "SIOCSIFFLAGS",
        "the request nix's ioctl macro wraps",
    ),
    (
        "src/provider/local/sandbox/loopback.rs",
        "ifreq",
        "the ioctl's argument type",
    ),
    (
        "src/provider/local/sandbox/loopback.rs",
        "IFF_UP",
        "the interface flag set through the ioctl",
    ),
    ("src/provider/local/sandbox/loopback.rs", "c_char", "ifreq's name field"),
    (
        "src/provider/local/sandbox/loopback.rs",
        "c_short",
        "ifreq's flags field",
    ),
    ("src/process.rs", "syscall", "nix has no pidfd_open(2)"),
    ("src/process.rs", "SYS_pidfd_open", "nix has no pidfd_open(2)"),
    ("src/process.rs", "c_int", "the descriptor pidfd_open returns"),
];

/// Every `libc::NAME` in `source` that is not in a comment.
fn libc_names(source: &str) -> Vec<String> {
    source
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .flat_map(|line| {
            line.match_indices("libc::").filter_map(move |(at, _)| {
                let name: String = line[at + "libc::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                starts_a_path(line, at).then_some(name)
            })
        })
        .collect()
}

#[test]
fn the_check_finds_a_libc_call_where_there_is_one() {
    assert_eq!(
        libc_names("    unsafe { libc::kill(pid, libc::SIGTERM) };"),
        ["kill", "SIGTERM"]
    );
    assert!(libc_names("// libc::kill in a comment").is_empty());
    assert!(libc_names("let x = my_libc::kill;").is_empty());
}

#[test]
fn system_calls_go_through_nix_except_where_nix_has_no_wrapper() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = rust_files(&root.join("src"));
    assert!(!files.is_empty(), "meshfed's sources were not found");
    let mut unexpected = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        let source = std::fs::read_to_string(file).unwrap();
        for name in libc_names(&source) {
            match ALLOWED
                .iter()
                .find(|(allowed_file, allowed_name, _)| *allowed_file == relative && *allowed_name == name)
            {
                Some(allowed) => {
                    used.insert(*allowed);
                }
                None => unexpected.push(format!("{relative}: libc::{name}")),
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "raw libc where nix has a wrapper (use nix, or add the name to ALLOWED with why nix does \
         not serve):\n{}",
        unexpected.join("\n")
    );
    let stale: Vec<_> = ALLOWED.iter().filter(|allowed| !used.contains(*allowed)).collect();
    assert!(stale.is_empty(), "ALLOWED lists libc names no longer used: {stale:?}");
}
