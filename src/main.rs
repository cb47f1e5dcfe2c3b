fn main() -> std::process::ExitCode {
    meshfed::cli::main()
}
