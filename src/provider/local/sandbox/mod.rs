//! Crash safety for the `local` provider: moves meshfed into a private PID namespace whose init is
//! meshfed's own, private mount and network namespaces (and a user namespace when not root), so
//! that every process it starts, at any depth, and everything it creates vanish with it, even on
//! SIGKILL.
//!
//! [`contain_processes`] (first thing in `meshfed run` and `meshfed setup`) forks twice:
//!
//! ```text
//! meshfed (outside)            waits; passes SIGINT/SIGTERM on; exits with the worker's status
//!  └─ init, PID 1 inside       PR_SET_PDEATHSIG=SIGKILL; reaps orphans; passes signals on
//!      └─ worker, PID 2        returns from contain_processes() and does meshfed's work
//! ```
//!
//! The kernel SIGKILLs every process of a PID namespace when its PID 1 exits, and PID 1 here dies
//! with the outer meshfed (death signal) and exits with the worker. So a wrapper script's Envoy,
//! pip's subprocesses or a stray grandchild cannot outlive meshfed; and with the last process
//! gone, the mount and network namespaces (with `/run/netns`, the bridges, the veths and the
//! private tmpfs holding workload keys) go too. The worker sees a fresh `/proc` for its namespace,
//! so the pids it gets from `fork` match `/proc/<pid>`. Orphaned grandchildren become zombies of
//! init, which reaps them, so they never pile up and never confuse the supervisor (which only
//! waits for its own children).
//!
//! [`isolate_network`] (after Envoy is found or installed: pip needs the host's network) then
//! moves the worker into a new network namespace and mounts a private tmpfs on `/run`, so
//! `/run/netns` (where `ip netns` keeps namespaces) and [`RUN_DIR`] are private. [`enter`] does
//! both, for tests.
//!
//! Both must be called while the process is single-threaded (before any tokio runtime or other
//! thread exists): the kernel refuses to move a multi-threaded process into new mount or user
//! namespaces, and a network namespace is per thread.

use std::fs;
use std::io;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use thiserror::Error;

use crate::interrupt;

mod fork;
mod loopback;
mod mounts;
mod namespaces;

use fork::{ParentWatch, die_with_parent, spawn_copy};
use loopback::set_loopback_up;
use mounts::{mount_private_root_and_proc, mount_private_run};
use namespaces::{enter_user_namespace, unshare};

/// meshfed's work directory inside the sandbox (on the private tmpfs mounted over `/run`).
pub const RUN_DIR: &str = "/run/meshfed";

/// Where `ip netns` keeps named network namespaces (on the private tmpfs as well).
pub const NETNS_DIR: &str = "/run/netns";

/// How the sandbox was made, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// meshfed runs as root: new PID, mount and network namespaces only.
    Root,
    /// meshfed runs unprivileged: a user namespace maps the caller's uid/gid to root inside it.
    Rootless,
}

impl std::fmt::Display for SandboxMode {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(match self {
            SandboxMode::Root => "root",
            SandboxMode::Rootless => "rootless",
        })
    }
}

/// Why meshfed could not enter its sandbox.
#[derive(Debug, Error)]
pub enum SandboxError {
    /// The kernel only moves single-threaded processes into new mount/user namespaces.
    #[error(
        "cannot enter the sandbox: the process already has {threads} threads; call sandbox::enter() \
         at start-up, before starting a tokio runtime or any other thread"
    )]
    NotSingleThreaded {
        /// Threads counted in `/proc/self/status`.
        threads: usize,
    },
    /// `/proc/self/status` could not be read or had no `Threads:` line.
    #[error("cannot count this process's threads from /proc/self/status")]
    CountThreads(#[source] io::Error),
    /// `unshare(2)` failed.
    #[error("failed to create private {namespaces} namespaces (unshare): {hint}")]
    Unshare {
        /// The namespaces asked for, e.g. "user+mount+network".
        namespaces: &'static str,
        /// What to check or change.
        hint: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Writing the user namespace's id maps failed.
    #[error("failed to write {file} for the user namespace (wrote {content:?})")]
    WriteIdMap {
        /// The file under `/proc/self`.
        file: &'static str,
        /// What was written.
        content: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A mount (making `/` private, or the tmpfs on `/run`) failed.
    #[error("failed to {what}")]
    Mount {
        /// What the mount was for.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Creating a directory on the private `/run` failed.
    #[error("failed to create {path}")]
    CreateDir {
        /// The directory.
        path: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Bringing up the sandbox's own loopback interface failed.
    #[error("failed to bring up loopback in the sandbox's network namespace")]
    LoopbackUp(#[source] io::Error),
    /// A fresh `/proc` for the PID namespace could not be mounted.
    #[error("failed to mount a fresh /proc for meshfed's PID namespace: {hint}")]
    MountProc {
        /// What to check or change.
        hint: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Forking the namespace's init or worker failed, or setting up the signals around it.
    #[error("failed to {what} for the sandbox")]
    Process {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// [`isolate_network`] was called before [`contain_processes`]: its mounts would land in the
    /// host's mount namespace.
    #[error("isolate_network() needs contain_processes() first (a private mount namespace)")]
    NotContained,
}

/// Set in the worker once [`contain_processes`] succeeded.
static CONTAINED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// The mode [`contain_processes`] entered.
static CONTAINED_MODE: std::sync::OnceLock<SandboxMode> = std::sync::OnceLock::new();

/// Both steps of the sandbox: [`contain_processes`], then [`isolate_network`].
///
/// Must be called while the process is single-threaded, i.e. first thing in `main` (or from an
/// `.init_array` constructor), before building a tokio runtime:
///
/// ```no_run
/// let mode = meshfed::provider::local::sandbox::enter()?;
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Returns only in the worker (see the module doc); the outer process exits with its status.
pub fn enter() -> Result<SandboxMode, SandboxError> {
    let mode = contain_processes()?;
    isolate_network()?;
    Ok(mode)
}

/// Moves everything this process does from now on into a private PID namespace (plus a private
/// mount namespace, and a user namespace when not root) whose PID 1 is a copy of this process.
///
/// Returns `Ok` only in the worker, PID 2 of the new namespace; the calling process waits for it
/// and exits with its exit status (128 + signal if it was killed), passing SIGINT and SIGTERM on
/// to it. If the worker cannot be set up, the error is returned in PID 1 instead, which then is
/// the process that reports it and exits. Calling it again in the worker returns the same mode.
///
/// As root it creates PID and mount namespaces. Without root (or as a root that lacks
/// CAP_SYS_ADMIN, e.g. in an unprivileged container) it also creates a user namespace mapping the
/// caller's uid and gid to 0 inside it.
pub fn contain_processes() -> Result<SandboxMode, SandboxError> {
    if let Some(mode) = CONTAINED_MODE.get() {
        return Ok(*mode);
    }
    ensure_single_threaded()?;
    let (uid, gid) = (nix::unistd::geteuid(), nix::unistd::getegid());
    let mode = if uid.is_root() {
        match unshare(CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS) {
            Ok(()) => SandboxMode::Root,
            // root without CAP_SYS_ADMIN (unprivileged container): a user namespace may still work.
            Err(error) if error.raw_os_error().map(Errno::from_raw) == Some(Errno::EPERM) => {
                enter_user_namespace(uid, gid)?;
                SandboxMode::Rootless
            }
            Err(source) => {
                return Err(SandboxError::Unshare {
                    namespaces: "pid+mount",
                    hint: "the kernel refused new namespaces".to_string(),
                    source,
                });
            }
        }
    } else {
        enter_user_namespace(uid, gid)?;
        SandboxMode::Rootless
    };
    let process_error = |what| move |source| SandboxError::Process { what, source };
    let saved = interrupt::install_forwarding().map_err(process_error("install signal handlers"))?;
    // The first child is PID 1 of the new PID namespace.
    let parent_alive = spawn_copy(&saved).map_err(process_error("fork the namespace's init"))?;
    become_init_or_worker(mode, saved, parent_alive)
}

/// In PID 1: sets up the mounts, forks the worker and reaps until it exits. In the worker: returns.
fn become_init_or_worker(
    mode: SandboxMode,
    saved: interrupt::SavedDispositions,
    parent_alive: ParentWatch,
) -> Result<SandboxMode, SandboxError> {
    // PID 1 dies with the outer meshfed; the kernel then kills everything in the namespace.
    let setup = die_with_parent(parent_alive)
        .map_err(|source| SandboxError::Process {
            what: "set the death signal of the namespace's init",
            source,
        })
        .and_then(|()| mount_private_root_and_proc(mode));
    if let Err(error) = setup {
        // This process (PID 1) reports the error as meshfed would.
        let _ = interrupt::restore(&saved);
        return Err(error);
    }
    let process_error = |what| move |source| SandboxError::Process { what, source };
    let parent_alive = spawn_copy(&saved).map_err(process_error("fork the sandbox's worker"))?;
    // The worker: meshfed's own signal handling again, and death with PID 1.
    interrupt::restore(&saved).map_err(process_error("restore signal handlers"))?;
    die_with_parent(parent_alive).map_err(process_error("set the death signal of the sandbox's worker"))?;
    let _ = CONTAINED_MODE.set(mode);
    CONTAINED.store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(mode)
}

/// Moves the (contained) worker into a new network namespace, mounts the private `/run` with
/// empty [`NETNS_DIR`] and [`RUN_DIR`], and brings loopback up.
pub fn isolate_network() -> Result<(), SandboxError> {
    if !CONTAINED.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(SandboxError::NotContained);
    }
    ensure_single_threaded()?;
    unshare(CloneFlags::CLONE_NEWNET).map_err(|source| SandboxError::Unshare {
        namespaces: "network",
        hint: "the kernel refused a new network namespace".to_string(),
        source,
    })?;
    mount_private_run()?;
    set_loopback_up().map_err(SandboxError::LoopbackUp)
}

fn ensure_single_threaded() -> Result<(), SandboxError> {
    let threads = count_threads().map_err(SandboxError::CountThreads)?;
    if threads == 1 {
        Ok(())
    } else {
        Err(SandboxError::NotSingleThreaded { threads })
    }
}

/// Number of threads of this process, from the `Threads:` line of `/proc/self/status`.
pub fn count_threads() -> io::Result<usize> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|count| count.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Threads: line"))
}
