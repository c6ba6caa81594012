//! lrun: an OCI container runtime whose root filesystems are stacks of read-only layer images.
//!
//! Module map (see runtime-spec/design.md):
//! - `cli`: one file per command, thin; parses flags, calls the engine once, prints.
//! - `container`: the engine, one file per verb (create reads top to bottom).
//! - `bundle`: config.json loading and the one validation pass before create's side effects.
//! - `state`: the state directory (atomic writes, locks, status).
//! - `namespaces`, `rootfs`, `process`, `hooks`, `seccomp`, `cgroups`, `terminal`, `notify`,
//!   `sync`: one concern each, driven by `container` only.
//! - `layers`: the node side of layered roots; `distribution`: layer sources, pull and
//!   publish; `image`: OCI image import. `lockfile`: the unlink-safe lock file.
//! - `helper`: the second binary, `lrun-fetch`, that carries the network code (`cli::net`).

pub mod bundle;
pub mod cgroup_record;
pub mod cgroups;
pub mod cli;
pub mod config_template;
pub mod container;
pub mod distribution;
pub mod fds;
pub mod helper;
pub mod hooks;
pub mod image;
pub mod layers;
pub mod lockfile;
pub mod logging;
pub mod lsm;
pub mod mountinfo;
pub mod namespaces;
pub mod node_config;
pub mod notify;
pub mod process;
pub mod rootfs;
pub mod seccomp;
pub mod state;
pub mod sync;
pub mod sysctl;
pub mod terminal;
#[doc(hidden)]
pub mod test_support;
pub mod utils;
