//! The `local` provider driven from inside meshfed's sandbox, without the binary: namespaces,
//! network and supervisor (`network`), data-plane faults through `LocalProvider::change_world`
//! (`faults`), membership changes through the reconcile loop (`membership`).
//!
//! Only a single-threaded process can enter the sandbox, and libtest starts threads before any
//! test runs. So each test re-runs this binary for itself (`--exact <module>::<test>`) with
//! [`SANDBOX_ENV`] set, and a constructor in `.init_array` ([`before_main`]) enters the sandbox
//! before `main`. That constructor is why these tests have a binary of their own: linked into
//! another binary it would run before every one of its tests.

#[path = "../support/mod.rs"]
mod support;

mod before_main;
mod faults;
mod membership;
mod network;

/// Set (to anything) by a test's outer half: the re-run binary enters the sandbox before `main`.
pub const SANDBOX_ENV: &str = "MESHFED_TEST_SANDBOX";
