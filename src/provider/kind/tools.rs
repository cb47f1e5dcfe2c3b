//! The external programs of the `kind` provider (kind, docker, istioctl, tar), found on `PATH`
//! the way a shell finds them (so tests can put fakes first) and all run through
//! [`crate::process::bounded_run`]: a deadline, `PR_SET_PDEATHSIG`, their own process group, and
//! every failure naming the command and quoting its stderr.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::process::{BoundedRun, BoundedRunError, bounded_run, find_on_path};

/// An argument list of strings and paths, each taken as an `OsString` (what [`Invocation::new`]
/// takes): `os_args!["load", "image-archive", archive, "--name", kind_name]`.
macro_rules! os_args {
    ($($argument:expr),* $(,)?) => {
        vec![$(std::ffi::OsString::from($argument)),*]
    };
}
pub(crate) use os_args;

/// How long `docker info` may take before the engine counts as unreachable.
pub const DOCKER_INFO_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a tool could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program is not on `PATH`.
    #[error("`{program}` was not found on PATH ({path}); {hint}")]
    Missing {
        /// The program.
        program: String,
        /// The `PATH` searched.
        path: String,
        /// How to get it.
        hint: &'static str,
    },
    /// It did not run to an exit (could not start, timed out, interrupted).
    #[error(transparent)]
    Run(#[from] BoundedRunError),
    /// It exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The last lines of its stderr.
        stderr: String,
    },
}

impl ToolError {
    /// Whether the run ended because meshfed was interrupted.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, ToolError::Run(BoundedRunError::Interrupted { .. }))
    }
}

/// How to get each program.
fn install_hint(program: &str) -> &'static str {
    match program {
        "kind" => "install kind (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)",
        "docker" => "install Docker (https://docs.docker.com/engine/install/)",
        "tar" => "install tar (meshfed unpacks istioctl with it)",
        _ => "put it on PATH",
    }
}

/// One invocation.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Program name (looked up on `PATH`) or path.
    pub program: OsString,
    /// Arguments.
    pub args: Vec<OsString>,
    /// Written to stdin, then closed.
    pub stdin: Option<Vec<u8>>,
    /// Deadline.
    pub timeout: Duration,
}

impl Invocation {
    /// `program args…` with a deadline.
    pub fn new<S: Into<OsString>>(
        program: impl Into<OsString>,
        args: impl IntoIterator<Item = S>,
        timeout: Duration,
    ) -> Self {
        Invocation {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            stdin: None,
            timeout,
        }
    }

    /// With `data` on stdin.
    #[must_use]
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// The command line, for messages.
    pub fn command_line(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|part| part.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Runs programs found on a fixed `PATH` (captured at construction).
#[derive(Debug, Clone)]
pub struct Tools {
    path: Option<OsString>,
}

impl Tools {
    /// The programs on this process's `PATH`.
    pub fn from_env() -> Tools {
        Tools {
            path: std::env::var_os("PATH"),
        }
    }

    /// The programs on `path`.
    pub fn with_path(path: impl Into<OsString>) -> Tools {
        Tools {
            path: Some(path.into()),
        }
    }

    /// Where `program` is, or why it is missing.
    pub fn locate(&self, program: &str) -> Result<PathBuf, ToolError> {
        find_on_path(program, self.path.as_deref()).ok_or_else(|| ToolError::Missing {
            program: program.to_owned(),
            path: self
                .path
                .as_deref()
                .map(|path| path.to_string_lossy().into_owned())
                .unwrap_or_else(|| "unset".to_owned()),
            hint: install_hint(program),
        })
    }

    /// Runs it to exit; fails unless it exits 0. Returns its stdout. Ctrl-C stops it.
    pub fn run(&self, invocation: &Invocation) -> Result<Vec<u8>, ToolError> {
        self.run_with(invocation, true)
    }

    /// Like [`Tools::run`], for a clean-up step that must run to its end even after Ctrl-C.
    pub fn run_uninterruptible(&self, invocation: &Invocation) -> Result<Vec<u8>, ToolError> {
        self.run_with(invocation, false)
    }

    fn run_with(&self, invocation: &Invocation, interruptible: bool) -> Result<Vec<u8>, ToolError> {
        let program = Path::new(&invocation.program);
        let executable = if program.components().count() > 1 {
            program.to_owned()
        } else {
            self.locate(&program.to_string_lossy())?
        };
        let command_line = invocation.command_line();
        let mut command = std::process::Command::new(executable);
        command.args(&invocation.args);
        if let Some(path) = &self.path {
            // kind runs docker, istioctl may run helpers: they see the same PATH.
            command.env("PATH", path);
        }
        let output = bounded_run(
            command,
            &BoundedRun {
                what: format!("`{command_line}`"),
                timeout: invocation.timeout,
                stdin: invocation.stdin.clone(),
                capture: true,
                interruptible,
            },
        )?;
        if output.status.success() {
            return Ok(output.stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|line| !line.trim().is_empty()).collect();
        Err(ToolError::Failed {
            command: command_line,
            status: output.status.to_string(),
            stderr: lines[lines.len().saturating_sub(5)..].join(" / "),
        })
    }

    /// What the `kind` provider needs before it creates anything: `kind` and `docker` on `PATH`
    /// and a Docker engine that answers `docker info`; otherwise one line per missing thing.
    pub fn preflight(&self) -> Result<(), Vec<String>> {
        let mut missing = Vec::new();
        if let Err(error) = self.locate("kind") {
            missing.push(error.to_string());
        }
        match self.locate("docker") {
            Err(error) => missing.push(error.to_string()),
            Ok(_) => {
                let info = Invocation::new(
                    "docker",
                    ["info", "--format", "{{.ServerVersion}}"],
                    DOCKER_INFO_TIMEOUT,
                );
                if let Err(error) = self.run(&info) {
                    missing.push(format!("the Docker engine does not answer: {error}"));
                }
            }
        }
        if missing.is_empty() { Ok(()) } else { Err(missing) }
    }
}
