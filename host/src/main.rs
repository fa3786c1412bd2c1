fn main() -> std::process::ExitCode {
    // Before any thread starts: backups and restores run many allocating threads.
    runcap_repo::limit_allocator_arenas();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The compiler child (see `engine::isolate`) is the same binary, asked by its parent.
    if args.first().map(String::as_str) == Some(runcap::engine::isolate::COMPILE_ARG) {
        return runcap::engine::isolate::child_main(&args[1..]);
    }
    runcap::cli::main()
}
