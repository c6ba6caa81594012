fn main() {
    std::process::exit(lrun::cli::main());
}
