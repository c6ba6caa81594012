//! The helper binary: lrun with the network verbs linked in (`lrun::helper`). The runtime
//! binary execs it for `layer pull`, `layer publish` and `image import`, and runs it for
//! create's `--pull` from a server or registry.
fn main() {
    std::process::exit(lrun::cli::main(lrun::cli::IN_PROCESS));
}
