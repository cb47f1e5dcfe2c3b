//! Entering new namespaces: `unshare(2)`, and for an unprivileged caller a user namespace whose id
//! maps make it root inside, with hints when the kernel or a container forbids it.

use std::fs;
use std::io;
use std::path::Path;

use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};

use super::SandboxError;

pub(super) fn unshare(flags: CloneFlags) -> io::Result<()> {
    Ok(nix::sched::unshare(flags)?)
}

pub(super) fn enter_user_namespace(uid: Uid, gid: Gid) -> Result<(), SandboxError> {
    unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS).map_err(|source| {
        SandboxError::Unshare {
            namespaces: "user+pid+mount",
            hint: user_namespace_hint(&source),
            source,
        }
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
    let errno = error.raw_os_error().map(Errno::from_raw);
    if errno == Some(Errno::EPERM) {
        hint.push_str("; inside a container, a seccomp profile may also forbid unshare(2)");
    }
    if errno == Some(Errno::ENOSPC) {
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
