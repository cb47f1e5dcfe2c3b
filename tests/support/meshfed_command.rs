//! Running the `meshfed` binary this build made: the one command builder the tests share.
//!
//! [`Meshfed`] starts the binary with a unique `MESHFED_TEST_MARKER` (so a leftover check finds
//! that run's processes only, see [`super::marker`]), waits for it at most a deadline (then kills
//! it and fails naming the command) and returns what it printed as text.

use std::ffi::OsStr;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::marker::{MARKER_ENV, unique_marker};

/// The binary under test.
pub const MESHFED: &str = env!("CARGO_BIN_EXE_meshfed");

/// How long a command may take unless the test says otherwise: commands that build no world end
/// in well under a second; this bounds a hang, it is no performance figure.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(120);

/// What a finished meshfed did.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// The meshfed process's pid (for [`super::marker::assert_own_run_left_nothing`]).
    pub pid: u32,
    /// Its marker.
    pub marker: String,
    pub elapsed: Duration,
}

/// A meshfed command being built: `Meshfed::new(&["plan", ...]).current_dir(dir).run()`.
pub struct Meshfed {
    command: Command,
    marker: String,
    deadline: Duration,
}

impl Meshfed {
    /// `meshfed <args>` with a fresh marker and [`DEFAULT_DEADLINE`].
    pub fn new<I, S>(args: I) -> Meshfed
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = Command::new(MESHFED);
        command.args(args);
        let marker = unique_marker("meshfed");
        command.env(MARKER_ENV, &marker);
        Meshfed {
            command,
            marker,
            deadline: DEFAULT_DEADLINE,
        }
    }

    /// Carries `marker` instead of a fresh one.
    pub fn marker(mut self, marker: &str) -> Meshfed {
        self.command.env(MARKER_ENV, marker);
        self.marker = marker.to_owned();
        self
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Meshfed {
        self.command.arg(arg);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Meshfed {
        self.command.current_dir(dir);
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Meshfed {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Meshfed {
        self.command.env_remove(key);
        self
    }

    /// Killed (and the test failed) if it has not ended after `deadline`.
    pub fn deadline(mut self, deadline: Duration) -> Meshfed {
        self.deadline = deadline;
        self
    }

    /// The command as built, for what the builder does not cover (spawning to signal it, ...).
    pub fn into_command(self) -> Command {
        self.command
    }

    /// Runs it to the end (at most the deadline) and returns what it printed.
    pub fn run(mut self) -> Ran {
        let started = Instant::now();
        let mut child = self
            .command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|error| panic!("starting {:?}: {error}", self.command));
        let pid = child.id();
        let mut stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        // Read both pipes while waiting, so a chatty run never blocks on a full pipe.
        let stdout_reader = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stdout.read_to_end(&mut text);
            text
        });
        let stderr_reader = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            text
        });
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > self.deadline {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = String::from_utf8_lossy(&stderr_reader.join().unwrap()).into_owned();
                panic!(
                    "{:?} did not end within {:?}; its stderr:\n{stderr}",
                    self.command, self.deadline
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ran {
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout_reader.join().unwrap()).into_owned(),
            stderr: String::from_utf8_lossy(&stderr_reader.join().unwrap()).into_owned(),
            pid,
            marker: self.marker,
            elapsed: started.elapsed(),
        }
    }

    /// Runs it to the end, with no deadline, and returns its `std::process::Output` (for tests
    /// that read raw bytes or the exit status).
    pub fn output(mut self) -> Output {
        self.command
            .output()
            .unwrap_or_else(|error| panic!("running {:?}: {error}", self.command))
    }
}
