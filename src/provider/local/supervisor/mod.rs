//! Owns every child process of the `local` provider (Envoys, workloads): starts them in a pod's
//! network namespace, makes them die with meshfed, stops them with a grace period, and checks that
//! nothing is left. It also tells which long-lived children are no longer running: exited, or
//! stopped (`T` in `/proc/PID/stat`, e.g. after SIGSTOP) — a stopped Envoy answers nothing and would
//! otherwise hang every wait on it.
//!
//! Each child gets, between fork and exec: `PR_SET_PDEATHSIG = SIGKILL` (so it dies if meshfed is
//! SIGKILLed), `setns(CLONE_NEWNET)` into its pod's namespace (the descriptor is opened before the
//! fork; only async-signal-safe calls run in the child) and `setpgid(0, 0)` (its own process group,
//! so grandchildren are stopped too). The kernel sends the death signal when the *thread* that
//! forked exits, not the process; so all forks happen on one thread the supervisor owns for its
//! whole life, never on a tokio blocking-pool thread that may be retired while the child runs.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use thiserror::Error;

use crate::interrupt;

mod log_excerpt;
mod proc_table;

pub use log_excerpt::log_excerpt;
use proc_table::live_group_members;
pub use proc_table::{ProcessState, is_alive, process_state};

/// Identifies a child of a [`Supervisor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChildId(usize);

/// Where a child's stdout and stderr go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildOutput {
    /// Both into `<dir>/<nnn>-<name>.log` (created, appended), readable after the child is gone.
    LogDir(PathBuf),
    /// Both piped; take them with [`Supervisor::take_stdout`] / [`Supervisor::take_stderr`] and
    /// keep reading, or the child blocks once the pipe is full.
    Piped,
}

/// A child that has exited, with the end of its log for the error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildExit {
    /// The name given to [`Supervisor::spawn`], e.g. "envoy for pod bar-0 in cluster2".
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// How it ended, e.g. "status 1" or "signal 9 (killed)".
    pub status: String,
    /// Whether it exited with status 0.
    pub success: bool,
    /// The lines of its log file that explain the exit: all of a short log; of a long one, its
    /// error lines (`[critical]`, `[error]`, `error`, `panicked`) and its last lines (empty when
    /// its output was piped).
    pub log_tail: String,
}

impl std::fmt::Display for ChildExit {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} (pid {}) exited with {}",
            self.name, self.pid, self.status
        )?;
        if self.log_tail.is_empty() {
            Ok(())
        } else {
            write!(formatter, "; its log says:\n{}", self.log_tail)
        }
    }
}

/// A child exited while it was expected to keep running.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct ChildExited(pub ChildExit);

/// A long-lived child that is not running as it should.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRunning {
    /// It exited.
    Exited(ChildExit),
    /// It (or a process of its group) is stopped: it runs no code until SIGCONT.
    Stopped {
        /// The child's name.
        name: String,
        /// The stopped process (the child or one of its group).
        pid: u32,
        /// Its state letter: `T` (stopped by a signal) or `t` (stopped by a tracer).
        state: char,
    },
}

impl std::fmt::Display for NotRunning {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotRunning::Exited(exit) => write!(formatter, "{exit}"),
            NotRunning::Stopped { name, pid, state } => write!(
                formatter,
                "{name} is stopped (pid {pid} is in state {state}: it runs nothing until SIGCONT)"
            ),
        }
    }
}

/// What [`Supervisor::shutdown`] had to do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Children that stopped on SIGTERM within the grace period.
    pub terminated: Vec<String>,
    /// Children that had to be SIGKILLed after the grace period.
    pub killed: Vec<String>,
    /// Children whose process group still had other live processes after the child itself was
    /// gone (they were SIGKILLed).
    pub stray_groups_killed: Vec<String>,
    /// Children that had already exited before the shutdown.
    pub already_exited: Vec<ChildExit>,
}

/// Why the supervisor could not do what was asked.
#[derive(Debug, Error)]
pub enum SupervisorError {
    /// The spawner thread could not be started.
    #[error("failed to start the supervisor's spawner thread")]
    StartSpawner(#[source] io::Error),
    /// The spawner thread is gone (it panicked).
    #[error("the supervisor's spawner thread is gone; cannot start {name}")]
    SpawnerGone {
        /// The child that could not be started.
        name: String,
    },
    /// The pod's network namespace could not be opened.
    #[error("failed to open network namespace {netns} for {name}")]
    OpenNetns {
        /// The child.
        name: String,
        /// The namespace path.
        netns: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The log file could not be created.
    #[error("failed to create log file {path} for {name}")]
    CreateLog {
        /// The child.
        name: String,
        /// The log file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// fork/exec (or the set-up between them) failed.
    #[error("failed to start {name} ({program})")]
    Spawn {
        /// The child.
        name: String,
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Waiting for a child failed.
    #[error("failed to wait for {name} (pid {pid})")]
    Wait {
        /// The child.
        name: String,
        /// Its pid.
        pid: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Processes were still alive after everything was killed.
    #[error("processes still alive after shutdown: {0:?} (name, pid)")]
    Leftover(Vec<(String, u32)>),
    /// meshfed was interrupted while waiting for a child.
    #[error("interrupted while waiting for {name}")]
    Interrupted {
        /// The child.
        name: String,
    },
    /// A child did not exit before the deadline.
    #[error("{name} (pid {pid}) was still running after {waited:?}")]
    StillRunning {
        /// The child.
        name: String,
        /// Its pid.
        pid: u32,
        /// How long it was waited for.
        waited: Duration,
    },
}

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

struct Supervised {
    name: String,
    pid: u32,
    child: Child,
    log_path: Option<PathBuf>,
    exit: Option<ChildExit>,
    /// Expected to exit by itself (a client, a command): not a death when it does.
    transient: bool,
}

/// Owns every child process; see the module docs.
pub struct Supervisor {
    children: Vec<Supervised>,
    requests: Option<mpsc::Sender<SpawnRequest>>,
    spawner: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Supervisor")
            .field(
                "children",
                &self
                    .children
                    .iter()
                    .map(|child| (&child.name, child.pid))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// How often waits poll.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

impl Supervisor {
    /// A supervisor with no children; starts its spawner thread.
    pub fn new() -> Result<Self, SupervisorError> {
        let (requests, receiver) = mpsc::channel::<SpawnRequest>();
        let spawner = std::thread::Builder::new()
            .name("meshfed-spawner".to_string())
            .spawn(move || {
                for SpawnRequest { mut command, reply } in receiver {
                    let _ = reply.send(command.spawn());
                }
            })
            .map_err(SupervisorError::StartSpawner)?;
        Ok(Self {
            children: Vec::new(),
            requests: Some(requests),
            spawner: Some(spawner),
        })
    }

    /// Starts `command` as a child named `name` (used in messages, e.g. "envoy for pod bar-0 in
    /// cluster2"), inside the network namespace at `netns` (or meshfed's own when `None`).
    ///
    /// The command's own stdout/stderr settings are replaced according to `output`; stdin is
    /// `/dev/null`.
    pub fn spawn(
        &mut self,
        name: &str,
        mut command: Command,
        netns: Option<&Path>,
        output: ChildOutput,
    ) -> Result<ChildId, SupervisorError> {
        let id = ChildId(self.children.len());
        let program = command.get_program().to_string_lossy().into_owned();
        // Opened before the fork: the child may only make async-signal-safe calls.
        let netns_file = netns
            .map(|path| {
                File::open(path).map_err(|source| SupervisorError::OpenNetns {
                    name: name.to_string(),
                    netns: path.to_path_buf(),
                    source,
                })
            })
            .transpose()?;
        let netns_fd = netns_file.as_ref().map(|file| file.as_raw_fd());
        let log_path = match &output {
            ChildOutput::LogDir(dir) => {
                let path = dir.join(format!("{:03}-{}.log", id.0, file_name_for(name)));
                let create_error = |source| SupervisorError::CreateLog {
                    name: name.to_string(),
                    path: path.clone(),
                    source,
                };
                let log = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(create_error)?;
                let log_for_stderr = log.try_clone().map_err(create_error)?;
                command.stdout(log).stderr(log_for_stderr);
                Some(path)
            }
            ChildOutput::Piped => {
                command.stdout(Stdio::piped()).stderr(Stdio::piped());
                None
            }
        };
        command.stdin(Stdio::null());
        crate::process::die_with_parent(&mut command, Signal::SIGKILL);
        #[allow(
            unsafe_code,
            reason = "pre_exec: the pod's network namespace and a process group between fork and exec"
        )]
        // SAFETY: the closure only makes async-signal-safe system calls (setns, setpgid) and
        // builds io::Errors from errno, which does not allocate.
        unsafe {
            command.pre_exec(move || {
                if let Some(fd) = netns_fd {
                    // The namespace file outlives the spawn (`netns_file` is held until it returns).
                    let fd = BorrowedFd::borrow_raw(fd);
                    nix::sched::setns(fd, CloneFlags::CLONE_NEWNET)?;
                }
                nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
                Ok(())
            });
        }
        let spawner_gone = || SupervisorError::SpawnerGone { name: name.to_string() };
        let (reply, replies) = mpsc::channel();
        self.requests
            .as_ref()
            .ok_or_else(spawner_gone)?
            .send(SpawnRequest { command, reply })
            .map_err(|_| spawner_gone())?;
        let child = replies
            .recv()
            .map_err(|_| spawner_gone())?
            .map_err(|source| SupervisorError::Spawn {
                name: name.to_string(),
                program,
                source,
            })?;
        drop(netns_file);
        tracing::debug!(pid = child.id(), "started {name}");
        self.children.push(Supervised {
            name: name.to_string(),
            pid: child.id(),
            child,
            log_path,
            exit: None,
            transient: false,
        });
        Ok(id)
    }

    /// The child's process id (also its process group id).
    pub fn pid(&self, id: ChildId) -> u32 {
        self.children[id.0].pid
    }

    /// Process ids of every child started (exited ones included).
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(|child| child.pid).collect()
    }

    /// The child's name.
    pub fn name(&self, id: ChildId) -> &str {
        &self.children[id.0].name
    }

    /// The child's log file, when its output goes to one.
    pub fn log_path(&self, id: ChildId) -> Option<&Path> {
        self.children[id.0].log_path.as_deref()
    }

    /// Takes the child's piped stdout (once).
    pub fn take_stdout(&mut self, id: ChildId) -> Option<ChildStdout> {
        self.children[id.0].child.stdout.take()
    }

    /// Takes the child's piped stderr (once).
    pub fn take_stderr(&mut self, id: ChildId) -> Option<ChildStderr> {
        self.children[id.0].child.stderr.take()
    }

    /// Whether the child has exited, and how (reaps it if so).
    pub fn try_wait(&mut self, id: ChildId) -> Result<Option<ChildExit>, SupervisorError> {
        poll_exit(&mut self.children[id.0])
    }

    /// Waits until the child exits or `deadline` passes; an interrupt (SIGINT, SIGTERM, SIGHUP)
    /// ends the wait at once with [`SupervisorError::Interrupted`].
    pub fn await_exit(&mut self, id: ChildId, deadline: Instant) -> Result<ChildExit, SupervisorError> {
        self.await_exit_until(id, deadline, true)
    }

    /// [`Supervisor::await_exit`]; `interruptible: false` for a child being stopped, whose
    /// bounded grace must run out also after an interrupt.
    fn await_exit_until(
        &mut self,
        id: ChildId,
        deadline: Instant,
        interruptible: bool,
    ) -> Result<ChildExit, SupervisorError> {
        let started = Instant::now();
        loop {
            if let Some(exit) = self.try_wait(id)? {
                return Ok(exit);
            }
            if interruptible && interrupt::check().is_err() {
                return Err(SupervisorError::Interrupted {
                    name: self.children[id.0].name.clone(),
                });
            }
            if Instant::now() >= deadline {
                let child = &self.children[id.0];
                return Err(SupervisorError::StillRunning {
                    name: child.name.clone(),
                    pid: child.pid,
                    waited: started.elapsed(),
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Marks the child as one that exits by itself (a client, a command): its exit is not a death
    /// for [`Supervisor::check_running`] and [`Supervisor::not_running`].
    pub fn set_transient(&mut self, id: ChildId) {
        self.children[id.0].transient = true;
    }

    /// The newest long-lived child named `name` that has not exited (e.g. the Envoy of a pod after
    /// restarts), if any.
    pub fn running_named(&mut self, name: &str) -> Option<ChildId> {
        let index = self
            .children
            .iter_mut()
            .enumerate()
            .rev()
            .filter(|(_, child)| !child.transient && child.name == name)
            .find_map(|(index, child)| matches!(poll_exit(child), Ok(None)).then_some(index))?;
        Some(ChildId(index))
    }

    /// Ends the child on purpose (a fault meshfed injects, a restart): marks it transient first,
    /// so neither [`Supervisor::check_running`] nor [`Supervisor::not_running`] ever calls its end
    /// a death, then sends `signal` to its process group (SIGKILL after `grace` if it is still
    /// there) and reaps it. Returns how it ended.
    pub fn end_on_purpose(
        &mut self,
        id: ChildId,
        signal: Signal,
        grace: Duration,
    ) -> Result<ChildExit, SupervisorError> {
        self.children[id.0].transient = true;
        let pid = self.children[id.0].pid;
        if poll_exit(&mut self.children[id.0])?.is_none() {
            signal_group(pid, signal);
            signal_group(pid, Signal::SIGCONT);
        }
        let exit = match self.await_exit_until(id, Instant::now() + grace, false) {
            Ok(exit) => exit,
            Err(SupervisorError::StillRunning { .. }) => {
                signal_group(pid, Signal::SIGKILL);
                self.await_exit_until(id, Instant::now() + grace, false)?
            }
            Err(other) => return Err(other),
        };
        // A grandchild that ignored the signal must not outlive its container either.
        if !live_group_members(pid).is_empty() {
            signal_group(pid, Signal::SIGKILL);
        }
        Ok(exit)
    }

    /// Long-lived children that are not running: exited, or stopped (the child or any process of
    /// its group in state `T`/`t`), in spawn order. Reads `/proc` once.
    pub fn not_running(&mut self) -> Vec<NotRunning> {
        let mut stopped_by_group = std::collections::HashMap::new();
        if let Ok(entries) = fs::read_dir("/proc") {
            for process in entries
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(process_state)
                .filter(|process| matches!(process.state, 'T' | 't'))
            {
                stopped_by_group.entry(process.pgrp).or_insert(process);
            }
        }
        let mut found = Vec::new();
        for child in self.children.iter_mut().filter(|child| !child.transient) {
            match poll_exit(child) {
                Ok(Some(exit)) => found.push(NotRunning::Exited(exit)),
                Ok(None) => {
                    if let Some(process) = stopped_by_group.get(&child.pid) {
                        found.push(NotRunning::Stopped {
                            name: child.name.clone(),
                            pid: process.pid,
                            state: process.state,
                        });
                    }
                }
                // Cannot tell: it is not known to have exited.
                Err(_) => {}
            }
        }
        found
    }

    /// Fails with the first child that has exited, naming it and quoting its log: use it while
    /// waiting for readiness so an Envoy that died on bad config is reported as such, not as a
    /// timeout.
    pub fn check_running(&mut self) -> Result<(), ChildExited> {
        for child in self.children.iter_mut().filter(|child| !child.transient) {
            match poll_exit(child) {
                Ok(Some(exit)) => return Err(ChildExited(exit)),
                Ok(None) => {}
                // Cannot tell: it is not known to have exited.
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Stops every child: SIGTERM to each process group, up to `grace` for them to exit, then
    /// SIGKILL to what is left; reaps them and checks that no live process remains in their
    /// groups.
    pub fn shutdown(&mut self, grace: Duration) -> Result<ShutdownReport, SupervisorError> {
        let mut report = ShutdownReport::default();
        let mut running = Vec::new();
        for (index, child) in self.children.iter_mut().enumerate() {
            if poll_exit(child)?.is_none() {
                signal_group(child.pid, Signal::SIGTERM);
                // A stopped process handles SIGTERM only once continued.
                signal_group(child.pid, Signal::SIGCONT);
                running.push(index);
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            let mut all_exited = true;
            for &index in &running {
                if poll_exit(&mut self.children[index])?.is_none() {
                    all_exited = false;
                }
            }
            if all_exited || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        for (index, child) in self.children.iter_mut().enumerate() {
            if !running.contains(&index) {
                if let Some(exit) = &child.exit {
                    report.already_exited.push(exit.clone());
                }
                continue;
            }
            if child.exit.is_some() {
                report.terminated.push(child.name.clone());
                continue;
            }
            signal_group(child.pid, Signal::SIGKILL);
            report.killed.push(child.name.clone());
            let status = child.child.wait().map_err(|source| SupervisorError::Wait {
                name: child.name.clone(),
                pid: child.pid,
                source,
            })?;
            child.exit = Some(mk_exit(child, status));
        }
        // A child's own process group may still hold grandchildren that ignored SIGTERM.
        let mut stray = Vec::new();
        for child in &self.children {
            if !live_group_members(child.pid).is_empty() {
                signal_group(child.pid, Signal::SIGKILL);
                report.stray_groups_killed.push(child.name.clone());
                stray.push(child);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left: Vec<(String, u32)> = stray
                .iter()
                .flat_map(|child| {
                    live_group_members(child.pid)
                        .into_iter()
                        .map(|pid| (child.name.clone(), pid))
                })
                .collect();
            if left.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(SupervisorError::Leftover(left));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        Ok(report)
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for child in &mut self.children {
            if child.exit.is_none() {
                signal_group(child.pid, Signal::SIGKILL);
                let _ = child.child.wait();
            }
        }
        // Closing the channel ends the spawner thread.
        self.requests = None;
        if let Some(spawner) = self.spawner.take() {
            let _ = spawner.join();
        }
    }
}

fn poll_exit(child: &mut Supervised) -> Result<Option<ChildExit>, SupervisorError> {
    if child.exit.is_none() {
        let status = child.child.try_wait().map_err(|source| SupervisorError::Wait {
            name: child.name.clone(),
            pid: child.pid,
            source,
        })?;
        if let Some(status) = status {
            child.exit = Some(mk_exit(child, status));
        }
    }
    Ok(child.exit.clone())
}

fn mk_exit(child: &Supervised, status: ExitStatus) -> ChildExit {
    let description = match (status.code(), status.signal()) {
        (Some(code), _) => format!("status {code}"),
        (None, Some(signal)) => format!("signal {signal}{}", signal_name(signal)),
        (None, None) => status.to_string(),
    };
    ChildExit {
        name: child.name.clone(),
        pid: child.pid,
        status: description,
        success: status.success(),
        log_tail: child.log_path.as_deref().map(log_excerpt).unwrap_or_default(),
    }
}

/// ` (SIGKILL)` for signal 9, and so on; empty for a number that names no signal.
fn signal_name(signal: i32) -> String {
    Signal::try_from(signal)
        .map(|signal| format!(" ({})", signal.as_str()))
        .unwrap_or_default()
}

fn signal_group(pgid: u32, signal: Signal) {
    if let Ok(pgid) = i32::try_from(pgid)
        && pgid > 0
    {
        // ESRCH (the group is gone) is fine.
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

fn file_name_for(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_child_ended_on_purpose_is_no_death_and_its_successor_is_watched() {
        use super::{ChildOutput, NotRunning, Pid, Signal, Supervisor};
        use std::process::Command;
        use std::time::Duration;

        let mut supervisor = Supervisor::new().unwrap();
        let sleeper = || {
            let mut command = Command::new("sleep");
            command.arg("30");
            command
        };
        let first = supervisor
            .spawn("envoy of gateway g in c2", sleeper(), None, ChildOutput::Piped)
            .unwrap();
        assert_eq!(supervisor.running_named("envoy of gateway g in c2"), Some(first));
        let exit = supervisor
            .end_on_purpose(first, Signal::SIGKILL, Duration::from_secs(2))
            .unwrap();
        assert!(exit.status.contains("SIGKILL"), "{exit}");
        assert!(supervisor.not_running().is_empty(), "an on-purpose end is no death");
        assert!(supervisor.check_running().is_ok());
        assert_eq!(supervisor.running_named("envoy of gateway g in c2"), None);

        let second = supervisor
            .spawn("envoy of gateway g in c2", sleeper(), None, ChildOutput::Piped)
            .unwrap();
        assert_eq!(supervisor.running_named("envoy of gateway g in c2"), Some(second));
        // The restarted child is watched again: killing it behind the supervisor's back is a death.
        // A child this test started.
        nix::sys::signal::kill(Pid::from_raw(supervisor.pid(second) as i32), Signal::SIGKILL).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let down = loop {
            let down = supervisor.not_running();
            if !down.is_empty() || std::time::Instant::now() >= deadline {
                break down;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(
            matches!(&down[..], [NotRunning::Exited(exit)] if exit.pid == supervisor.pid(second)),
            "{down:?}"
        );
        supervisor.shutdown(Duration::from_secs(1)).unwrap();
    }
}
