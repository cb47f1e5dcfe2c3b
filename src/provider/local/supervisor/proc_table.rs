//! Processes as `/proc` shows them: state letter (zombie, stopped) and process group, for the
//! liveness checks and for finding grandchildren left in a child's group.

use std::fs;

/// A process seen in `/proc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessState {
    /// Its pid.
    pub pid: u32,
    /// Its state letter (`R`, `S`, `D`, `Z` for zombie, …).
    pub state: char,
    /// Its process group.
    pub pgrp: u32,
}

/// Reads `/proc/<pid>/stat`; `None` when there is no such process.
///
/// Use it rather than `kill(pid, 0)`, which also succeeds for a zombie.
pub fn process_state(pid: u32) -> Option<ProcessState> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields resume after the last ')'.
    let mut fields = stat.get(stat.rfind(')')? + 1..)?.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let _parent = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(ProcessState { pid, state, pgrp })
}

/// Whether `pid` names a process that is alive (exists and is not a zombie).
pub fn is_alive(pid: u32) -> bool {
    process_state(pid).is_some_and(|process| process.state != 'Z')
}

/// Pids of live (non-zombie) processes in process group `pgrp`.
pub(super) fn live_group_members(pgrp: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(process_state)
        .filter(|process| process.pgrp == pgrp && process.state != 'Z')
        .map(|process| process.pid)
        .collect()
}
