//! The `meshfed` binary: everything happens in [`meshfed::cli`].

fn main() -> std::process::ExitCode {
    meshfed::cli::main()
}
