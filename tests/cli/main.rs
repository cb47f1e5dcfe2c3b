//! The `meshfed` binary without a mesh: exit codes and what `plan` and `certs` write, `--help`,
//! malformed scenarios refused with their position, files never lost (atomic writes, symlinks, a
//! full disk), and the documented inventory example. A few of the file tests run the seed on the
//! `local` provider and record themselves skipped where it cannot run.

#[path = "../support/mod.rs"]
mod support;

mod docs_inventory;
mod exit_codes;
mod files;
mod help;
mod scenario_errors;
