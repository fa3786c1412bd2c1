fn main() -> std::process::ExitCode {
    runcap::cli::main()
}
