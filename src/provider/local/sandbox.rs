//! Crash safety for the `local` provider: moves meshfed into private mount + network namespaces (and a
//! user namespace when not root) so everything it creates vanishes when its process exits.
//!
//! Call [`enter`] at start-up while the process is still single-threaded (before any tokio runtime
//! or other thread exists): the kernel refuses to move a multi-threaded process into a new mount or
//! user namespace. Afterwards `/` is `rprivate` and `/run` is a fresh tmpfs, so `/run/netns` (where
//! `ip netns` keeps its namespaces) and meshfed's work directory [`RUN_DIR`] are private to this
//! process and its children. When the last process inside exits, even by SIGKILL, the kernel drops
//! the namespaces, the bridges, the veths and the tmpfs: no `meshfed down` is needed for them.
//! Child processes must die with meshfed too; the supervisor sets `PR_SET_PDEATHSIG` for that.

use std::ffi::CString;
use std::fs;
use std::io;
use std::path::Path;

use thiserror::Error;

/// meshfed's work directory inside the sandbox (on the private tmpfs mounted over `/run`).
pub const RUN_DIR: &str = "/run/meshfed";

/// Where `ip netns` keeps named network namespaces (on the private tmpfs as well).
pub const NETNS_DIR: &str = "/run/netns";

/// How the sandbox was made, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SandboxMode {
    /// meshfed runs as root: new mount and network namespaces only.
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
}

/// Moves this process into its private namespaces and mounts the private `/run`.
///
/// Must be called while the process is single-threaded, i.e. first thing in `main`, before building
/// a tokio runtime:
///
/// ```no_run
/// let mode = meshfed::provider::local::sandbox::enter()?;
/// let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// As root this creates new mount and network namespaces. Without root (or as a root that lacks
/// CAP_SYS_ADMIN, e.g. in an unprivileged container) it also creates a user namespace mapping the
/// caller's uid and gid to 0 inside it. Either way, after it returns `/` is `rprivate`, `/run` is a
/// private tmpfs holding empty [`NETNS_DIR`] and [`RUN_DIR`], and loopback is up.
pub fn enter() -> Result<SandboxMode, SandboxError> {
    let threads = count_threads().map_err(SandboxError::CountThreads)?;
    if threads != 1 {
        return Err(SandboxError::NotSingleThreaded { threads });
    }
    // SAFETY: geteuid/getegid cannot fail and have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mode = if uid == 0 {
        match unshare(libc::CLONE_NEWNS | libc::CLONE_NEWNET) {
            Ok(()) => SandboxMode::Root,
            // root without CAP_SYS_ADMIN (unprivileged container): a user namespace may still work.
            Err(error) if error.raw_os_error() == Some(libc::EPERM) => {
                enter_user_namespace(uid, gid)?;
                SandboxMode::Rootless
            }
            Err(source) => {
                return Err(SandboxError::Unshare {
                    namespaces: "mount+network",
                    hint: "the kernel refused new namespaces".to_string(),
                    source,
                });
            }
        }
    } else {
        enter_user_namespace(uid, gid)?;
        SandboxMode::Rootless
    };
    mount_private_run()?;
    set_loopback_up().map_err(SandboxError::LoopbackUp)?;
    Ok(mode)
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

fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare only changes this process's namespaces; flags are plain constants.
    if unsafe { libc::unshare(flags) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn enter_user_namespace(uid: libc::uid_t, gid: libc::gid_t) -> Result<(), SandboxError> {
    unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS | libc::CLONE_NEWNET).map_err(|source| SandboxError::Unshare {
        namespaces: "user+mount+network",
        hint: user_namespace_hint(&source),
        source,
    })?;
    // An unprivileged process may only write a gid map after giving up setgroups(2).
    write_proc_self("setgroups", "deny")?;
    write_proc_self("uid_map", &format!("0 {uid} 1"))?;
    write_proc_self("gid_map", &format!("0 {gid} 1"))?;
    Ok(())
}

fn user_namespace_hint(error: &io::Error) -> String {
    let mut hint = String::from(
        "user namespaces look disabled or restricted; check `sysctl user.max_user_namespaces` \
         (must be > 0)",
    );
    for (sysctl, file, wanted) in [
        (
            "kernel.unprivileged_userns_clone",
            "/proc/sys/kernel/unprivileged_userns_clone",
            "1",
        ),
        (
            "kernel.apparmor_restrict_unprivileged_userns",
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "0",
        ),
    ] {
        if let Ok(value) = fs::read_to_string(file) {
            hint.push_str(&format!(", `sysctl {sysctl}` (is {}, must be {wanted})", value.trim()));
        }
    }
    if error.raw_os_error() == Some(libc::EPERM) {
        hint.push_str("; inside a container, a seccomp profile may also forbid unshare(2)");
    }
    if error.raw_os_error() == Some(libc::ENOSPC) {
        hint.push_str("; the user namespace limit is reached");
    }
    hint
}

fn write_proc_self(file: &'static str, content: &str) -> Result<(), SandboxError> {
    fs::write(Path::new("/proc/self").join(file), content).map_err(|source| SandboxError::WriteIdMap {
        file,
        content: content.to_string(),
        source,
    })
}

fn mount(source: &str, target: &str, fstype: Option<&str>, flags: libc::c_ulong, data: Option<&str>) -> io::Result<()> {
    let to_c = |text: &str| CString::new(text).map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error));
    let source = to_c(source)?;
    let target = to_c(target)?;
    let fstype = fstype.map(to_c).transpose()?;
    let data = data.map(to_c).transpose()?;
    // SAFETY: every pointer is a valid NUL-terminated string or null, alive for the call.
    let result = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |value| value.as_ptr()),
            flags,
            data.as_ref().map_or(std::ptr::null(), |value| value.as_ptr().cast()),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn mount_private_run() -> Result<(), SandboxError> {
    // Without this, mounts below would propagate back to the host's mount namespace.
    mount("none", "/", None, libc::MS_REC | libc::MS_PRIVATE, None).map_err(|source| SandboxError::Mount {
        what: "make / rprivate in the sandbox's mount namespace",
        source,
    })?;
    mount(
        "meshfed-run",
        "/run",
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755"),
    )
    .map_err(|source| SandboxError::Mount {
        what: "mount a private tmpfs on /run",
        source,
    })?;
    for path in [NETNS_DIR, RUN_DIR] {
        fs::create_dir(path).map_err(|source| SandboxError::CreateDir { path, source })?;
    }
    Ok(())
}

fn set_loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the descriptor is closed below on every path.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain old data; zeroed is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    let result = unsafe {
        if libc::ioctl(socket, libc::SIOCGIFFLAGS, &mut request) < 0 {
            -1
        } else {
            request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(socket, libc::SIOCSIFFLAGS, &request)
        }
    };
    let error = io::Error::last_os_error();
    // SAFETY: closing the descriptor we opened.
    unsafe { libc::close(socket) };
    if result < 0 { Err(error) } else { Ok(()) }
}
