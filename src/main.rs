fn main() {
    std::process::exit(lrun::cli::main(lrun::cli::net::VIA_HELPER));
}
