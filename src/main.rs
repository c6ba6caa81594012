fn main() {
    // lrun reports errors in one line and never prints their backtraces, but with
    // RUST_BACKTRACE set in the caller's environment anyhow captures one for every error value
    // made, expected ones included (tens of microseconds each). RUST_LIB_BACKTRACE governs
    // those captures only (panics still follow RUST_BACKTRACE); a caller who sets it wins.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // SAFETY: the first statement of main, before any other thread exists.
        unsafe { std::env::set_var("RUST_LIB_BACKTRACE", "0") };
    }
    std::process::exit(lrun::cli::main(lrun::cli::VIA_HELPER));
}
