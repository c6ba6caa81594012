//! lrun: an OCI container runtime whose root filesystems are stacks of read-only layer images.
//!
//! Module map (see runtime-spec/design.md):
//! - `cli`: one file per command, thin; parses flags and calls the engine.
//! - `container`: the create/start/delete lifecycle, top to bottom.
//! - `bundle`: config.json loading and validation.
//! - `state`: the state directory (atomic writes, locks, status).
//! - `namespaces`, `rootfs`, `process`, `hooks`, `seccomp`, `cgroups`: one concern each.
//! - `layers`: the node side of layered roots; `distribution`: layer sources, pull and
//!   publish; `image`: OCI image import. `lockfile`: the unlink-safe lock file.

pub mod bundle;
pub mod cgroups;
pub mod cli;
pub mod container;
pub mod distribution;
pub mod exec;
pub mod fds;
pub mod foreground;
pub mod hooks;
pub mod image;
pub mod init;
pub mod layers;
pub mod lockfile;
pub mod logging;
pub mod namespaces;
pub mod notify;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod state;
pub mod sync;
pub mod sysctl;
pub mod terminal;
pub mod utils;
