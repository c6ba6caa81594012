//! The engine: one file per verb of the container lifecycle. `cli/` parses flags and calls
//! one function here; everything below (bundle, state, namespaces, rootfs, cgroups, layers,
//! process, hooks, terminal, notify, sync) is driven from these files only.
//!
//! `create` reads top to bottom: every resource it takes is recorded in state.json before it
//! is taken, and its undo guard releases all of them if any later step fails. `delete`
//! releases the same list, so a crash at any point is recovered by `delete --force`.

mod console;
mod create;
mod delete;
mod events;
mod exec;
mod foreground;
mod init;
mod kill;
mod pause;
mod ps;
mod start;
mod state;
mod update;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::layers::LayerContext;
use crate::state::StateRoot;
use crate::utils::write_atomic;

pub use create::{CreateOptions, Created, create, socket_activation_fds};
pub use delete::{GcOutcome, delete, gc};
pub use events::{Event, events};
pub use exec::{ExecOptions, container_spec, exec};
pub use foreground::run;
pub use kill::{kill, parse_signal};
pub use pause::{pause, resume};
pub use ps::ps;
pub use start::start;
pub use state::{list, state};
pub use update::update;

/// Where a runtime keeps its state and layers (`--root`, `--store`), and how long a pull of
/// missing layers may take.
pub struct Runtime {
    pub root: PathBuf,
    pub store: PathBuf,
    pub pull_limits: crate::distribution::Limits,
    /// `--systemd-cgroup`: new containers go into systemd scopes.
    pub systemd_cgroup: bool,
    /// How long layer mounts nobody uses stay mounted.
    pub idle_layers: crate::layers::IdlePolicy,
    /// `--pull` from a server or registry (a directory is read in-process).
    pub remote_pull: RemotePull,
}

/// create's `--pull` from a network source (`distribution::RemotePull`).
pub type RemotePull = crate::distribution::RemotePull;

impl Runtime {
    pub fn states(&self) -> StateRoot {
        StateRoot::new(&self.root)
    }
    /// Where create's `--pull` fetches to.
    pub fn pull_target(&self) -> crate::distribution::PullTarget<'_> {
        crate::distribution::PullTarget {
            root: &self.root,
            store: &self.store,
            limits: self.pull_limits,
        }
    }
    pub fn layers(&self) -> LayerContext {
        LayerContext {
            store: self.store.clone(),
            state_root: self.root.clone(),
            recorded: crate::state::recorded_root,
            idle: self.idle_layers,
        }
    }
}

/// What every command does first, before any clone or setns into a container's namespaces:
/// become non-dumpable, and for the commands that start a container process (`passed_fds`:
/// how many fds from 3 it passes on) close every other fd the caller left open.
pub fn secure_process(passed_fds: Option<i32>) -> Result<()> {
    crate::process::set_dumpable(false)?;
    if let Some(passed) = passed_fds {
        crate::fds::close_from(3 + passed.max(0));
    }
    Ok(())
}

/// `--pid-file`: the container process's pid, written atomically as runc does.
fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path =
        std::path::absolute(path).with_context(|| format!("--pid-file {}", path.display()))?;
    write_atomic(&path, pid.to_string().as_bytes(), 0o644)
        .with_context(|| format!("--pid-file {}", path.display()))
}
