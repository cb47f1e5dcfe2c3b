//! The sandbox's forks: the outer meshfed and PID 1 each wait for their one child, pass interrupts on
//! and exit like it; PID 1 and the worker die with their parent.

use std::io::{self, Write as _};
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};

use crate::interrupt;

/// The read end of a pipe whose write end only the parent holds: it reports end-of-file once the
/// parent is gone.
pub(super) struct ParentWatch(OwnedFd);

/// Forks. In the parent, waits for the child and exits with its status (never returns); in the
/// child, returns a watch on the parent.
#[allow(
    unsafe_code,
    reason = "fork(2): the sandbox's PID 1 is a copy of this single-threaded process"
)]
pub(super) fn spawn_copy(saved: &interrupt::SavedDispositions) -> io::Result<ParentWatch> {
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    // Buffered output would otherwise be written twice.
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: the process is single-threaded (checked by the callers), so the child may go on
    // running ordinary code.
    match unsafe { nix::unistd::fork() } {
        Err(error) => {
            let _ = interrupt::restore(saved);
            Err(error.into())
        }
        Ok(ForkResult::Child) => {
            drop(write_end);
            Ok(ParentWatch(read_end))
        }
        Ok(ForkResult::Parent { child }) => {
            drop(read_end);
            wait_for_and_exit_like(child, write_end)
        }
    }
}

/// The parent side of [`spawn_copy`]: passes interrupts on to `child`, waits for it, reaps any
/// other child that ends meanwhile (PID 1's orphans), and exits with `child`'s status. A second
/// interrupt received here (e.g. a second Ctrl-C) SIGKILLs `child`, which for PID 1 takes the whole
/// namespace with it.
fn wait_for_and_exit_like(child: Pid, _keep_parent_alive_pipe: OwnedFd) -> ! {
    let signals_before = interrupt::received_count();
    interrupt::forward_to(child);
    loop {
        match waitpid(None, None) {
            Ok(status) if status.pid() == Some(child) => exit_now(exit_code_of(status)),
            // One of PID 1's orphans, reaped.
            Ok(_) => {}
            // Cannot happen while `child` is ours; do not spin.
            Err(Errno::ECHILD) => exit_now(crate::exit_code::EXIT_INFRASTRUCTURE.into()),
            Err(_) => {
                if interrupt::received_count() >= signals_before + 2 {
                    let _ = signal::kill(child, Signal::SIGKILL);
                }
            }
        }
    }
}

/// Ends this process at once with `code`, running nothing else: no exit handlers and no flushing
/// (the worker owns stdout and every resource). nix has no wrapper for `_exit(2)`.
#[allow(
    unsafe_code,
    reason = "_exit(2): nix has no wrapper, and a forked parent must not run exit handlers"
)]
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit has no preconditions; it never returns.
    unsafe { libc::_exit(code) }
}

/// The exit status a shell would report: the code, or 128 + the signal that killed it.
fn exit_code_of(status: WaitStatus) -> i32 {
    match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
        _ => crate::exit_code::EXIT_INFRASTRUCTURE.into(),
    }
}

/// `PR_SET_PDEATHSIG = SIGKILL`, then checks the parent did not die before that (its pid cannot be
/// compared: a parent outside the PID namespace has pid 0 here).
pub(super) fn die_with_parent(parent_alive: ParentWatch) -> io::Result<()> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
    let mut watch = [PollFd::new(parent_alive.0.as_fd(), PollFlags::POLLIN)];
    let ready = nix::poll::poll(&mut watch, PollTimeout::ZERO)?;
    let gone = watch[0]
        .revents()
        .is_some_and(|events| events.intersects(PollFlags::POLLHUP | PollFlags::POLLIN));
    if ready > 0 && gone {
        // The parent is already gone, so no death signal will come: go now.
        exit_now(128 + Signal::SIGKILL as i32);
    }
    Ok(())
}
