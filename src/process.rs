//! Short-lived helper processes that meshfed runs outside the supervisor (`envoy --version`, pip,
//! `ip` batches, and for `kind`: kind, docker, istioctl, curl, tar): each with a deadline, a death signal and its own process group, stopped (the
//! whole group) on expiry or on Ctrl-C, and named in the error.
//!
//! Between fork and exec each child gets `PR_SET_PDEATHSIG = SIGKILL` and `setpgid(0, 0)`. The
//! kernel sends the death signal when the *thread* that forked exits; [`bounded_run`] waits for
//! the child on the thread that started it, so that thread outlives the child. The own process
//! group keeps a terminal's Ctrl-C away from the child (meshfed decides when it stops) and lets
//! meshfed kill its grandchildren with it.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::provider::local::interrupt;

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
    // SAFETY: only async-signal-safe calls (prctl, setpgid) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setpgid(0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let deadline = started + run.timeout;
    let mut child = command.spawn().map_err(|source| BoundedRunError::Spawn {
        what: run.what.clone(),
        source,
    })?;
    let pid = child.id() as libc::pid_t;
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
fn kill_group_and_reap(child: &mut std::process::Child, pid: libc::pid_t) -> io::Result<ExitStatus> {
    // SAFETY: kill(2) on the process group of a child we have not reaped yet.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    let _ = child.kill();
    child.wait()
}

/// Whether the child has exited, without reaping it (so its pid keeps naming its group).
fn has_exited(pid: libc::pid_t) -> io::Result<bool> {
    // SAFETY: siginfo_t is plain old data; waitid with WNOWAIT leaves the child waitable.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let result = libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        if result != 0 {
            let error = io::Error::last_os_error();
            return if error.raw_os_error() == Some(libc::EINTR) {
                Ok(false)
            } else {
                Err(error)
            };
        }
        Ok(info.si_pid() != 0)
    }
}

/// A descriptor that becomes readable when process `pid` exits (Linux ≥ 5.3); `None` without it
/// (then the 50 ms tick notices the exit).
fn pidfd_open(pid: libc::pid_t) -> Option<OwnedFd> {
    // SAFETY: pidfd_open returns a new descriptor we own, or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
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
            // SAFETY: fcntl on a descriptor we own.
            unsafe {
                let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
                if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
        }
        Ok(())
    }

    /// One `poll(2)` over the open pipes (and the exit watch), then reads/writes what is ready.
    fn poll_once(&mut self, exit_watch: Option<&OwnedFd>, timeout: Duration) -> io::Result<()> {
        if self.stdin.is_some() && self.stdin_written >= self.stdin_data.len() {
            self.stdin = None;
        }
        let mut fds = Vec::new();
        let mut roles = Vec::new();
        if let Some(fd) = &self.stdin {
            fds.push(pollfd(fd, libc::POLLOUT));
            roles.push(Role::Stdin);
        }
        if let Some(fd) = &self.stdout {
            fds.push(pollfd(fd, libc::POLLIN));
            roles.push(Role::Stdout);
        }
        if let Some(fd) = &self.stderr {
            fds.push(pollfd(fd, libc::POLLIN));
            roles.push(Role::Stderr);
        }
        if let Some(fd) = exit_watch {
            fds.push(pollfd(fd, libc::POLLIN));
            roles.push(Role::Exit);
        }
        let millis = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, millis) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            return if error.raw_os_error() == Some(libc::EINTR) {
                Ok(())
            } else {
                Err(error)
            };
        }
        for (fd, role) in fds.iter().zip(roles) {
            if fd.revents == 0 {
                continue;
            }
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

fn pollfd(fd: &impl AsRawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }
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

    #[test]
    fn seconds_and_milliseconds_are_written_for_people() {
        assert_eq!(format_duration(Duration::from_secs(10)), "10 s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(format_duration(Duration::from_millis(300)), "300 ms");
    }
}
