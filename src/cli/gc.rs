//! `lrun gc`: clean up after crashed creates (and, with --stopped, stopped containers).

use super::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also delete containers whose process has exited.
    #[arg(long)]
    pub stopped: bool,
    /// Also unmount idle layers (shared layer mounts no container uses, kept for the next
    /// one: node config layers.idle_timeout), however recently they were used.
    #[arg(long)]
    pub drop_idle: bool,
}

/// One line per container removed (stdout) and per container that could not be (stderr);
/// exit status 1 if any could not.
pub fn run(g: &Globals, a: Args) -> anyhow::Result<i32> {
    let outcome = crate::container::gc(&g.runtime(), a.stopped, a.drop_idle)?;
    for id in &outcome.removed {
        println!("removed {id}");
    }
    for unit in &outcome.scopes {
        println!("stopped {unit}");
    }
    for (id, e) in &outcome.failed {
        crate::logging::error(&anyhow::anyhow!("gc {id}: {e:#}"));
    }
    Ok(if outcome.failed.is_empty() { 0 } else { 1 })
}
