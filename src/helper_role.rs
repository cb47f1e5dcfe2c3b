//! The helper role: any executable that links meshfed (a user's test binary, an example, a doc
//! test) becomes the `meshfed` command line when [`HELPER_ENV`] is set, before its own `main`.
//!
//! [`crate::run::Run`] re-executes the current executable with [`HELPER_ENV`] set and meshfed's
//! arguments (`run SCENARIO --report-dir DIR`). The constructor below runs from `.init_array`,
//! i.e. before `main` and before libtest or `#[tokio::main]` start a thread, so the process is
//! still single-threaded when meshfed enters its namespaces, exactly as the `meshfed` binary is at
//! the start of its `main`. The processes the local provider starts from "the meshfed binary"
//! (the echo and client apps: `<current exe> workload ...`) inherit the variable and take the same
//! path. The user never needs the path of the `meshfed` binary.
//!
//! It sits above the command line it enters (`cli`), apart from the library entry point (`run`),
//! which only sets the variable.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt as _;

use crate::run::HELPER_ENV;

/// Runs before `main` in every executable that links meshfed. Does nothing unless [`HELPER_ENV`]
/// is set; then runs meshfed's command line on this process's arguments and exits with its code.
extern "C" fn act_as_meshfed_if_asked() {
    if std::env::var_os(HELPER_ENV).is_none() {
        return;
    }
    // The arguments from the kernel's copy: this runs before the Rust runtime's `main` and on any
    // libc (glibc passes argc/argv to constructors, musl does not).
    let args: Vec<OsString> = match std::fs::read("/proc/self/cmdline") {
        // Every argument ends with a NUL; an empty argument is a lone NUL and is kept.
        Ok(cmdline) => cmdline
            .strip_suffix(&[0])
            .unwrap_or(&cmdline)
            .split(|byte| *byte == 0)
            .map(|argument| OsString::from_vec(argument.to_vec()))
            .collect(),
        Err(error) => {
            eprintln!("meshfed: helper role: cannot read /proc/self/cmdline: {error}");
            std::process::exit(crate::exit_code::EXIT_INFRASTRUCTURE.into());
        }
    };
    let code = crate::cli::main_with_args(args);
    std::process::exit(code.into());
}

// Not referenced from anywhere: `#[used]` keeps it, and rustc passes upstream crates' `#[used]`
// statics to the linker so a user's binary keeps it too (proved by tests/user_crate.rs).
#[used]
#[allow(
    unsafe_code,
    reason = "a constructor in .init_array runs before main, while the process has one thread"
)]
#[unsafe(link_section = ".init_array")]
static ACT_AS_MESHFED_BEFORE_MAIN: extern "C" fn() = act_as_meshfed_if_asked;
