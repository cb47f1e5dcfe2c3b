//! The sandbox's mounts: `/` made private (nothing propagates back to the host), a fresh `/proc` for
//! the PID namespace, and a private tmpfs on `/run`.

use std::fs;
use std::io;

use nix::errno::Errno;
use nix::mount::MsFlags;

use super::{NETNS_DIR, RUN_DIR, SandboxError, SandboxMode};

pub(super) fn mount_private_root_and_proc(mode: SandboxMode) -> Result<(), SandboxError> {
    // Without this, mounts below would propagate back to the host's mount namespace.
    mount("none", "/", None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None).map_err(|source| SandboxError::Mount {
        what: "make / rprivate in the sandbox's mount namespace",
        source,
    })?;
    mount(
        "proc",
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
    .map_err(|source| SandboxError::MountProc {
        hint: match (mode, source.raw_os_error().map(Errno::from_raw)) {
            (SandboxMode::Rootless, Some(Errno::EPERM)) => {
                "the kernel lets a user namespace mount /proc only where the \
                 existing /proc is fully visible; a container runtime that masks parts of /proc \
                 (e.g. /proc/kcore, /proc/sys) forbids it: run meshfed as root, or give the \
                 container an unmasked /proc (e.g. docker --security-opt systempaths=unconfined)"
                    .to_string()
            }
            _ => "the kernel refused the mount".to_string(),
        },
        source,
    })
}

fn mount(source: &str, target: &str, fstype: Option<&str>, flags: MsFlags, data: Option<&str>) -> io::Result<()> {
    Ok(nix::mount::mount(Some(source), target, fstype, flags, data)?)
}

pub(super) fn mount_private_run() -> Result<(), SandboxError> {
    // `/` is rprivate since contain_processes(), so this stays in meshfed's mount namespace.
    mount(
        "meshfed-run",
        "/run",
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
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
