//! Link flags for the binaries (not the library or tests).
fn main() {
    // Relative relocations packed as DT_RELR (glibc >= 2.36): the ~10k R_X86_64_RELATIVE
    // entries every exec applies shrink from 24 bytes each to a bitmap, so the loader reads
    // and maps less of the file at each start; ASLR is kept (still PIE).
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    println!("cargo:rerun-if-changed=build.rs");
}
