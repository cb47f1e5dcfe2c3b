//! Rules over the repository's own sources and documents: the pure core names no I/O crate, system
//! calls go through nix, docs/fidelity.md names tests that exist and cites its sources, and the
//! README's two commands install what their job needs (the newcomer's path) and no file names a
//! path of a particular machine.

#[path = "../support/mod.rs"]
mod support;

mod fidelity_doc;
mod newcomer_path;
mod pure_core_has_no_io;
mod system_calls_through_nix;
