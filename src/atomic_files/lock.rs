//! Advisory locks (`flock(2)`) on directories meshfed writes into: a report directory is held
//! for a whole run, and each temporary sibling (a staged tree) by the process building it, so a
//! temporary name nobody holds any more is known to be a leftover of a process that died.
//!
//! `flock` locks belong to the open file description and go away when the last descriptor on it
//! is closed, also when the process is killed with SIGKILL: no lock outlives its holder, and no
//! PID (which is 2 inside meshfed's PID namespace) is needed to tell a live holder from a dead one.

use std::io;
use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::stat::Mode;

use super::Dir;

/// A held lock on a directory; released when dropped (or when the process ends, however).
#[derive(Debug)]
pub struct DirLock {
    _held: Flock<OwnedFd>,
}

impl Dir {
    /// Takes the exclusive lock on this directory without waiting: `None` when another open of it
    /// (another process, or another handle of this one) holds it.
    pub fn try_lock(&self) -> io::Result<Option<DirLock>> {
        match Flock::lock(self.reopen()?, FlockArg::LockExclusiveNonblock) {
            Ok(held) => Ok(Some(DirLock { _held: held })),
            Err((_, Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, error)) => Err(error.into()),
        }
    }

    /// Takes the exclusive lock on this directory, waiting for a holder to release it.
    pub fn lock(&self) -> io::Result<DirLock> {
        loop {
            match Flock::lock(self.reopen()?, FlockArg::LockExclusive) {
                Ok(held) => return Ok(DirLock { _held: held }),
                Err((_, Errno::EINTR)) => {}
                Err((_, error)) => return Err(error.into()),
            }
        }
    }

    /// A second open file description of this directory (locks are per description).
    fn reopen(&self) -> io::Result<OwnedFd> {
        Ok(nix::fcntl::openat(
            &self.fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// True when `name` is still the directory this handle has open (it was not removed or
    /// replaced since it was opened).
    pub(crate) fn is_still_at(&self, parent: &Dir, name: &std::ffi::OsStr) -> io::Result<bool> {
        let mine = nix::sys::stat::fstat(&self.fd)?;
        match nix::sys::stat::fstatat(&parent.fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(there) => Ok(there.st_dev == mine.st_dev && there.st_ino == mine.st_ino),
            Err(Errno::ENOENT) => Ok(false),
            Err(error) => Err(error.into()),
        }
    }
}
