//! The exit codes meshfed promises (README "Exit codes"): one place, below everything that maps an
//! outcome to one (the command line, the library's helper process, the sandbox's forked child).

#![forbid(unsafe_code)]

/// Exit code: every expectation held.
pub const EXIT_OK: u8 = 0;
/// Exit code: the run completed and at least one expectation failed.
pub const EXIT_EXPECTATION_FAILED: u8 = 1;
/// Exit code: bad input or usage (nothing was changed).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit code: the world could not be created or reached.
pub const EXIT_INFRASTRUCTURE: u8 = 3;
/// Exit code: interrupted (Ctrl-C / SIGINT / SIGTERM / SIGHUP); everything was torn down.
pub const EXIT_INTERRUPTED: u8 = 130;
