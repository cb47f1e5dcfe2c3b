//! Rules over the repository's own sources and documents: the pure core names no I/O crate, system
//! calls go through nix, and docs/fidelity.md names tests that exist and cites its sources.

#[path = "../support/mod.rs"]
mod support;

mod fidelity_doc;
mod pure_core_has_no_io;
mod system_calls_through_nix;
