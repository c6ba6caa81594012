//! Security regression tests: each runs a real attack against the real lrun binary and checks
//! that it fails (runtime-spec/security.md maps every test to the attack class it covers).
//! Attacks only ever aim at scratch paths the test made and at files it reads back.

mod common;

#[path = "security/config.rs"]
mod config;
#[path = "security/mounts.rs"]
mod mounts;
#[path = "security/process.rs"]
mod process;
#[path = "security/store.rs"]
mod store;
