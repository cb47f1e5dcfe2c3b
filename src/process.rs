//! Short-lived helper processes that meshfed runs outside the supervisor (`envoy --version`, pip,
//! `ip` batches, and for `kind`: kind, docker, istioctl, tar): each with a deadline, a death signal and its own process group, stopped (the
//! whole group) on expiry or on Ctrl-C, and named in the error.
//!
//! Between fork and exec each child gets `PR_SET_PDEATHSIG = SIGKILL` ([`die_with_parent`], which
//! the supervisor and the helper-process role use too) and `setpgid(0, 0)`. The kernel sends the
//! death signal when the *thread* that forked exits; [`bounded_run`] waits for
//! the child on the thread that started it, so that thread outlives the child. The own process
//! group keeps a terminal's Ctrl-C away from the child (meshfed decides when it stops) and lets
//! meshfed kill its grandchildren with it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use thiserror::Error;

use crate::interrupt;

/// How to run one helper process.
#[derive(Debug, Clone)]
pub struct BoundedRun {
    /// What it is, for messages: e.g. "envoy --version (/usr/bin/envoy)".
    pub what: String,
    /// How long it may take from start to exit.
    pub timeout: Duration,
    /// Bytes written to its stdin (which is then closed); `None`: stdin is /dev/null.
    pub stdin: Option<Vec<u8>>,
    /// Capture stdout and stderr (else they go to meshfed's, e.g. to show pip's progress).
    pub capture: bool,
    /// Stop it when meshfed is interrupted (not for clean-up steps, which must still run then).
    pub interruptible: bool,
}

/// What a finished helper process did.
#[derive(Debug)]
pub struct BoundedOutput {
    /// Its exit status.
    pub status: ExitStatus,
    /// Its stdout (empty unless captured).
    pub stdout: Vec<u8>,
    /// Its stderr (empty unless captured).
    pub stderr: Vec<u8>,
}

/// Why a helper process did not finish normally.
#[derive(Debug, Error)]
pub enum BoundedRunError {
    /// It could not be started.
    #[error("failed to start {what}")]
    Spawn {
        /// The process.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// It did not exit in time; it (and its process group) was killed.
    #[error("{what} did not answer within {}; it was killed", format_duration(*timeout))]
    TimedOut {
        /// The process.
        what: String,
        /// Its deadline.
        timeout: Duration,
    },
    /// meshfed was interrupted while it ran; it (and its process group) was killed.
    #[error("interrupted while waiting for {what}; it was stopped")]
    Interrupted {
        /// The process.
        what: String,
    },
    /// Waiting for it or talking to it failed.
    #[error("failed to wait for {what}")]
    Wait {
        /// The process.
        what: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// The first executable file called `name` in the directories of `path` (a `PATH` value), as a
/// shell finds it: so tests can put fake `kind`, `docker` and `istioctl` first on `PATH`.
pub fn find_on_path(name: &str, path: Option<&std::ffi::OsStr>) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path?)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// `10 s`, `1.5 s`, `300 ms`.
pub fn format_duration(duration: Duration) -> String {
    if duration >= Duration::from_secs(1) {
        let seconds = duration.as_secs_f64();
        if seconds.fract() == 0.0 {
            format!("{seconds:.0} s")
        } else {
            format!("{seconds:.1} s")
        }
    } else {
        format!("{} ms", duration.as_millis())
    }
}

/// Makes the child `command` starts get `signal` when the thread that starts it exits
/// (`PR_SET_PDEATHSIG`), so nothing meshfed starts outlives it, however meshfed ends. Had meshfed
/// died between the fork and the `prctl`, no signal would ever come: the child then checks that its
/// parent is still the process that called this and refuses to start (`ESRCH`) if not.
///
/// The kernel sends the signal when the forking *thread* exits, so the caller keeps that thread
/// alive as long as the child. Steps added with `pre_exec` after this call run after it.
pub fn die_with_parent(command: &mut Command, signal: Signal) {
    let parent = nix::unistd::getpid();
    #[allow(unsafe_code, reason = "pre_exec: the death signal between fork and exec")]
    // SAFETY: between fork and exec the closure makes only async-signal-safe system calls (prctl,
    // getppid) and builds an io::Error from an errno, which does not allocate.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(signal)?;
            if nix::unistd::getppid() != parent {
                return Err(Errno::ESRCH.into());
            }
            Ok(())
        });
    }
}

/// Runs `command` as described by `run` and returns its output once it exits (whatever its
/// status). Blocks the calling thread, which must stay alive until then (see the module doc).
pub fn bounded_run(mut command: Command, run: &BoundedRun) -> Result<BoundedOutput, BoundedRunError> {
    let wait_error = |source| BoundedRunError::Wait {
        what: run.what.clone(),
        source,
    };
    command
        .stdin(if run.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if run.capture { Stdio::piped() } else { Stdio::inherit() })
        .stderr(if run.capture { Stdio::piped() } else { Stdio::inherit() });
    die_with_parent(&mut command, Signal::SIGKILL);
    #[allow(unsafe_code, reason = "pre_exec: a process group between fork and exec")]
    // SAFETY: only an async-signal-safe call (setpgid; no allocation) between fork and exec.
    unsafe {
        command.pre_exec(|| Ok(nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?));
    }
    let started = Instant::now();
    let deadline = started + run.timeout;
    let mut child = command.spawn().map_err(|source| BoundedRunError::Spawn {
        what: run.what.clone(),
        source,
    })?;
    let pid = Pid::from_raw(child.id() as i32);
    // From here on, every way out kills the process group and reaps the child.
    let exit_watch = pidfd_open(pid);
    let mut pipes = Pipes {
        stdin: child.stdin.take().map(|pipe| File::from(OwnedFd::from(pipe))),
        stdin_data: run.stdin.clone().unwrap_or_default(),
        stdin_written: 0,
        stdout: child.stdout.take().map(|pipe| File::from(OwnedFd::from(pipe))),
        stderr: child.stderr.take().map(|pipe| File::from(OwnedFd::from(pipe))),
        stdout_data: Vec::new(),
        stderr_data: Vec::new(),
    };
    if let Err(source) = pipes.set_nonblocking() {
        let _ = kill_group_and_reap(&mut child, pid);
        return Err(wait_error(source));
    }
    let outcome = loop {
        match has_exited(pid) {
            Ok(true) => break Ok(()),
            Ok(false) => {}
            Err(error) => break Err(wait_error(error)),
        }
        if run.interruptible && interrupt::is_interrupted() {
            break Err(BoundedRunError::Interrupted { what: run.what.clone() });
        }
        let now = Instant::now();
        if now >= deadline {
            break Err(BoundedRunError::TimedOut {
                what: run.what.clone(),
                timeout: run.timeout,
            });
        }
        // Wake up for pipe data, the child's exit (pidfd), or at least every 50 ms to look at the
        // interrupt flag (a signal also ends poll with EINTR).
        let tick = (deadline - now).min(Duration::from_millis(50));
        if let Err(error) = pipes.poll_once(exit_watch.as_ref(), tick) {
            break Err(wait_error(error));
        }
    };
    if outcome.is_ok() {
        // Whatever is still buffered in the pipes.
        let _ = pipes.poll_once(None, Duration::ZERO);
    }
    let status = kill_group_and_reap(&mut child, pid);
    outcome?;
    Ok(BoundedOutput {
        status: status.map_err(wait_error)?,
        stdout: pipes.stdout_data,
        stderr: pipes.stderr_data,
    })
}

/// Kills what is left of the child's process group (grandchildren; the child too, if it still
/// runs), then reaps the child. Called while the child is not yet reaped, so its pid still names
/// its group.
fn kill_group_and_reap(child: &mut std::process::Child, pid: Pid) -> io::Result<ExitStatus> {
    // The group of a child we have not reaped yet, so its pid still names it.
    let _ = signal::killpg(pid, Signal::SIGKILL);
    let _ = child.kill();
    child.wait()
}

/// Whether the child has exited, without reaping it (so its pid keeps naming its group).
fn has_exited(pid: Pid) -> io::Result<bool> {
    // WNOWAIT leaves the child waitable.
    match nix::sys::wait::waitid(
        Id::Pid(pid),
        WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
    ) {
        Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => Ok(false),
        Ok(_) => Ok(true),
        Err(error) => Err(error.into()),
    }
}

/// A descriptor that becomes readable when process `pid` exits (Linux ≥ 5.3); `None` without it
/// (then the 50 ms tick notices the exit).
#[allow(
    unsafe_code,
    reason = "pidfd_open(2): nix has no wrapper, so a raw syscall and a descriptor taken over"
)]
fn pidfd_open(pid: Pid) -> Option<OwnedFd> {
    // nix has no wrapper for pidfd_open(2).
    // SAFETY: pidfd_open returns a new descriptor we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    (fd >= 0).then(|| {
        // SAFETY: a fresh descriptor from the kernel, owned by nobody else.
        unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) }
    })
}

struct Pipes {
    stdin: Option<File>,
    stdin_data: Vec<u8>,
    stdin_written: usize,
    stdout: Option<File>,
    stderr: Option<File>,
    stdout_data: Vec<u8>,
    stderr_data: Vec<u8>,
}

impl Pipes {
    fn set_nonblocking(&self) -> io::Result<()> {
        for fd in [&self.stdin, &self.stdout, &self.stderr].into_iter().flatten() {
            let flags = OFlag::from_bits_truncate(nix::fcntl::fcntl(fd, FcntlArg::F_GETFL)?);
            nix::fcntl::fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        }
        Ok(())
    }

    /// One `poll(2)` over the open pipes (and the exit watch), then reads/writes what is ready.
    fn poll_once(&mut self, exit_watch: Option<&OwnedFd>, timeout: Duration) -> io::Result<()> {
        if self.stdin.is_some() && self.stdin_written >= self.stdin_data.len() {
            self.stdin = None;
        }
        let watched = [
            (self.stdin.as_ref().map(AsFd::as_fd), PollFlags::POLLOUT, Role::Stdin),
            (self.stdout.as_ref().map(AsFd::as_fd), PollFlags::POLLIN, Role::Stdout),
            (self.stderr.as_ref().map(AsFd::as_fd), PollFlags::POLLIN, Role::Stderr),
            (exit_watch.map(AsFd::as_fd), PollFlags::POLLIN, Role::Exit),
        ];
        let (mut fds, roles): (Vec<PollFd>, Vec<Role>) = watched
            .into_iter()
            .filter_map(|(fd, events, role)| Some((PollFd::new(fd?, events), role)))
            .unzip();
        let millis = u32::try_from(timeout.as_millis()).unwrap_or(i32::MAX as u32);
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        match nix::poll::poll(&mut fds, timeout) {
            Ok(_) => {}
            Err(Errno::EINTR) => return Ok(()),
            Err(error) => return Err(error.into()),
        }
        let ready: Vec<Role> = fds
            .iter()
            .zip(roles)
            .filter(|(fd, _)| fd.revents().is_some_and(|events| !events.is_empty()))
            .map(|(_, role)| role)
            .collect();
        for role in ready {
            match role {
                Role::Stdin => self.write_stdin(),
                Role::Stdout => drain(&mut self.stdout, &mut self.stdout_data),
                Role::Stderr => drain(&mut self.stderr, &mut self.stderr_data),
                Role::Exit => {}
            }
        }
        Ok(())
    }

    fn write_stdin(&mut self) {
        let Some(mut file) = self.stdin.as_ref() else { return };
        match file.write(&self.stdin_data[self.stdin_written..]) {
            Ok(written) => self.stdin_written += written,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            // EPIPE: the child stopped reading (e.g. `ip` quit at a failing line); its status
            // and stderr tell why.
            Err(_) => self.stdin = None,
        }
        if self.stdin_written >= self.stdin_data.len() {
            self.stdin = None;
        }
    }
}

#[derive(Clone, Copy)]
enum Role {
    Stdin,
    Stdout,
    Stderr,
    Exit,
}

/// Reads what is available; closes the pipe at EOF.
fn drain(pipe: &mut Option<File>, into: &mut Vec<u8>) {
    let Some(mut file) = pipe.as_ref() else { return };
    let mut buffer = [0u8; 8192];
    let still_open = loop {
        match file.read(&mut buffer) {
            Ok(0) => break false,
            Ok(read) => into.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => break true,
            Err(_) => break false,
        }
    };
    if !still_open {
        *pipe = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(what: &str, timeout: Duration) -> BoundedRun {
        BoundedRun {
            what: what.to_string(),
            timeout,
            stdin: None,
            capture: true,
            interruptible: true,
        }
    }

    #[test]
    fn output_and_status_are_returned() {
        let mut command = Command::new("sh");
        command.args(["-c", "cat; echo out; echo err >&2; exit 3"]);
        let mut spec = run("a shell", Duration::from_secs(10));
        spec.stdin = Some(b"from stdin\n".to_vec());
        let output = bounded_run(command, &spec).unwrap();
        assert_eq!(output.status.code(), Some(3));
        assert_eq!(String::from_utf8_lossy(&output.stdout), "from stdin\nout\n");
        assert_eq!(String::from_utf8_lossy(&output.stderr), "err\n");
    }

    #[test]
    fn a_child_past_its_deadline_is_killed_with_its_group_and_named() {
        let marker = format!("{}.{}", 7000 + std::process::id() % 1000, std::process::id());
        let mut command = Command::new("sh");
        // A grandchild in the same group keeps the pipes open: both must go.
        command.args(["-c", &format!("sleep {marker} & sleep {marker}; wait")]);
        let started = Instant::now();
        let error = bounded_run(command, &run("a sleeping helper", Duration::from_millis(300))).unwrap_err();
        assert!(matches!(error, BoundedRunError::TimedOut { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "a sleeping helper did not answer within 300 ms; it was killed"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        let left = || -> Vec<_> {
            std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter(|entry| {
                    std::fs::read(entry.path().join("cmdline"))
                        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&marker))
                })
                .collect()
        };
        // SIGKILL went to the whole group; a grandchild on a loaded machine may need a moment to
        // be scheduled and exit, so wait for the condition (bounded) rather than look once.
        let gone_by = Instant::now() + Duration::from_secs(3);
        while !left().is_empty() && Instant::now() < gone_by {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left = left();
        assert!(left.is_empty(), "the group outlived its deadline by 3 s: {left:?}");
    }

    /// The kernel's promise (prctl(2), `PR_SET_PDEATHSIG`): the child gets the signal when the
    /// thread that forked it exits. A thread starts `sleep` and ends; the sleep must end by SIGTERM.
    #[test]
    fn a_child_gets_its_death_signal_when_the_thread_that_started_it_ends() {
        let starter = std::thread::spawn(|| {
            let mut command = Command::new("sleep");
            command.arg("30").stdin(Stdio::null());
            die_with_parent(&mut command, Signal::SIGTERM);
            command.spawn().unwrap()
        });
        let mut child = starter.join().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the child outlived the thread that started it by 10 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(Signal::SIGTERM as i32), "{status:?}");
    }

    #[test]
    fn seconds_and_milliseconds_are_written_for_people() {
        assert_eq!(format_duration(Duration::from_secs(10)), "10 s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(format_duration(Duration::from_millis(300)), "300 ms");
    }
}
