//! Entering meshfed's sandbox in a re-run test binary: only a single-threaded process can enter
//! it, so a constructor in `.init_array` does so before `main` (before libtest starts a thread)
//! whenever the binary's [`crate::SANDBOX_ENV`] is set; [`SANDBOX`] then holds the outcome.

use std::sync::OnceLock;

use meshfed::provider::local::sandbox::{self, SandboxMode};

/// Set only in the sandboxed half: whether entering the sandbox worked.
pub static SANDBOX: OnceLock<Result<SandboxMode, String>> = OnceLock::new();

/// Runs before `main`, while the process has one thread.
extern "C" fn enter_sandbox_if_asked() {
    if std::env::var_os(crate::SANDBOX_ENV).is_some() {
        let _ = SANDBOX.set(sandbox::enter().map_err(|error| format!("{error:#?}: {error}")));
    }
}

#[used]
#[allow(
    unsafe_code,
    reason = "a constructor in .init_array runs before main, while the process has one thread"
)]
#[unsafe(link_section = ".init_array")]
static ENTER_SANDBOX_BEFORE_MAIN: extern "C" fn() = enter_sandbox_if_asked;
